//! Kind `http` (Web Bug): a URL that records every request made to it.
//!
//! The HTTP listener answers a 1×1 GIF, or, with `browser_scanner_enabled` (default on) and a
//! client that accepts HTML, the browser-scanner page whose report joins the same hit.

use serde_json::{json, Map, Value};

use super::{always_alert, parse_bool, Created, HttpAnswer, Kind, Params, Site, Uploads};
use crate::error::CoreResult;
use crate::model::{Channel, Token};

pub static KIND: Kind = Kind {
    name: "http",
    human_name: "Web Bug",
    channel: Channel::Http,
    create,
    describe,
    artefact: None,
    dns_encoding: None,
    judge: always_alert,
    http_answer,
};

/// With the scanner on, browsers get the scanner page (its report joins this hit); others,
/// and everyone when it is off, the GIF.
fn http_answer(token: &Token) -> HttpAnswer {
    if scanner_enabled(token) {
        HttpAnswer::Scanner { then: None }
    } else {
        HttpAnswer::Gif
    }
}

fn scanner_enabled(token: &Token) -> bool {
    token.params.get("browser_scanner_enabled").and_then(Value::as_bool).unwrap_or(true)
}

fn create(params: &Params, _uploads: &Uploads) -> CoreResult<Created> {
    let scanner = match params.get("browser_scanner_enabled") {
        Some(v) => parse_bool("browser_scanner_enabled", v)?,
        None => true,
    };
    Ok(Created::params(json!({ "browser_scanner_enabled": scanner })))
}

fn describe(token: &Token, _site: &Site, out: &mut Map<String, Value>) {
    out.insert("browser_scanner_enabled".into(), Value::Bool(scanner_enabled(token)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scanner_defaults_on_and_rejects_garbage() {
        let create = |p: &Params| create(p, &Uploads::new()).map(|c| c.params);
        assert_eq!(create(&Params::new()).unwrap(), json!({"browser_scanner_enabled": true}));
        let mut p = Params::new();
        p.insert("browser_scanner_enabled".into(), "false".into());
        assert_eq!(create(&p).unwrap(), json!({"browser_scanner_enabled": false}));
        p.insert("browser_scanner_enabled".into(), "maybe".into());
        assert!(create(&p).is_err());
    }
}

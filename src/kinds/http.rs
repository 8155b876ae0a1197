//! Kind `http` (Web Bug): a URL that records every request made to it.
//!
//! The HTTP listener answers a 1×1 GIF. `browser_scanner_enabled` (default on) is stored now;
//! the scanner page it enables is served by the HTTP listener once that lands.

use serde_json::{json, Map, Value};

use super::{parse_bool, Kind, Params, Site};
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
};

fn create(params: &Params) -> CoreResult<Value> {
    let scanner = match params.get("browser_scanner_enabled") {
        Some(v) => parse_bool("browser_scanner_enabled", v)?,
        None => true,
    };
    Ok(json!({ "browser_scanner_enabled": scanner }))
}

fn describe(token: &Token, _site: &Site, out: &mut Map<String, Value>) {
    let scanner = token.params.get("browser_scanner_enabled").and_then(Value::as_bool).unwrap_or(true);
    out.insert("browser_scanner_enabled".into(), Value::Bool(scanner));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scanner_defaults_on_and_rejects_garbage() {
        assert_eq!(create(&Params::new()).unwrap(), json!({"browser_scanner_enabled": true}));
        let mut p = Params::new();
        p.insert("browser_scanner_enabled".into(), "false".into());
        assert_eq!(create(&p).unwrap(), json!({"browser_scanner_enabled": false}));
        p.insert("browser_scanner_enabled".into(), "maybe".into());
        assert!(create(&p).is_err());
    }
}

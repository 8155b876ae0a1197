//! Kinds `fast-redirect` and `slow-redirect`: a URL that records the visit and sends the
//! visitor on to `browser_redirect_url` — at once with a 302 (fast), or after the
//! browser-scanner page has reported the browser's details (slow).
//!
//! The two share everything but their HTTP answer, so they share this module. Only http(s)
//! targets with a host are accepted, so a token can never become a `javascript:` or
//! scheme-relative redirect.

use serde_json::{json, Map, Value};

use super::{always_alert, required, Created, HttpAnswer, Kind, Params, Site, Uploads};
use crate::error::{CoreError, CoreResult};
use crate::model::{Channel, Token};

/// The parameter (and stored setting) naming the target.
pub const PARAM: &str = "browser_redirect_url";

pub static FAST: Kind = Kind {
    name: "fast-redirect",
    human_name: "Fast Redirect",
    channel: Channel::Http,
    create,
    describe,
    artefact: None,
    dns_encoding: None,
    judge: always_alert,
    http_answer: fast_answer,
};

pub static SLOW: Kind = Kind {
    name: "slow-redirect",
    human_name: "Slow Redirect",
    channel: Channel::Http,
    create,
    describe,
    artefact: None,
    dns_encoding: None,
    judge: always_alert,
    http_answer: slow_answer,
};

/// Whether tokens of `kind` send visitors on to a `browser_redirect_url` that can be changed.
pub fn takes_redirect(kind: &str) -> bool {
    kind == FAST.name || kind == SLOW.name || redirect_is_optional(kind)
}

/// Whether the redirect of `kind` may be removed (it is optional there: a QR code).
pub fn redirect_is_optional(kind: &str) -> bool {
    kind == super::qr_code::KIND.name
}

/// A redirect target: an absolute http(s) URL with a host, at most 2048 characters.
pub fn validate_url(raw: &str) -> CoreResult<String> {
    let raw = raw.trim();
    let bad = |why: &str| CoreError::invalid("browser_redirect_url", why.to_string());
    if raw.len() > 2048 {
        return Err(bad("is longer than 2048 characters"));
    }
    let url = url::Url::parse(raw).map_err(|_| bad("is not an absolute URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("must be an http or https URL"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("must name a host"));
    }
    Ok(url.to_string())
}

fn create(params: &Params, _uploads: &Uploads) -> CoreResult<Created> {
    let url = validate_url(required(params, PARAM)?)?;
    Ok(Created::params(json!({ PARAM: url })))
}

fn target(token: &Token) -> String {
    token.params.get(PARAM).and_then(Value::as_str).unwrap_or("").to_string()
}

fn describe(token: &Token, _site: &Site, out: &mut Map<String, Value>) {
    out.insert(PARAM.into(), Value::String(target(token)));
}

fn fast_answer(token: &Token) -> HttpAnswer {
    HttpAnswer::Redirect(target(token))
}

fn slow_answer(token: &Token) -> HttpAnswer {
    HttpAnswer::Scanner { then: Some(target(token)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_absolute_http_urls() {
        assert_eq!(validate_url("https://example.com/x?y=1").unwrap(), "https://example.com/x?y=1");
        assert_eq!(validate_url(" http://Example.COM ").unwrap(), "http://example.com/");
        for bad in ["ftp://x", "javascript:alert(1)", "//evil.example", "not a url", "http://", "data:text/html,x"] {
            assert!(validate_url(bad).is_err(), "{bad}");
        }
        assert!(validate_url(&format!("https://e.com/{}", "a".repeat(3000))).is_err());
    }
}

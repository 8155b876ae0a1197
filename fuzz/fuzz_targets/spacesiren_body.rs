//! Fuzz target `spacesiren_body`: a SpaceSiren `/key` or `/test-alert` request body, read as
//! the dialect reads it: [`trapline::dialects::spacesiren::body_object`] (the Content-Type
//! check and the JSON object), then every field reader its methods use (`key_id`, optional and
//! required; `admin` and `active` flags; `expire_time`; `description`).
//!
//! Input: the Content-Type value on the first line (empty: none sent), then the body.
//! Invariants: every refusal is a 400; a body is accepted only when it is empty, or declared
//! `application/json` and a JSON object (or blank); each reader returns the field only when it
//! has the right JSON type; an accepted `expire_time` is whole seconds between 0 and
//! 9999-12-31, in microseconds, with no overflow.
#![no_main]

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use trapline::dialects::spacesiren::{body_object, key_id, opt_expire, opt_flag, opt_string, MAX_EXPIRE_SECS};

fn refused<T: std::fmt::Debug>(r: Result<T, Response>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(resp) => {
            assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
            None
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (head, body) = trapline_fuzz::lines(data, 1);
    let mut headers = HeaderMap::new();
    let declared = HeaderValue::from_bytes(head[0]).ok().filter(|_| !head[0].is_empty());
    if let Some(v) = &declared {
        headers.insert(header::CONTENT_TYPE, v.clone());
    }
    let Some(m) = refused(body_object(&headers, body)) else { return };
    if !body.is_empty() {
        let media = declared.as_ref().and_then(|v| v.to_str().ok()).map(|c| c.split(';').next().unwrap_or("").trim());
        assert!(media.is_some_and(|m| m.eq_ignore_ascii_case("application/json")), "accepted as {media:?}");
        let blank = body.iter().all(u8::is_ascii_whitespace);
        assert!(blank || matches!(serde_json::from_slice::<Value>(body), Ok(Value::Object(_))));
    } else {
        assert!(m.is_empty());
    }

    let key = m.get("key_id");
    for required in [false, true] {
        match refused(key_id(&m, required)) {
            Some(Some(id)) => assert_eq!(key, Some(&Value::String(id))),
            Some(None) => assert!(!required && key.is_none()),
            None => assert!(key.is_some_and(|k| !k.is_string()) || (required && key.is_none())),
        }
    }
    for flag in ["admin", "active"] {
        if let Some(Some(b)) = refused(opt_flag(&m, flag)) {
            assert_eq!(m.get(flag), Some(&Value::Bool(b)));
        }
    }
    if let Some(Some(us)) = refused(opt_expire(&m)) {
        assert!((0..=MAX_EXPIRE_SECS * 1_000_000).contains(&us) && us % 1_000_000 == 0, "{us}");
        assert_eq!(m.get("expire_time").and_then(Value::as_i64), Some(us / 1_000_000));
    }
    if let Some(Some(d)) = refused(opt_string(&m, "description")) {
        assert_eq!(m.get("description"), Some(&Value::String(d)));
    }
});

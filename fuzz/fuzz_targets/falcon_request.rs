//! Fuzz target `falcon_request`: what the Falcon installation-tokens dialect reads from a
//! request: the query string's parameters ([`trapline::dialects::falcon::Params`]: `ids`
//! repeated or comma-separated, `filter` as FQL, `sort`, `offset`, `limit`) and the JSON body
//! ([`trapline::dialects::falcon::body_object`], `expires_timestamp` through
//! [`trapline::dialects::falcon::expires`], and the `label`, `revoked` and
//! `tokens_required` fields).
//!
//! Input: the query string on the first line, then the body. Invariants: no panic; every
//! refusal is an invalid-parameter error; ids are unique, trimmed, non-empty pieces of the
//! `ids` values, in order; a query carries a filter exactly when one was given and the limit and
//! offset that were asked for; a body is accepted only as a JSON object (or blank); an
//! accepted `expires_timestamp` is null, blank or an RFC 3339 time.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use trapline::dialects::falcon::{body_object, expires, Params};
use trapline::dialects::json_body::{opt_bool, opt_str};
use trapline::error::CoreError;

fn invalid(e: CoreError) {
    assert!(matches!(e, CoreError::InvalidParam { .. }), "{e:?}");
}

fuzz_target!(|data: &[u8]| {
    let (head, body) = trapline_fuzz::lines(data, 1);
    let pairs: Vec<(String, String)> = form_urlencoded::parse(head[0]).into_owned().collect();
    let p = Params(pairs.clone());

    let ids = p.ids();
    let pieces: Vec<&str> =
        pairs.iter().filter(|(k, _)| k == "ids").flat_map(|(_, v)| v.split(',')).map(str::trim).collect();
    let mut want: Vec<&str> = Vec::new();
    for piece in pieces {
        if !piece.is_empty() && !want.contains(&piece) {
            want.push(piece);
        }
    }
    assert_eq!(ids, want);

    let given = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str()).filter(|v| !v.trim().is_empty());
    match p.query() {
        Ok(q) => {
            assert_eq!(q.filter.is_some(), given("filter").is_some());
            assert_eq!(q.sort.as_deref(), given("sort"));
            for (k, got, default) in [("limit", q.limit, 50), ("offset", q.offset, 0)] {
                assert_eq!(got, given(k).map_or(default, |v| v.trim().parse().expect("parsed once")), "{k}");
            }
        }
        Err(e) => invalid(e),
    }

    let m = match body_object(body) {
        Ok(m) => m,
        Err(e) => return invalid(e),
    };
    let blank = body.iter().all(u8::is_ascii_whitespace);
    assert!(blank || matches!(serde_json::from_slice::<Value>(body), Ok(Value::Object(_))));
    match expires(&m) {
        Ok(None) => assert!(!m.contains_key("expires_timestamp")),
        Ok(Some(None)) => assert!(m["expires_timestamp"].as_str().is_none_or(|s| s.trim().is_empty())),
        Ok(Some(Some(us))) => {
            let text = m["expires_timestamp"].as_str().expect("a time is text");
            let parsed = chrono_free_rfc3339_shape(text.trim());
            assert!(parsed, "{text:?} accepted as {us}");
        }
        Err(e) => invalid(e),
    }
    if let Err(e) = opt_str(&m, "label") {
        invalid(e)
    }
    for k in ["revoked", "tokens_required"] {
        if let Err(e) = opt_bool(&m, k) {
            invalid(e)
        }
    }
});

/// `YYYY-MM-DDTHH:MM:SS` at the start, as every RFC 3339 time has (checked by hand, not by the
/// parser under test).
fn chrono_free_rfc3339_shape(t: &str) -> bool {
    let b = t.as_bytes();
    let digits = |r: std::ops::Range<usize>| r.clone().all(|i| b.get(i).is_some_and(u8::is_ascii_digit));
    b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && matches!(b[10], b'T' | b't' | b' ')
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
}

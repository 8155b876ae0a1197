//! Fuzz target `http_trigger`: what the trigger HTTP listener reads from a request before it
//! records a hit: the token in the request target ([`trapline::listeners::http::find_token`]
//! on the path, then the query, of the URI as hyper parses it) and the headers the hit keeps
//! ([`trapline::listeners::http::headers_json`]).
//!
//! Input: the request target on the first line, then one `name: value` header per line.
//! Invariants: the token found is exactly the first maximal run of 25 `[0-9a-z]` bytes
//! (checked against a plain split, for the URI's path and query and for the raw line as
//! text); kept headers stay within the hit's header count and byte budget, under names that
//! are the request's own, canonically cased.
#![no_main]

use axum::http::{HeaderMap, HeaderName, HeaderValue, Uri};
use libfuzzer_sys::fuzz_target;
use trapline::ids::{is_token_byte, is_token_id, TOKEN_ID_LEN};
use trapline::listeners::http::{find_token, headers_json, MAX_HEADERS, MAX_HEADER_BYTES};
use trapline_fuzz::first_run;

fn check(s: &str) -> Option<&str> {
    let got = find_token(s);
    assert_eq!(got, first_run(s, TOKEN_ID_LEN, is_token_byte), "in {s:?}");
    if let Some(t) = got {
        assert!(is_token_id(t));
        // A slice of the input itself, not a copy.
        let offset = t.as_ptr() as usize - s.as_ptr() as usize;
        assert!(offset + t.len() <= s.len());
    }
    got
}

fuzz_target!(|data: &[u8]| {
    let (first, rest) = trapline_fuzz::lines(data, 1);
    let target = first[0];
    check(&String::from_utf8_lossy(target));
    if let Ok(uri) = Uri::try_from(target) {
        // The listener's order: the path first, then the query.
        let _token = check(uri.path()).or_else(|| check(uri.query().unwrap_or("")));
    }

    let mut headers = HeaderMap::new();
    for line in rest.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        let value = line[colon + 1..].strip_prefix(b" ").unwrap_or(&line[colon + 1..]);
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(&line[..colon]), HeaderValue::from_bytes(value)) {
            headers.append(n, v);
        }
    }
    let kept = headers_json(&headers);
    assert!(kept.len() <= MAX_HEADERS, "{} headers kept", kept.len());
    let mut bytes = 0;
    for (name, value) in &kept {
        let lower = name.to_ascii_lowercase();
        assert!(headers.contains_key(lower.as_str()), "{name} was not sent");
        assert!(name.split('-').all(|p| !p.starts_with(|c: char| c.is_ascii_lowercase())), "{name} is not canonical");
        bytes += name.len() + value.as_str().expect("header values are kept as text").len();
    }
    assert!(bytes <= MAX_HEADER_BYTES, "{bytes} bytes of headers kept");
});

//! Fuzz target `console_cursor`: the Console's paging cursors, which clients send back as they
//! please ([`trapline::dialects::console::cursor::Cursor::decode`]), then what a listing does
//! with one: its page start (`token_start`, `incident_start`) and the neighbouring pages'
//! cursors and links ([`trapline::dialects::console::cursor::Neighbours`]).
//!
//! The input is tried twice: as the cursor text itself (base64url of JSON), and as the JSON
//! inside one (encoded here), so the fuzzer reaches the JSON reading without having to mutate
//! through base64. Each is decoded for every paged endpoint and for the endpoint it names.
//! Invariants: no panic; a cursor is accepted only for its own endpoint and with a page of at
//! least 1; an accepted cursor encodes to URL-safe text that decodes to the same cursor; the
//! neighbouring cursors belong to the same endpoint, keep its parameters and decode again.
#![no_main]

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use trapline::dialects::console::cursor::{Cursor, Key, Neighbours};

const ENDPOINTS: &[&str] = &[
    "canarytokens/paginate",
    "canarytokens/search",
    "incidents/all",
    "incidents/unacknowledged",
    "incidents/acknowledged",
    "incidents/search",
];

fn check(text: &str, endpoint: &str, more: bool) {
    let Ok(c) = Cursor::decode(text, endpoint) else { return };
    assert_eq!(c.endpoint, endpoint);
    assert!(c.page >= 1, "page {}", c.page);
    let again = c.encode();
    assert!(again.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{again}");
    assert_eq!(Cursor::decode(&again, endpoint).ok().as_ref(), Some(&c), "round trip");
    let token = c.token_start();
    let incident = c.incident_start();
    assert!(c.key.is_none() || token.is_ok() != incident.is_ok() || token.is_err(), "{:?}", c.key);

    // As a listing uses it: the page's own rows bound its neighbours.
    let first_last = c.key.clone().map(|k| (k.clone(), k)).or(Some((Key::Incident(1, 1), Key::Incident(2, 2))));
    let near = Neighbours::around(endpoint, &c.params, c.page, c.backwards, c.key.is_some(), more, first_last);
    for n in near.next.iter().chain(near.prev.iter()) {
        assert_eq!(n.endpoint, endpoint);
        assert_eq!(n.params, c.params);
        assert!(n.page >= 1);
        assert_eq!(Cursor::decode(&n.encode(), endpoint).ok().as_ref(), Some(n), "a neighbour decodes");
    }
    let links = near.json("http://127.0.0.1:8080", Some("auth token"));
    for k in ["next_link", "prev_link"] {
        if let Some(l) = links[k].as_str() {
            assert!(l.starts_with(&format!("http://127.0.0.1:8080/api/v1/{endpoint}?cursor=")), "{l}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let more = data.len() % 2 == 0;
    let text = String::from_utf8_lossy(data);
    let wrapped = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data);
    let named = serde_json::from_slice::<Value>(data).ok().and_then(|v| v.get("e")?.as_str().map(str::to_string));
    for t in [text.as_ref(), wrapped.as_str()] {
        for e in ENDPOINTS.iter().copied().chain(named.as_deref()) {
            check(t, e, more);
        }
    }
});

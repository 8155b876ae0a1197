//! Fuzz target `scanner_report`: the body the browser-scanner page posts back to its hit, read
//! as the trigger listener reads it (JSON, then
//! [`trapline::listeners::http::browser_details`], which keeps the known fields only).
//!
//! Invariants: whatever the body, the kept details are exactly the eight known fields; each
//! text is a prefix (cut at a character boundary) of what was sent, at most 256 bytes, or empty
//! when the field was missing or not text; each list keeps only text items, in order, at most
//! 16 (64 for plugins) of them, each cut the same way. So a report's size is bounded whatever
//! an attacker posts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use trapline::listeners::http::browser_details;

const TEXTS: &[&str] = &["language", "platform", "user_agent", "screen", "timezone"];
const LISTS: &[(&str, usize)] = &[("languages", 16), ("plugins", 64), ("webrtc_local_ips", 16)];

fn cut_of(sent: &str, kept: &str) {
    assert!(kept.len() <= 256, "{} bytes kept", kept.len());
    assert!(sent.starts_with(kept), "kept text is not a prefix of what was sent");
    assert!(kept.len() == sent.len() || sent.len() > 256, "cut although it fitted");
    assert!(kept.len() + 4 > sent.len().min(256), "cut more than one character short");
}

fuzz_target!(|body: &[u8]| {
    let Ok(sent) = serde_json::from_slice::<Value>(body) else { return };
    let kept = browser_details(&sent);
    let kept = kept.as_object().expect("details are an object");
    assert_eq!(kept.len(), TEXTS.len() + LISTS.len());
    for &k in TEXTS {
        let got = kept[k].as_str().expect("a text field");
        match sent.get(k).and_then(Value::as_str) {
            Some(s) => cut_of(s, got),
            None => assert_eq!(got, ""),
        }
    }
    for &(k, max) in LISTS {
        let got = kept[k].as_array().expect("a list field");
        let sent_texts: Vec<&str> = sent
            .get(k)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        assert_eq!(got.len(), sent_texts.len().min(max), "{k}");
        for (g, s) in got.iter().zip(sent_texts) {
            cut_of(s, g.as_str().expect("list items are text"));
        }
    }
});

//! Fuzz target `smtp_message`: one received message through
//! [`trapline::listeners::smtp::summarize`] (mail-parser, then the links and attachments
//! Trapline keeps of it).
//!
//! Input: the message as it arrived after DATA (headers and body, any bytes).
//! Invariants: no panic; the summary states the message's true size; it keeps at most the
//! documented number of links and attachments; every link it keeps starts with http:// or
//! https://, appears in the message's text as sent or decoded, and is listed once.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trapline::listeners::smtp::{summarize, MAX_ATTACHMENTS, MAX_LINKS};

fuzz_target!(|data: &[u8]| {
    let v = summarize(data);
    assert_eq!(v["size"].as_u64(), Some(data.len() as u64));
    if v.get("parsed").is_some() {
        return;
    }
    let links = v["links"].as_array().expect("links");
    assert!(links.len() <= MAX_LINKS);
    for (i, l) in links.iter().enumerate() {
        let l = l.as_str().expect("text");
        let lower = l.to_ascii_lowercase();
        assert!(lower.starts_with("http://") || lower.starts_with("https://"), "{l}");
        assert!(!links[..i].iter().any(|o| o.as_str() == Some(l)), "{l} twice");
    }
    assert!(v["attachments"].as_array().expect("attachments").len() <= MAX_ATTACHMENTS);
});

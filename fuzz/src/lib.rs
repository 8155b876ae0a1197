//! Helpers shared by the fuzz targets in `fuzz_targets/`: splitting an input into the parts a
//! target needs (header lines, then a body), running async production code to completion on
//! a small runtime that lives as long as the fuzzing process, and the checks every AWS event
//! the CloudTrail readers produce must pass.

use std::future::Future;
use std::sync::OnceLock;

use trapline::listeners::cloudtrail::event::{AwsEvent, Via, MAX_FIELD, MAX_REQUEST_PARAMETERS};

/// Splits `data` at the first `n` newlines: `n` lines (without their `\n`) and the rest.
/// Missing lines are empty, so every input maps to some split.
pub fn lines(data: &[u8], n: usize) -> (Vec<&[u8]>, &[u8]) {
    let mut out = Vec::with_capacity(n);
    let mut rest = data;
    for _ in 0..n {
        match rest.iter().position(|&b| b == b'\n') {
            Some(i) => {
                out.push(&rest[..i]);
                rest = &rest[i + 1..];
            }
            None => {
                out.push(rest);
                rest = &[];
            }
        }
    }
    (out, rest)
}

/// One current-thread runtime (with timers, as the body readers need) for the whole process.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime"))
}

/// Runs `f` to completion on [`runtime`].
pub fn block_on<F: Future>(f: F) -> F::Output {
    runtime().block_on(f)
}

/// The first maximal run of exactly `len` bytes that satisfy `is`, found the plain way: split
/// at every other byte and take the first piece of that length. The fuzz targets compare
/// production scanners against it.
pub fn first_run(s: &str, len: usize, is: impl Fn(u8) -> bool) -> Option<&str> {
    let mut start = 0;
    for (i, b) in s.bytes().chain(std::iter::once(0xff)).enumerate() {
        if i < s.len() && is(b) {
            continue;
        }
        if i - start == len {
            return Some(&s[start..i]);
        }
        start = i + 1;
    }
    None
}

/// Asserts what holds for every [`AwsEvent`] a reader hands out: it came from `via`, has an
/// event id, every text is within [`MAX_FIELD`], the request parameters within
/// [`MAX_REQUEST_PARAMETERS`] (or the truncation marker), and its hit data has the contract's
/// keys with the right JSON types.
pub fn check_aws_event(e: &AwsEvent, via: Via) {
    assert_eq!(e.via, via);
    assert!(!e.event_id.is_empty(), "an event without an id");
    let texts = [&e.event_id, &e.event_name, &e.event_source, &e.region, &e.source_ip, &e.user_agent];
    let opts = [
        &e.error_code,
        &e.error_message,
        &e.access_key_id,
        &e.user_arn,
        &e.account_id,
        &e.bucket,
        &e.object_key,
        &e.operation,
        &e.requester,
    ];
    for t in texts.into_iter().chain(opts.into_iter().flatten()) {
        assert!(t.len() <= MAX_FIELD, "{} bytes kept", t.len());
    }
    if let Some(p) = &e.request_parameters {
        let len = serde_json::to_string(p).expect("JSON").len();
        assert!(len <= MAX_REQUEST_PARAMETERS || *p == serde_json::json!({"_truncated": true}), "{len} bytes of parameters");
        assert!(!p.is_null(), "null parameters are None");
    }
    let d = e.data();
    let d = d.as_object().expect("hit data is an object");
    for k in ["event_id", "event_name", "event_source", "event_region", "source_ip_address", "user_agent", "via"] {
        assert!(d[k].is_string(), "{k}");
    }
    assert_eq!(d["event_time"].as_i64(), Some(e.event_time_us.div_euclid(1_000_000)));
    for k in ["error_code", "error_message", "access_key_id", "user_arn", "account_id"] {
        assert!(d[k].is_string() || d[k].is_null(), "{k}");
    }
    assert_eq!(d.get("request_parameters"), Some(e.request_parameters.as_ref().unwrap_or(&serde_json::Value::Null)));
    for (k, set) in [
        ("bucket", e.bucket.is_some()),
        ("object_key", e.object_key.is_some()),
        ("operation", e.operation.is_some()),
        ("requester", e.requester.is_some()),
        ("http_status", e.http_status.is_some()),
    ] {
        assert_eq!(d.contains_key(k), set, "{k}");
    }
    let ip = e.src_ip();
    assert!(ip.is_empty() || ip.parse::<std::net::IpAddr>().is_ok(), "{ip}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines() {
        assert_eq!(lines(b"a\nb\nrest\nmore", 2), (vec![&b"a"[..], &b"b"[..]], &b"rest\nmore"[..]));
        assert_eq!(lines(b"only", 2), (vec![&b"only"[..], &b""[..]], &b""[..]));
    }

    #[test]
    fn first_run_is_exact() {
        let digit = |b: u8| b.is_ascii_digit();
        assert_eq!(first_run("ab123cd45", 2, digit), Some("45"));
        assert_eq!(first_run("12", 2, digit), Some("12"));
        assert_eq!(first_run("123", 2, digit), None);
        assert_eq!(first_run("", 0, digit), Some(""));
    }
}

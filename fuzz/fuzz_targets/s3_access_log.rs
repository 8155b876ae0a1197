//! Fuzz target `s3_access_log`: an S3 server access log object as the poller reads it from the
//! log bucket, through [`trapline::listeners::cloudtrail::access_log::for_each_line`], and each
//! line alone through [`trapline::listeners::cloudtrail::access_log::parse_line`].
//!
//! Input: the log object (any bytes; lines are split at `\n` and read as lossy UTF-8).
//! Invariants: no panic; every line with text is either an event or counted as skipped, blank
//! ones are neither; the whole-object reader gives the events of the lines read alone, in
//! order; every event passes [`trapline_fuzz::check_aws_event`], is an S3 event with its
//! operation as its name, names no access key and keeps its request parameters as an object.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trapline::listeners::cloudtrail::access_log::{for_each_line, parse_line};
use trapline::listeners::cloudtrail::event::Via;

fuzz_target!(|data: &[u8]| {
    let mut events = Vec::new();
    let stats = for_each_line(data, |e| events.push(e));
    assert_eq!(stats.records, events.len() as u64);
    let mut alone = Vec::new();
    let mut texts = 0u64;
    for raw in data.split(|&b| b == b'\n') {
        let line = String::from_utf8_lossy(raw);
        if line.trim().is_empty() {
            continue;
        }
        texts += 1;
        alone.extend(parse_line(&line).ok());
    }
    assert_eq!(stats.records + stats.skipped, texts);
    assert_eq!(events, alone);
    for e in &events {
        trapline_fuzz::check_aws_event(e, Via::S3AccessLog);
        assert_eq!(e.event_source, "s3.amazonaws.com");
        assert_eq!(e.operation.as_deref(), Some(e.event_name.as_str()));
        assert!(e.access_key_id.is_none());
        assert!(e.request_parameters.as_ref().is_some_and(|p| p.is_object()));
        assert!(e.http_status.is_none_or(|s| (100..=999).contains(&s)));
    }
});

//! Fuzz target `cloudtrail_file`: a CloudTrail log file as the poller reads it from S3,
//! through [`trapline::listeners::cloudtrail::records::for_each_record`] (gunzip under a cap,
//! then the streaming `{"Records": [...]}` reader).
//!
//! Input: one mode byte, then the data. Mode bit 0 clear: the data is the object itself (so the
//! gzip reader meets arbitrary bytes); set: the data is the JSON inside, gzipped here (so the
//! fuzzer reaches the JSON reader without mutating through deflate). Mode bit 1 set: the cap on
//! decompressed bytes is half the JSON's length, so the gzip-bomb guard is exercised.
//! Invariants: no panic; data not starting with the gzip magic is refused as not gzip; valid
//! gzip never fails as bad gzip; the cap is exact (over it never succeeds, at or above it never
//! reports too large); every event handed out passes [`trapline_fuzz::check_aws_event`] and
//! the count matches the stats; whatever serde_json reads as `{"Records": [...]}` is read, with
//! at least that list's items counted as records or skipped.
#![no_main]

use std::io::Write;

use flate2::write::GzEncoder;
use flate2::Compression;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use trapline::listeners::cloudtrail::event::{FormatError, Via};
use trapline::listeners::cloudtrail::records::for_each_record;

const CAP: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, data)) = data.split_first() else { return };
    if mode & 1 == 0 {
        let got = read(data, CAP);
        if !data.starts_with(&[0x1f, 0x8b]) {
            assert_eq!(got, Err(FormatError::NotGzip));
        }
        return;
    }
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    enc.write_all(data).expect("gzip to memory");
    let gz = enc.finish().expect("gzip to memory");
    let cap = if mode & 2 == 0 { CAP } else { data.len() as u64 / 2 };
    let got = read(&gz, cap);
    assert!(!matches!(got, Err(FormatError::NotGzip | FormatError::Gzip(_))), "valid gzip refused: {got:?}");
    if (data.len() as u64) > cap {
        assert!(got.is_err(), "read {} bytes under a cap of {cap}", data.len());
    } else {
        assert_ne!(got, Err(FormatError::TooLarge(cap)));
        if let Ok(Value::Object(top)) = serde_json::from_slice::<Value>(data) {
            if let Some(Value::Array(records)) = top.get("Records") {
                let (records_read, skipped) = got.expect("a file serde_json reads as {\"Records\": [...]}");
                assert!(records_read + skipped >= records.len() as u64);
            }
        }
    }
});

/// The result as (records, skipped), checking every event and the count on the way.
fn read(gz: &[u8], cap: u64) -> Result<(u64, u64), FormatError> {
    let mut n = 0u64;
    let stats = for_each_record(gz, cap, |e| {
        trapline_fuzz::check_aws_event(&e, Via::CloudTrail);
        assert!(e.operation.is_none() && e.requester.is_none() && e.http_status.is_none());
        n += 1;
    })?;
    assert_eq!(stats.records, n);
    assert_eq!(stats.first_skip.is_some(), stats.skipped > 0);
    Ok((stats.records, stats.skipped))
}

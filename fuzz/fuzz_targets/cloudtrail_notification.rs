//! Fuzz target `cloudtrail_notification`: an SQS message body as the CloudTrail poller reads
//! it, through [`trapline::listeners::cloudtrail::notify::parse_notification`] (the SNS
//! envelope, CloudTrail's `{"s3Bucket", "s3ObjectKey"}`, S3 event notifications and test
//! events), and [`trapline::listeners::cloudtrail::notify::decode_key`].
//!
//! Input: the message body (bodies that are not UTF-8 are passed over; SQS only carries text).
//! Invariants: no panic; at most `MAX_KEYS` objects, each with a bucket and a key; a CloudTrail
//! message's keys are exactly its `s3ObjectKey` items; a message that is not itself an SNS
//! envelope reads the same wrapped in one; decoding a form-encoded key gives the key back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use trapline::listeners::cloudtrail::notify::{decode_key, parse_notification, Notification, MAX_KEYS};

fuzz_target!(|data: &[u8]| {
    let Ok(body) = std::str::from_utf8(data) else { return };
    let got = parse_notification(body);
    if let Ok(Notification::Objects(objects)) = &got {
        assert!(objects.len() <= MAX_KEYS);
        assert!(objects.iter().all(|(b, k)| !b.is_empty() && !k.is_empty()));
    }
    if let Ok(ref v @ Value::Object(ref m)) = serde_json::from_str::<Value>(body) {
        if !m.contains_key("Type") {
            let wrapped = json!({"Type": "Notification", "MessageId": "m", "Message": v.to_string()}).to_string();
            assert_eq!(parse_notification(&wrapped), got, "raw and SNS-wrapped differ");
        }
        if let (Some(bucket), Some(Value::Array(keys)), Ok(Notification::Objects(objects))) =
            (m.get("s3Bucket").and_then(Value::as_str), m.get("s3ObjectKey"), &got)
        {
            let want: Vec<(String, String)> =
                keys.iter().map(|k| (bucket.to_string(), k.as_str().expect("key text").to_string())).collect();
            assert_eq!(objects, &want);
        }
    }
    let encoded: String = form_urlencoded::byte_serialize(body.as_bytes()).collect();
    assert_eq!(decode_key(&encoded).as_deref(), Ok(body));
    if let Ok(d) = decode_key(body) {
        assert!(d.len() <= body.len());
    }
});

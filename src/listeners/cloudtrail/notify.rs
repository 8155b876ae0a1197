//! What an SQS message about new CloudTrail log files says to read: the bucket and keys of
//! a CloudTrail SNS message (`{"s3Bucket": …, "s3ObjectKey": […]}`) or of an S3 event
//! notification (`{"Records": [{"eventSource": "aws:s3", …}]}`, keys URL-encoded), either
//! raw or inside the SNS envelope (`{"Type": "Notification", "Message": "<that JSON>"}`) that
//! SNS-to-SQS delivery adds unless raw delivery is on. S3's first `s3:TestEvent` and SNS's
//! subscription messages say nothing to read.
//!
//! The keys are not checked here: an S3 notification for the whole bucket names digest files
//! too, so the caller keeps the keys [`super::objects::parse_log_key`] accepts.

use serde_json::Value;

use super::event::FormatError;

/// Most objects one message may name (CloudTrail names one or a few).
pub const MAX_KEYS: usize = 1000;

/// What a message asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notification {
    /// `(bucket, key)` of each new object, keys decoded, in message order.
    Objects(Vec<(String, String)>),
    /// Nothing to read, and why (for the log).
    Ignore(String),
}

fn bad(why: impl Into<String>) -> FormatError {
    FormatError::Notification(why.into())
}

/// Reads one SQS message body.
pub fn parse_notification(body: &str) -> Result<Notification, FormatError> {
    let v: Value = serde_json::from_str(body).map_err(|e| FormatError::Json(e.to_string()))?;
    let Some(kind) = v.get("Type") else { return parse_message(&v) };
    match kind.as_str() {
        Some("Notification") => {
            let message = v.get("Message").and_then(Value::as_str).ok_or_else(|| bad("SNS envelope without a Message text"))?;
            let inner: Value = serde_json::from_str(message)
                .map_err(|e| bad(format!("the SNS Message is not JSON ({e}); is the SNS topic the trail's?")))?;
            if inner.get("Type").is_some() {
                return Err(bad("an SNS envelope inside an SNS envelope"));
            }
            parse_message(&inner)
        }
        Some("SubscriptionConfirmation") => Ok(Notification::Ignore(
            "SNS SubscriptionConfirmation: confirm the queue's subscription in SNS (Trapline does not follow SubscribeURL)"
                .into(),
        )),
        Some("UnsubscribeConfirmation") => Ok(Notification::Ignore("SNS UnsubscribeConfirmation".into())),
        Some(other) => Err(bad(format!("SNS message of Type {:?}", cut(other)))),
        None => Err(bad("SNS Type is not text")),
    }
}

/// A message without the SNS envelope.
fn parse_message(v: &Value) -> Result<Notification, FormatError> {
    if !v.is_object() {
        return Err(bad("the message is not a JSON object"));
    }
    if let Some(event) = v.get("Event") {
        return match event.as_str() {
            Some("s3:TestEvent") => Ok(Notification::Ignore("S3 test event".into())),
            _ => Err(bad("an S3 \"Event\" that is not s3:TestEvent")),
        };
    }
    if let Some(bucket) = v.get("s3Bucket") {
        return cloudtrail_message(bucket, v.get("s3ObjectKey"));
    }
    if let Some(records) = v.get("Records") {
        return s3_event(records);
    }
    Err(bad("neither s3Bucket/s3ObjectKey (CloudTrail) nor Records (S3 event notification)"))
}

/// CloudTrail's own SNS message: keys as they are (not encoded).
fn cloudtrail_message(bucket: &Value, keys: Option<&Value>) -> Result<Notification, FormatError> {
    let bucket = bucket.as_str().filter(|b| !b.is_empty()).ok_or_else(|| bad("s3Bucket is not a bucket name"))?;
    let keys = keys.and_then(Value::as_array).ok_or_else(|| bad("s3ObjectKey is not a list"))?;
    if keys.len() > MAX_KEYS {
        return Err(FormatError::TooManyKeys(keys.len()));
    }
    let mut out = Vec::with_capacity(keys.len());
    for k in keys {
        let k = k.as_str().filter(|k| !k.is_empty()).ok_or_else(|| bad("an s3ObjectKey item is not a key"))?;
        out.push((bucket.to_string(), k.to_string()));
    }
    Ok(Notification::Objects(out))
}

/// An S3 event notification: the ObjectCreated records' objects (other events, such as
/// removals, are passed over).
fn s3_event(records: &Value) -> Result<Notification, FormatError> {
    let records = records.as_array().ok_or_else(|| bad("Records is not a list"))?;
    if records.len() > MAX_KEYS {
        return Err(FormatError::TooManyKeys(records.len()));
    }
    let mut out = Vec::new();
    let mut other = 0usize;
    for r in records {
        if r.get("eventSource").and_then(Value::as_str) != Some("aws:s3") {
            return Err(bad("a record whose eventSource is not aws:s3"));
        }
        let name = r.get("eventName").and_then(Value::as_str).ok_or_else(|| bad("a record without an eventName"))?;
        if !name.starts_with("ObjectCreated:") {
            other += 1;
            continue;
        }
        let s3 = r.get("s3");
        let bucket = s3
            .and_then(|s| s.get("bucket"))
            .and_then(|b| b.get("name"))
            .and_then(Value::as_str)
            .filter(|b| !b.is_empty())
            .ok_or_else(|| bad("a record without s3.bucket.name"))?;
        let key = s3
            .and_then(|s| s.get("object"))
            .and_then(|o| o.get("key"))
            .and_then(Value::as_str)
            .ok_or_else(|| bad("a record without s3.object.key"))?;
        let key = decode_key(key)?;
        if key.is_empty() {
            return Err(bad("a record with an empty s3.object.key"));
        }
        out.push((bucket.to_string(), key));
    }
    if out.is_empty() {
        return Ok(Notification::Ignore(format!("S3 event notification of {other} events, none ObjectCreated")));
    }
    Ok(Notification::Objects(out))
}

/// An S3 event notification's key: form-encoded, `+` for a space and `%XX` for other bytes.
pub fn decode_key(encoded: &str) -> Result<String, FormatError> {
    let spaced = encoded.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .map(|k| k.into_owned())
        .map_err(|_| FormatError::BadKey(cut(encoded).to_string()))
}

/// A piece of hostile text short enough for an error message.
fn cut(s: &str) -> &str {
    let mut end = s.len().min(64);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const KEY: &str = "AWSLogs/123456789012/CloudTrail/us-east-1/2024/03/05/\
                       123456789012_CloudTrail_us-east-1_20240305T1015Z_aB3dE5fG7hI9jK1l.json.gz";

    fn objects(pairs: &[(&str, &str)]) -> Notification {
        Notification::Objects(pairs.iter().map(|(b, k)| (b.to_string(), k.to_string())).collect())
    }

    fn sns(message: &Value) -> String {
        json!({"Type": "Notification", "MessageId": "5f8e4c1a-0000-4000-8000-000000000001",
               "TopicArn": "arn:aws:sns:us-east-1:123456789012:trail-topic", "Message": message.to_string(),
               "Timestamp": "2024-03-05T10:16:01.123Z", "SignatureVersion": "1", "Signature": "c2ln",
               "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-x.pem",
               "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe"})
        .to_string()
    }

    #[test]
    fn reads_cloudtrail_messages_raw_and_in_sns() {
        let m = json!({"s3Bucket": "trail-bucket", "s3ObjectKey": [KEY, "AWSLogs/x y+z.json.gz"]});
        let want = objects(&[("trail-bucket", KEY), ("trail-bucket", "AWSLogs/x y+z.json.gz")]);
        assert_eq!(parse_notification(&m.to_string()), Ok(want.clone()));
        assert_eq!(parse_notification(&sns(&m)), Ok(want));
        let empty = json!({"s3Bucket": "b", "s3ObjectKey": []});
        assert_eq!(parse_notification(&empty.to_string()), Ok(Notification::Objects(vec![])));
    }

    #[test]
    fn reads_s3_event_notifications() {
        let m = json!({"Records": [{
            "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
            "eventTime": "2024-03-05T10:16:00.000Z", "eventName": "ObjectCreated:Put",
            "s3": {"s3SchemaVersion": "1.0", "configurationId": "trail",
                   "bucket": {"name": "trail-bucket", "arn": "arn:aws:s3:::trail-bucket"},
                   "object": {"key": "AWSLogs/a+b%2Bc/%C3%BCber%20x.json.gz", "size": 1024, "sequencer": "0055AED6DCD90281E5"}}
        }, {
            "eventSource": "aws:s3", "eventName": "ObjectRemoved:Delete",
            "s3": {"bucket": {"name": "trail-bucket"}, "object": {"key": "old"}}
        }, {
            "eventSource": "aws:s3", "eventName": "ObjectCreated:CompleteMultipartUpload",
            "s3": {"bucket": {"name": "other"}, "object": {"key": "k"}}
        }]});
        let want = objects(&[("trail-bucket", "AWSLogs/a b+c/über x.json.gz"), ("other", "k")]);
        assert_eq!(parse_notification(&m.to_string()), Ok(want.clone()));
        assert_eq!(parse_notification(&sns(&m)), Ok(want));
        let removed = json!({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectRemoved:Delete",
                                          "s3": {"bucket": {"name": "b"}, "object": {"key": "k"}}}]});
        assert!(matches!(parse_notification(&removed.to_string()), Ok(Notification::Ignore(_))));
    }

    #[test]
    fn ignores_test_events_and_subscriptions() {
        let test = json!({"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2024-03-05T10:00:00.000Z",
                          "Bucket": "trail-bucket", "RequestId": "5582815E1AEA5ADF", "HostId": "8cLeGAmw"});
        assert_eq!(parse_notification(&test.to_string()), Ok(Notification::Ignore("S3 test event".into())));
        assert_eq!(parse_notification(&sns(&test)), Ok(Notification::Ignore("S3 test event".into())));
        let confirm = json!({"Type": "SubscriptionConfirmation", "MessageId": "m", "Token": "2336412f37",
                             "TopicArn": "arn:aws:sns:us-east-1:123456789012:t", "Message": "You have chosen to subscribe",
                             "SubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&Token=2336412f37"});
        match parse_notification(&confirm.to_string()) {
            Ok(Notification::Ignore(why)) => {
                assert!(why.contains("SubscriptionConfirmation"));
                assert!(!why.contains("2336412f37"), "the subscription token is not repeated");
            }
            other => panic!("{other:?}"),
        }
        let unsub = json!({"Type": "UnsubscribeConfirmation", "Message": "x"});
        assert!(matches!(parse_notification(&unsub.to_string()), Ok(Notification::Ignore(_))));
    }

    #[test]
    fn refuses_other_messages() {
        let many: Vec<String> = (0..=MAX_KEYS).map(|i| format!("k{i}")).collect();
        assert_eq!(
            parse_notification(&json!({"s3Bucket": "b", "s3ObjectKey": many}).to_string()),
            Err(FormatError::TooManyKeys(MAX_KEYS + 1))
        );
        let fine: Vec<String> = (0..MAX_KEYS).map(|i| format!("k{i}")).collect();
        assert!(parse_notification(&json!({"s3Bucket": "b", "s3ObjectKey": fine}).to_string()).is_ok());
        let bad_key = json!({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                                          "s3": {"bucket": {"name": "b"}, "object": {"key": "a%FFb"}}}]});
        assert_eq!(parse_notification(&bad_key.to_string()), Err(FormatError::BadKey("a%FFb".into())));
        assert!(matches!(parse_notification("not json"), Err(FormatError::Json(_))));
        for body in [
            json!([1]),
            json!("text"),
            json!({}),
            json!({"s3Bucket": 5, "s3ObjectKey": ["k"]}),
            json!({"s3Bucket": "", "s3ObjectKey": ["k"]}),
            json!({"s3Bucket": "b", "s3ObjectKey": "k"}),
            json!({"s3Bucket": "b", "s3ObjectKey": ["k", 7]}),
            json!({"s3Bucket": "b", "s3ObjectKey": [""]}),
            json!({"Records": {}}),
            json!({"Records": [{"eventSource": "aws:sqs", "eventName": "ObjectCreated:Put"}]}),
            json!({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "s3": {"bucket": {}}}]}),
            json!({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                                "s3": {"bucket": {"name": "b"}, "object": {"key": ""}}}]}),
            json!({"Event": "s3:ObjectCreated:Put"}),
            json!({"Type": "Notification", "Message": "not json"}),
            json!({"Type": "Notification", "Message": {"s3Bucket": "b"}}),
            json!({"Type": "Notification"}),
            json!({"Type": "Notification", "Message": sns(&json!({"s3Bucket": "b", "s3ObjectKey": ["k"]}))}),
            json!({"Type": "Something"}),
            json!({"Type": 1}),
        ] {
            assert!(matches!(parse_notification(&body.to_string()), Err(FormatError::Notification(_))), "{body}");
        }
    }

    #[test]
    fn decodes_keys_like_s3() {
        assert_eq!(decode_key("a+b%2B%20c%2F%E6%97%A5").unwrap(), "a b+ c/日");
        assert_eq!(decode_key("plain/key.json.gz").unwrap(), "plain/key.json.gz");
        assert_eq!(decode_key("100%").unwrap(), "100%", "a stray % stays as it is");
        assert!(decode_key("%C3").is_err());
    }
}

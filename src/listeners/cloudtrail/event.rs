//! [`AwsEvent`]: one use of an AWS honeytoken, normalized from whichever source reported it
//! (a CloudTrail record, an S3 server access log line, or the access key's last-used time),
//! and the hit data it becomes (the key names of the `aws` hit channel). Also what the format
//! readers share: [`FormatError`], [`FileStats`], and the bounds every event is cut to.

use std::net::IpAddr;

use serde_json::{json, Map, Value};

/// Longest text an event keeps in any field, in bytes (cut at a character boundary).
pub const MAX_FIELD: usize = 2048;
/// Largest `request_parameters` kept, as compact JSON in bytes; larger ones become
/// `{"_truncated": true}`.
pub const MAX_REQUEST_PARAMETERS: usize = 8 * 1024;

/// Which source reported an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// A record of a CloudTrail log file.
    CloudTrail,
    /// A line of an S3 server access log.
    S3AccessLog,
    /// A new `GetAccessKeyLastUsed` time with no CloudTrail record to explain it.
    LastUsed,
}

impl Via {
    /// Its name in hit data: `cloudtrail`, `s3-access-log`, `last-used`.
    pub fn as_str(self) -> &'static str {
        match self {
            Via::CloudTrail => "cloudtrail",
            Via::S3AccessLog => "s3-access-log",
            Via::LastUsed => "last-used",
        }
    }
}

/// One AWS event, as both sources produce it. Texts are at most [`MAX_FIELD`] bytes and
/// `request_parameters` at most [`MAX_REQUEST_PARAMETERS`] once [`AwsEvent::bounded`] ran
/// (the readers in this module always run it).
#[derive(Debug, Clone, PartialEq)]
pub struct AwsEvent {
    /// CloudTrail `eventID` (the key to dedupe on), or the S3 request id.
    pub event_id: String,
    /// When it happened, in microseconds since the epoch.
    pub event_time_us: i64,
    /// CloudTrail `eventName` (`GetCallerIdentity`), or the S3 operation (`REST.GET.OBJECT`).
    pub event_name: String,
    /// `sts.amazonaws.com`, `s3.amazonaws.com`, …
    pub event_source: String,
    /// The AWS region, empty when unknown.
    pub region: String,
    /// As the source wrote it: an address, or a service name (`s3.amazonaws.com`) for calls
    /// AWS made on the caller's behalf. [`AwsEvent::src_ip`] is the address only.
    pub source_ip: String,
    pub user_agent: String,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub request_parameters: Option<Value>,
    pub access_key_id: Option<String>,
    pub user_arn: Option<String>,
    pub account_id: Option<String>,
    /// S3 only: the bucket and object the request was about.
    pub bucket: Option<String>,
    pub object_key: Option<String>,
    /// S3 access log only: the operation, the requester (canonical user id or ARN), the
    /// HTTP status of the answer.
    pub operation: Option<String>,
    pub requester: Option<String>,
    pub http_status: Option<u16>,
    pub via: Via,
}

impl AwsEvent {
    /// The hit data (channel `aws`): `event_id`, `event_name`, `event_source`, `event_time`
    /// (epoch seconds), `event_region`, `source_ip_address`, `user_agent`, `error_code`,
    /// `error_message`, `request_parameters`, `access_key_id`, `user_arn`, `account_id` and
    /// `via`, always (null when unknown); `bucket`, `object_key`, `operation`, `requester`,
    /// `http_status` only when set.
    pub fn data(&self) -> Value {
        let text = |s: &Option<String>| s.as_deref().map_or(Value::Null, Value::from);
        let mut m = Map::new();
        let mut put = |k: &str, v: Value| {
            m.insert(k.to_string(), v);
        };
        put("event_id", self.event_id.as_str().into());
        put("event_name", self.event_name.as_str().into());
        put("event_source", self.event_source.as_str().into());
        put("event_time", self.event_time_us.div_euclid(1_000_000).into());
        put("event_region", self.region.as_str().into());
        put("source_ip_address", self.source_ip.as_str().into());
        put("user_agent", self.user_agent.as_str().into());
        put("error_code", text(&self.error_code));
        put("error_message", text(&self.error_message));
        put("request_parameters", self.request_parameters.clone().unwrap_or(Value::Null));
        put("access_key_id", text(&self.access_key_id));
        put("user_arn", text(&self.user_arn));
        put("account_id", text(&self.account_id));
        put("via", self.via.as_str().into());
        let s3 = [
            ("bucket", self.bucket.as_deref().map(Value::from)),
            ("object_key", self.object_key.as_deref().map(Value::from)),
            ("operation", self.operation.as_deref().map(Value::from)),
            ("requester", self.requester.as_deref().map(Value::from)),
            ("http_status", self.http_status.map(Value::from)),
        ];
        for (k, v) in s3 {
            if let Some(v) = v {
                put(k, v);
            }
        }
        Value::Object(m)
    }

    /// The source address in canonical form if `source_ip` is one, else "" (AWS-internal
    /// calls name a service there; [`AwsEvent::data`] keeps the text either way).
    pub fn src_ip(&self) -> String {
        self.source_ip.trim().parse::<IpAddr>().map(|ip| ip.to_string()).unwrap_or_default()
    }

    /// The event with every text cut to [`MAX_FIELD`] bytes and `request_parameters`
    /// replaced by `{"_truncated": true}` when its JSON is longer than
    /// [`MAX_REQUEST_PARAMETERS`].
    pub fn bounded(mut self) -> AwsEvent {
        for s in [
            &mut self.event_id,
            &mut self.event_name,
            &mut self.event_source,
            &mut self.region,
            &mut self.source_ip,
            &mut self.user_agent,
        ] {
            cut(s, MAX_FIELD);
        }
        for s in [
            &mut self.error_code,
            &mut self.error_message,
            &mut self.access_key_id,
            &mut self.user_arn,
            &mut self.account_id,
            &mut self.bucket,
            &mut self.object_key,
            &mut self.operation,
            &mut self.requester,
        ]
        .into_iter()
        .flatten()
        {
            cut(s, MAX_FIELD);
        }
        if let Some(p) = &self.request_parameters {
            if json_len(p) > MAX_REQUEST_PARAMETERS {
                self.request_parameters = Some(json!({"_truncated": true}));
            }
        }
        self
    }
}

/// `s` cut to at most `max` bytes, at a character boundary.
pub(crate) fn cut(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

/// Length of `v` as compact JSON, counted without building the text.
fn json_len(v: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    // Writing a Value to a sink that never fails cannot fail either.
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

/// What reading one whole file gave, besides the events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileStats {
    /// Events handed to the callback.
    pub records: u64,
    /// Records or lines that were not events (no eventID, a bad line), skipped.
    pub skipped: u64,
    /// Why the first skipped one was skipped, for the log.
    pub first_skip: Option<String>,
}

impl FileStats {
    pub(crate) fn skip(&mut self, why: impl FnOnce() -> String) {
        self.skipped += 1;
        if self.first_skip.is_none() {
            self.first_skip = Some(why());
        }
    }
}

/// Why a log file, notification or log line could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("not gzip data (CloudTrail log files are .json.gz)")]
    NotGzip,
    #[error("bad gzip data: {0}")]
    Gzip(String),
    #[error("decompresses to more than {0} bytes")]
    TooLarge(u64),
    #[error("bad JSON: {0}")]
    Json(String),
    #[error("not a CloudTrail log file: {0}")]
    NotCloudTrail(&'static str),
    #[error("not a CloudTrail or S3 notification: {0}")]
    Notification(String),
    #[error("notification names {0} objects, more than the {max} read from one message", max = crate::listeners::cloudtrail::notify::MAX_KEYS)]
    TooManyKeys(usize),
    #[error("object key is not URL-encoded UTF-8: {0:?}")]
    BadKey(String),
    #[error("bad S3 access log line: {0}")]
    AccessLog(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> AwsEvent {
        AwsEvent {
            event_id: "e1".into(),
            event_time_us: 1_700_000_000_999_999,
            event_name: "GetCallerIdentity".into(),
            event_source: "sts.amazonaws.com".into(),
            region: "us-east-1".into(),
            source_ip: "203.0.113.7".into(),
            user_agent: "aws-cli/1.46.3".into(),
            error_code: None,
            error_message: None,
            request_parameters: None,
            access_key_id: Some("AKIAEXAMPLE".into()),
            user_arn: Some("arn:aws:iam::123456789012:user/svc".into()),
            account_id: Some("123456789012".into()),
            bucket: None,
            object_key: None,
            operation: None,
            requester: None,
            http_status: None,
            via: Via::CloudTrail,
        }
    }

    #[test]
    fn data_has_the_contract_keys() {
        let d = event().data();
        let keys: Vec<&str> = d.as_object().unwrap().keys().map(String::as_str).collect();
        let mut want = vec![
            "event_id",
            "event_name",
            "event_source",
            "event_time",
            "event_region",
            "source_ip_address",
            "user_agent",
            "error_code",
            "error_message",
            "request_parameters",
            "access_key_id",
            "user_arn",
            "account_id",
            "via",
        ];
        want.sort();
        let mut keys = keys;
        keys.sort();
        assert_eq!(keys, want);
        assert_eq!(d["event_time"], json!(1_700_000_000));
        assert_eq!(d["request_parameters"], Value::Null);
        assert_eq!(d["error_code"], Value::Null);
        assert_eq!(d["via"], "cloudtrail");
        assert_eq!(d["event_region"], "us-east-1");
    }

    #[test]
    fn data_adds_s3_keys_when_set() {
        let mut e = event();
        e.via = Via::S3AccessLog;
        e.bucket = Some("b".into());
        e.object_key = Some("k 1".into());
        e.http_status = Some(403);
        e.request_parameters = Some(json!({"x": 1}));
        let d = e.data();
        assert_eq!(d["bucket"], "b");
        assert_eq!(d["object_key"], "k 1");
        assert_eq!(d["http_status"], 403);
        assert_eq!(d["via"], "s3-access-log");
        assert_eq!(d["request_parameters"], json!({"x": 1}));
        assert!(d.get("operation").is_none() && d.get("requester").is_none());
    }

    #[test]
    fn event_time_before_1970_rounds_down() {
        let mut e = event();
        e.event_time_us = -1;
        assert_eq!(e.data()["event_time"], -1);
    }

    #[test]
    fn src_ip_is_an_address_or_empty() {
        let mut e = event();
        assert_eq!(e.src_ip(), "203.0.113.7");
        e.source_ip = "s3.amazonaws.com".into();
        assert_eq!(e.src_ip(), "");
        assert_eq!(e.data()["source_ip_address"], "s3.amazonaws.com");
        e.source_ip = "2001:DB8:0::1".into();
        assert_eq!(e.src_ip(), "2001:db8::1");
    }

    #[test]
    fn bounded_cuts_texts_and_parameters() {
        let mut e = event();
        e.user_agent = "é".repeat(2000);
        e.object_key = Some("k".repeat(5000));
        e.request_parameters = Some(json!({"policy": "x".repeat(MAX_REQUEST_PARAMETERS)}));
        let e = e.bounded();
        assert_eq!(e.user_agent.len(), 2048);
        assert!(e.user_agent.chars().all(|c| c == 'é'));
        assert_eq!(e.object_key.as_deref().map(str::len), Some(2048));
        assert_eq!(e.request_parameters, Some(json!({"_truncated": true})));

        let mut small = event();
        small.request_parameters = Some(json!({"bucketName": "b"}));
        assert_eq!(small.clone().bounded(), small);
    }

    #[test]
    fn json_len_counts_compact_json() {
        let v = json!({"a": [1, "é"], "b": null});
        assert_eq!(json_len(&v), serde_json::to_string(&v).unwrap().len());
    }
}

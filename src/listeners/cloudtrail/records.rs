//! Reader of CloudTrail log files (`….json.gz` holding `{"Records":[…]}`): gunzips and
//! parses them as a stream, one record at a time, and hands each record that is an event to
//! a callback as an [`AwsEvent`].
//!
//! Written by hand over serde's visitor API rather than `serde_json::from_slice::<Log>`
//! because a busy account's file holds tens of thousands of records: deserializing the
//! whole file would hold it all in memory (several times its size as [`Value`]s), and one
//! odd record (a number where a text belongs) would fail the whole file. Here only the
//! fields an event needs are kept ([`IgnoredAny`] skips the rest, `responseElements` and
//! all), a record that is not an event is counted and skipped, and decompression stops at a
//! hard cap so a gzip bomb costs at most that many bytes of inflating.

use std::cell::Cell;
use std::fmt;
use std::io::{self, BufReader, Read};

use flate2::bufread::MultiGzDecoder;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::event::{AwsEvent, FileStats, FormatError, Via};

/// A cap on a log file's decompressed size that real files stay far below (CloudTrail
/// delivers every few minutes; a file of 10,000 records is some 20 MB).
pub const DEFAULT_MAX_DECOMPRESSED: u64 = 512 * 1024 * 1024;

/// Reads one CloudTrail log file (`gz`: the object's bytes, gzip, possibly several members)
/// and calls `f` with each record that is an event, in file order. Records that are not an
/// object, or lack a text `eventID` or an RFC 3339 `eventTime`, are skipped and counted.
///
/// Errors: not gzip, bad or truncated gzip, more than `max_decompressed` bytes inside, bad
/// JSON, or JSON that is not `{"Records": [...]}`. Events handed to `f` before an error are
/// real records of the file (dedupe on `event_id` when the file is read again).
pub fn for_each_record(
    gz: &[u8],
    max_decompressed: u64,
    mut f: impl FnMut(AwsEvent),
) -> Result<FileStats, FormatError> {
    if !gz.starts_with(&[0x1f, 0x8b]) {
        return Err(FormatError::NotGzip);
    }
    let mut capped = Capped { inner: MultiGzDecoder::new(gz), left: max_decompressed, over: false };
    let shape = Cell::new(None);
    let mut stats = FileStats::default();
    let result = {
        let mut de = serde_json::Deserializer::from_reader(BufReader::with_capacity(64 * 1024, &mut capped));
        let top = TopLevel { shape: &shape, stats: &mut stats, f: &mut f };
        de.deserialize_any(top).and_then(|()| de.end())
    };
    match result {
        Ok(()) => Ok(stats),
        Err(_) if capped.over => Err(FormatError::TooLarge(max_decompressed)),
        Err(_) if shape.get().is_some() => Err(FormatError::NotCloudTrail(shape.get().unwrap_or_default())),
        Err(e) if e.is_io() => Err(FormatError::Gzip(e.to_string())),
        Err(e) => Err(FormatError::Json(e.to_string())),
    }
}

/// A reader that fails once more than `left` bytes came through it.
struct Capped<R> {
    inner: R,
    left: u64,
    over: bool,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            // At the cap: fine if the stream ends here, over it if one more byte comes.
            let mut one = [0u8; 1];
            return match self.inner.read(&mut one)? {
                0 => Ok(0),
                _ => {
                    self.over = true;
                    Err(io::Error::other("decompressed size over the cap"))
                }
            };
        }
        let want = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// What the top level and the records list are when they are not the expected shape.
type Shape = Cell<Option<&'static str>>;

fn wrong_shape<E: de::Error>(shape: &Shape, what: &'static str) -> Result<(), E> {
    shape.set(Some(what));
    Err(E::custom(what))
}

/// Visitor methods for every JSON value but one, each failing with the shape error `$what`.
macro_rules! refuse_other_values {
    ($what:expr; $($method:ident($($arg:ty)?)),*) => {
        $(fn $method<E: de::Error>(self $(, _: $arg)?) -> Result<(), E> {
            wrong_shape(self.shape, $what)
        })*
    };
}

/// The whole file: an object whose `Records` list is read record by record.
struct TopLevel<'a, F> {
    shape: &'a Shape,
    stats: &'a mut FileStats,
    f: &'a mut F,
}

const NOT_AN_OBJECT: &str = "the file is not a JSON object";
const NO_RECORDS: &str = "the file has no \"Records\" list";
const RECORDS_NOT_A_LIST: &str = "\"Records\" is not a list";

impl<'de, F: FnMut(AwsEvent)> Visitor<'de> for TopLevel<'_, F> {
    type Value = ();

    fn expecting(&self, out: &mut fmt::Formatter) -> fmt::Result {
        out.write_str("a CloudTrail log file, {\"Records\": [...]}")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = false;
        while let Some(key) = map.next_key::<TopKey>()? {
            match key {
                TopKey::Records => {
                    seen = true;
                    map.next_value_seed(RecordList { shape: self.shape, stats: &mut *self.stats, f: &mut *self.f })?;
                }
                TopKey::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if seen {
            Ok(())
        } else {
            wrong_shape(self.shape, NO_RECORDS)
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        wrong_shape(self.shape, NOT_AN_OBJECT)
    }

    refuse_other_values!(NOT_AN_OBJECT; visit_bool(bool), visit_i64(i64), visit_u64(u64), visit_f64(f64),
        visit_str(&str), visit_unit());
}

/// A top-level key: `Records`, or one that is ignored.
enum TopKey {
    Records,
    Other,
}

impl<'de> de::Deserialize<'de> for TopKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<TopKey, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = TopKey;
            fn expecting(&self, out: &mut fmt::Formatter) -> fmt::Result {
                out.write_str("a key")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<TopKey, E> {
                Ok(if s == "Records" { TopKey::Records } else { TopKey::Other })
            }
        }
        d.deserialize_str(V)
    }
}

/// The value of `Records`: a list, each item read as a [`RecordSlot`] and passed on.
struct RecordList<'a, F> {
    shape: &'a Shape,
    stats: &'a mut FileStats,
    f: &'a mut F,
}

impl<'de, F: FnMut(AwsEvent)> DeserializeSeed<'de> for RecordList<'_, F> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, F: FnMut(AwsEvent)> Visitor<'de> for RecordList<'_, F> {
    type Value = ();

    fn expecting(&self, out: &mut fmt::Formatter) -> fmt::Result {
        out.write_str("a list of CloudTrail records")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0u64;
        while let Some(slot) = seq.next_element::<RecordSlot>()? {
            match slot.0.ok_or("not an object").and_then(to_event) {
                Ok(event) => {
                    self.stats.records += 1;
                    (self.f)(event);
                }
                Err(why) => self.stats.skip(|| format!("record {index}: {why}")),
            }
            index += 1;
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        wrong_shape(self.shape, RECORDS_NOT_A_LIST)
    }

    refuse_other_values!(RECORDS_NOT_A_LIST; visit_bool(bool), visit_i64(i64), visit_u64(u64), visit_f64(f64),
        visit_str(&str), visit_unit());
}

/// The fields of one record that an event is made of, each as whatever JSON it was.
#[derive(Default)]
struct Fields {
    event_id: Option<Value>,
    event_time: Option<Value>,
    event_name: Option<Value>,
    event_source: Option<Value>,
    region: Option<Value>,
    source_ip: Option<Value>,
    user_agent: Option<Value>,
    error_code: Option<Value>,
    error_message: Option<Value>,
    request_parameters: Option<Value>,
    user_identity: Option<Value>,
    resources: Option<Value>,
}

/// One item of `Records`: its fields if it is an object, None if it is any other value.
struct RecordSlot(Option<Fields>);

impl<'de> de::Deserialize<'de> for RecordSlot {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RecordSlot, D::Error> {
        d.deserialize_any(SlotVisitor)
    }
}

struct SlotVisitor;

macro_rules! not_a_record {
    ($($method:ident($($arg:ty)?)),*) => {
        $(fn $method<E: de::Error>(self $(, _: $arg)?) -> Result<RecordSlot, E> {
            Ok(RecordSlot(None))
        })*
    };
}

impl<'de> Visitor<'de> for SlotVisitor {
    type Value = RecordSlot;

    fn expecting(&self, out: &mut fmt::Formatter) -> fmt::Result {
        out.write_str("a CloudTrail record")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RecordSlot, A::Error> {
        let mut r = Fields::default();
        while let Some(key) = map.next_key::<RecordKey>()? {
            let slot = match key {
                RecordKey::EventId => &mut r.event_id,
                RecordKey::EventTime => &mut r.event_time,
                RecordKey::EventName => &mut r.event_name,
                RecordKey::EventSource => &mut r.event_source,
                RecordKey::AwsRegion => &mut r.region,
                RecordKey::SourceIp => &mut r.source_ip,
                RecordKey::UserAgent => &mut r.user_agent,
                RecordKey::ErrorCode => &mut r.error_code,
                RecordKey::ErrorMessage => &mut r.error_message,
                RecordKey::RequestParameters => &mut r.request_parameters,
                RecordKey::UserIdentity => &mut r.user_identity,
                RecordKey::Resources => &mut r.resources,
                RecordKey::Other => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            *slot = Some(map.next_value::<Value>()?);
        }
        Ok(RecordSlot(Some(r)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RecordSlot, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(RecordSlot(None))
    }

    not_a_record!(visit_bool(bool), visit_i64(i64), visit_u64(u64), visit_f64(f64), visit_str(&str), visit_unit());
}

/// The record keys that are kept.
enum RecordKey {
    EventId,
    EventTime,
    EventName,
    EventSource,
    AwsRegion,
    SourceIp,
    UserAgent,
    ErrorCode,
    ErrorMessage,
    RequestParameters,
    UserIdentity,
    Resources,
    Other,
}

impl<'de> de::Deserialize<'de> for RecordKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RecordKey, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RecordKey;
            fn expecting(&self, out: &mut fmt::Formatter) -> fmt::Result {
                out.write_str("a key")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<RecordKey, E> {
                Ok(match s {
                    "eventID" => RecordKey::EventId,
                    "eventTime" => RecordKey::EventTime,
                    "eventName" => RecordKey::EventName,
                    "eventSource" => RecordKey::EventSource,
                    "awsRegion" => RecordKey::AwsRegion,
                    "sourceIPAddress" => RecordKey::SourceIp,
                    "userAgent" => RecordKey::UserAgent,
                    "errorCode" => RecordKey::ErrorCode,
                    "errorMessage" => RecordKey::ErrorMessage,
                    "requestParameters" => RecordKey::RequestParameters,
                    "userIdentity" => RecordKey::UserIdentity,
                    "resources" => RecordKey::Resources,
                    _ => RecordKey::Other,
                })
            }
        }
        d.deserialize_str(V)
    }
}

/// The text of a field, None when it is missing or not text.
fn text(v: Option<Value>) -> Option<String> {
    match v {
        Some(Value::String(s)) => Some(s),
        _ => None,
    }
}

fn text_of(v: Option<&Value>, key: &str) -> Option<String> {
    v.and_then(|v| v.get(key)).and_then(Value::as_str).map(str::to_string)
}

/// A record's event, or why it is not one.
fn to_event(r: Fields) -> Result<AwsEvent, &'static str> {
    let event_id = text(r.event_id).filter(|s| !s.is_empty()).ok_or("no eventID text")?;
    let time = text(r.event_time).ok_or("no eventTime text")?;
    let event_time_us = chrono::DateTime::parse_from_rfc3339(&time)
        .map_err(|_| "eventTime is not an RFC 3339 time")?
        .timestamp_micros();
    let event_source = text(r.event_source).unwrap_or_default();
    let request_parameters = r.request_parameters.filter(|v| !v.is_null());
    let identity = r.user_identity;
    let (bucket, object_key) = if event_source == "s3.amazonaws.com" {
        s3_object(request_parameters.as_ref(), r.resources.as_ref())
    } else {
        (None, None)
    };
    let event = AwsEvent {
        event_id,
        event_time_us,
        event_name: text(r.event_name).unwrap_or_default(),
        event_source,
        region: text(r.region).unwrap_or_default(),
        source_ip: text(r.source_ip).unwrap_or_default(),
        user_agent: text(r.user_agent).unwrap_or_default(),
        error_code: text(r.error_code),
        error_message: text(r.error_message),
        request_parameters,
        access_key_id: text_of(identity.as_ref(), "accessKeyId").filter(|s| !s.is_empty()),
        user_arn: text_of(identity.as_ref(), "arn"),
        account_id: text_of(identity.as_ref(), "accountId"),
        bucket,
        object_key,
        operation: None,
        requester: None,
        http_status: None,
        via: Via::CloudTrail,
    };
    Ok(event.bounded())
}

/// The bucket and key of an S3 data event: `requestParameters.bucketName` / `.key`, else
/// the `resources` ARNs (`arn:aws:s3:::bucket/key` of an `AWS::S3::Object`,
/// `arn:aws:s3:::bucket` of an `AWS::S3::Bucket`).
fn s3_object(params: Option<&Value>, resources: Option<&Value>) -> (Option<String>, Option<String>) {
    let mut bucket = text_of(params, "bucketName").filter(|s| !s.is_empty());
    let mut key = text_of(params, "key").filter(|s| !s.is_empty());
    for r in resources.and_then(Value::as_array).into_iter().flatten() {
        if bucket.is_some() && key.is_some() {
            break;
        }
        let Some(rest) = r.get("ARN").and_then(Value::as_str).and_then(s3_arn_path) else { continue };
        match r.get("type").and_then(Value::as_str) {
            Some("AWS::S3::Object") => {
                if let Some((b, k)) = rest.split_once('/') {
                    if !b.is_empty() && !k.is_empty() {
                        bucket.get_or_insert_with(|| b.to_string());
                        key.get_or_insert_with(|| k.to_string());
                    }
                }
            }
            Some("AWS::S3::Bucket") if !rest.is_empty() && !rest.contains('/') => {
                bucket.get_or_insert_with(|| rest.to_string());
            }
            _ => {}
        }
    }
    (bucket, key)
}

/// `bucket/key` of `arn:<partition>:s3:::bucket/key`.
fn s3_arn_path(arn: &str) -> Option<&str> {
    let rest = arn.strip_prefix("arn:")?;
    let (partition, rest) = rest.split_once(':')?;
    if partition.is_empty() {
        return None;
    }
    rest.strip_prefix("s3:::")
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::write::GzEncoder;
    use flate2::Compression;
    use serde_json::json;

    use super::*;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn read(data: &[u8]) -> Result<(FileStats, Vec<AwsEvent>), FormatError> {
        let mut events = Vec::new();
        let stats = for_each_record(&gz(data), DEFAULT_MAX_DECOMPRESSED, |e| events.push(e))?;
        Ok((stats, events))
    }

    /// Records in the shape CloudTrail writes them (AWS docs' examples): an IAM call with the
    /// honey key, an S3 data event named only by its resources, an AWS-internal call, and a
    /// digest-like object that is not a record.
    const FILE: &str = r#"{"Records": [
      {"eventVersion": "1.08",
       "userIdentity": {"type": "IAMUser", "principalId": "AIDAEXAMPLE", "arn": "arn:aws:iam::123456789012:user/svc-backup",
                        "accountId": "123456789012", "accessKeyId": "AKIAIOSFODNN7EXAMPLE", "userName": "svc-backup"},
       "eventTime": "2024-03-05T10:11:12Z", "eventSource": "iam.amazonaws.com", "eventName": "ListUsers",
       "awsRegion": "us-east-1", "sourceIPAddress": "203.0.113.9", "userAgent": "aws-cli/1.46.3 Python/3.12",
       "errorCode": "AccessDenied",
       "errorMessage": "User: arn:aws:iam::123456789012:user/svc-backup is not authorized to perform: iam:ListUsers",
       "requestParameters": null, "responseElements": null, "requestID": "r-1",
       "eventID": "0d5a8c3e-1111-4d2b-9f00-000000000001", "readOnly": true, "eventType": "AwsApiCall",
       "managementEvent": true, "recipientAccountId": "123456789012", "eventCategory": "Management",
       "tlsDetails": {"tlsVersion": "TLSv1.3", "cipherSuite": "TLS_AES_128_GCM_SHA256", "clientProvidedHostHeader": "iam.amazonaws.com"}},
      {"eventVersion": "1.09",
       "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::123456789012:user/svc-backup", "accountId": "123456789012",
                        "accessKeyId": "AKIAIOSFODNN7EXAMPLE"},
       "eventTime": "2024-03-05T10:11:13.250Z", "eventSource": "s3.amazonaws.com", "eventName": "GetObject",
       "awsRegion": "eu-west-1", "sourceIPAddress": "198.51.100.4", "userAgent": "[aws-cli/1.46.3]",
       "requestParameters": {"Host": "honey.s3.eu-west-1.amazonaws.com"},
       "responseElements": {"big": [1, 2, 3, {"nested": "ignored"}]},
       "resources": [{"type": "AWS::S3::Object", "ARN": "arn:aws:s3:::honey/payroll/2024 Q1.xlsx"},
                     {"accountId": "123456789012", "type": "AWS::S3::Bucket", "ARN": "arn:aws:s3:::honey"}],
       "eventID": "0d5a8c3e-1111-4d2b-9f00-000000000002", "eventType": "AwsApiCall", "eventCategory": "Data"},
      {"digestStartTime": "2024-03-05T09:00:00Z", "digestEndTime": "2024-03-05T10:00:00Z",
       "logFiles": [{"s3Bucket": "trail", "s3Object": "AWSLogs/x.json.gz"}]},
      {"eventTime": "2024-03-05T10:11:14Z", "eventSource": "sts.amazonaws.com", "eventName": "AssumeRole",
       "awsRegion": "us-east-1", "sourceIPAddress": "s3.amazonaws.com", "userAgent": "s3.amazonaws.com",
       "userIdentity": {"type": "AWSService", "invokedBy": "s3.amazonaws.com"},
       "requestParameters": {"roleArn": "arn:aws:iam::123456789012:role/x", "roleSessionName": "s"},
       "eventID": "0d5a8c3e-1111-4d2b-9f00-000000000003"}
    ], "extra": {"ignored": true}}"#;

    #[test]
    fn reads_a_realistic_file() {
        let (stats, ev) = read(FILE.as_bytes()).unwrap();
        assert_eq!((stats.records, stats.skipped), (3, 1));
        assert_eq!(stats.first_skip.as_deref(), Some("record 2: no eventID text"));

        let e = &ev[0];
        assert_eq!(e.event_id, "0d5a8c3e-1111-4d2b-9f00-000000000001");
        assert_eq!(e.event_time_us, 1_709_633_472_000_000);
        assert_eq!(e.event_name, "ListUsers");
        assert_eq!(e.event_source, "iam.amazonaws.com");
        assert_eq!(e.region, "us-east-1");
        assert_eq!(e.src_ip(), "203.0.113.9");
        assert_eq!(e.error_code.as_deref(), Some("AccessDenied"));
        assert!(e.error_message.as_deref().unwrap().contains("iam:ListUsers"));
        assert_eq!(e.request_parameters, None);
        assert_eq!(e.access_key_id.as_deref(), Some("AKIAIOSFODNN7EXAMPLE"));
        assert_eq!(e.user_arn.as_deref(), Some("arn:aws:iam::123456789012:user/svc-backup"));
        assert_eq!(e.account_id.as_deref(), Some("123456789012"));
        assert_eq!((e.bucket.as_deref(), e.object_key.as_deref()), (None, None));
        assert_eq!(e.via, Via::CloudTrail);

        let s3 = &ev[1];
        assert_eq!(s3.event_time_us, 1_709_633_473_250_000);
        assert_eq!(s3.bucket.as_deref(), Some("honey"));
        assert_eq!(s3.object_key.as_deref(), Some("payroll/2024 Q1.xlsx"));
        assert_eq!(s3.request_parameters, Some(json!({"Host": "honey.s3.eu-west-1.amazonaws.com"})));
        assert_eq!(s3.data()["bucket"], "honey");

        let internal = &ev[2];
        assert_eq!(internal.source_ip, "s3.amazonaws.com");
        assert_eq!(internal.src_ip(), "");
        assert_eq!(internal.access_key_id, None);
        assert_eq!(internal.user_arn, None);
    }

    #[test]
    fn s3_bucket_and_key_prefer_request_parameters() {
        let file = json!({"Records": [{
            "eventID": "e", "eventTime": "2024-01-01T00:00:00Z", "eventSource": "s3.amazonaws.com",
            "requestParameters": {"bucketName": "b1", "key": "k/1"},
            "resources": [{"type": "AWS::S3::Object", "ARN": "arn:aws:s3:::b2/k2"}]
        }, {
            "eventID": "f", "eventTime": "2024-01-01T00:00:00Z", "eventSource": "s3.amazonaws.com",
            "requestParameters": {"bucketName": "only-bucket"},
            "resources": [{"type": "AWS::S3::Bucket", "ARN": "arn:aws-cn:s3:::only-bucket"}]
        }, {
            "eventID": "g", "eventTime": "2024-01-01T00:00:00Z", "eventSource": "s3.amazonaws.com",
            "resources": [{"type": "AWS::S3::Object", "ARN": "arn:aws-us-gov:s3:::gov/a/b/c"},
                          {"type": "AWS::S3::Object", "ARN": "not an arn"}]
        }, {
            "eventID": "h", "eventTime": "2024-01-01T00:00:00Z", "eventSource": "ec2.amazonaws.com",
            "requestParameters": {"bucketName": "not-s3"}
        }]});
        let (_, ev) = read(file.to_string().as_bytes()).unwrap();
        let got: Vec<_> = ev.iter().map(|e| (e.bucket.as_deref(), e.object_key.as_deref())).collect();
        assert_eq!(
            got,
            vec![(Some("b1"), Some("k/1")), (Some("only-bucket"), None), (Some("gov"), Some("a/b/c")), (None, None)]
        );
    }

    #[test]
    fn reads_ten_thousand_records() {
        let mut body = String::from("{\"Records\":[");
        for i in 0..10_000 {
            if i > 0 {
                body.push(',');
            }
            let r = json!({"eventID": format!("id-{i}"), "eventTime": "2024-01-01T00:00:00Z", "eventName": "GetCallerIdentity",
                           "eventSource": "sts.amazonaws.com", "userIdentity": {"accessKeyId": format!("AKIA{i:016}")},
                           "responseElements": {"padding": "x".repeat(100)}});
            body.push_str(&r.to_string());
        }
        body.push_str("]}");
        let mut n = 0u64;
        let mut last = String::new();
        let stats = for_each_record(&gz(body.as_bytes()), DEFAULT_MAX_DECOMPRESSED, |e| {
            assert_eq!(e.event_id, format!("id-{n}"));
            n += 1;
            last = e.access_key_id.unwrap();
        })
        .unwrap();
        assert_eq!((stats.records, stats.skipped, n), (10_000, 0, 10_000));
        assert_eq!(last, "AKIA0000000000009999");
    }

    #[test]
    fn reads_every_gzip_member() {
        let one = |id: &str| format!(r#"{{"Records":[{{"eventID":"{id}","eventTime":"2024-01-01T00:00:00Z"}}]}}"#);
        // Two members make one stream: the first ends mid-JSON, the second finishes it.
        let whole = one("a");
        let (head, tail) = whole.split_at(20);
        let mut data = gz(head.as_bytes());
        data.extend(gz(tail.as_bytes()));
        let mut ids = Vec::new();
        for_each_record(&data, 1 << 20, |e| ids.push(e.event_id)).unwrap();
        assert_eq!(ids, ["a"]);
    }

    #[test]
    fn refuses_a_gzip_bomb() {
        // 8 MiB of JSON whitespace inside a valid start: only the cap stops it.
        let mut body = b"{\"Records\":[".to_vec();
        body.resize(8 << 20, b' ');
        body.extend_from_slice(b"]}");
        let data = gz(&body);
        assert!(data.len() < 64 * 1024, "{} bytes compressed", data.len());
        assert_eq!(for_each_record(&data, 1 << 20, |_| panic!("no records")), Err(FormatError::TooLarge(1 << 20)));
        // Exactly at the cap is fine; one byte under is not.
        let len = body.len() as u64;
        assert!(for_each_record(&data, len, |_| {}).is_ok());
        assert_eq!(for_each_record(&data, len - 1, |_| {}), Err(FormatError::TooLarge(len - 1)));
    }

    #[test]
    fn refuses_truncated_and_corrupt_gzip() {
        let data = gz(FILE.as_bytes());
        for cut in [3, 10, data.len() / 2, data.len() - 4, data.len() - 1] {
            let got = for_each_record(&data[..cut], DEFAULT_MAX_DECOMPRESSED, |_| {});
            assert!(matches!(got, Err(FormatError::Gzip(_))), "cut at {cut}: {got:?}");
        }
        let mut bad_crc = data.clone();
        let n = bad_crc.len();
        bad_crc[n - 8] ^= 0xff;
        assert!(matches!(for_each_record(&bad_crc, DEFAULT_MAX_DECOMPRESSED, |_| {}), Err(FormatError::Gzip(_))));
        assert_eq!(for_each_record(FILE.as_bytes(), DEFAULT_MAX_DECOMPRESSED, |_| {}), Err(FormatError::NotGzip));
        assert_eq!(for_each_record(b"", DEFAULT_MAX_DECOMPRESSED, |_| {}), Err(FormatError::NotGzip));
    }

    #[test]
    fn refuses_wrong_shapes() {
        for (body, want) in [
            (r#"{"Records": {"eventID": "x"}}"#, RECORDS_NOT_A_LIST),
            (r#"{"Records": "x"}"#, RECORDS_NOT_A_LIST),
            (r#"{"Records": null}"#, RECORDS_NOT_A_LIST),
            (r#"{"Records": 5}"#, RECORDS_NOT_A_LIST),
            (r#"{"records": []}"#, NO_RECORDS),
            (r#"{"awsAccountId": "123456789012", "digestStartTime": "2024-01-01T00:00:00Z"}"#, NO_RECORDS),
            (r#"[{"eventID": "x"}]"#, NOT_AN_OBJECT),
            (r#""Records""#, NOT_AN_OBJECT),
            ("null", NOT_AN_OBJECT),
        ] {
            assert_eq!(read(body.as_bytes()).err(), Some(FormatError::NotCloudTrail(want)), "{body}");
        }
        for body in [
            "",
            "{",
            r#"{"Records": [{"eventID": "x", "eventTime": "2024-01-01T00:00:00Z"}"#,
            r#"{"Records": []} trailing"#,
            "{\"Records\": [\"\u{0}\"]}",
            r#"{"Records": [{"eventName": "\ud800"}]}"#,
        ] {
            assert!(
                matches!(read(body.as_bytes()), Err(FormatError::Json(_))),
                "{body:?}: {:?}",
                read(body.as_bytes())
            );
        }
        assert!(matches!(read(b"{\"Records\": [\"\xff\"]}"), Err(FormatError::Json(_))));
        // Nesting in a kept field meets serde_json's depth limit; skipped values are skipped
        // without recursion, however deep.
        let deep = |field: &str, n: usize| {
            format!(
                r#"{{"Records":[{{"eventID":"x","eventTime":"2024-01-01T00:00:00Z","{field}":{}{}}}]}}"#,
                "[".repeat(n),
                "]".repeat(n)
            )
        };
        assert!(matches!(read(deep("requestParameters", 500).as_bytes()), Err(FormatError::Json(_))));
        assert_eq!(read(deep("responseElements", 100_000).as_bytes()).unwrap().0.records, 1);
        let deep_item = format!(r#"{{"Records":[{}{}]}}"#, "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(read(deep_item.as_bytes()).unwrap().0.skipped, 1);
    }

    #[test]
    fn skips_records_with_wrong_field_types() {
        let body = json!({"Records": [
            {"eventID": "a", "eventTime": 1_700_000_000},
            {"eventID": 7, "eventTime": "2024-01-01T00:00:00Z"},
            {"eventID": "", "eventTime": "2024-01-01T00:00:00Z"},
            {"eventID": "b", "eventTime": "yesterday"},
            {"eventID": "c"},
            "text", 1, null, true, [1, {"eventID": "d"}],
            {"eventID": "ok", "eventTime": "2024-01-01T01:00:00+01:00", "eventName": 5, "awsRegion": ["x"],
             "userIdentity": "not an object", "resources": {"type": "AWS::S3::Object"}, "errorCode": {"x": 1},
             "eventSource": "s3.amazonaws.com", "requestParameters": [1, 2]}
        ]});
        let (stats, ev) = read(body.to_string().as_bytes()).unwrap();
        assert_eq!((stats.records, stats.skipped), (1, 10));
        assert_eq!(stats.first_skip.as_deref(), Some("record 0: no eventTime text"));
        let e = &ev[0];
        assert_eq!(e.event_id, "ok");
        assert_eq!(e.event_time_us, 1_704_067_200_000_000);
        assert_eq!((e.event_name.as_str(), e.region.as_str()), ("", ""));
        assert_eq!((&e.access_key_id, &e.error_code, &e.bucket), (&None, &None, &None));
        assert_eq!(e.request_parameters, Some(json!([1, 2])));
    }

    #[test]
    fn keeps_unicode_and_bounds_fields() {
        let body = json!({"Records": [{
            "eventID": "ünï-\u{1F600}", "eventTime": "2024-01-01T00:00:00Z", "userAgent": "日本".repeat(1000),
            "sourceIPAddress": "\u{202E}1.2.3.4", "eventSource": "s3.amazonaws.com",
            "requestParameters": {"bucketName": "b", "key": "ключ/файл.txt", "policy": "p".repeat(10_000)}
        }]});
        let (_, ev) = read(body.to_string().as_bytes()).unwrap();
        let e = &ev[0];
        assert_eq!(e.event_id, "ünï-\u{1F600}");
        assert_eq!(e.user_agent.len(), 2046, "cut at the last whole character below 2048 bytes");
        assert_eq!(e.src_ip(), "");
        assert_eq!(e.object_key.as_deref(), Some("ключ/файл.txt"), "taken before the parameters were dropped");
        assert_eq!(e.request_parameters, Some(json!({"_truncated": true})));
        // Escaped text decodes like literal text.
        let escaped = r#"{"Records":[{"eventID":"\u00fc\ud83d\ude00","eventTime":"2024-01-01T00:00:00Z"}]}"#;
        assert_eq!(read(escaped.as_bytes()).unwrap().1[0].event_id, "ü\u{1F600}");
    }

    #[test]
    fn empty_records_and_repeated_keys() {
        assert_eq!(read(br#"{"Records": []}"#).unwrap().0, FileStats::default());
        let two = r#"{"Records":[{"eventID":"a","eventTime":"2024-01-01T00:00:00Z"}],
                      "Records":[{"eventID":"b","eventID":"c","eventTime":"2024-01-01T00:00:00Z"}]}"#;
        let ids: Vec<String> = read(two.as_bytes()).unwrap().1.into_iter().map(|e| e.event_id).collect();
        assert_eq!(ids, ["a", "c"]);
    }
}

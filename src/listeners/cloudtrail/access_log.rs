//! Reader of S3 server access logs: the objects S3 writes into a log bucket for requests
//! against a monitored bucket, one request a line, space-separated fields, the time in
//! `[brackets]` and free text in `"quotes"`, `-` for a field that does not apply (AWS's
//! documented format). Each line becomes an [`AwsEvent`] (`via` [`Via::S3AccessLog`]).
//!
//! Hand-written because the format is a handful of rules and no maintained crate reads it.
//!
//! Fields, in order: bucket owner, bucket, time, remote IP, requester, request id,
//! operation, key, request-URI, HTTP status (these ten are required), then error code, bytes
//! sent, object size, total time, turn-around time, referrer, user agent, version id, host
//! id, signature version, cipher suite, authentication type, host header, TLS version,
//! access point ARN and "ACL required". Fields AWS appends later are ignored. The log does
//! not name the access key, only the requester (a canonical user id or an IAM ARN).

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::event::{AwsEvent, FileStats, FormatError, Via};

/// Fields up to and including the HTTP status must be there.
const REQUIRED: usize = 10;
/// Fields read from a line; the rest of a longer line is not looked at.
const MAX_FIELDS: usize = 32;

/// Names of the optional fields (by position) kept in `request_parameters`, with the
/// bucket owner and the request-URI. Error code, user agent and the required fields have
/// event fields of their own.
const EXTRA: &[(usize, &str)] = &[
    (11, "bytes_sent"),
    (12, "object_size"),
    (13, "total_time"),
    (14, "turn_around_time"),
    (15, "referrer"),
    (17, "version_id"),
    (18, "host_id"),
    (19, "signature_version"),
    (20, "cipher_suite"),
    (21, "authentication_type"),
    (22, "host_header"),
    (23, "tls_version"),
    (24, "access_point_arn"),
    (25, "acl_required"),
];

fn bad(why: impl Into<String>) -> FormatError {
    FormatError::AccessLog(why.into())
}

/// Splits a line into its fields: bare words, `[bracketed]` and `"quoted"` (with `\"` and
/// `\\` escapes), separated by spaces.
fn fields(line: &str) -> Result<Vec<Cow<'_, str>>, FormatError> {
    let mut out = Vec::new();
    let mut rest = line.trim_start_matches(' ');
    while !rest.is_empty() && out.len() < MAX_FIELDS {
        let (field, after) = if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']').ok_or_else(|| bad("a [ without its ]"))?;
            (Cow::Borrowed(&r[..end]), &r[end + 1..])
        } else if let Some(r) = rest.strip_prefix('"') {
            quoted(r)?
        } else {
            let end = rest.find(' ').unwrap_or(rest.len());
            (Cow::Borrowed(&rest[..end]), &rest[end..])
        };
        if !(after.is_empty() || after.starts_with(' ')) {
            return Err(bad(format!("no space after field {}", out.len() + 1)));
        }
        out.push(field);
        rest = after.trim_start_matches(' ');
    }
    Ok(out)
}

/// A quoted field after its opening quote: its text and what follows the closing quote.
fn quoted(r: &str) -> Result<(Cow<'_, str>, &str), FormatError> {
    let mut text: Option<String> = None;
    let mut start = 0;
    let mut chars = r.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => {
                let field = match text {
                    Some(mut t) => {
                        t.push_str(&r[start..i]);
                        Cow::Owned(t)
                    }
                    None => Cow::Borrowed(&r[..i]),
                };
                return Ok((field, &r[i + 1..]));
            }
            '\\' if matches!(r[i + 1..].chars().next(), Some('"' | '\\')) => {
                let t = text.get_or_insert_with(String::new);
                t.push_str(&r[start..i]);
                if let Some((j, escaped)) = chars.next() {
                    t.push(escaped);
                    start = j + escaped.len_utf8();
                }
            }
            _ => {}
        }
    }
    Err(bad("a \" without its closing \""))
}

/// The field's text, None for `-` (or a field the line does not have).
fn opt(f: &[Cow<'_, str>], i: usize) -> Option<String> {
    f.get(i).map(|s| s.as_ref()).filter(|s| *s != "-" && !s.is_empty()).map(str::to_string)
}

/// One log line as an event.
pub fn parse_line(line: &str) -> Result<AwsEvent, FormatError> {
    let f = fields(line.trim_end_matches(['\r', '\n']))?;
    if f.len() < REQUIRED {
        return Err(bad(format!("{} fields, at least {REQUIRED} expected", f.len())));
    }
    let time = chrono::DateTime::parse_from_str(&f[2], "%d/%b/%Y:%H:%M:%S %z")
        .map_err(|_| bad("the time is not like [06/Feb/2019:00:00:38 +0000]"))?;
    let event_id = opt(&f, 5).ok_or_else(|| bad("no request id"))?;
    let operation = opt(&f, 6).ok_or_else(|| bad("no operation"))?;
    let http_status = match opt(&f, 9) {
        None => None,
        Some(s) => Some(
            s.parse::<u16>()
                .ok()
                .filter(|c| (100..=999).contains(c))
                .ok_or_else(|| bad("the HTTP status is not a number"))?,
        ),
    };
    let requester = opt(&f, 4);
    let user_arn = requester.clone().filter(|r| r.starts_with("arn:"));
    let account_id = user_arn.as_deref().and_then(|a| arn_part(a, 4)).filter(|a| is_account(a)).map(str::to_string);
    let host = opt(&f, 22);
    let access_point = opt(&f, 24);
    let region = host
        .as_deref()
        .and_then(host_region)
        .or_else(|| access_point.as_deref().and_then(|a| arn_part(a, 3)).filter(|r| looks_like_region(r)))
        .unwrap_or_default()
        .to_string();
    let mut params = Map::new();
    for (i, name) in [(0, "bucket_owner"), (8, "request_uri")].iter().chain(EXTRA) {
        if let Some(v) = opt(&f, *i) {
            let v = match v.parse::<u64>() {
                Ok(n) if *i >= 11 && *i <= 14 => Value::from(n),
                _ => Value::from(v),
            };
            params.insert(name.to_string(), v);
        }
    }
    let event = AwsEvent {
        event_id,
        event_time_us: time.timestamp_micros(),
        event_name: operation.clone(),
        event_source: "s3.amazonaws.com".into(),
        region,
        source_ip: opt(&f, 3).unwrap_or_default(),
        user_agent: opt(&f, 16).unwrap_or_default(),
        error_code: opt(&f, 10),
        error_message: None,
        request_parameters: Some(Value::Object(params)),
        access_key_id: None,
        user_arn,
        account_id,
        bucket: opt(&f, 1),
        object_key: opt(&f, 7).map(|k| decode_key(&k)),
        operation: Some(operation),
        requester,
        http_status,
        via: Via::S3AccessLog,
    };
    Ok(event.bounded())
}

/// Calls `f` with each line's event of one whole log object (not compressed); blank lines
/// are passed over, lines that are not log records are counted as skipped.
pub fn for_each_line(bytes: &[u8], mut f: impl FnMut(AwsEvent)) -> FileStats {
    let mut stats = FileStats::default();
    for (n, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = String::from_utf8_lossy(raw);
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(&line) {
            Ok(e) => {
                stats.records += 1;
                f(e);
            }
            Err(e) => stats.skip(|| format!("line {}: {e}", n + 1)),
        }
    }
    stats
}

/// The key as S3 logged it, URL-decoded (`%XX`); as logged when that is not UTF-8.
fn decode_key(k: &str) -> String {
    match percent_encoding::percent_decode_str(k).decode_utf8() {
        Ok(d) => d.into_owned(),
        Err(_) => k.to_string(),
    }
}

/// The `n`th `:`-separated part of an ARN (`arn:partition:service:region:account:resource`).
fn arn_part(arn: &str, n: usize) -> Option<&str> {
    arn.splitn(6, ':').nth(n).filter(|p| !p.is_empty())
}

fn is_account(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

/// `us-east-1`, `eu-central-2`, `us-gov-west-1`: two letters, words, a number.
fn looks_like_region(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts[0].bytes().all(|b| b.is_ascii_lowercase())
        && parts[1..parts.len() - 1].iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].bytes().all(|b| b.is_ascii_digit())
        && !parts[parts.len() - 1].is_empty()
}

/// The region an S3 endpoint host names (`bucket.s3.us-west-1.amazonaws.com`,
/// `s3.dualstack.eu-west-1.amazonaws.com`, `s3-us-west-2.amazonaws.com`); None for the
/// global endpoint and other hosts.
fn host_region(host: &str) -> Option<&str> {
    let host = host.strip_suffix(".amazonaws.com").or_else(|| host.strip_suffix(".amazonaws.com.cn"))?;
    host.split('.').rev().map(|l| l.strip_prefix("s3-").unwrap_or(l)).find(|l| looks_like_region(l))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const OWNER: &str = "79a59df900b949e55d96a1e698fbacedfd6e09d98eacf8f8d5218e7cd47ef2be";

    /// Lines in AWS's documented shape.
    fn lines() -> Vec<String> {
        vec![
            format!("{OWNER} honey-bucket [06/Feb/2019:00:00:38 +0000] 192.0.2.3 {OWNER} 3E57427F3EXAMPLE REST.GET.VERSIONING - \"GET /honey-bucket?versioning HTTP/1.1\" 200 - 113 - 7 - \"-\" \"S3Console/0.4\" - s9lzHYrFp76ZVxRcpX9+5cjAnEH2ROuNkd2BHfIa6UkFVdtjf5mKR3/eTPFvsiP/XV/VLi31234= SigV4 ECDHE-RSA-AES128-GCM-SHA256 AuthHeader honey-bucket.s3.us-west-1.amazonaws.com TLSV1.2 arn:aws:s3:us-west-1:123456789012:accesspoint/example-AP Yes"),
            format!("{OWNER} honey-bucket [06/Feb/2019:13:14:15 +0100] 198.51.100.7 arn:aws:iam::123456789012:user/svc-backup A1206F460EXAMPLE REST.GET.OBJECT payroll/2024%20Q1%2Bfinal.xlsx \"GET /payroll/2024%20Q1%2Bfinal.xlsx?x-id=GetObject HTTP/1.1\" 403 AccessDenied 243 - 24 - \"https://example.com/?q=\\\"a b\\\"\" \"aws-cli/1.46.3 md/Botocore#1.38 ua/2.1 os/linux\" - HostIdExample= SigV4 TLS_AES_128_GCM_SHA256 AuthHeader s3.dualstack.eu-west-1.amazonaws.com TLSv1.3 - - us-east-1 future-field"),
            // An old line: only the first eighteen fields, anonymous.
            format!("{OWNER} honey-bucket [31/Dec/2015:23:59:59 -0500] 203.0.113.250 - 7B4A0FABBEXAMPLE WEBSITE.GET.OBJECT index.html \"GET /index.html HTTP/1.1\" 304 - - 4242 10 9 \"-\" \"curl/8.5.0\" -"),
        ]
    }

    #[test]
    fn parses_documented_lines() {
        let all = lines();
        let e = parse_line(&all[0]).unwrap();
        assert_eq!(e.event_id, "3E57427F3EXAMPLE");
        assert_eq!(e.event_time_us, 1_549_411_238_000_000);
        assert_eq!(e.event_name, "REST.GET.VERSIONING");
        assert_eq!(e.operation.as_deref(), Some("REST.GET.VERSIONING"));
        assert_eq!(e.event_source, "s3.amazonaws.com");
        assert_eq!(e.region, "us-west-1");
        assert_eq!(e.src_ip(), "192.0.2.3");
        assert_eq!(e.user_agent, "S3Console/0.4");
        assert_eq!((e.bucket.as_deref(), e.object_key.as_deref()), (Some("honey-bucket"), None));
        assert_eq!(e.requester.as_deref(), Some(OWNER));
        assert_eq!((e.user_arn.as_deref(), e.account_id.as_deref(), e.access_key_id.as_deref()), (None, None, None));
        assert_eq!(e.http_status, Some(200));
        assert_eq!(e.error_code, None);
        assert_eq!(e.via, Via::S3AccessLog);
        let p = e.request_parameters.as_ref().unwrap();
        assert_eq!(p["request_uri"], "GET /honey-bucket?versioning HTTP/1.1");
        assert_eq!(p["bytes_sent"], 113);
        assert_eq!(p["total_time"], 7);
        assert_eq!(p["signature_version"], "SigV4");
        assert_eq!(p["access_point_arn"], "arn:aws:s3:us-west-1:123456789012:accesspoint/example-AP");
        assert_eq!(p["acl_required"], "Yes");
        assert_eq!(p["bucket_owner"], OWNER);
        assert!(p.get("object_size").is_none() && p.get("referrer").is_none(), "- is left out");

        let e = parse_line(&all[1]).unwrap();
        assert_eq!(e.event_time_us, 1_549_455_255_000_000);
        assert_eq!(e.object_key.as_deref(), Some("payroll/2024 Q1+final.xlsx"));
        assert_eq!(e.user_arn.as_deref(), Some("arn:aws:iam::123456789012:user/svc-backup"));
        assert_eq!(e.account_id.as_deref(), Some("123456789012"));
        assert_eq!(e.error_code.as_deref(), Some("AccessDenied"));
        assert_eq!(e.http_status, Some(403));
        assert_eq!(e.region, "eu-west-1");
        assert_eq!(e.user_agent, "aws-cli/1.46.3 md/Botocore#1.38 ua/2.1 os/linux");
        let p = e.request_parameters.as_ref().unwrap();
        assert_eq!(p["referrer"], "https://example.com/?q=\"a b\"");
        assert_eq!(p["tls_version"], "TLSv1.3");
        let d = e.data();
        assert_eq!(d["via"], "s3-access-log");
        assert_eq!(d["object_key"], "payroll/2024 Q1+final.xlsx");
        assert_eq!(d["http_status"], 403);
        assert_eq!(d["operation"], "REST.GET.OBJECT");
        assert_eq!(d["access_key_id"], Value::Null);

        let e = parse_line(&all[2]).unwrap();
        assert_eq!(e.event_time_us, 1_451_624_399_000_000);
        assert_eq!(e.requester, None);
        assert_eq!(e.http_status, Some(304));
        assert_eq!(e.region, "");
        assert_eq!(e.request_parameters.as_ref().unwrap()["object_size"], 4242);
        assert!(e.data().get("requester").is_none());
    }

    #[test]
    fn reads_a_whole_log_object() {
        let mut body = lines().join("\n");
        body.push_str("\n\n   \r\nnot a log line\n");
        body.push_str(&lines()[0].replace("[06/Feb/2019:00:00:38 +0000]", "[yesterday]"));
        body.push_str("\r\n");
        body.push_str(&lines()[2]);
        let mut ids = Vec::new();
        let stats = for_each_line(body.as_bytes(), |e| ids.push(e.event_id));
        assert_eq!((stats.records, stats.skipped), (4, 2));
        assert_eq!(stats.first_skip.as_deref(), Some("line 6: bad S3 access log line: 4 fields, at least 10 expected"));
        assert_eq!(ids, ["3E57427F3EXAMPLE", "A1206F460EXAMPLE", "7B4A0FABBEXAMPLE", "7B4A0FABBEXAMPLE"]);
        assert_eq!(for_each_line(b"", |_| panic!()), FileStats::default());
        let (head, tail) = lines()[2].split_once("curl/8.5.0").map(|(h, t)| (h.to_string(), t.to_string())).unwrap();
        let raw = [head.as_bytes(), b"curl\xff", tail.as_bytes()].concat();
        let mut ua = String::new();
        assert_eq!(for_each_line(&raw, |e| ua = e.user_agent).records, 1);
        assert_eq!(ua, "curl\u{FFFD}");
    }

    #[test]
    fn refuses_bad_lines() {
        let good = lines()[0].clone();
        for (line, why) in [
            (String::new(), "0 fields"),
            (good.replace("[06/Feb", "[[06/Feb"), "the time"),
            (good.replace("+0000]", "+0000"), "without its ]"),
            (good.replace("\"S3Console/0.4\"", "\"S3Console/0.4"), "closing"),
            (good.replace(" 3E57427F3EXAMPLE ", " - "), "no request id"),
            (good.replace(" 200 ", " OK "), "HTTP status"),
            (good.replace(" 200 ", " 99999 "), "HTTP status"),
            (good.replace("\"-\" \"S3Console", "\"-\"\"S3Console"), "no space after field 16"),
            (good.split(' ').take(9).collect::<Vec<_>>().join(" "), "at least 10"),
        ] {
            match parse_line(&line) {
                Err(FormatError::AccessLog(m)) => assert!(m.contains(why), "{line}: {m}"),
                other => panic!("{line}: {other:?}"),
            }
        }
    }

    #[test]
    fn splits_fields() {
        assert_eq!(fields("a [b c] \"d \\\" e\" f").unwrap(), ["a", "b c", "d \" e", "f"]);
        assert_eq!(fields("\"\\\\\" \"x\\y\" \"\"").unwrap(), ["\\", "x\\y", ""]);
        assert_eq!(fields("  a   b  ").unwrap(), ["a", "b"]);
        assert_eq!(fields("\"ü\\\"ß\" [日本]").unwrap(), ["ü\"ß", "日本"]);
        assert!(fields("\"a\\\"").is_err());
        let many = vec!["x"; 100].join(" ");
        assert_eq!(fields(&many).unwrap().len(), MAX_FIELDS);
    }

    #[test]
    fn finds_regions_and_decodes_keys() {
        assert_eq!(host_region("bucket.s3.us-west-1.amazonaws.com"), Some("us-west-1"));
        assert_eq!(host_region("s3-us-west-2.amazonaws.com"), Some("us-west-2"));
        assert_eq!(host_region("b.s3.cn-north-1.amazonaws.com.cn"), Some("cn-north-1"));
        assert_eq!(host_region("s3.us-gov-west-1.amazonaws.com"), Some("us-gov-west-1"));
        assert_eq!(host_region("bucket.s3.amazonaws.com"), None);
        assert_eq!(host_region("us-east-1.example.com"), None);
        assert_eq!(decode_key("a%20b+c%E6%97%A5"), "a b+c日");
        assert_eq!(decode_key("bad%FF"), "bad%FF");
        let long = lines()[1].replace("payroll/2024%20Q1%2Bfinal.xlsx \"GET", &format!("{} \"GET", "k".repeat(5000)));
        assert_eq!(parse_line(&long).unwrap().object_key.map(|k| k.len()), Some(2048));
        assert_eq!(json!(parse_line(&lines()[1]).unwrap().event_time_us / 1_000_000), json!(1_549_455_255));
    }
}

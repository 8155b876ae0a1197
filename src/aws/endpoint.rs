//! Where each call goes, and the URI encoding AWS signs.
//!
//! With an endpoint override (`--aws-endpoint-url`, moto) every service goes to it, S3
//! path-style (`ENDPOINT/bucket/key`). Without it: IAM `https://iam.amazonaws.com/` (global,
//! signed for us-east-1), STS `https://sts.<region>.amazonaws.com/`, S3 virtual-hosted
//! `https://<bucket>.s3.<region>.amazonaws.com/<key>` (path-style
//! `https://s3.<region>.amazonaws.com/<bucket>/<key>` when the bucket name is not a plain DNS
//! label, e.g. has dots, which the wildcard certificate does not cover), SQS the queue URL's own
//! host (its region read from it).
//!
//! URLs are built already encoded, the way SigV4 canonicalises them: every byte except
//! `A-Z a-z 0-9 - _ . ~` is `%XX`, and S3 keys keep their `/`.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use url::Url;

use super::AwsError;

/// RFC 3986's unreserved characters: what SigV4 leaves unencoded.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// The region IAM (a global service) is signed for.
pub(crate) const IAM_REGION: &str = "us-east-1";

/// A call's URL and the region it is signed for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Target {
    pub url: Url,
    pub region: String,
}

/// `text` URI-encoded as SigV4 wants it (query values, one path segment).
pub(crate) fn encode(text: &str) -> String {
    utf8_percent_encode(text, UNRESERVED).to_string()
}

/// An S3 key as a URL path: each segment encoded, `/` kept. Refuses the empty key and `.` or
/// `..` segments, which URL parsing would fold away (and so change which object is named).
pub(crate) fn encode_key(key: &str) -> Result<String, AwsError> {
    if key.is_empty() || key.len() > 1024 {
        return Err(AwsError::Invalid(format!("an S3 key has 1 to 1024 bytes, not {}", key.len())));
    }
    if key.split('/').any(|segment| segment == "." || segment == "..") {
        return Err(AwsError::Invalid(format!("S3 keys with '.' or '..' segments are not supported: {key:?}")));
    }
    Ok(key.split('/').map(encode).collect::<Vec<_>>().join("/"))
}

/// Checks the endpoint override: http or https, a host, no credentials, query or fragment.
pub(crate) fn parse_override(text: &str) -> anyhow::Result<Url> {
    let url = Url::parse(text).map_err(|e| anyhow::anyhow!("aws_endpoint_url {text:?} is not a URL: {e}"))?;
    anyhow::ensure!(
        matches!(url.scheme(), "http" | "https") && url.host_str().is_some(),
        "aws_endpoint_url must be an http:// or https:// URL with a host, not {text:?}"
    );
    anyhow::ensure!(
        url.username().is_empty() && url.password().is_none() && url.query().is_none() && url.fragment().is_none(),
        "aws_endpoint_url must not hold credentials, a query or a fragment"
    );
    Ok(url)
}

/// The override without its trailing `/`, to append paths to.
fn base(endpoint: &Url) -> &str {
    endpoint.as_str().trim_end_matches('/')
}

fn parse(text: String) -> Result<Url, AwsError> {
    Url::parse(&text).map_err(|e| AwsError::Invalid(format!("cannot build the URL {text:?}: {e}")))
}

pub(crate) fn iam(endpoint: Option<&Url>) -> Result<Target, AwsError> {
    let url = match endpoint {
        Some(e) => format!("{}/", base(e)),
        None => "https://iam.amazonaws.com/".to_owned(),
    };
    Ok(Target { url: parse(url)?, region: IAM_REGION.to_owned() })
}

pub(crate) fn sts(endpoint: Option<&Url>, region: &str) -> Result<Target, AwsError> {
    let url = match endpoint {
        Some(e) => format!("{}/", base(e)),
        None => format!("https://sts.{region}.amazonaws.com/"),
    };
    Ok(Target { url: parse(url)?, region: region.to_owned() })
}

/// Checks a bucket name loosely (S3 validates it; this keeps it out of hostnames and paths).
fn check_bucket(bucket: &str) -> Result<(), AwsError> {
    if (1..=255).contains(&bucket.len())
        && bucket.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        && bucket != "."
        && bucket != ".."
    {
        Ok(())
    } else {
        Err(AwsError::Invalid(format!("{bucket:?} is not an S3 bucket name")))
    }
}

/// Whether the bucket can be a hostname label: 3 to 63 lower-case letters, digits and hyphens,
/// starting and ending with a letter or digit.
fn virtual_hostable(bucket: &str) -> bool {
    let b = bucket.as_bytes();
    (3..=63).contains(&b.len())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// The URL of a bucket (no key) or an object, with a query (`(name, value)`; an empty value
/// writes the bare name, as in `?logging`).
pub(crate) fn s3(
    endpoint: Option<&Url>,
    region: &str,
    bucket: &str,
    key: Option<&str>,
    query: &[(&str, &str)],
) -> Result<Target, AwsError> {
    check_bucket(bucket)?;
    let path = match key {
        Some(key) => encode_key(key)?,
        None => String::new(),
    };
    let mut url = match endpoint {
        Some(e) => format!("{}/{bucket}/{path}", base(e)),
        None if virtual_hostable(bucket) => format!("https://{bucket}.s3.{region}.amazonaws.com/{path}"),
        None => format!("https://s3.{region}.amazonaws.com/{bucket}/{path}"),
    };
    for (i, (name, value)) in query.iter().enumerate() {
        url.push(if i == 0 { '?' } else { '&' });
        url.push_str(&encode(name));
        if !value.is_empty() {
            url.push('=');
            url.push_str(&encode(value));
        }
    }
    Ok(Target { url: parse(url)?, region: region.to_owned() })
}

/// Where an SQS call about `queue_url` goes: the override, else the queue URL's host, signed
/// for the region in that host (`sqs.<region>.amazonaws.com`, or the legacy
/// `<region>.queue.amazonaws.com`), else for the client's region.
pub(crate) fn sqs(endpoint: Option<&Url>, region: &str, queue_url: &str) -> Result<Target, AwsError> {
    let queue = Url::parse(queue_url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
        .ok_or_else(|| AwsError::Invalid(format!("{queue_url:?} is not an SQS queue URL")))?;
    if let Some(e) = endpoint {
        return Ok(Target { url: parse(format!("{}/", base(e)))?, region: region.to_owned() });
    }
    let host = queue.host_str().unwrap_or_default();
    let labels: Vec<&str> = host.split('.').collect();
    let from_host = match labels.as_slice() {
        ["sqs", r, "amazonaws", "com", ..] | [r, "queue", "amazonaws", "com", ..] => Some(*r),
        _ => None,
    };
    let url = queue.join("/").map_err(|e| AwsError::Invalid(format!("{queue_url:?}: {e}")))?;
    Ok(Target { url, region: from_host.unwrap_or(region).to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moto() -> Url {
        parse_override("http://127.0.0.1:5000").unwrap()
    }

    #[test]
    fn encoding_is_sigv4s() {
        assert_eq!(encode("a b+c/d~e_f-g.h*é"), "a%20b%2Bc%2Fd~e_f-g.h%2A%C3%A9");
        assert_eq!(encode_key("AWSLogs/1/my file+x.json.gz").unwrap(), "AWSLogs/1/my%20file%2Bx.json.gz");
        assert_eq!(encode_key("/lead//trail/").unwrap(), "/lead//trail/");
        assert!(encode_key("").is_err());
        assert!(encode_key("a/../b").is_err());
        assert!(encode_key("./b").is_err());
        assert!(encode_key(&"k".repeat(1025)).is_err());
    }

    #[test]
    fn overrides_are_checked() {
        assert_eq!(parse_override("http://localhost:4566/").unwrap().as_str(), "http://localhost:4566/");
        for bad in ["localhost:4566", "ftp://x/", "http://u:p@x/", "http://x/?a=1", "not a url"] {
            assert!(parse_override(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn iam_and_sts() {
        assert_eq!(iam(None).unwrap().url.as_str(), "https://iam.amazonaws.com/");
        assert_eq!(iam(None).unwrap().region, "us-east-1");
        assert_eq!(iam(Some(&moto())).unwrap().url.as_str(), "http://127.0.0.1:5000/");
        assert_eq!(sts(None, "eu-west-1").unwrap().url.as_str(), "https://sts.eu-west-1.amazonaws.com/");
        assert_eq!(sts(Some(&moto()), "eu-west-1").unwrap().url.as_str(), "http://127.0.0.1:5000/");
        let prefixed = parse_override("https://proxy.example/aws/").unwrap();
        assert_eq!(sts(Some(&prefixed), "eu-west-1").unwrap().url.as_str(), "https://proxy.example/aws/");
    }

    #[test]
    fn s3_styles() {
        let t = s3(None, "eu-west-1", "trail-logs", Some("AWSLogs/a b.gz"), &[]).unwrap();
        assert_eq!(t.url.as_str(), "https://trail-logs.s3.eu-west-1.amazonaws.com/AWSLogs/a%20b.gz");
        let t = s3(None, "eu-west-1", "logs.example.com", Some("k"), &[]).unwrap();
        assert_eq!(t.url.as_str(), "https://s3.eu-west-1.amazonaws.com/logs.example.com/k");
        let t = s3(None, "us-east-1", "Legacy_Bucket", None, &[("logging", "")]).unwrap();
        assert_eq!(t.url.as_str(), "https://s3.us-east-1.amazonaws.com/Legacy_Bucket/?logging");
        let t = s3(Some(&moto()), "us-east-1", "b", None, &[("list-type", "2"), ("prefix", "a b/+")]).unwrap();
        assert_eq!(t.url.as_str(), "http://127.0.0.1:5000/b/?list-type=2&prefix=a%20b%2F%2B");
        let t = s3(Some(&moto()), "us-east-1", "b", Some("x/y z"), &[]).unwrap();
        assert_eq!(t.url.as_str(), "http://127.0.0.1:5000/b/x/y%20z");
        for bad in ["", "a/b", "a b", "..", "a?b"] {
            assert!(s3(None, "us-east-1", bad, None, &[]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sqs_goes_to_the_queue_host() {
        let t = sqs(None, "us-east-1", "https://sqs.eu-central-1.amazonaws.com/123456789012/trail").unwrap();
        assert_eq!(t.url.as_str(), "https://sqs.eu-central-1.amazonaws.com/");
        assert_eq!(t.region, "eu-central-1");
        let t = sqs(None, "us-east-1", "https://ap-south-1.queue.amazonaws.com/1/q").unwrap();
        assert_eq!(t.region, "ap-south-1");
        let t = sqs(None, "us-west-2", "https://vpce-1.sqs.example.internal/1/q").unwrap();
        assert_eq!((t.url.as_str(), t.region.as_str()), ("https://vpce-1.sqs.example.internal/", "us-west-2"));
        let t = sqs(Some(&moto()), "us-east-1", "http://localhost:5000/123456789012/q").unwrap();
        assert_eq!(t.url.as_str(), "http://127.0.0.1:5000/");
        assert!(sqs(None, "us-east-1", "queue-name").is_err());
    }
}

//! S3 calls (REST-XML): list a prefix (ListObjectsV2), read an object with a size cap, write
//! one, create a bucket, check one exists (HeadBucket), read and set server access logging,
//! and set a bucket policy (what lets the logging service write into a log bucket).
//!
//! Listings ask for `encoding-type=url`, so keys with any bytes survive XML, and decode them
//! (`+` or `%20` for a space). One call is one page: the caller follows
//! `next_continuation`.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use md5::{Digest, Md5};
use reqwest::Method;

use super::endpoint::Target;
use super::sign::{read_capped, Call, Service};
use super::xml::{self, Element};
use super::{endpoint, Aws, AwsError};

const NAMESPACE: &str = "http://s3.amazonaws.com/doc/2006-03-01/";

/// One page of a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectPage {
    pub objects: Vec<ObjectInfo>,
    /// With a delimiter: the "folders" (`prefix…delimiter`) of this page.
    pub common_prefixes: Vec<String>,
    /// The token of the next page, when the listing was cut.
    pub next_continuation: Option<String>,
}

/// One object of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The key, decoded.
    pub key: String,
    pub size: u64,
    /// The ETag without its quotes.
    pub etag: String,
    pub last_modified: Option<DateTime<Utc>>,
}

impl Aws {
    fn s3_target(&self, bucket: &str, key: Option<&str>, query: &[(&str, &str)]) -> Result<Target, AwsError> {
        endpoint::s3(self.inner.endpoint.as_ref(), self.region(), bucket, key, query)
    }

    /// `ListObjectsV2`: one page of at most `max_keys` (1 to 1000) objects under `prefix`,
    /// after `start_after` (first page only) or from `continuation`, grouped by `delimiter`.
    pub async fn list_objects(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        continuation: Option<&str>,
        delimiter: Option<&str>,
        max_keys: u32,
    ) -> Result<ObjectPage, AwsError> {
        if !(1..=1000).contains(&max_keys) {
            return Err(AwsError::Invalid(format!("max_keys is 1 to 1000, not {max_keys}")));
        }
        let max_keys = max_keys.to_string();
        let mut query = vec![("list-type", "2"), ("encoding-type", "url"), ("max-keys", max_keys.as_str())];
        if !prefix.is_empty() {
            query.push(("prefix", prefix));
        }
        for (name, value) in
            [("start-after", start_after), ("continuation-token", continuation), ("delimiter", delimiter)]
        {
            if let Some(value) = value.filter(|v| !v.is_empty()) {
                query.push((name, value));
            }
        }
        let call = Call::new(Service::S3, Method::GET, self.s3_target(bucket, None, &query)?);
        parse_listing(&xml::parse(&self.fetch(call).await?)?)
    }

    /// `GetObject`: the whole object, refused with [`AwsError::TooLarge`] (from its
    /// `Content-Length`, before reading) when it is larger than `max_bytes`.
    pub async fn get_object(&self, bucket: &str, key: &str, max_bytes: u64) -> Result<Bytes, AwsError> {
        let call = Call::new(Service::S3, Method::GET, self.s3_target(bucket, Some(key), &[])?);
        let response = self.send(call).await?;
        read_capped(response, max_bytes, &format!("s3://{bucket}/{key}")).await
    }

    /// `PutObject`.
    pub async fn put_object(&self, bucket: &str, key: &str, bytes: Bytes, content_type: &str) -> Result<(), AwsError> {
        let call = Call::new(Service::S3, Method::PUT, self.s3_target(bucket, Some(key), &[])?)
            .header("content-type", content_type)
            .body(bytes);
        self.fetch(call).await.map(drop)
    }

    /// `CreateBucket` in the client's region (with a `LocationConstraint` unless us-east-1).
    pub async fn create_bucket(&self, bucket: &str) -> Result<(), AwsError> {
        let mut call = Call::new(Service::S3, Method::PUT, self.s3_target(bucket, None, &[])?);
        if let Some(body) = create_bucket_body(self.region()) {
            call = call.header("content-type", "application/xml").body(body);
        }
        self.fetch(call).await.map(drop)
    }

    /// `HeadBucket`: true when it exists and is ours to use, false when there is no such
    /// bucket; any other answer (403: someone else's; 301: another region) is an error.
    pub async fn bucket_exists(&self, bucket: &str) -> Result<bool, AwsError> {
        let call = Call::new(Service::S3, Method::HEAD, self.s3_target(bucket, None, &[])?);
        match self.send(call).await {
            Ok(_) => Ok(true),
            Err(AwsError::Service { status: 404, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `PutBucketLogging`: server access logs of `bucket` go to `target_bucket` under
    /// `target_prefix` (the target must let the logging service write).
    pub async fn put_bucket_logging(
        &self,
        bucket: &str,
        target_bucket: &str,
        target_prefix: &str,
    ) -> Result<(), AwsError> {
        self.bucket_logging(bucket, logging_body(Some((target_bucket, target_prefix)))).await
    }

    /// `GetBucketLogging`: where the bucket's access logs go (`(target bucket, target
    /// prefix)`), `None` when logging is off.
    pub async fn get_bucket_logging(&self, bucket: &str) -> Result<Option<(String, String)>, AwsError> {
        let call = Call::new(Service::S3, Method::GET, self.s3_target(bucket, None, &[("logging", "")])?);
        parse_logging(&xml::parse(&self.fetch(call).await?)?)
    }

    /// `PutBucketPolicy`: the bucket's policy (a JSON document), replacing any other.
    pub async fn put_bucket_policy(&self, bucket: &str, policy_json: &str) -> Result<(), AwsError> {
        let call = Call::new(Service::S3, Method::PUT, self.s3_target(bucket, None, &[("policy", "")])?)
            .header("content-type", "application/json")
            .body(policy_json.to_owned());
        self.fetch(call).await.map(drop)
    }

    /// `PutBucketLogging` with an empty status: logging off.
    pub async fn delete_bucket_logging(&self, bucket: &str) -> Result<(), AwsError> {
        self.bucket_logging(bucket, logging_body(None)).await
    }

    async fn bucket_logging(&self, bucket: &str, body: String) -> Result<(), AwsError> {
        use base64::Engine;
        // S3 requires a checksum of this body; Content-MD5 is the one every S3 accepts.
        let md5 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(body.as_bytes()));
        let call = Call::new(Service::S3, Method::PUT, self.s3_target(bucket, None, &[("logging", "")])?)
            .header("content-type", "application/xml")
            .header("content-md5", md5)
            .body(body);
        self.fetch(call).await.map(drop)
    }
}

fn create_bucket_body(region: &str) -> Option<String> {
    (region != "us-east-1").then(|| {
        format!(
            r#"<CreateBucketConfiguration xmlns="{NAMESPACE}"><LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>"#,
            xml::escape(region)
        )
    })
}

fn logging_body(target: Option<(&str, &str)>) -> String {
    match target {
        Some((bucket, prefix)) => format!(
            r#"<BucketLoggingStatus xmlns="{NAMESPACE}"><LoggingEnabled><TargetBucket>{}</TargetBucket><TargetPrefix>{}</TargetPrefix></LoggingEnabled></BucketLoggingStatus>"#,
            xml::escape(bucket),
            xml::escape(prefix)
        ),
        None => format!(r#"<BucketLoggingStatus xmlns="{NAMESPACE}" />"#),
    }
}

fn parse_logging(root: &Element) -> Result<Option<(String, String)>, AwsError> {
    if root.name != "BucketLoggingStatus" {
        return Err(AwsError::Malformed(format!("a logging reply is <BucketLoggingStatus>, not <{}>", root.name)));
    }
    match root.child("LoggingEnabled") {
        Some(enabled) => Ok(Some((
            enabled.required("TargetBucket")?.to_owned(),
            enabled.text_of("TargetPrefix").unwrap_or_default().to_owned(),
        ))),
        None => Ok(None),
    }
}

/// A URL-encoded listing value decoded (`+` is a space).
fn decode(text: &str) -> Result<String, AwsError> {
    let spaced = text.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| AwsError::Malformed(format!("the listed key {text:?} is not UTF-8 once decoded")))
}

fn parse_listing(root: &Element) -> Result<ObjectPage, AwsError> {
    if root.name != "ListBucketResult" {
        return Err(AwsError::Malformed(format!("a listing reply is <ListBucketResult>, not <{}>", root.name)));
    }
    let encoded = root.text_of("EncodingType") == Some("url");
    let key_text = |text: &str| if encoded { decode(text) } else { Ok(text.to_owned()) };
    let mut objects = Vec::new();
    for item in root.children("Contents") {
        // Keys are taken untrimmed: a key may begin or end with spaces when not URL-encoded.
        let key = item.required_child("Key")?.text.as_str();
        let size = item.required("Size")?;
        objects.push(ObjectInfo {
            key: key_text(key)?,
            size: size.parse().map_err(|_| AwsError::Malformed(format!("object size {size:?}")))?,
            etag: item.text_of("ETag").unwrap_or_default().trim_matches('"').to_owned(),
            last_modified: item.date_of("LastModified")?,
        });
    }
    let common_prefixes = root
        .children("CommonPrefixes")
        .map(|p| key_text(p.required_child("Prefix")?.text.as_str()))
        .collect::<Result<_, _>>()?;
    let truncated = root.text_of("IsTruncated") == Some("true");
    let next_continuation = match root.text_of("NextContinuationToken").filter(|t| !t.is_empty()) {
        Some(token) if truncated => Some(token.to_owned()),
        None if truncated => {
            return Err(AwsError::Malformed("a truncated listing has no NextContinuationToken".into()))
        }
        _ => None,
    };
    Ok(ObjectPage { objects, common_prefixes, next_continuation })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_reply_decodes_keys() {
        let root = xml::parse(
            br#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>trail</Name><Prefix>AWSLogs%2F</Prefix><KeyCount>3</KeyCount><MaxKeys>2</MaxKeys>
  <Delimiter>%2F</Delimiter><EncodingType>url</EncodingType><IsTruncated>true</IsTruncated>
  <Contents>
    <Key>AWSLogs/my+file%2Bplus.json.gz</Key>
    <LastModified>2024-05-01T10:00:00.000Z</LastModified>
    <ETag>&quot;fba9dede5f27731c9771645a39863328&quot;</ETag>
    <Size>434234</Size><StorageClass>STANDARD</StorageClass>
  </Contents>
  <Contents><Key>AWSLogs/caf%C3%A9%20x</Key><ETag>"e"</ETag><Size>0</Size></Contents>
  <CommonPrefixes><Prefix>AWSLogs/123456789012%2F</Prefix></CommonPrefixes>
  <NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</NextContinuationToken>
</ListBucketResult>"#,
        )
        .unwrap();
        let page = parse_listing(&root).unwrap();
        assert_eq!(page.objects.len(), 2);
        assert_eq!(page.objects[0].key, "AWSLogs/my file+plus.json.gz");
        assert_eq!(page.objects[0].size, 434234);
        assert_eq!(page.objects[0].etag, "fba9dede5f27731c9771645a39863328");
        assert!(page.objects[0].last_modified.is_some());
        assert_eq!(page.objects[1].key, "AWSLogs/café x");
        assert_eq!(page.common_prefixes, vec!["AWSLogs/123456789012/".to_owned()]);
        assert_eq!(page.next_continuation.as_deref(), Some("1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM="));
    }

    #[test]
    fn listing_reply_edge_cases() {
        let last =
            xml::parse(b"<ListBucketResult><IsTruncated>false</IsTruncated><KeyCount>0</KeyCount></ListBucketResult>")
                .unwrap();
        assert_eq!(parse_listing(&last).unwrap(), ObjectPage::default());
        // Not URL-encoded: keys as written, spaces kept.
        let plain =
            xml::parse(b"<ListBucketResult><Contents><Key> a+b </Key><Size>1</Size></Contents></ListBucketResult>")
                .unwrap();
        assert_eq!(parse_listing(&plain).unwrap().objects[0].key, " a+b ");
        for bad in [
            &b"<Error><Code>x</Code></Error>"[..],
            b"<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>",
            b"<ListBucketResult><Contents><Key>k</Key><Size>-1</Size></Contents></ListBucketResult>",
            b"<ListBucketResult><Contents><Size>1</Size></Contents></ListBucketResult>",
            b"<ListBucketResult><EncodingType>url</EncodingType><Contents><Key>%FF</Key><Size>1</Size></Contents></ListBucketResult>",
        ] {
            assert!(parse_listing(&xml::parse(bad).unwrap()).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn logging_reply() {
        let on = xml::parse(
            br#"<?xml version="1.0" encoding="UTF-8"?>
<BucketLoggingStatus xmlns="http://doc.s3.amazonaws.com/2006-03-01">
  <LoggingEnabled><TargetBucket>mybucketlogs</TargetBucket><TargetPrefix>mybucket-access_log-/</TargetPrefix></LoggingEnabled>
</BucketLoggingStatus>"#,
        )
        .unwrap();
        assert_eq!(parse_logging(&on).unwrap(), Some(("mybucketlogs".into(), "mybucket-access_log-/".into())));
        let off = xml::parse(br#"<BucketLoggingStatus xmlns="http://doc.s3.amazonaws.com/2006-03-01" />"#).unwrap();
        assert_eq!(parse_logging(&off).unwrap(), None);
        assert!(parse_logging(&xml::parse(b"<Other/>").unwrap()).is_err());
    }

    #[test]
    fn request_bodies() {
        assert_eq!(create_bucket_body("us-east-1"), None);
        assert_eq!(
            create_bucket_body("eu-west-1").unwrap(),
            r#"<CreateBucketConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><LocationConstraint>eu-west-1</LocationConstraint></CreateBucketConfiguration>"#
        );
        assert_eq!(
            logging_body(Some(("logs", "src&<x>/"))),
            r#"<BucketLoggingStatus xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><LoggingEnabled><TargetBucket>logs</TargetBucket><TargetPrefix>src&amp;&lt;x&gt;/</TargetPrefix></LoggingEnabled></BucketLoggingStatus>"#
        );
        assert_eq!(logging_body(None), r#"<BucketLoggingStatus xmlns="http://s3.amazonaws.com/doc/2006-03-01/" />"#);
    }
}

//! One AWS call on the wire: sign a request (method, URL, headers, body) for a service and
//! region with `aws-sigv4`, send it with `reqwest`, read the reply with a size cap, and turn an
//! error reply into [`AwsError`].
//!
//! Error replies come in three shapes, all read here: Query APIs (IAM, STS)
//! `<ErrorResponse><Error><Code>…</Code><Message>…</Message></Error>`, S3
//! `<Error><Code>…</Code><Message>…</Message></Error>`, and JSON protocols (SQS)
//! `{"__type": "com.amazonaws.sqs#QueueDoesNotExist", "message": "…"}` (the code is the part
//! after `#`). A reply without a readable body (S3's HEAD) gets its HTTP status's name as code.
//!
//! Nothing is retried: a throttled or failed call is the caller's to retry or not.

use std::time::SystemTime;

use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;
use bytes::{Bytes, BytesMut};
use reqwest::{Method, Response, StatusCode};

use super::endpoint::Target;
use super::{xml, Aws, AwsError};

/// Largest reply read for an API call (a ListObjectsV2 page of 1000 long keys fits).
pub(crate) const REPLY_CAP: u64 = 16 * 1024 * 1024;
/// Largest error reply read.
const ERROR_CAP: u64 = 64 * 1024;
/// Longest error message kept from a reply.
const MESSAGE_CHARS: usize = 1024;

/// The services Trapline calls, by their SigV4 signing names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Service {
    Iam,
    Sts,
    S3,
    Sqs,
}

impl Service {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Service::Iam => "iam",
            Service::Sts => "sts",
            Service::S3 => "s3",
            Service::Sqs => "sqs",
        }
    }

    /// S3 signs the payload hash in `x-amz-content-sha256` and its paths as sent (encoded
    /// once, not normalised); the others use SigV4's defaults.
    fn signing_settings(self) -> SigningSettings {
        let mut settings = SigningSettings::default();
        if self == Service::S3 {
            settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
            settings.percent_encoding_mode = PercentEncodingMode::Single;
            settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        }
        settings
    }
}

/// One request to sign and send.
pub(crate) struct Call {
    service: Service,
    method: Method,
    target: Target,
    headers: Vec<(&'static str, String)>,
    body: Bytes,
}

impl Call {
    pub(crate) fn new(service: Service, method: Method, target: Target) -> Call {
        Call { service, method, target, headers: Vec::new(), body: Bytes::new() }
    }

    /// A header that is sent and signed.
    pub(crate) fn header(mut self, name: &'static str, value: impl Into<String>) -> Call {
        self.headers.push((name, value.into()));
        self
    }

    pub(crate) fn body(mut self, body: impl Into<Bytes>) -> Call {
        self.body = body.into();
        self
    }
}

impl Aws {
    /// Signs and sends `call`. A 2xx reply is returned unread; any other is read (capped) and
    /// returned as its [`AwsError::Service`].
    pub(crate) async fn send(&self, call: Call) -> Result<Response, AwsError> {
        let signature = self.signature(&call, SystemTime::now())?;
        let Call { service, method, target, headers, body } = call;
        let mut request = self.inner.http.request(method, target.url);
        for (name, value) in &headers {
            request = request.header(*name, value);
        }
        for (name, value) in &signature {
            request = request.header(*name, value);
        }
        let response = request.body(body).send().await.map_err(|e| transport(service, &e))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let bucket_region =
            response.headers().get("x-amz-bucket-region").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = read_capped(response, ERROR_CAP, "the error reply").await.unwrap_or_default();
        let mut error = service_error(service, status, &body);
        if let (AwsError::Service { message, .. }, Some(region), true) =
            (&mut error, bucket_region, status.is_redirection())
        {
            message.push_str(&format!(" (the bucket is in {region})"));
        }
        Err(error)
    }

    /// The headers that sign `call` at `time` (`authorization`, `x-amz-date`, and
    /// `x-amz-security-token` and `x-amz-content-sha256` when they apply).
    fn signature(&self, call: &Call, time: SystemTime) -> Result<Vec<(&'static str, String)>, AwsError> {
        let unsignable = |e: &dyn std::fmt::Display| {
            AwsError::Invalid(format!("cannot sign the {} request: {e}", call.service.name()))
        };
        let identity = self.inner.signing.clone().into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&call.target.region)
            .name(call.service.name())
            .time(time)
            .settings(call.service.signing_settings())
            .build()
            .map_err(|e| unsignable(&e))?
            .into();
        let request = SignableRequest::new(
            call.method.as_str(),
            call.target.url.as_str(),
            call.headers.iter().map(|(name, value)| (*name, value.as_str())),
            SignableBody::Bytes(&call.body),
        )
        .map_err(|e| unsignable(&e))?;
        let (instructions, _signature) = sign(request, &params).map_err(|e| unsignable(&e))?.into_parts();
        let (headers, _query) = instructions.into_parts();
        Ok(headers.iter().map(|h| (h.name(), h.value().to_owned())).collect())
    }

    /// A Query-protocol call (IAM, STS): a POSTed form `Action=…&Version=…&…`, an XML reply,
    /// returned as its root element.
    pub(crate) async fn query(
        &self,
        service: Service,
        target: Target,
        action: &str,
        version: &str,
        params: &[(&str, &str)],
    ) -> Result<xml::Element, AwsError> {
        // The serializer is not Send: it is gone before the await.
        let body = {
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.append_pair("Action", action).append_pair("Version", version);
            for (name, value) in params {
                form.append_pair(name, value);
            }
            form.finish()
        };
        let call = Call::new(service, Method::POST, target)
            .header("content-type", "application/x-www-form-urlencoded; charset=utf-8")
            .body(body);
        xml::parse(&self.fetch(call).await?)
    }

    /// [`Aws::send`], then the whole reply body (at most [`REPLY_CAP`] bytes).
    pub(crate) async fn fetch(&self, call: Call) -> Result<Bytes, AwsError> {
        let service = call.service;
        let response = self.send(call).await?;
        read_capped(response, REPLY_CAP, &format!("the {} reply", service.name())).await
    }
}

/// Reads a body of at most `limit` bytes; a larger one is [`AwsError::TooLarge`], refused from
/// its `Content-Length` before reading when it has one.
pub(crate) async fn read_capped(mut response: Response, limit: u64, what: &str) -> Result<Bytes, AwsError> {
    let too_large = || AwsError::TooLarge { what: what.to_owned(), limit };
    if response.content_length().is_some_and(|length| length > limit) {
        return Err(too_large());
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| AwsError::Transport(chain(&e)))? {
        if body.len() as u64 + chunk.len() as u64 > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

fn transport(service: Service, e: &reqwest::Error) -> AwsError {
    AwsError::Transport(format!("{}: {}", service.name(), chain(e)))
}

/// An error and its causes, `a: b: c`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The [`AwsError::Service`] of an error reply.
pub(crate) fn service_error(service: Service, status: StatusCode, body: &[u8]) -> AwsError {
    let (code, message) = match parse_error_body(body) {
        Some(parsed) => parsed,
        None => {
            let code: String =
                status.canonical_reason().unwrap_or("HttpError").split_whitespace().collect::<Vec<_>>().concat();
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            let message = if text.is_empty() { "no error body".to_owned() } else { text.to_owned() };
            (code, message)
        }
    };
    let message = match message.char_indices().nth(MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}…", &message[..cut]),
        None => message,
    };
    AwsError::Service { service: service.name(), status: status.as_u16(), code, message }
}

/// `(code, message)` from an XML or JSON error reply.
fn parse_error_body(body: &[u8]) -> Option<(String, String)> {
    let start = body.iter().position(|b| !b.is_ascii_whitespace())?;
    match body[start] {
        b'<' => {
            let root = xml::parse(body).ok()?;
            let error = find(&root, "Error", 3)?;
            let code = error.text_of("Code").filter(|c| !c.is_empty())?;
            Some((code.to_owned(), error.text_of("Message").unwrap_or_default().to_owned()))
        }
        b'{' => {
            let value: serde_json::Value = serde_json::from_slice(body).ok()?;
            let field = |names: &[&str]| names.iter().find_map(|n| value.get(*n).and_then(|v| v.as_str()));
            let kind = field(&["__type", "code", "Code"])?;
            // `com.amazonaws.sqs#QueueDoesNotExist`, sometimes with `:http://…` after it.
            let code = kind.rsplit('#').next().unwrap_or(kind).split(':').next().unwrap_or(kind);
            (!code.is_empty()).then(|| (code.to_owned(), field(&["message", "Message"]).unwrap_or_default().to_owned()))
        }
        _ => None,
    }
}

/// The element named `name`: `root` itself or a descendant at most `depth` levels down.
fn find<'a>(root: &'a xml::Element, name: &str, depth: usize) -> Option<&'a xml::Element> {
    if root.name == name {
        return Some(root);
    }
    if depth == 0 {
        return None;
    }
    root.children.iter().find_map(|child| find(child, name, depth - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_message(e: AwsError) -> (String, String, u16) {
        match e {
            AwsError::Service { code, message, status, .. } => (code, message, status),
            other => panic!("not a service error: {other:?}"),
        }
    }

    #[test]
    fn query_api_errors() {
        let body = br#"<ErrorResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/">
  <Error>
    <Type>Sender</Type>
    <Code>NoSuchEntity</Code>
    <Message>The user with name honey cannot be found.</Message>
  </Error>
  <RequestId>4a2b1c3d-0000-0000-0000-000000000000</RequestId>
</ErrorResponse>"#;
        let e = service_error(Service::Iam, StatusCode::NOT_FOUND, body);
        assert!(e.is_code("NoSuchEntity"));
        assert_eq!(code_message(e), ("NoSuchEntity".into(), "The user with name honey cannot be found.".into(), 404));
    }

    #[test]
    fn s3_errors() {
        let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message><Key>a b</Key><RequestId>1</RequestId></Error>"#;
        assert_eq!(
            code_message(service_error(Service::S3, StatusCode::NOT_FOUND, body)),
            ("NoSuchKey".into(), "The specified key does not exist.".into(), 404)
        );
        // HEAD: no body.
        assert_eq!(
            code_message(service_error(Service::S3, StatusCode::NOT_FOUND, b"")),
            ("NotFound".into(), "no error body".into(), 404)
        );
        assert_eq!(code_message(service_error(Service::S3, StatusCode::FORBIDDEN, b"")).0, "Forbidden");
    }

    #[test]
    fn json_errors() {
        let body =
            br#"{"__type":"com.amazonaws.sqs#QueueDoesNotExist","message":"The specified queue does not exist."}"#;
        assert_eq!(
            code_message(service_error(Service::Sqs, StatusCode::BAD_REQUEST, body)),
            ("QueueDoesNotExist".into(), "The specified queue does not exist.".into(), 400)
        );
        let body = br#"{"__type":"com.amazon.coral.service#UnrecognizedClientException:http://internal.amazon.com/coral/","Message":"bad token"}"#;
        assert_eq!(
            code_message(service_error(Service::Sqs, StatusCode::BAD_REQUEST, body)).0,
            "UnrecognizedClientException"
        );
        let body = br#"{"__type":"ThrottlingException"}"#;
        assert_eq!(
            code_message(service_error(Service::Sqs, StatusCode::BAD_REQUEST, body)),
            ("ThrottlingException".into(), String::new(), 400)
        );
    }

    #[test]
    fn unreadable_errors_keep_status_and_text() {
        let (code, message, status) =
            code_message(service_error(Service::Sts, StatusCode::BAD_GATEWAY, b"<html>proxy error"));
        assert_eq!((code.as_str(), message.as_str(), status), ("BadGateway", "<html>proxy error", 502));
        let long = format!("<Error><Code>X</Code><Message>{}</Message></Error>", "m".repeat(5000));
        let message = code_message(service_error(Service::S3, StatusCode::BAD_REQUEST, long.as_bytes())).1;
        assert_eq!(message.chars().count(), MESSAGE_CHARS + 1);
    }

    fn at(rfc3339: &str) -> SystemTime {
        let secs = chrono::DateTime::parse_from_rfc3339(rfc3339).unwrap().timestamp();
        SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64)
    }

    fn authorization<'a>(headers: &'a [(&'static str, String)]) -> &'a str {
        &headers.iter().find(|(name, _)| *name == "authorization").expect("signed").1
    }

    /// AWS's documented example of a signed request (General Reference, "Signed Signature
    /// Version 4 Requests Examples": IAM ListUsers).
    #[test]
    fn signs_the_documented_iam_example() {
        let aws = Aws::with_static_credentials(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            None,
            "eu-west-1",
            None,
        )
        .unwrap();
        let call = Call::new(Service::Iam, Method::POST, super::super::endpoint::iam(None).unwrap())
            .header("content-type", "application/x-www-form-urlencoded; charset=utf-8")
            .body("Action=ListUsers&Version=2010-05-08");
        let headers = aws.signature(&call, at("2011-09-09T23:36:00Z")).unwrap();
        let auth = authorization(&headers);
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20110909/us-east-1/iam/aws4_request"),
            "{auth}"
        );
        assert!(auth.contains("SignedHeaders=content-type;host;x-amz-date"), "{auth}");
        assert!(auth.ends_with("Signature=ced6826de92d2bdeed8f846f0bf508e8559e98e4b0199114b84c54174deb456c"), "{auth}");
        assert!(headers.contains(&("x-amz-date", "20110909T233600Z".to_owned())));
        assert!(!headers.iter().any(|(name, _)| *name == "x-amz-content-sha256"));
    }

    /// AWS's documented S3 example (S3 API Reference, "Signature Calculations for the
    /// Authorization Header", GET Object with a Range).
    #[test]
    fn signs_the_documented_s3_example() {
        let aws = Aws::with_static_credentials(
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            None,
            "us-east-1",
            None,
        )
        .unwrap();
        let target = Target {
            url: "https://examplebucket.s3.amazonaws.com/test.txt".parse().unwrap(),
            region: "us-east-1".into(),
        };
        let call = Call::new(Service::S3, Method::GET, target).header("range", "bytes=0-9");
        let headers = aws.signature(&call, at("2013-05-24T00:00:00Z")).unwrap();
        let auth = authorization(&headers);
        assert!(auth.contains("SignedHeaders=host;range;x-amz-content-sha256;x-amz-date"), "{auth}");
        assert!(auth.ends_with("Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"), "{auth}");
        assert!(headers.contains(&(
            "x-amz-content-sha256",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".to_owned()
        )));
    }

    #[test]
    fn a_session_token_is_sent() {
        let aws = Aws::with_static_credentials("ASIAEXAMPLE", "s", Some("the-token"), "us-east-1", None).unwrap();
        let call = Call::new(Service::Sts, Method::POST, super::super::endpoint::sts(None, "us-east-1").unwrap());
        let headers = aws.signature(&call, SystemTime::now()).unwrap();
        assert!(headers.contains(&("x-amz-security-token", "the-token".to_owned())));
        assert!(authorization(&headers).contains("x-amz-security-token"));
    }

    #[test]
    fn s3_signs_its_own_way() {
        let s3 = Service::S3.signing_settings();
        assert_eq!(s3.payload_checksum_kind, PayloadChecksumKind::XAmzSha256);
        assert_eq!(s3.percent_encoding_mode, PercentEncodingMode::Single);
        let iam = Service::Iam.signing_settings();
        assert_eq!(iam.payload_checksum_kind, PayloadChecksumKind::NoHeader);
    }
}

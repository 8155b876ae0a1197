//! Trapline's AWS client: the few IAM, STS, S3 and SQS calls the `aws-id` and `aws-s3` kinds and
//! the CloudTrail poller make, signed with SigV4, against AWS or one endpoint override (moto).
//!
//! - [`AwsSettings`]: the `[aws]` settings (`--aws-*`, `TRAPLINE_AWS_*`); AWS is on only when a
//!   region is set.
//! - [`Aws`]: the client, cheap to clone. Its calls are grouped by service in [`iam`], [`sts`],
//!   [`s3`] and [`sqs`]; [`credentials`] is the standard chain that finds the operator's keys.
//! - [`AwsError`]: what a call can fail with. AWS's own refusals keep their code
//!   ([`AwsError::is_code`]); nothing is retried inside: callers decide.
//!
//! Built from `aws-sigv4` (the signer the official SDK itself uses), the project's `reqwest`
//! (rustls, ring) to send, and `quick-xml` to read the XML replies, rather than from the
//! official SDK (`aws-config` and `aws-sdk-*`): the SDK pulls `aws-lc-sys` (C, cmake), a second
//! hyper and a second rustls, and its debug build took 108 s in a scratch crate on this
//! machine, for some twenty calls whose wire formats are small and documented. The signer is
//! the one part where a mistake is easy and silent, so it is not hand-written.
//!
//! Secrets (secret access keys, session tokens) never appear in `Debug` output, errors or
//! logs: they are held in [`credentials::Secret`].

pub mod credentials;
mod endpoint;
pub mod iam;
pub mod s3;
mod sign;
pub mod sqs;
pub mod sts;
mod xml;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use url::Url;

pub use credentials::{Credentials, Secret};
pub use iam::{AccessKey, IamUser, LastUsed};
pub use s3::{ObjectInfo, ObjectPage};
pub use sqs::SqsMessage;
pub use sts::Identity;

/// IAM path of honey users unless `--aws-iam-path` says otherwise.
pub const DEFAULT_IAM_PATH: &str = "/";
/// Seconds between safety-net polls of `GetAccessKeyLastUsed` unless told otherwise.
pub const DEFAULT_LAST_USED_INTERVAL: u64 = 300;
/// Seconds a key's new last-used time may wait for its CloudTrail record, unless told otherwise.
pub const DEFAULT_LAST_USED_GRACE: u64 = 1800;

/// Trapline's AWS access: flags `--aws-*`, `TRAPLINE_AWS_*`, TOML `[aws]`. AWS is on only when
/// `region` is set.
#[derive(Debug, Clone, Default, PartialEq, clap::Args, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AwsSettings {
    /// AWS region (e.g. us-east-1); AWS features (aws-id, aws-s3, CloudTrail) are on only when set.
    #[arg(id = "aws_region", long = "aws-region", value_name = "REGION", env = "TRAPLINE_AWS_REGION")]
    pub region: Option<String>,
    /// One endpoint for IAM, STS, S3 (path-style) and SQS instead of AWS's (e.g. moto).
    #[arg(id = "aws_endpoint_url", long = "aws-endpoint-url", value_name = "URL", env = "TRAPLINE_AWS_ENDPOINT_URL")]
    pub endpoint_url: Option<String>,
    /// Profile of the shared config and credentials files (default: AWS_PROFILE, else default).
    #[arg(id = "aws_profile", long = "aws-profile", value_name = "NAME", env = "TRAPLINE_AWS_PROFILE")]
    pub profile: Option<String>,
    /// IAM path of honey users (default /).
    #[arg(id = "aws_iam_path", long = "aws-iam-path", value_name = "PATH", env = "TRAPLINE_AWS_IAM_PATH")]
    pub iam_path: Option<String>,
    /// Tags put on each honey user, `key=value,key=value`.
    #[arg(id = "aws_user_tags", long = "aws-user-tags", value_name = "K=V,…", env = "TRAPLINE_AWS_USER_TAGS")]
    pub user_tags: Option<String>,
    /// Seconds between safety-net polls of each key's last use (default 300).
    #[arg(
        id = "aws_last_used_interval",
        long = "aws-last-used-interval",
        value_name = "SECS",
        env = "TRAPLINE_AWS_LAST_USED_INTERVAL"
    )]
    pub last_used_interval: Option<u64>,
    /// Seconds a key's new last-used time may wait for its CloudTrail record before the safety
    /// net raises a hit (default 1800).
    #[arg(
        id = "aws_last_used_grace",
        long = "aws-last-used-grace",
        value_name = "SECS",
        env = "TRAPLINE_AWS_LAST_USED_GRACE"
    )]
    pub last_used_grace: Option<u64>,
}

impl AwsSettings {
    /// The IAM path of honey users, checked as IAM checks it (`/`, or `/…/` of printable ASCII,
    /// at most 512 characters).
    pub fn iam_path(&self) -> anyhow::Result<&str> {
        let path = self.iam_path.as_deref().unwrap_or(DEFAULT_IAM_PATH);
        anyhow::ensure!(
            path.len() <= 512
                && path.starts_with('/')
                && path.ends_with('/')
                && path.bytes().all(|b| (0x21..=0x7e).contains(&b)),
            "aws_iam_path must start and end with '/' and hold only printable ASCII (at most 512 characters), not {path:?}"
        );
        Ok(path)
    }

    /// The tags of honey users from `user_tags` (`k=v,k=v`; empty when unset).
    pub fn user_tags(&self) -> anyhow::Result<Vec<(String, String)>> {
        parse_user_tags(self.user_tags.as_deref().unwrap_or(""))
    }

    /// Seconds between safety-net polls (at least 1).
    pub fn last_used_interval(&self) -> anyhow::Result<u64> {
        let secs = self.last_used_interval.unwrap_or(DEFAULT_LAST_USED_INTERVAL);
        anyhow::ensure!(secs >= 1, "aws_last_used_interval must be at least 1 second");
        Ok(secs)
    }

    /// Seconds of grace before the safety net raises a hit.
    pub fn last_used_grace(&self) -> u64 {
        self.last_used_grace.unwrap_or(DEFAULT_LAST_USED_GRACE)
    }
}

/// Parses `k=v,k=v` into IAM tags (IAM's limits: at most 50 tags, keys of 1 to 128 characters,
/// values of at most 256, no key twice).
pub fn parse_user_tags(text: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut tags: Vec<(String, String)> = Vec::new();
    for item in text.split(',').map(str::trim).filter(|item| !item.is_empty()) {
        let (key, value) = item.split_once('=').with_context(|| format!("aws_user_tags: {item:?} is not key=value"))?;
        let (key, value) = (key.trim(), value.trim());
        anyhow::ensure!(
            (1..=128).contains(&key.chars().count()),
            "aws_user_tags: a tag key has 1 to 128 characters, not {key:?}"
        );
        anyhow::ensure!(
            value.chars().count() <= 256,
            "aws_user_tags: the value of {key:?} is longer than 256 characters"
        );
        anyhow::ensure!(!key.starts_with("aws:"), "aws_user_tags: keys starting with aws: are AWS's own");
        anyhow::ensure!(!tags.iter().any(|(k, _)| k == key), "aws_user_tags: {key:?} is given twice");
        tags.push((key.to_owned(), value.to_owned()));
    }
    anyhow::ensure!(tags.len() <= 50, "aws_user_tags: IAM allows at most 50 tags");
    Ok(tags)
}

/// What an AWS call failed with. Never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AwsError {
    /// AWS (or the endpoint override) answered with an error reply.
    #[error("{service}: {code} (HTTP {status}): {message}")]
    Service {
        /// `iam`, `sts`, `s3` or `sqs`.
        service: &'static str,
        status: u16,
        /// AWS's error code (`NoSuchEntity`, `AccessDenied`, `QueueDoesNotExist`, …); for a reply
        /// without a body (S3 HEAD), the HTTP status's name (`NotFound`, `Forbidden`).
        code: String,
        message: String,
    },
    /// The request did not get a reply: connection, TLS, timeout.
    #[error("AWS request failed: {0}")]
    Transport(String),
    /// The reply came but is not what the call expects.
    #[error("unexpected AWS reply: {0}")]
    Malformed(String),
    /// A body is larger than the caller allows (it was not read).
    #[error("{what} is larger than {limit} bytes")]
    TooLarge { what: String, limit: u64 },
    /// A request Trapline refuses to send: a bad argument (bucket name, key, count).
    #[error("invalid AWS request: {0}")]
    Invalid(String),
}

impl AwsError {
    /// Whether AWS refused with this error code (e.g. `NoSuchEntity`).
    pub fn is_code(&self, code: &str) -> bool {
        matches!(self, AwsError::Service { code: c, .. } if c == code)
    }
}

/// The AWS client: the operator's credentials, the region, the endpoint override and one HTTP
/// client. Cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct Aws {
    inner: Arc<Inner>,
}

struct Inner {
    /// The signer's credentials type; built once (its `Debug` hides the secret too).
    signing: aws_credential_types::Credentials,
    /// Where the credentials came from, for the start-up line.
    source: String,
    region: String,
    endpoint: Option<Url>,
    http: reqwest::Client,
}

impl fmt::Debug for Aws {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Aws")
            .field("region", &self.inner.region)
            .field("endpoint", &self.endpoint())
            .field("credentials", &self.inner.source)
            .finish_non_exhaustive()
    }
}

/// Time to set up a connection (TCP and TLS).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for a whole call, reply body included; an SQS long poll (at most 20 s) fits.
const TOTAL_TIMEOUT: Duration = Duration::from_secs(40);

impl Aws {
    /// The client of `settings`: `None` when no region is set (AWS is off). Fails when a region
    /// is set but no credentials are found (the error says where it looked), or a setting is bad.
    pub fn from_settings(settings: &AwsSettings) -> anyhow::Result<Option<Aws>> {
        let Some(region) = settings.region.as_deref() else {
            return Ok(None);
        };
        settings.iam_path()?;
        settings.user_tags()?;
        settings.last_used_interval()?;
        let credentials = credentials::resolve(settings.profile.as_deref(), &|name| std::env::var(name).ok())?;
        Aws::new(credentials, region, settings.endpoint_url.as_deref()).map(Some)
    }

    /// A client with keys the caller holds (a honey key, in tests; or a caller's own chain).
    pub fn with_static_credentials(
        access_key_id: &str,
        secret_access_key: &str,
        session_token: Option<&str>,
        region: &str,
        endpoint_url: Option<&str>,
    ) -> anyhow::Result<Aws> {
        let credentials = Credentials {
            access_key_id: access_key_id.to_owned(),
            secret_access_key: Secret::new(secret_access_key),
            session_token: session_token.map(Secret::new),
            source: "static credentials".to_owned(),
        };
        Aws::new(credentials, region, endpoint_url)
    }

    fn new(credentials: Credentials, region: &str, endpoint_url: Option<&str>) -> anyhow::Result<Aws> {
        anyhow::ensure!(
            !credentials.access_key_id.is_empty() && !credentials.secret_access_key.expose().is_empty(),
            "AWS credentials ({}) have an empty access key id or secret",
            credentials.source
        );
        anyhow::ensure!(
            !region.is_empty()
                && region.len() <= 32
                && region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "aws_region {region:?} is not an AWS region name (like us-east-1)"
        );
        let endpoint = endpoint_url.map(endpoint::parse_override).transpose()?;
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(TOTAL_TIMEOUT)
            // A signed request must not be replayed elsewhere; S3's region redirects are errors.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("trapline/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("cannot build the AWS HTTP client")?;
        let signing = aws_credential_types::Credentials::new(
            credentials.access_key_id.clone(),
            credentials.secret_access_key.expose(),
            credentials.session_token.as_ref().map(|t| t.expose().to_owned()),
            None,
            "trapline",
        );
        Ok(Aws {
            inner: Arc::new(Inner { signing, source: credentials.source, region: region.to_owned(), endpoint, http }),
        })
    }

    /// The region calls are made in (IAM is global and always signed for us-east-1).
    pub fn region(&self) -> &str {
        &self.inner.region
    }

    /// The endpoint override, when one is set.
    pub fn endpoint(&self) -> Option<&str> {
        self.inner.endpoint.as_ref().map(Url::as_str)
    }

    /// Where the credentials came from (`environment`, `profile default in /root/.aws/credentials`,
    /// `static credentials`), for the start-up line. Names no secret.
    pub fn credentials_source(&self) -> &str {
        &self.inner.source
    }

    /// The access key id calls are signed with (not a secret; useful to tell the operator's key
    /// from honey keys).
    pub fn access_key_id(&self) -> &str {
        self.inner.signing.access_key_id()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_parse_and_are_checked() {
        assert_eq!(
            parse_user_tags(" team = infra , cost-center=42,empty=").unwrap(),
            vec![
                ("team".to_owned(), "infra".to_owned()),
                ("cost-center".to_owned(), "42".to_owned()),
                ("empty".to_owned(), String::new())
            ]
        );
        assert!(parse_user_tags("").unwrap().is_empty());
        assert!(parse_user_tags("novalue").is_err());
        assert!(parse_user_tags("=v").is_err());
        assert!(parse_user_tags("a=1,a=2").is_err());
        assert!(parse_user_tags("aws:x=1").is_err());
        let many: Vec<String> = (0..51).map(|i| format!("k{i}=v")).collect();
        assert!(parse_user_tags(&many.join(",")).is_err());
    }

    #[test]
    fn iam_path_is_checked() {
        let mut s = AwsSettings::default();
        assert_eq!(s.iam_path().unwrap(), "/");
        s.iam_path = Some("/service-accounts/".into());
        assert_eq!(s.iam_path().unwrap(), "/service-accounts/");
        for bad in ["svc/", "/svc", "/a b/", ""] {
            s.iam_path = Some(bad.into());
            assert!(s.iam_path().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn no_region_means_off() {
        assert!(Aws::from_settings(&AwsSettings::default()).unwrap().is_none());
    }

    #[test]
    fn client_checks_region_and_endpoint_and_hides_the_secret() {
        let aws = Aws::with_static_credentials("AKIDEXAMPLE", "very-secret", Some("tok"), "eu-west-1", None).unwrap();
        assert_eq!(aws.region(), "eu-west-1");
        assert_eq!(aws.endpoint(), None);
        let debug = format!("{aws:?}");
        assert!(!debug.contains("very-secret") && !debug.contains("tok\""), "{debug}");
        assert!(Aws::with_static_credentials("AKID", "s", None, "EU WEST", None).is_err());
        assert!(Aws::with_static_credentials("AKID", "", None, "eu-west-1", None).is_err());
        assert!(Aws::with_static_credentials("AKID", "s", None, "eu-west-1", Some("ftp://x")).is_err());
        let moto =
            Aws::with_static_credentials("AKID", "s", None, "us-east-1", Some("http://127.0.0.1:5000/")).unwrap();
        assert_eq!(moto.endpoint(), Some("http://127.0.0.1:5000/"));
    }

    #[test]
    fn error_codes() {
        let e = AwsError::Service {
            service: "iam",
            status: 404,
            code: "NoSuchEntity".into(),
            message: "The user with name x cannot be found.".into(),
        };
        assert!(e.is_code("NoSuchEntity"));
        assert!(!e.is_code("AccessDenied"));
        assert!(!AwsError::Transport("x".into()).is_code("NoSuchEntity"));
        assert_eq!(e.to_string(), "iam: NoSuchEntity (HTTP 404): The user with name x cannot be found.");
    }
}

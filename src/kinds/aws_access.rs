//! What the AWS kinds (`aws-id`, `aws-s3`) reach AWS with: the operator's client, the IAM
//! path and tags honey users get, and the account id (asked of STS once, then kept).
//!
//! Built by `serve` from the `[aws]` settings; absent (None in
//! [`KindContext::aws`](super::KindContext)) when no region is set, and then the AWS kinds are
//! unavailable ([`unavailable`]).

use tokio::sync::OnceCell;

use crate::aws::{Aws, AwsError};
use crate::error::CoreError;

pub struct AwsAccess {
    pub client: Aws,
    /// IAM path of honey users (`/` unless set), e.g. `/service/`.
    pub iam_path: String,
    /// Tags put on every honey user.
    pub user_tags: Vec<(String, String)>,
    account: OnceCell<String>,
}

impl AwsAccess {
    pub fn new(client: Aws, iam_path: Option<&str>, user_tags: Vec<(String, String)>) -> AwsAccess {
        let iam_path = iam_path.map(str::trim).filter(|p| !p.is_empty()).unwrap_or("/").to_string();
        AwsAccess { client, iam_path, user_tags, account: OnceCell::new() }
    }

    /// The account the operator's credentials belong to (STS GetCallerIdentity, asked once).
    pub async fn account_id(&self) -> Result<String, AwsError> {
        self.account.get_or_try_init(|| async { Ok(self.client.caller_identity().await?.account) }).await.cloned()
    }
}

/// The refusal of an AWS kind on a server without AWS settings.
pub fn unavailable(kind: &'static str) -> CoreError {
    CoreError::KindUnavailable {
        kind,
        reason: "it needs AWS settings: start Trapline with --aws-region (and AWS credentials in the \
                 environment or the shared AWS files); see the README, section AWS"
            .into(),
    }
}

/// An AWS failure as the caller sees it.
pub fn upstream(what: &str, e: &AwsError) -> CoreError {
    CoreError::Upstream(format!("AWS could not {what}: {e}"))
}

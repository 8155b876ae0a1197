//! STS `GetCallerIdentity` (Query API, `Version=2011-06-15`): whose keys these are — the
//! account honey users live in, and a check that a key works.

use super::sign::Service;
use super::xml::Element;
use super::{endpoint, Aws, AwsError};

/// Who signed the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The 12-digit account id.
    pub account: String,
    pub arn: String,
    pub user_id: String,
}

impl Aws {
    /// `GetCallerIdentity` (sent to the regional STS endpoint).
    pub async fn caller_identity(&self) -> Result<Identity, AwsError> {
        let target = endpoint::sts(self.inner.endpoint.as_ref(), self.region())?;
        let root = self.query(Service::Sts, target, "GetCallerIdentity", "2011-06-15", &[]).await?;
        parse_identity(&root)
    }
}

fn parse_identity(root: &Element) -> Result<Identity, AwsError> {
    let result = root
        .child("GetCallerIdentityResult")
        .ok_or_else(|| AwsError::Malformed("the STS reply has no GetCallerIdentityResult".into()))?;
    Ok(Identity {
        account: result.required("Account")?.to_owned(),
        arn: result.required("Arn")?.to_owned(),
        user_id: result.required("UserId")?.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_identity_reply() {
        let root = super::super::xml::parse(
            br#"<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <GetCallerIdentityResult>
    <Arn>arn:aws:iam::123456789012:user/Alice</Arn>
    <UserId>AIDACKCEVSQ6C2EXAMPLE</UserId>
    <Account>123456789012</Account>
  </GetCallerIdentityResult>
  <ResponseMetadata><RequestId>01234567-89ab-cdef-0123-456789abcdef</RequestId></ResponseMetadata>
</GetCallerIdentityResponse>"#,
        )
        .unwrap();
        assert_eq!(
            parse_identity(&root).unwrap(),
            Identity {
                account: "123456789012".into(),
                arn: "arn:aws:iam::123456789012:user/Alice".into(),
                user_id: "AIDACKCEVSQ6C2EXAMPLE".into()
            }
        );
        let partial =
            super::super::xml::parse(b"<R><GetCallerIdentityResult><Arn>x</Arn></GetCallerIdentityResult></R>")
                .unwrap();
        assert!(parse_identity(&partial).is_err());
    }
}

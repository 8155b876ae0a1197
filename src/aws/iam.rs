//! IAM calls (Query API, `Version=2010-05-08`, a POSTed form and an XML reply): the honey
//! user's life — create it with a path and tags, give it an inline policy and an access key,
//! watch the key's last use, and delete it all again.
//!
//! Listings (`ListUserPolicies`, `ListAccessKeys`) follow `Marker` until the last page.

use chrono::{DateTime, Utc};

use super::credentials::Secret;
use super::sign::Service;
use super::xml::Element;
use super::{endpoint, Aws, AwsError};

const VERSION: &str = "2010-05-08";
/// Most pages a listing follows (IAM's pages hold 100 items; a user has at most 2 keys and a
/// few policies): a server that never stops paging is an error, not a loop.
const MAX_PAGES: usize = 100;

/// An IAM user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IamUser {
    pub name: String,
    /// The stable id (`AIDA…`).
    pub user_id: String,
    pub arn: String,
    pub create_date: Option<DateTime<Utc>>,
    /// The user's tags (`GetUser` and `CreateUser` answer them), to tell Trapline's users
    /// from others.
    pub tags: Vec<(String, String)>,
}

/// A new access key, with its secret (shown once by IAM; hidden from `Debug`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessKey {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub create_date: Option<DateTime<Utc>>,
}

/// When and where a key was last used (IAM keeps the last use only, rounded by AWS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastUsed {
    pub date: DateTime<Utc>,
    /// The service called (`s3`, `sts`, …; `N/A` when IAM does not know).
    pub service_name: String,
    /// The region called (`N/A` when IAM does not know).
    pub region: String,
}

impl Aws {
    async fn iam(&self, action: &str, params: &[(&str, &str)]) -> Result<Element, AwsError> {
        let target = endpoint::iam(self.inner.endpoint.as_ref())?;
        self.query(Service::Iam, target, action, VERSION, params).await
    }

    /// `CreateUser` with a path (`/` or `/…/`) and tags.
    pub async fn create_user(&self, name: &str, path: &str, tags: &[(String, String)]) -> Result<IamUser, AwsError> {
        let keys: Vec<(String, String)> = tags
            .iter()
            .enumerate()
            .flat_map(|(i, (key, value))| {
                [
                    (format!("Tags.member.{}.Key", i + 1), key.clone()),
                    (format!("Tags.member.{}.Value", i + 1), value.clone()),
                ]
            })
            .collect();
        let mut params = vec![("UserName", name), ("Path", path)];
        params.extend(keys.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let root = self.iam("CreateUser", &params).await?;
        parse_user(root.path(&["CreateUserResult", "User"]).ok_or_else(|| missing("CreateUserResult/User"))?)
    }

    /// `GetUser`: `None` when there is no such user.
    pub async fn get_user(&self, name: &str) -> Result<Option<IamUser>, AwsError> {
        match self.iam("GetUser", &[("UserName", name)]).await {
            Ok(root) => parse_user(root.path(&["GetUserResult", "User"]).ok_or_else(|| missing("GetUserResult/User"))?)
                .map(Some),
            Err(e) if e.is_code("NoSuchEntity") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `DeleteUser` (IAM refuses while the user still has keys or policies: `DeleteConflict`).
    pub async fn delete_user(&self, name: &str) -> Result<(), AwsError> {
        self.iam("DeleteUser", &[("UserName", name)]).await.map(drop)
    }

    /// `PutUserPolicy`: an inline policy (a JSON document) on the user.
    pub async fn put_user_policy(&self, user: &str, policy_name: &str, document_json: &str) -> Result<(), AwsError> {
        self.iam("PutUserPolicy", &[("UserName", user), ("PolicyName", policy_name), ("PolicyDocument", document_json)])
            .await
            .map(drop)
    }

    /// `DeleteUserPolicy`.
    pub async fn delete_user_policy(&self, user: &str, policy_name: &str) -> Result<(), AwsError> {
        self.iam("DeleteUserPolicy", &[("UserName", user), ("PolicyName", policy_name)]).await.map(drop)
    }

    /// `ListUserPolicies`: the names of the user's inline policies, all pages.
    pub async fn list_user_policies(&self, user: &str) -> Result<Vec<String>, AwsError> {
        let mut names = Vec::new();
        let mut marker: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut params = vec![("UserName", user)];
            if let Some(m) = &marker {
                params.push(("Marker", m));
            }
            let root = self.iam("ListUserPolicies", &params).await?;
            let (page, next) = parse_policy_names(&root)?;
            names.extend(page);
            match next {
                Some(next) => marker = Some(next),
                None => return Ok(names),
            }
        }
        Err(AwsError::Malformed(format!("ListUserPolicies did not end after {MAX_PAGES} pages")))
    }

    /// `CreateAccessKey` for the user (IAM allows 2 per user).
    pub async fn create_access_key(&self, user: &str) -> Result<AccessKey, AwsError> {
        let root = self.iam("CreateAccessKey", &[("UserName", user)]).await?;
        parse_access_key(&root)
    }

    /// `UpdateAccessKey`: make the key active or inactive.
    pub async fn update_access_key(&self, user: &str, key_id: &str, active: bool) -> Result<(), AwsError> {
        let status = if active { "Active" } else { "Inactive" };
        self.iam("UpdateAccessKey", &[("UserName", user), ("AccessKeyId", key_id), ("Status", status)]).await.map(drop)
    }

    /// `DeleteAccessKey`.
    pub async fn delete_access_key(&self, user: &str, key_id: &str) -> Result<(), AwsError> {
        self.iam("DeleteAccessKey", &[("UserName", user), ("AccessKeyId", key_id)]).await.map(drop)
    }

    /// `ListAccessKeys`: the user's keys as `(access key id, active)`, all pages.
    pub async fn list_access_keys(&self, user: &str) -> Result<Vec<(String, bool)>, AwsError> {
        let mut keys = Vec::new();
        let mut marker: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut params = vec![("UserName", user)];
            if let Some(m) = &marker {
                params.push(("Marker", m));
            }
            let root = self.iam("ListAccessKeys", &params).await?;
            let (page, next) = parse_access_keys(&root)?;
            keys.extend(page);
            match next {
                Some(next) => marker = Some(next),
                None => return Ok(keys),
            }
        }
        Err(AwsError::Malformed(format!("ListAccessKeys did not end after {MAX_PAGES} pages")))
    }

    /// `GetAccessKeyLastUsed`: `None` for a key never used (IAM answers service `N/A` and no
    /// date).
    pub async fn get_access_key_last_used(&self, key_id: &str) -> Result<Option<LastUsed>, AwsError> {
        let root = self.iam("GetAccessKeyLastUsed", &[("AccessKeyId", key_id)]).await?;
        parse_last_used(&root)
    }
}

fn missing(what: &str) -> AwsError {
    AwsError::Malformed(format!("the IAM reply has no {what}"))
}

fn parse_user(user: &Element) -> Result<IamUser, AwsError> {
    Ok(IamUser {
        name: user.required("UserName")?.to_owned(),
        user_id: user.required("UserId")?.to_owned(),
        arn: user.required("Arn")?.to_owned(),
        create_date: user.date_of("CreateDate")?,
        tags: match user.child("Tags") {
            Some(tags) => tags
                .children("member")
                .map(|m| Ok((m.required("Key")?.to_owned(), m.text_of("Value").unwrap_or_default().to_owned())))
                .collect::<Result<_, AwsError>>()?,
            None => Vec::new(),
        },
    })
}

/// `Marker` when `IsTruncated` is true.
fn next_marker(result: &Element) -> Result<Option<String>, AwsError> {
    if result.text_of("IsTruncated") != Some("true") {
        return Ok(None);
    }
    match result.text_of("Marker") {
        Some(marker) if !marker.is_empty() => Ok(Some(marker.to_owned())),
        _ => Err(missing("Marker in a truncated listing")),
    }
}

fn parse_policy_names(root: &Element) -> Result<(Vec<String>, Option<String>), AwsError> {
    let result = root.child("ListUserPoliciesResult").ok_or_else(|| missing("ListUserPoliciesResult"))?;
    let names = match result.child("PolicyNames") {
        Some(list) => list.children("member").map(|m| m.text.trim().to_owned()).collect(),
        None => Vec::new(),
    };
    Ok((names, next_marker(result)?))
}

fn parse_access_key(root: &Element) -> Result<AccessKey, AwsError> {
    let key =
        root.path(&["CreateAccessKeyResult", "AccessKey"]).ok_or_else(|| missing("CreateAccessKeyResult/AccessKey"))?;
    Ok(AccessKey {
        access_key_id: key.required("AccessKeyId")?.to_owned(),
        secret_access_key: Secret::new(key.required("SecretAccessKey")?),
        create_date: key.date_of("CreateDate")?,
    })
}

type KeyPage = (Vec<(String, bool)>, Option<String>);

fn parse_access_keys(root: &Element) -> Result<KeyPage, AwsError> {
    let result = root.child("ListAccessKeysResult").ok_or_else(|| missing("ListAccessKeysResult"))?;
    let mut keys = Vec::new();
    if let Some(list) = result.child("AccessKeyMetadata") {
        for member in list.children("member") {
            keys.push((member.required("AccessKeyId")?.to_owned(), member.required("Status")? == "Active"));
        }
    }
    Ok((keys, next_marker(result)?))
}

fn parse_last_used(root: &Element) -> Result<Option<LastUsed>, AwsError> {
    let used = root
        .path(&["GetAccessKeyLastUsedResult", "AccessKeyLastUsed"])
        .ok_or_else(|| missing("GetAccessKeyLastUsedResult/AccessKeyLastUsed"))?;
    let Some(date) = used.date_of("LastUsedDate")? else {
        return Ok(None);
    };
    Ok(Some(LastUsed {
        date,
        service_name: used.text_of("ServiceName").unwrap_or("N/A").to_owned(),
        region: used.text_of("Region").unwrap_or("N/A").to_owned(),
    }))
}

#[cfg(test)]
mod tests {
    use super::super::xml::parse;
    use super::*;

    // Replies in the shapes of the IAM API Reference's examples.

    #[test]
    fn create_user_reply() {
        let root = parse(
            br#"<CreateUserResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/">
  <CreateUserResult>
    <User>
      <Path>/division_abc/subdivision_xyz/</Path>
      <UserName>Bob</UserName>
      <UserId>AIDACKCEVSQ6C2EXAMPLE</UserId>
      <Arn>arn:aws:iam::123456789012:user/division_abc/subdivision_xyz/Bob</Arn>
      <CreateDate>2013-10-02T17:01:44Z</CreateDate>
      <Tags><member><Key>team</Key><Value>infra</Value></member></Tags>
    </User>
  </CreateUserResult>
  <ResponseMetadata><RequestId>7a62c49f-347e-4fc4-9331-6e8eEXAMPLE</RequestId></ResponseMetadata>
</CreateUserResponse>"#,
        )
        .unwrap();
        let user = parse_user(root.path(&["CreateUserResult", "User"]).unwrap()).unwrap();
        assert_eq!(user.name, "Bob");
        assert_eq!(user.user_id, "AIDACKCEVSQ6C2EXAMPLE");
        assert_eq!(user.arn, "arn:aws:iam::123456789012:user/division_abc/subdivision_xyz/Bob");
        assert_eq!(user.create_date.unwrap().to_rfc3339(), "2013-10-02T17:01:44+00:00");
        assert_eq!(user.tags, vec![("team".to_owned(), "infra".to_owned())]);
        let no_arn = parse(b"<User><UserName>x</UserName><UserId>y</UserId></User>").unwrap();
        assert!(matches!(parse_user(&no_arn), Err(AwsError::Malformed(_))));
    }

    #[test]
    fn access_key_reply_hides_the_secret() {
        let root = parse(
            br#"<CreateAccessKeyResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/">
  <CreateAccessKeyResult>
    <AccessKey>
      <UserName>Bob</UserName>
      <AccessKeyId>AKIAIOSFODNN7EXAMPLE</AccessKeyId>
      <Status>Active</Status>
      <SecretAccessKey>wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY</SecretAccessKey>
      <CreateDate>2024-01-02T03:04:05Z</CreateDate>
    </AccessKey>
  </CreateAccessKeyResult>
</CreateAccessKeyResponse>"#,
        )
        .unwrap();
        let key = parse_access_key(&root).unwrap();
        assert_eq!(key.access_key_id, "AKIAIOSFODNN7EXAMPLE");
        assert_eq!(key.secret_access_key.expose(), "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY");
        assert!(key.create_date.is_some());
        let debug = format!("{key:?}");
        assert!(!debug.contains("bPxRfiCYzEXAMPLEKEY") && debug.contains("<redacted>"), "{debug}");
    }

    #[test]
    fn listings_and_their_pages() {
        let root = parse(
            br#"<ListAccessKeysResponse><ListAccessKeysResult>
  <UserName>Bob</UserName>
  <AccessKeyMetadata>
    <member><UserName>Bob</UserName><AccessKeyId>AKIA1</AccessKeyId><Status>Active</Status><CreateDate>2024-01-01T00:00:00Z</CreateDate></member>
    <member><UserName>Bob</UserName><AccessKeyId>AKIA2</AccessKeyId><Status>Inactive</Status></member>
  </AccessKeyMetadata>
  <IsTruncated>true</IsTruncated><Marker>page2</Marker>
</ListAccessKeysResult></ListAccessKeysResponse>"#,
        )
        .unwrap();
        let (keys, next) = parse_access_keys(&root).unwrap();
        assert_eq!(keys, vec![("AKIA1".to_owned(), true), ("AKIA2".to_owned(), false)]);
        assert_eq!(next.as_deref(), Some("page2"));

        let root = parse(
            br#"<ListUserPoliciesResponse><ListUserPoliciesResult>
  <PolicyNames><member>deny-all</member><member>other</member></PolicyNames>
  <IsTruncated>false</IsTruncated>
</ListUserPoliciesResult></ListUserPoliciesResponse>"#,
        )
        .unwrap();
        assert_eq!(parse_policy_names(&root).unwrap(), (vec!["deny-all".to_owned(), "other".to_owned()], None));
        let empty = parse(
            b"<R><ListUserPoliciesResult><PolicyNames/><IsTruncated>false</IsTruncated></ListUserPoliciesResult></R>",
        )
        .unwrap();
        assert_eq!(parse_policy_names(&empty).unwrap(), (vec![], None));
        let endless = parse(
            b"<R><ListUserPoliciesResult><PolicyNames/><IsTruncated>true</IsTruncated></ListUserPoliciesResult></R>",
        )
        .unwrap();
        assert!(parse_policy_names(&endless).is_err());
    }

    #[test]
    fn last_used_reply() {
        let used = parse(
            br#"<GetAccessKeyLastUsedResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/">
  <GetAccessKeyLastUsedResult>
    <AccessKeyLastUsed>
      <Region>us-west-2</Region>
      <LastUsedDate>2015-03-13T10:45:00Z</LastUsedDate>
      <ServiceName>s3</ServiceName>
    </AccessKeyLastUsed>
    <UserName>bob</UserName>
  </GetAccessKeyLastUsedResult>
</GetAccessKeyLastUsedResponse>"#,
        )
        .unwrap();
        let used = parse_last_used(&used).unwrap().unwrap();
        assert_eq!((used.service_name.as_str(), used.region.as_str()), ("s3", "us-west-2"));
        assert_eq!(used.date.to_rfc3339(), "2015-03-13T10:45:00+00:00");

        let never = parse(
            br#"<GetAccessKeyLastUsedResponse><GetAccessKeyLastUsedResult>
  <AccessKeyLastUsed><Region>N/A</Region><ServiceName>N/A</ServiceName></AccessKeyLastUsed>
  <UserName>bob</UserName>
</GetAccessKeyLastUsedResult></GetAccessKeyLastUsedResponse>"#,
        )
        .unwrap();
        assert_eq!(parse_last_used(&never).unwrap(), None);
        assert!(parse_last_used(&parse(b"<R/>").unwrap()).is_err());
    }
}

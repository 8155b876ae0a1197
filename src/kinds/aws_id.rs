//! Kind `aws-id` (AWS API Key): a real IAM user in the operator's own AWS account, with an
//! explicit deny-all inline policy and one access key. The key is the token: whoever finds the
//! credentials file and uses it shows up in CloudTrail (and, for APIs CloudTrail does not log,
//! in the key's last-used time), and the CloudTrail poller turns those records into hits
//! through the key index ([`Created::keys`], scheme `aws-access-key-id`).
//!
//! Keys minted in a vendor's shared account give themselves away by that account's id; these
//! live in the operator's account, under an innocuous service-account-like user name (never a
//! tell-tale prefix or a UUID: AccessDenied messages show the user's ARN to the intruder).
//!
//! The secret access key must be shown again (SpaceSiren promises it is recoverable, and the
//! Console shows it on fetch), so it is stored sealed ([`crate::sealed::SecretBox`], bound to
//! `aws-id:<access key id>`), never in plain text. SpaceSiren's settings live here too:
//! `location`, `description`, `active` (an inactive key's uses are recorded but never alert)
//! and `expire_time` (epoch seconds; once passed, uses are recorded without alerting and the
//! upkeep task deactivates the key in IAM — set a later time and it is activated again).
//! The Console's `expiry` (`12h`, `3d`, `2w`, `6mo`, `1y`) sets `expire_time` from now.
//!
//! Deleting the token queues its retirement: the access key is deleted, and the user (with
//! its policy) once it has no keys left. The retirement queue retries until AWS agrees.

use std::time::Duration;

use anyhow::Context as _;
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::aws_access::{self, AwsAccess};
use super::{
    params, Artefact, CreateRequest, Created, Kind, KindChange, KindContext, KindView, Params, Updated, ViewContext,
};
use crate::error::{CoreError, CoreResult};
use crate::model::{Channel, Judgement, KeyScheme, NewHit, Token, TriggerKey};

pub struct AwsId;

/// Name of the inline policy every honey user carries.
pub const POLICY_NAME: &str = "deny-all";
/// The policy: nothing is allowed, whatever else is attached later.
pub const DENY_ALL: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"*","Resource":"*"}]}"#;
/// Latest `expire_time` accepted (9999-12-31T23:59:59Z).
pub const MAX_EXPIRE_SECS: i64 = 253_402_300_799;
/// Longest location or description kept, in characters.
pub const MAX_TEXT: usize = 1000;

/// The stored settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AwsIdParams {
    pub username: String,
    pub user_path: String,
    /// When the IAM user was made, epoch seconds.
    pub user_create_time: i64,
    pub account_id: String,
    pub access_key_id: String,
    /// The secret access key, sealed for [`seal_context`].
    pub secret_sealed: String,
    /// When the key was made, epoch seconds.
    pub key_create_time: i64,
    pub region: String,
    pub location: String,
    pub description: String,
    /// Epoch seconds after which uses no longer alert and the key is deactivated; 0: never.
    pub expire_time: i64,
    /// SpaceSiren's `active`: false records uses without alerting.
    pub active: bool,
    /// Whether the key is deactivated in IAM (done by the upkeep task once expired).
    pub key_inactive: bool,
}

impl Default for AwsIdParams {
    fn default() -> Self {
        AwsIdParams {
            username: String::new(),
            user_path: "/".into(),
            user_create_time: 0,
            account_id: String::new(),
            access_key_id: String::new(),
            secret_sealed: String::new(),
            key_create_time: 0,
            region: String::new(),
            location: String::new(),
            description: String::new(),
            expire_time: 0,
            active: true,
            key_inactive: false,
        }
    }
}

impl AwsIdParams {
    /// Whether the token has expired at `now_secs`.
    pub fn expired_at(&self, now_secs: i64) -> bool {
        self.expire_time > 0 && now_secs >= self.expire_time
    }
}

/// What a sealed secret is bound to.
pub fn seal_context(access_key_id: &str) -> String {
    format!("aws-id:{access_key_id}")
}

/// The token's secret access key, opened (None if it cannot be: another data directory's key).
pub fn secret(p: &AwsIdParams, cx: &ViewContext<'_>) -> Option<String> {
    cx.secrets.open(&seal_context(&p.access_key_id), &p.secret_sealed)
}

/// The credentials file an intruder would find, as the AWS CLI reads it.
pub fn credentials_file(p: &AwsIdParams, secret: &str) -> String {
    format!(
        "[default]\naws_access_key_id = {}\naws_secret_access_key = {secret}\nregion = {}\noutput = json\n",
        p.access_key_id, p.region
    )
}

/// An IAM user name as IAM takes it: 1 to 64 of letters, digits and `+=,.@_-`.
fn check_username(name: &str) -> CoreResult<()> {
    let ok =
        (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(CoreError::invalid("aws_id_username", "must be 1 to 64 letters, digits or +=,.@_-"))
    }
}

/// A service-account-like user name, such as `terraform-ci-ops` or `backup-sync-02`.
pub fn innocuous_username() -> String {
    const SYSTEMS: &[&str] = &[
        "terraform",
        "backup",
        "jenkins",
        "gitlab-runner",
        "airflow",
        "reporting",
        "datadog",
        "grafana",
        "logship",
        "billing",
        "metrics",
        "snowflake",
        "deploy",
        "build",
        "etl",
        "analytics",
        "monitoring",
        "s3sync",
        "ansible",
        "packer",
        "argocd",
        "vault",
    ];
    const ROLES: &[&str] = &[
        "ci",
        "sync",
        "export",
        "reader",
        "writer",
        "ops",
        "prod",
        "staging",
        "automation",
        "integration",
        "agent",
        "service",
        "uploader",
        "pipeline",
        "scheduler",
        "worker",
    ];
    let mut r = rand::thread_rng();
    let sys = SYSTEMS[r.gen_range(0..SYSTEMS.len())];
    let role = ROLES[r.gen_range(0..ROLES.len())];
    match r.gen_range(0..3) {
        0 => format!("{sys}-{role}"),
        1 => format!("{sys}-{role}-{:02}", r.gen_range(1..20)),
        _ => format!("{sys}.{role}"),
    }
}

/// Console `expiry`: a count and a unit (`h`, `d`, `w`, `mo`, `y`), as seconds.
pub fn parse_expiry(text: &str) -> CoreResult<i64> {
    let bad = || CoreError::invalid("expiry", "must be a count and a unit: 12h, 3d, 2w, 6mo or 1y");
    let t = text.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = t.split_at(split);
    let n: i64 = n.parse().map_err(|_| bad())?;
    let unit_secs = match unit {
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        "mo" => 30 * 86_400,
        "y" => 365 * 86_400,
        _ => return Err(bad()),
    };
    if n < 1 || n > 100 * 365 * 86_400 / unit_secs {
        return Err(bad());
    }
    Ok(n * unit_secs)
}

fn text_param(params: &Params, name: &'static str) -> CoreResult<Option<String>> {
    match params.get(name) {
        None => Ok(None),
        Some(v) if v.chars().count() > MAX_TEXT => {
            Err(CoreError::invalid(name, format!("is longer than {MAX_TEXT} characters")))
        }
        Some(v) => Ok(Some(v.clone())),
    }
}

fn expire_param(params: &Params) -> CoreResult<Option<i64>> {
    match params.get("expire_time") {
        None => Ok(None),
        Some(v) => match v.trim().parse::<i64>() {
            Ok(t) if (0..=MAX_EXPIRE_SECS).contains(&t) => Ok(Some(t)),
            _ => Err(CoreError::invalid("expire_time", format!("must be epoch seconds from 0 to {MAX_EXPIRE_SECS}"))),
        },
    }
}

/// Applies the settings a caller may set (at creation and later) to `p`.
fn apply_settings(p: &mut AwsIdParams, params: &Params, now_secs: i64) -> CoreResult<Vec<&'static str>> {
    let mut changed = Vec::new();
    if let Some(v) = text_param(params, "location")? {
        p.location = v;
        changed.push("location");
    }
    if let Some(v) = text_param(params, "description")? {
        p.description = v;
        changed.push("description");
    }
    if let Some(v) = params.get("active") {
        p.active = super::parse_bool("active", v)?;
        changed.push("active");
    }
    if let Some(t) = expire_param(params)? {
        p.expire_time = t;
        changed.push("expire_time");
    }
    if let Some(e) = params.get("expiry").filter(|e| !e.trim().is_empty()) {
        p.expire_time = now_secs + parse_expiry(e)?;
        changed.push("expire_time");
    }
    Ok(changed)
}

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Makes the user, its deny-all policy and its key; undoes what was made when a step fails.
async fn mint(aws: &AwsAccess, wanted: Option<&str>) -> CoreResult<(crate::aws::IamUser, crate::aws::AccessKey)> {
    let iam = &aws.client;
    let mut attempt = 0;
    let user = loop {
        attempt += 1;
        let name = match wanted {
            Some(n) => n.to_string(),
            None => innocuous_username(),
        };
        match iam.create_user(&name, &aws.iam_path, &aws.user_tags).await {
            Ok(u) => break u,
            Err(e) if e.is_code("EntityAlreadyExists") && wanted.is_none() && attempt < 6 => continue,
            Err(e) if e.is_code("EntityAlreadyExists") => {
                return Err(CoreError::invalid("aws_id_username", "is the name of an IAM user that exists already"))
            }
            Err(e) => return Err(aws_access::upstream("create the IAM user", &e)),
        }
    };
    let name = user.name.clone();
    let undo = |what: &'static str, e: crate::aws::AwsError| {
        let name = name.clone();
        async move {
            let _ = iam.delete_user_policy(&name, POLICY_NAME).await;
            if let Err(u) = iam.delete_user(&name).await {
                tracing::error!(user = %name, error = %u, "could not undo a half-made honey IAM user; delete it by hand");
            }
            aws_access::upstream(what, &e)
        }
    };
    if let Err(e) = iam.put_user_policy(&user.name, POLICY_NAME, DENY_ALL).await {
        return Err(undo("attach the deny-all policy", e).await);
    }
    match iam.create_access_key(&user.name).await {
        Ok(key) => Ok((user, key)),
        Err(e) => Err(undo("create the access key", e).await),
    }
}

#[async_trait::async_trait]
impl Kind for AwsId {
    fn name(&self) -> &'static str {
        "aws-id"
    }

    fn human_name(&self) -> &'static str {
        "AWS API Key"
    }

    fn channel(&self) -> Channel {
        Channel::Aws
    }

    fn unavailable(&self, cx: &KindContext) -> Option<CoreError> {
        cx.aws.is_none().then(|| aws_access::unavailable("aws-id"))
    }

    async fn create(&self, req: &CreateRequest<'_>, cx: &KindContext) -> CoreResult<Created> {
        let aws = cx.aws.as_ref().ok_or_else(|| aws_access::unavailable("aws-id"))?;
        let wanted = req.params.get("aws_id_username").map(|u| u.trim()).filter(|u| !u.is_empty());
        if let Some(w) = wanted {
            check_username(w)?;
        }
        // Every setting is checked before anything is made in AWS.
        let mut p = AwsIdParams::default();
        apply_settings(&mut p, req.params, now_secs())?;
        let account_id = aws.account_id().await.map_err(|e| aws_access::upstream("tell the account id (STS)", &e))?;
        let (user, key) = mint(aws, wanted).await?;
        let now = now_secs();
        p.username = user.name;
        p.user_path = aws.iam_path.clone();
        p.user_create_time = user.create_date.map_or(now, |d| d.timestamp());
        p.account_id = account_id;
        p.secret_sealed = cx.secrets.seal(&seal_context(&key.access_key_id), key.secret_access_key.expose());
        p.access_key_id = key.access_key_id;
        p.key_create_time = key.create_date.map_or(now, |d| d.timestamp());
        p.region = aws.client.region().to_string();
        let mut created = Created::with(&p)?;
        created.keys.push(TriggerKey { scheme: KeyScheme::AwsAccessKeyId, value: p.access_key_id });
        Ok(created)
    }

    fn view(&self, token: &Token, cx: &ViewContext<'_>) -> KindView {
        let p = params::<AwsIdParams>(token);
        let secret = secret(&p, cx).unwrap_or_default();
        let mut v = KindView::default()
            .field("access_key_id", p.access_key_id.clone())
            .field("secret_access_key", secret.clone())
            .field("username", p.username.clone())
            .field("aws_account_id", p.account_id.clone())
            .field("region", p.region.clone())
            .field("location", p.location.clone())
            .field("description", p.description.clone())
            .field("active", p.active)
            .field("expire_time", p.expire_time);
        if !secret.is_empty() {
            v = v.render("aws-id", credentials_file(&p, &secret));
        }
        v
    }

    fn artefact(&self, token: &Token, cx: &ViewContext<'_>) -> Option<Artefact> {
        let p = params::<AwsIdParams>(token);
        let secret = secret(&p, cx)?;
        Some(Artefact {
            filename: "credentials.txt".into(),
            content_type: "text/plain; charset=utf-8",
            bytes: credentials_file(&p, &secret).into_bytes(),
        })
    }

    /// A CloudTrail record is delivered at least once: the event id makes a repeat nothing.
    /// Uses of an inactive or expired key are kept without alerting.
    fn judge(&self, token: &Token, hit: &NewHit) -> Judgement {
        let p = params::<AwsIdParams>(token);
        let ignore = if !p.active {
            Some("the honey key is inactive".to_string())
        } else if p.expired_at(hit.time_us.div_euclid(1_000_000)) {
            Some("the honey key has expired".to_string())
        } else {
            None
        };
        match hit.data.get("event_id").and_then(Value::as_str).filter(|e| !e.is_empty()) {
            Some(id) => Judgement::Once { event_id: id.to_string(), extra: Map::new(), ignore },
            None => match ignore {
                Some(reason) => Judgement::Ignore { reason },
                None => Judgement::alert(),
            },
        }
    }

    fn update(&self, token: &Token, change: &KindChange<'_>) -> CoreResult<Updated> {
        let KindChange::Settings(set) = change else { return Err(change.unsupported()) };
        let mut p = params::<AwsIdParams>(token);
        let changed = apply_settings(&mut p, set, now_secs())?;
        let description =
            if changed.is_empty() { "changed nothing".into() } else { format!("set {}", changed.join(", ")) };
        Ok(Updated { params: serde_json::to_value(&p).map_err(|e| CoreError::Storage(e.into()))?, description })
    }

    fn retires(&self) -> bool {
        true
    }

    async fn retire(&self, token: &Token, cx: &KindContext) -> anyhow::Result<()> {
        let p = params::<AwsIdParams>(token);
        if p.username.is_empty() {
            return Ok(()); // never made in AWS
        }
        let aws = cx.aws.as_ref().context("AWS settings are gone, so the honey IAM user cannot be deleted")?;
        let iam = &aws.client;
        let gone = |e: &crate::aws::AwsError| e.is_code("NoSuchEntity");
        if !p.access_key_id.is_empty() {
            if let Err(e) = iam.delete_access_key(&p.username, &p.access_key_id).await {
                anyhow::ensure!(gone(&e), "deleting access key {} of {}: {e}", p.access_key_id, p.username);
            }
        }
        let keys = match iam.list_access_keys(&p.username).await {
            Ok(k) => k,
            Err(e) if gone(&e) => return Ok(()),
            Err(e) => anyhow::bail!("listing the keys of {}: {e}", p.username),
        };
        if !keys.is_empty() {
            // Keys not made by this token (someone added one by hand): the user stays.
            tracing::warn!(user = %p.username, keys = keys.len(), "honey IAM user keeps keys Trapline did not make; not deleting it");
            return Ok(());
        }
        for policy in iam.list_user_policies(&p.username).await.unwrap_or_else(|_| vec![POLICY_NAME.to_string()]) {
            if let Err(e) = iam.delete_user_policy(&p.username, &policy).await {
                anyhow::ensure!(gone(&e), "deleting policy {policy} of {}: {e}", p.username);
            }
        }
        if let Err(e) = iam.delete_user(&p.username).await {
            anyhow::ensure!(gone(&e), "deleting IAM user {}: {e}", p.username);
        }
        Ok(())
    }

    fn maintains(&self) -> bool {
        true
    }

    /// Keeps the key's IAM status in step with the expiry: inactive once expired, active again
    /// when a later expiry is set.
    async fn maintain(&self, token: &Token, cx: &KindContext) -> anyhow::Result<Option<Updated>> {
        let mut p = params::<AwsIdParams>(token);
        let want_inactive = p.expired_at(now_secs());
        if want_inactive == p.key_inactive || p.username.is_empty() {
            return Ok(None);
        }
        let aws = cx.aws.as_ref().context("AWS settings are gone")?;
        aws.client
            .update_access_key(&p.username, &p.access_key_id, !want_inactive)
            .await
            .with_context(|| format!("setting access key {} active={}", p.access_key_id, !want_inactive))?;
        p.key_inactive = want_inactive;
        let description = if want_inactive {
            format!("deactivated expired access key {}", p.access_key_id)
        } else {
            format!("activated access key {} again", p.access_key_id)
        };
        Ok(Some(Updated { params: serde_json::to_value(&p)?, description }))
    }
}

/// How often the upkeep task looks at keys' expiry.
pub const UPKEEP_EVERY: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::testing;

    fn token_with(p: &AwsIdParams) -> Token {
        testing::token("aws-id", serde_json::to_value(p).unwrap())
    }

    #[test]
    fn usernames_look_like_service_accounts() {
        for _ in 0..500 {
            let n = innocuous_username();
            assert!(check_username(&n).is_ok(), "{n}");
            let l = n.to_lowercase();
            for tell in ["canary", "honey", "trap", "token", "decoy"] {
                assert!(!l.contains(tell), "{n}");
            }
            assert!(uuid::Uuid::parse_str(&n).is_err());
        }
        assert!(check_username("a b").is_err());
        assert!(check_username(&"a".repeat(65)).is_err());
    }

    #[test]
    fn expiry_texts() {
        assert_eq!(parse_expiry("12h").unwrap(), 12 * 3600);
        assert_eq!(parse_expiry("6mo").unwrap(), 180 * 86_400);
        assert_eq!(parse_expiry("1Y").unwrap(), 365 * 86_400);
        for bad in ["", "h", "12", "0d", "-1d", "3m", "99999999999y"] {
            assert!(parse_expiry(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secret_is_sealed_and_shown_again() {
        let site = testing::site();
        let cx = testing::vcx(&site);
        let mut p =
            AwsIdParams { access_key_id: "AKIAEXAMPLE".into(), region: "us-east-1".into(), ..Default::default() };
        p.secret_sealed = cx.secrets.seal(&seal_context(&p.access_key_id), "s3cr3t");
        let t = token_with(&p);
        assert!(!t.params.to_string().contains("s3cr3t"));
        let view = AwsId.view(&t, &cx);
        assert!(view.fields.contains(&("secret_access_key", Value::from("s3cr3t"))));
        let file = &view.renders[0].1;
        assert!(file.starts_with("[default]\naws_access_key_id = AKIAEXAMPLE\naws_secret_access_key = s3cr3t\n"));
        assert!(file.contains("region = us-east-1\noutput = json\n"));
        assert_eq!(AwsId.artefact(&t, &cx).unwrap().bytes, file.as_bytes());
        // A secret moved to another key id does not open.
        p.access_key_id = "AKIAOTHER".into();
        assert!(AwsId.artefact(&token_with(&p), &cx).is_none());
    }

    #[test]
    fn judge_dedupes_by_event_and_quiets_inactive_or_expired_keys() {
        let mut hit = testing::hit(Channel::Aws, serde_json::json!({"event_id": "e-1"}));
        hit.time_us = 2_000_000_000 * 1_000_000;
        let live = AwsIdParams::default();
        assert_eq!(
            AwsId.judge(&token_with(&live), &hit),
            Judgement::Once { event_id: "e-1".into(), extra: Map::new(), ignore: None }
        );
        let inactive = AwsIdParams { active: false, ..Default::default() };
        assert!(matches!(AwsId.judge(&token_with(&inactive), &hit), Judgement::Once { ignore: Some(_), .. }));
        let expired = AwsIdParams { expire_time: 1_999_999_999, ..Default::default() };
        assert!(
            matches!(AwsId.judge(&token_with(&expired), &hit), Judgement::Once { ignore: Some(r), .. } if r.contains("expired"))
        );
        let later = AwsIdParams { expire_time: 2_000_000_001, ..Default::default() };
        assert!(matches!(AwsId.judge(&token_with(&later), &hit), Judgement::Once { ignore: None, .. }));
    }

    #[test]
    fn settings_change_and_are_checked() {
        let t = token_with(&AwsIdParams::default());
        let set: Params = [("location", "laptop"), ("active", "false"), ("expire_time", "5")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let u = AwsId.update(&t, &KindChange::Settings(&set)).unwrap();
        let p: AwsIdParams = serde_json::from_value(u.params).unwrap();
        assert_eq!((p.location.as_str(), p.active, p.expire_time), ("laptop", false, 5));
        assert_eq!(u.description, "set location, active, expire_time");
        let bad: Params = [("expire_time".to_string(), "soon".to_string())].into();
        assert!(AwsId.update(&t, &KindChange::Settings(&bad)).is_err());
        assert!(AwsId.update(&t, &KindChange::SetRedirect("https://x/")).is_err());
    }

    #[tokio::test]
    async fn without_aws_settings_create_says_what_is_missing() {
        let e = testing::create(&AwsId, &[]).await.unwrap_err();
        assert!(e.to_string().contains("--aws-region"), "{e}");
    }
}

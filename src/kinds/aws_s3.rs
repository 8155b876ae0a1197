//! Kind `aws-s3` (AWS S3 Bucket): a monitored bucket (`s3_source_bucket`) whose use is a hit,
//! seen in its S3 server access logs (delivered to `s3_log_bucket` under the prefix
//! `<source bucket>/`) and in CloudTrail S3 data events when the trail selects them.
//!
//! With Trapline's AWS settings, create makes the bucket (and the log bucket) when missing and
//! turns server access logging on into the log bucket; a bucket that exists already is
//! registered, its logging set the same way. The Console's `aws_access_key`, `aws_secret_key`,
//! `aws_session_token` and `aws_region` make those calls with the caller's own credentials
//! instead (used once, never stored); reading the logs afterwards always uses Trapline's.
//! Without AWS settings the kind is unavailable: Trapline could not read the logs.
//!
//! The bucket name is the token's trigger key (scheme `aws-s3-bucket`), so one bucket is
//! watched by one token. Access-log records carry the request id as their event id, and
//! CloudTrail records their eventID, so a log delivered twice is recorded once. Deleting the
//! token turns off the logging it set; buckets and logs are left alone (they hold data).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::aws_access::{self};
use super::{params, required, CreateRequest, Created, Kind, KindContext, KindView, ViewContext};
use crate::aws::Aws;
use crate::error::{CoreError, CoreResult};
use crate::model::{Channel, Judgement, KeyScheme, NewHit, Token, TriggerKey};

pub struct AwsS3;

/// The stored settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AwsS3Params {
    pub s3_source_bucket: String,
    pub s3_log_bucket: String,
    /// Where the access logs of the source bucket are written in the log bucket.
    pub log_prefix: String,
    pub region: String,
    /// Whether Trapline made the bucket, or registered an existing one.
    pub created_bucket: bool,
    /// Whether Trapline turned the bucket's access logging on (and so turns it off again).
    pub logging_set: bool,
}

/// A bucket name as S3 takes it: 3 to 63 of lower-case letters, digits, `.` and `-`, starting
/// and ending with a letter or digit.
pub fn check_bucket(name: &'static str, bucket: &str) -> CoreResult<()> {
    let b = bucket.as_bytes();
    let ok = (3..=63).contains(&b.len())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'.' || *c == b'-')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && !bucket.contains("..");
    if ok {
        Ok(())
    } else {
        Err(CoreError::invalid(name, "is not an S3 bucket name (3 to 63 of a-z, 0-9, . and -)"))
    }
}

/// The log bucket policy that lets S3's logging service write the source bucket's logs.
fn log_delivery_policy(log_bucket: &str, account: &str) -> String {
    // The whole bucket, so later aws-s3 tokens can log into it too; only for this account's
    // buckets (AWS's advice against a confused deputy).
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "S3ServerAccessLogs",
            "Effect": "Allow",
            "Principal": {"Service": "logging.s3.amazonaws.com"},
            "Action": "s3:PutObject",
            "Resource": format!("arn:aws:s3:::{log_bucket}/*"),
            "Condition": {"StringEquals": {"aws:SourceAccount": account}},
        }],
    })
    .to_string()
}

/// The client create uses: the caller's credentials when given, else Trapline's (and whether
/// it is Trapline's).
fn creating_client(req: &CreateRequest<'_>, ours: &Aws) -> CoreResult<(Aws, bool)> {
    let get = |n: &str| req.params.get(n).map(|v| v.trim()).filter(|v| !v.is_empty());
    match (get("aws_access_key"), get("aws_secret_key")) {
        (None, None) => Ok((ours.clone(), true)),
        (Some(id), Some(secret)) => {
            let region = get("aws_region").unwrap_or(ours.region());
            Aws::with_static_credentials(id, secret, get("aws_session_token"), region, ours.endpoint())
                .map(|c| (c, false))
                .map_err(|e| CoreError::invalid("aws_access_key", e.to_string()))
        }
        _ => Err(CoreError::invalid("aws_secret_key", "and aws_access_key go together")),
    }
}

#[async_trait::async_trait]
impl Kind for AwsS3 {
    fn name(&self) -> &'static str {
        "aws-s3"
    }

    fn human_name(&self) -> &'static str {
        "AWS S3 Bucket"
    }

    fn channel(&self) -> Channel {
        Channel::Aws
    }

    fn unavailable(&self, cx: &KindContext) -> Option<CoreError> {
        cx.aws.is_none().then(|| aws_access::unavailable("aws-s3"))
    }

    async fn create(&self, req: &CreateRequest<'_>, cx: &KindContext) -> CoreResult<Created> {
        let aws = cx.aws.as_ref().ok_or_else(|| aws_access::unavailable("aws-s3"))?;
        let source = required(req.params, "s3_source_bucket")?.to_string();
        let logs = required(req.params, "s3_log_bucket")?.to_string();
        check_bucket("s3_source_bucket", &source)?;
        check_bucket("s3_log_bucket", &logs)?;
        if source == logs {
            return Err(CoreError::invalid("s3_log_bucket", "must differ from s3_source_bucket"));
        }
        let (s3, ours) = creating_client(req, &aws.client)?;
        let up = |what: &str, e: &crate::aws::AwsError| aws_access::upstream(what, e);
        let mut p = AwsS3Params {
            log_prefix: format!("{source}/"),
            region: s3.region().to_string(),
            s3_source_bucket: source,
            s3_log_bucket: logs,
            ..AwsS3Params::default()
        };
        if !s3.bucket_exists(&p.s3_log_bucket).await.map_err(|e| up("look for the log bucket", &e))? {
            s3.create_bucket(&p.s3_log_bucket).await.map_err(|e| up("create the log bucket", &e))?;
            // S3's logging service may write into a bucket only if its policy lets it: set on a
            // bucket made here (an existing one's policy is the operator's, never replaced).
            let account = match ours {
                true => aws.account_id().await,
                false => s3.caller_identity().await.map(|c| c.account),
            }
            .map_err(|e| up("find the AWS account", &e))?;
            s3.put_bucket_policy(&p.s3_log_bucket, &log_delivery_policy(&p.s3_log_bucket, &account))
                .await
                .map_err(|e| up("let S3 write access logs into the log bucket", &e))?;
        }
        if !s3.bucket_exists(&p.s3_source_bucket).await.map_err(|e| up("look for the bucket", &e))? {
            s3.create_bucket(&p.s3_source_bucket).await.map_err(|e| up("create the bucket", &e))?;
            p.created_bucket = true;
        }
        s3.put_bucket_logging(&p.s3_source_bucket, &p.s3_log_bucket, &p.log_prefix).await.map_err(|e| {
            match e.is_code("InvalidTargetBucketForLogging") {
                // An existing log bucket whose policy the operator has not opened to S3's logging
                // service: theirs to change (see the README), so say what it needs.
                true => CoreError::invalid(
                    "s3_log_bucket",
                    format!(
                        "S3 may not write access logs into {}: its bucket policy must allow s3:PutObject by \
                         the service logging.s3.amazonaws.com on {}/{}*",
                        p.s3_log_bucket, p.s3_log_bucket, p.log_prefix
                    ),
                ),
                false => up("turn on the bucket's server access logging", &e),
            }
        })?;
        p.logging_set = true;
        let mut created = Created::with(&p)?;
        created.keys.push(TriggerKey { scheme: KeyScheme::S3Bucket, value: p.s3_source_bucket });
        Ok(created)
    }

    fn view(&self, token: &Token, _cx: &ViewContext<'_>) -> KindView {
        let p = params::<AwsS3Params>(token);
        KindView::default()
            .field("s3_source_bucket", p.s3_source_bucket)
            .field("s3_log_bucket", p.s3_log_bucket)
            .field("s3_log_prefix", p.log_prefix)
            .field("aws_region", p.region)
    }

    fn judge(&self, _token: &Token, hit: &NewHit) -> Judgement {
        match hit.data.get("event_id").and_then(Value::as_str).filter(|e| !e.is_empty() && *e != "-") {
            Some(id) => Judgement::Once { event_id: id.to_string(), extra: Map::new(), ignore: None },
            None => Judgement::alert(),
        }
    }

    fn retires(&self) -> bool {
        true
    }

    async fn retire(&self, token: &Token, cx: &KindContext) -> anyhow::Result<()> {
        let p = params::<AwsS3Params>(token);
        if !p.logging_set {
            return Ok(());
        }
        let aws = cx.aws.as_ref().ok_or_else(|| anyhow::anyhow!("AWS settings are gone"))?;
        match aws.client.delete_bucket_logging(&p.s3_source_bucket).await {
            Ok(()) => Ok(()),
            Err(e) if e.is_code("NoSuchBucket") => Ok(()),
            Err(e) => Err(anyhow::anyhow!("turning off access logging of {}: {e}", p.s3_source_bucket)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::testing;

    #[test]
    fn bucket_names() {
        for ok in ["abc", "my-bucket.logs", "a1b"] {
            assert!(check_bucket("b", ok).is_ok(), "{ok}");
        }
        for bad in ["ab", "Upper", "-abc", "abc-", "a..b", "a_b", &"a".repeat(64)] {
            assert!(check_bucket("b", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn judge_dedupes_by_request_id() {
        let t = testing::token("aws-s3", serde_json::json!({}));
        let hit = testing::hit(Channel::Aws, serde_json::json!({"event_id": "REQ1"}));
        assert!(matches!(AwsS3.judge(&t, &hit), Judgement::Once { event_id, .. } if event_id == "REQ1"));
        let hit = testing::hit(Channel::Aws, serde_json::json!({"event_id": "-"}));
        assert_eq!(AwsS3.judge(&t, &hit), Judgement::alert());
    }

    #[tokio::test]
    async fn without_aws_settings_create_says_what_is_missing() {
        let e = testing::create(&AwsS3, &[("s3_source_bucket", "abc"), ("s3_log_bucket", "def")]).await.unwrap_err();
        assert!(e.to_string().contains("--aws-region"), "{e}");
    }
}

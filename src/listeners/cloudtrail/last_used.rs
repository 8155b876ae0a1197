//! The safety net: CloudTrail does not log every API, and a trail may miss events (data
//! events not selected, a region left out). IAM still notes when each access key was last
//! used, for which service and in which region, so every few minutes (`--aws-last-used-interval`)
//! this asks `GetAccessKeyLastUsed` for every honey key. A last-used time newer than any
//! CloudTrail record of the key waits a grace period (`--aws-last-used-grace`, since CloudTrail
//! delivers 5 to 15 minutes late); if no CloudTrail record of about that time arrives by then,
//! it becomes a hit of its own (`via: last-used`), saying the service and region and that the
//! call left no CloudTrail record. Its event id is the key and the time, so it is recorded once.
//!
//! State per key, in the store: `last-used:<key>` (the last-used time already accounted for,
//! and the pending one with when it was first noticed) beside `cloudtrail-seen:<key>`, written
//! by the CloudTrail reader.

use serde::{Deserialize, Serialize};

use super::event::{AwsEvent, Via};
use super::listener::{Poller, Stats};
use super::record::{self, seen_state};
use crate::listeners::ListenerContext;
use crate::model::{now_us, KeyScheme, TriggerKey};

/// How far a CloudTrail record's time may lie before the last-used time and still explain it
/// (IAM's last-used time is not the exact time of the call).
const SLACK_US: i64 = 5 * 60 * 1_000_000;

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct KeyState {
    /// The newest last-used time already explained or reported (micros).
    accounted_us: Option<i64>,
    /// A last-used time waiting for its CloudTrail record.
    pending: Option<Pending>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Pending {
    used_us: i64,
    service: String,
    region: String,
    noticed_us: i64,
}

/// What to do about one key's last-used time, given the state and what CloudTrail has shown.
#[derive(Debug, PartialEq)]
enum Step {
    Nothing,
    /// Explained (or waiting): store the new state.
    Keep(KeyState),
    /// Report the pending use, then store the state.
    Report(Pending, KeyState),
}

fn decide(
    state: &KeyState,
    used_us: i64,
    service: &str,
    region: &str,
    seen_us: Option<i64>,
    now: i64,
    grace_us: i64,
) -> Step {
    if state.accounted_us.is_some_and(|a| a >= used_us) {
        return Step::Nothing;
    }
    if seen_us.is_some_and(|s| s >= used_us - SLACK_US) {
        return Step::Keep(KeyState { accounted_us: Some(used_us), pending: None });
    }
    let pending = match &state.pending {
        Some(p) if p.used_us == used_us => p.clone(),
        _ => Pending { used_us, service: service.into(), region: region.into(), noticed_us: now },
    };
    if now - pending.noticed_us >= grace_us {
        return Step::Report(pending, KeyState { accounted_us: Some(used_us), pending: None });
    }
    let next = KeyState { accounted_us: state.accounted_us, pending: Some(pending) };
    if next == *state {
        Step::Nothing
    } else {
        Step::Keep(next)
    }
}

/// The hit of a use seen only in the key's last-used time.
fn event_of(access_key_id: &str, p: &Pending) -> AwsEvent {
    let service = if p.service.is_empty() || p.service == "N/A" { "unknown".to_string() } else { p.service.clone() };
    AwsEvent {
        event_id: format!("last-used:{access_key_id}:{}", p.used_us),
        event_time_us: p.used_us,
        event_name: format!("{service} call not in CloudTrail"),
        event_source: format!("{service}.amazonaws.com"),
        region: p.region.clone(),
        source_ip: String::new(),
        user_agent: String::new(),
        error_code: None,
        error_message: None,
        request_parameters: None,
        access_key_id: Some(access_key_id.to_string()),
        user_arn: None,
        account_id: None,
        bucket: None,
        object_key: None,
        operation: None,
        requester: None,
        http_status: None,
        via: Via::LastUsed,
    }
}

pub async fn round(p: &Poller, cx: &ListenerContext) -> anyhow::Result<()> {
    let grace_us = p.last_used_grace.as_micros() as i64;
    for (key, _) in cx.hits.trigger_keys(KeyScheme::AwsAccessKeyId).await? {
        let used = match p.aws.get_access_key_last_used(&key).await {
            Ok(Some(u)) => u,
            Ok(None) => continue,
            Err(e) if e.is_code("NoSuchEntity") => continue, // deleted a moment ago
            Err(e) => {
                tracing::warn!(key = %key, error = %e, "GetAccessKeyLastUsed failed");
                continue;
            }
        };
        let name = format!("last-used:{key}");
        let state: KeyState =
            cx.hits.poller_state_get(&name).await?.and_then(|v| serde_json::from_str(&v).ok()).unwrap_or_default();
        let seen = cx.hits.poller_state_get(&seen_state(&key)).await?.and_then(|v| v.parse::<i64>().ok());
        let used_us = used.date.timestamp_micros();
        match decide(&state, used_us, &used.service_name, &used.region, seen, now_us(), grace_us) {
            Step::Nothing => {}
            Step::Keep(next) => cx.hits.poller_state_put(&name, &serde_json::to_string(&next)?).await?,
            Step::Report(pending, next) => {
                let ev = event_of(&key, &pending);
                let mut hit = record::hit_of(&ev, TriggerKey { scheme: KeyScheme::AwsAccessKeyId, value: key.clone() });
                hit.data["note"] = format!(
                    "IAM says this key was last used for {} in {}, and no CloudTrail record of that use arrived within the grace period",
                    pending.service, pending.region
                )
                .into();
                if record::record_one(cx, hit).await? {
                    Stats::add(&p.stats.hits, 1);
                }
                cx.hits.poller_state_put(&name, &serde_json::to_string(&next)?).await?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: i64 = 100;

    #[test]
    fn a_use_with_its_cloudtrail_record_is_explained() {
        let s = KeyState::default();
        let step = decide(&s, 1_000_000_000, "sts", "us-east-1", Some(1_000_000_000), 5, G);
        assert_eq!(step, Step::Keep(KeyState { accounted_us: Some(1_000_000_000), pending: None }));
    }

    #[test]
    fn a_use_without_a_record_waits_out_the_grace_then_is_reported_once() {
        let used = 10_000_000_000;
        let s = KeyState::default();
        let Step::Keep(waiting) = decide(&s, used, "s3", "eu-west-1", None, 1000, G) else { panic!() };
        assert_eq!(waiting.pending.as_ref().unwrap().noticed_us, 1000);
        assert_eq!(decide(&waiting, used, "s3", "eu-west-1", None, 1050, G), Step::Nothing, "within grace");
        let Step::Report(p, done) = decide(&waiting, used, "s3", "eu-west-1", None, 1100, G) else { panic!() };
        assert_eq!((p.service.as_str(), p.region.as_str()), ("s3", "eu-west-1"));
        assert_eq!(decide(&done, used, "s3", "eu-west-1", None, 5000, G), Step::Nothing, "reported once");
        // A record that arrives during the grace explains it.
        let step = decide(&waiting, used, "s3", "eu-west-1", Some(used - 60_000_000), 1050, G);
        assert!(matches!(step, Step::Keep(KeyState { pending: None, .. })));
        // An old record does not.
        let step = decide(&waiting, used, "s3", "eu-west-1", Some(used - SLACK_US - 1), 1100, G);
        assert!(matches!(step, Step::Report(..)));
    }

    #[test]
    fn a_newer_use_restarts_the_wait() {
        let s = KeyState {
            accounted_us: None,
            pending: Some(Pending { used_us: 5, service: "s3".into(), region: "r".into(), noticed_us: 0 }),
        };
        let Step::Keep(n) = decide(&s, 9_000_000_000, "sts", "r", None, 50, G) else { panic!() };
        assert_eq!(n.pending.unwrap().noticed_us, 50);
    }
}

//! Alerts: what an alerting hit sends where, and the worker that delivers the outbox.
//!
//! Flow: the recorder commits a hit together with one outbox row per output (global webhooks
//! from the configuration, plus the token's own `alert_webhook_url`). The worker here takes due
//! rows (claiming each with a lease, so several nodes can share one outbox), delivers them
//! concurrently — a slow receiver never holds up recording, which runs elsewhere — and retries
//! failures with exponential backoff until the give-up age. Every alert carries an idempotency
//! key, so a receiver can drop the duplicates a crash between delivery and bookkeeping can cause.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::sync::Notify;

use crate::error::{CoreError, CoreResult};
use crate::kinds;
use crate::model::*;
use crate::outputs::{self, email_output, webhook, webhook_output, OutputSpec};
use crate::store::Store;

/// Alert settings.
#[derive(Debug, Clone, Default)]
pub struct AlertConfig {
    /// Outputs every alert goes to (`{"type": ..., "url": ...}`, see [`crate::outputs`]).
    pub outputs: Vec<Value>,
    /// Allow deliveries to loopback, private and link-local addresses.
    pub allow_private: bool,
    /// Age after which a failing delivery is given up (seconds).
    pub give_up_secs: i64,
    /// Base of the management API, for links in alerts.
    pub api_base: String,
    /// SMTP server for e-mail outputs (`smtp[+starttls]://…` or `smtps://…`) and the sender.
    pub smtp_url: Option<String>,
    pub smtp_from: String,
    /// Extra CAs (PEM) to trust for the SMTP server.
    pub smtp_ca_pem: Option<String>,
}

/// Longest output description (`TYPE=TARGET`) accepted through the API.
pub const MAX_OUTPUT_SPEC: usize = 2048;

/// A token's own webhook (its `alert_webhook_url`), checked as its deliveries will be.
pub fn check_token_webhook(cfg: &AlertConfig, url: &str) -> CoreResult<String> {
    webhook::validate_url(url, cfg.allow_private).map_err(|e| CoreError::invalid("alert_webhook_url", e))
}

/// A token's own recipients (its `alert_email`, `a@x;b@y`), normalised; refused when this
/// server has no SMTP server to send them through.
pub fn check_token_email(cfg: &AlertConfig, list: &str) -> CoreResult<String> {
    if cfg.smtp_url.is_none() {
        return Err(CoreError::invalid("alert_email", "needs an SMTP server (--smtp-url)"));
    }
    outputs::email::parse_recipients(list).map(|to| to.join(";")).map_err(|e| CoreError::invalid("alert_email", e))
}

/// An output added through the API (`TYPE=TARGET`, as `--alert-outputs` takes it), checked
/// for this server: its target, and for e-mail that an SMTP server is set.
pub fn check_output(cfg: &AlertConfig, spec: &str) -> CoreResult<OutputSpec> {
    if spec.len() > MAX_OUTPUT_SPEC {
        return Err(CoreError::invalid("output", "is too long"));
    }
    let output = OutputSpec::parse(spec, cfg.allow_private).map_err(|e| CoreError::invalid("output", e))?;
    if matches!(output, OutputSpec::Email { .. }) && cfg.smtp_url.is_none() {
        return Err(CoreError::invalid("output", "e-mail needs an SMTP server (--smtp-url)"));
    }
    Ok(output)
}

/// First retry delay; each further one doubles, up to [`MAX_BACKOFF_SECS`].
const FIRST_BACKOFF_SECS: i64 = 2;
const MAX_BACKOFF_SECS: i64 = 600;
/// How long a claimed delivery is reserved before another worker may try it.
const LEASE_SECS: i64 = 60;
/// Deliveries in flight at once.
const MAX_IN_FLIGHT: i64 = 256;
/// How often the worker looks for due deliveries when nobody wakes it.
const POLL: Duration = Duration::from_millis(500);

/// Every output an alert of `token` goes to, each once: the configuration's, those set through
/// the API for every token or for the token's flock, and the token's own webhook and e-mail
/// recipients.
pub fn outputs_for(cfg: &AlertConfig, token: &Token, managed: &[AlertOutput]) -> Vec<Value> {
    let mut out = cfg.outputs.clone();
    for m in managed.iter().filter(|m| m.flock_id.as_deref().is_none_or(|f| f == token.flock_id)) {
        add_once(&mut out, m.output.clone());
    }
    if let Some(u) = &token.alert_webhook_url {
        add_once(&mut out, webhook_output(u));
    }
    if let Some(list) = &token.alert_email {
        let to: Vec<&str> = list.split(';').filter(|a| !a.is_empty()).collect();
        add_once(&mut out, email_output(&to));
    }
    out
}

/// Adds an output unless an equal one is already there (each output gets an alert once).
fn add_once(outputs: &mut Vec<Value>, output: Value) {
    if !outputs.contains(&output) {
        outputs.push(output);
    }
}

/// The alert for a hit: what happened, where, by whom, and the kind's decoded data.
pub fn payload(cfg: &AlertConfig, token: &Token, hit: &NewHit) -> Value {
    let kind_name = kinds::find(&token.kind).map(|k| k.human_name()).unwrap_or("");
    let data: Map<String, Value> = match &hit.data {
        Value::Object(m) => {
            m.iter().filter(|(k, _)| !k.starts_with('_')).map(|(k, v)| (k.clone(), v.clone())).collect()
        }
        _ => Map::new(),
    };
    json!({
        "trapline_alert": 1,
        "test": false,
        "summary": "Canarytoken triggered",
        "kind": token.kind,
        "kind_name": kind_name,
        "memo": token.memo,
        "token_id": token.id,
        "flock_id": token.flock_id,
        "time": rfc3339(hit.time_us),
        "channel": hit.channel.as_str(),
        "src_ip": hit.src_ip,
        "src_port": hit.src_port,
        "useragent": hit.data.get("useragent").cloned().unwrap_or(Value::Null),
        "data": data,
        "token_url": format!("{}/api/v1/canarytoken/fetch?canarytoken={}", cfg.api_base, token.id),
    })
}

/// The alerter the recorder hands the store.
pub fn alerter(cfg: Arc<AlertConfig>) -> impl Fn(&Token, &NewHit, &[AlertOutput]) -> Vec<NewAlert> + Send + Sync {
    move |token, hit, managed| {
        let body = payload(&cfg, token, hit);
        outputs_for(&cfg, token, managed).into_iter().map(|output| NewAlert { output, payload: body.clone() }).collect()
    }
}

/// A clearly labelled test alert for every output: the configuration's and every one set
/// through the API (global or a flock's), each once. `description` is the caller's text about
/// the would-be token (SpaceSiren's `/test-alert` takes one).
pub fn test_alerts(cfg: &AlertConfig, managed: &[AlertOutput], by: &str, description: Option<&str>) -> Vec<NewAlert> {
    let mut body = json!({
        "trapline_alert": 1,
        "test": true,
        "summary": "Trapline test alert: this is a test, no token was triggered",
        "requested_by": by,
        "time": rfc3339(now_us()),
    });
    if let Some(d) = description {
        body["description"] = d.into();
    }
    let mut outputs = cfg.outputs.clone();
    for m in managed {
        add_once(&mut outputs, m.output.clone());
    }
    outputs.into_iter().map(|output| NewAlert { output, payload: body.clone() }).collect()
}

/// Delay before the next attempt after `attempts` failures.
pub fn backoff_secs(attempts: i64) -> i64 {
    let shift = (attempts - 1).clamp(0, 20) as u32;
    (FIRST_BACKOFF_SECS << shift).min(MAX_BACKOFF_SECS)
}

/// Delivers the outbox until the process ends. `wake` is notified after hits commit. `node`
/// names this node in the leases it takes; alerts its previous run had claimed (the process
/// died while delivering them) are taken back at once rather than after their lease.
pub async fn run_outbox(store: Arc<dyn Store>, cfg: Arc<AlertConfig>, wake: Arc<Notify>, node: String) {
    match store.release_claims(&node, now_us()).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(alerts = n, "taking back the alerts this node's previous run was delivering"),
        Err(e) => tracing::warn!(error = %e, "cannot take back this node's earlier claims; they wait out their lease"),
    }
    let http = match webhook::Client::new(cfg.allow_private) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the alert HTTP client; alerts stay queued");
            return;
        }
    };
    let mail = match cfg
        .smtp_url
        .as_deref()
        .map(|u| crate::outputs::email::mailer(u, &cfg.smtp_from, cfg.smtp_ca_pem.as_deref()))
        .transpose()
    {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(error = %e, "cannot set up SMTP; e-mail alerts stay queued");
            None
        }
    };
    let client = Arc::new(crate::outputs::Context { http, mail });
    // Deliveries stay in flight on their own; new due alerts are picked up as soon as they are
    // queued, so one slow output never holds back the others. Bookkeeping is batched: finished
    // attempts are written in one transaction, and due alerts are claimed in one statement, so
    // the outbox costs the hit writer a few commits per round, not two per alert.
    let mut in_flight = tokio::task::JoinSet::new();
    let mut finished: Vec<AlertResult> = Vec::new();
    loop {
        while let Some(done) = in_flight.try_join_next() {
            if let Ok(r) = done {
                finished.push(r);
            }
        }
        if !finished.is_empty() {
            match store.finish_alerts(&finished).await {
                Ok(()) => finished.clear(),
                // Kept and written with the next round; if the process dies first, the lease
                // runs out and the alert is tried again (the idempotency key lets the receiver
                // drop the duplicate).
                Err(e) => tracing::warn!(error = %e, pending = finished.len(), "cannot update the alert outbox"),
            }
        }
        let room = MAX_IN_FLIGHT - in_flight.len() as i64;
        if room > 0 {
            let now = now_us();
            match store.claim_due_alerts(now, room, now + LEASE_SECS * 1_000_000, &node).await {
                Ok(due) => {
                    for a in due {
                        let (client, cfg) = (client.clone(), cfg.clone());
                        in_flight.spawn(async move { deliver_one(&client, &cfg, a).await });
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot read the alert outbox"),
            }
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
            Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                if let Ok(r) = done {
                    finished.push(r);
                }
            }
        }
    }
}

async fn deliver_one(client: &crate::outputs::Context, cfg: &AlertConfig, a: Alert) -> AlertResult {
    let attempts = a.attempts + 1;
    let result = outputs::deliver(client, &a.output, &a.payload, &a.idempotency_key).await;
    let now = now_us();
    let outcome = match result {
        Ok(()) => AlertOutcome::Delivered { when: now },
        Err(error) => {
            let give_up = now - a.created_us >= cfg.give_up_secs * 1_000_000;
            if give_up {
                tracing::error!(alert = a.id, key = %a.idempotency_key, attempts, error = %error, "alert delivery given up");
            } else {
                tracing::warn!(alert = a.id, key = %a.idempotency_key, attempts, error = %error, "alert delivery failed; will retry");
            }
            AlertOutcome::Failed {
                error,
                next_attempt_us: now + backoff_secs(attempts) * 1_000_000,
                gave_up_us: give_up.then_some(now),
            }
        }
    };
    AlertResult { id: a.id, attempts, outcome }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_targets_are_checked_for_this_server() {
        let mut cfg = AlertConfig::default();
        assert!(check_token_webhook(&cfg, "http://10.0.0.1/h").is_err(), "internal targets need the allowance");
        assert_eq!(check_token_webhook(&cfg, "https://h.example/x").unwrap(), "https://h.example/x");
        assert!(matches!(
            check_token_email(&cfg, "a@x.example"),
            Err(CoreError::InvalidParam { name: "alert_email", .. })
        ));
        assert!(check_output(&cfg, "email=a@x.example").is_err(), "e-mail needs SMTP");
        assert!(check_output(&cfg, &format!("webhook=https://h.example/{}", "x".repeat(MAX_OUTPUT_SPEC))).is_err());
        cfg.smtp_url = Some("smtp://127.0.0.1:25".into());
        assert_eq!(check_token_email(&cfg, "a@x.example; b@y.example").unwrap(), "a@x.example;b@y.example");
        assert_eq!(check_output(&cfg, "email=a@x.example").unwrap().type_name(), "email");
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!([1, 2, 3, 4].map(backoff_secs), [2, 4, 8, 16]);
        assert_eq!(backoff_secs(30), MAX_BACKOFF_SECS);
        assert_eq!(backoff_secs(0), 2);
    }

    #[test]
    fn token_webhook_joins_the_global_ones_once() {
        let cfg = AlertConfig { outputs: vec![webhook_output("https://a.example/h")], ..Default::default() };
        let mut t = crate::kinds::testing::token("dns", json!({}));
        assert_eq!(outputs_for(&cfg, &t, &[]).len(), 1);
        t.alert_webhook_url = Some("https://b.example/h".into());
        assert_eq!(outputs_for(&cfg, &t, &[]).len(), 2);
        t.alert_webhook_url = Some("https://a.example/h".into());
        assert_eq!(outputs_for(&cfg, &t, &[]).len(), 1);
    }

    #[test]
    fn api_outputs_reach_their_flock_only() {
        let cfg = AlertConfig { outputs: vec![], ..Default::default() };
        let out = |flock: Option<&str>, url: &str| AlertOutput {
            id: format!("out_{url}"),
            flock_id: flock.map(str::to_string),
            output: webhook_output(url),
            created_us: 0,
            created_by: "k".into(),
        };
        let managed = [
            out(None, "https://all.example/"),
            out(Some("flock:ops"), "https://ops.example/"),
            out(Some("flock:ops"), "https://all.example/"),
        ];
        let mut t = crate::kinds::testing::token("dns", json!({}));
        assert_eq!(outputs_for(&cfg, &t, &managed), vec![webhook_output("https://all.example/")]);
        t.flock_id = "flock:ops".into();
        assert_eq!(
            outputs_for(&cfg, &t, &managed),
            vec![webhook_output("https://all.example/"), webhook_output("https://ops.example/")]
        );
        assert_eq!(test_alerts(&cfg, &managed, "k", None).len(), 2, "each output tested once");
    }
}

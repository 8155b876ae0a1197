//! The upkeep task: what kinds must do outside Trapline after the fact, retried until done.
//!
//! Two jobs, every few seconds, on one node at a time (the `upkeep` lease, so nodes sharing
//! PostgreSQL do not race each other through AWS):
//!
//! - **Retirements.** Deleting a token of a kind that [`retires`](crate::kinds::Kind::retires)
//!   (an aws-id token's IAM user and key) queues a retirement in the same transaction as the
//!   delete. Here each due one runs the kind's `retire`; a failure is logged, audited
//!   (`token_retire_failed`, on the first failure and every tenth after), kept with its error
//!   for `trapline retirements` and the start-up lines to show, and retried with a backoff
//!   (10 s doubling to 1 h). A live key is never left silently.
//! - **Maintenance.** Tokens of kinds that [`maintain`](crate::kinds::Kind::maintains) get
//!   their `maintain` call (aws-id deactivates a key once its token expired, and activates it
//!   again when a later expiry is set); a change it reports is stored, audited as the upkeep's.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Core;
use crate::kinds;
use crate::model::*;

/// How often the upkeep runs.
pub const EVERY: Duration = Duration::from_secs(5);
/// How long one node holds the upkeep lease without renewing it.
const LEASE: Duration = Duration::from_secs(60);
/// Most retirements tried in one round.
const BATCH: i64 = 50;
/// Actor of the upkeep's audit entries.
pub const ACTOR: &str = "upkeep";

/// Delay before the next try after `attempts` failures: 10 s, doubling, at most an hour.
pub fn backoff(attempts: i64) -> Duration {
    let secs = 10u64.saturating_mul(1u64 << attempts.clamp(0, 20));
    Duration::from_secs(secs.min(3600))
}

fn entry(action: &str, target: &str, description: String) -> AuditEntry {
    AuditEntry {
        time_us: now_us(),
        actor: ACTOR.into(),
        action: action.into(),
        target: target.into(),
        description,
        src_ip: String::new(),
        dialect: "upkeep".into(),
    }
}

/// The deleted token a retirement stands for, as its kind needs it.
fn retired_token(r: &Retirement) -> Token {
    Token {
        id: r.token_id.clone(),
        kind: r.kind.clone(),
        memo: String::new(),
        flock_id: DEFAULT_FLOCK.into(),
        enabled: false,
        created_us: r.created_us,
        updated_id: 0,
        params: r.params.clone(),
        created_by: String::new(),
        triggered_count: 0,
        unacked_count: 0,
        alert_webhook_url: None,
        alert_email: None,
        alert_cooldown_secs: None,
        alert_max_per_hour: None,
        ignore_sources: Vec::new(),
    }
}

impl Core {
    /// Runs the upkeep until `stop` turns true. `node` names this process for the lease.
    pub async fn run_upkeep(self: Arc<Self>, node: String, mut stop: watch::Receiver<bool>) {
        loop {
            if let Err(e) = self.upkeep_round(&node, &stop).await {
                tracing::warn!(error = %e, "upkeep round failed; trying again shortly");
            }
            tokio::select! {
                _ = crate::listeners::stopped(&mut stop) => break,
                _ = tokio::time::sleep(EVERY) => {}
            }
        }
        let _ = self.store.release_lease("upkeep", &node).await;
    }

    /// One round: retirements due, then maintenance. Does nothing when another node holds the
    /// lease. Stops between items once `stop` turns true (an item in flight finishes).
    pub async fn upkeep_round(&self, node: &str, stop: &watch::Receiver<bool>) -> anyhow::Result<()> {
        let now = now_us();
        if !self.store.try_lease("upkeep", node, now, LEASE.as_micros() as i64).await? {
            return Ok(());
        }
        self.run_retirements(now, stop).await?;
        self.run_maintenance(stop).await
    }

    async fn run_retirements(&self, now: Micros, stop: &watch::Receiver<bool>) -> anyhow::Result<()> {
        let cx = self.kind_context();
        for r in self.store.due_retirements(now, BATCH).await? {
            if *stop.borrow() {
                return Ok(());
            }
            let Some(kind) = kinds::find(&r.kind) else {
                tracing::error!(token = %r.token_id, kind = %r.kind, "retirement of a kind this build does not know: dropped");
                self.store.retirement_done(r.id).await?;
                continue;
            };
            match kind.retire(&retired_token(&r), &cx).await {
                Ok(()) => {
                    self.store.retirement_done(r.id).await?;
                    if r.attempts > 0 {
                        let e = entry(
                            "token_retired",
                            &r.token_id,
                            format!("retired {} token after {} failures", r.kind, r.attempts),
                        );
                        self.store.append_audit(&e).await?;
                    }
                    tracing::info!(token = %r.token_id, kind = %r.kind, "retired deleted token");
                }
                Err(e) => {
                    let text = format!("{e:#}");
                    let next = now + backoff(r.attempts).as_micros() as i64;
                    tracing::error!(token = %r.token_id, kind = %r.kind, attempts = r.attempts + 1, error = %text,
                        "could not retire deleted token; will retry");
                    self.store.retirement_failed(r.id, &text, next).await?;
                    if r.attempts % 10 == 0 {
                        let a = entry(
                            "token_retire_failed",
                            &r.token_id,
                            format!("retiring {} token failed: {text}", r.kind),
                        );
                        self.store.append_audit(&a).await?;
                    }
                }
            }
        }
        Ok(())
    }

    async fn run_maintenance(&self, stop: &watch::Receiver<bool>) -> anyhow::Result<()> {
        let cx = self.kind_context();
        for kind in kinds::KINDS.iter().filter(|k| k.maintains()) {
            let filter = TokenFilter { kind: Some(kind.name().into()), ..TokenFilter::default() };
            let mut start = PageStart { key: None, backwards: false };
            loop {
                let page = self.store.list_tokens(&filter, &start, super::MAX_PAGE).await?;
                for t in &page {
                    if *stop.borrow() {
                        return Ok(());
                    }
                    match kind.maintain(t, &cx).await {
                        Ok(Some(updated)) => {
                            let change = TokenChange { params: Some(updated.params), ..TokenChange::default() };
                            let audit = entry("token_update", &t.id, updated.description);
                            self.store.update_token(&t.id, &change, &audit).await?;
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(token = %t.id, kind = kind.name(), error = %format!("{e:#}"), "token upkeep failed; will retry")
                        }
                    }
                }
                if (page.len() as i64) < super::MAX_PAGE {
                    break;
                }
                start = PageStart { key: page.last().map(|t| (t.created_us, t.id.clone())), backwards: false };
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_an_hour() {
        assert_eq!(backoff(0), Duration::from_secs(10));
        assert_eq!(backoff(1), Duration::from_secs(20));
        assert_eq!(backoff(5), Duration::from_secs(320));
        assert_eq!(backoff(9), Duration::from_secs(3600));
        assert_eq!(backoff(i64::MAX), Duration::from_secs(3600));
        assert_eq!(backoff(-3), Duration::from_secs(10));
    }
}

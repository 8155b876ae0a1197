//! Retention: which stored hits may be deleted, and the task that deletes them.
//!
//! By default Trapline keeps every hit. With `--hit-retention-days` and/or
//! `--hit-retention-per-token` set, each node runs [`run`]: at start and then every
//! [`EVERY`], it asks the store to delete hits older than the age or beyond the newest N of
//! their token, never a hit of an unacknowledged incident (what an analyst has not looked at
//! yet is never lost). The store does it in small transactions, so hits being recorded never
//! wait long; several nodes doing it at once only find less to delete.

use std::sync::Arc;
use std::time::Duration;

use crate::model::now_us;
use crate::store::Store;

/// How often retention runs.
pub const EVERY: Duration = Duration::from_secs(600);
/// Rows deleted per transaction.
const CHUNK: i64 = 1000;
const DAY_US: i64 = 86_400 * 1_000_000;

/// The retention settings; `None` keeps everything of that measure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    pub max_age_days: Option<i64>,
    pub max_per_token: Option<i64>,
}

impl Retention {
    pub fn keeps_everything(&self) -> bool {
        self.max_age_days.is_none() && self.max_per_token.is_none()
    }

    /// For the start-up banner.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(d) = self.max_age_days {
            parts.push(format!("hits older than {d} days"));
        }
        if let Some(n) = self.max_per_token {
            parts.push(format!("hits beyond the newest {n} of a token"));
        }
        if parts.is_empty() {
            "every hit is kept".into()
        } else {
            format!("deletes {}, except those of unacknowledged incidents", parts.join(" and "))
        }
    }

    /// One round: deletes what the settings let go; returns how many hits.
    pub async fn apply(&self, store: &dyn Store) -> anyhow::Result<u64> {
        if self.keeps_everything() {
            return Ok(0);
        }
        let cutoff = self.max_age_days.map(|d| now_us().saturating_sub(d.saturating_mul(DAY_US)));
        Ok(store.prune(cutoff, self.max_per_token, CHUNK).await?)
    }
}

/// Applies `retention` at start and every [`EVERY`] until the process ends.
pub async fn run(store: Arc<dyn Store>, retention: Retention) {
    if retention.keeps_everything() {
        return;
    }
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tick.tick().await;
        match retention.apply(store.as_ref()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(hits = n, "retention deleted old hits"),
            Err(e) => tracing::warn!(error = %e, "retention could not delete old hits; trying again later"),
        }
    }
}

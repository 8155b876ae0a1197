//! The alert outbox: alerts written with their hit, claimed by lease, finished in batches.

use anyhow::Context;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::incidents::update_incidents;
use super::*;
use crate::model::*;

pub(super) const ALERT_COLS: &str = "id, incident_id, hit_id, token_id, output, idempotency_key, payload, created_us, \
     next_attempt_us, attempts, last_error, delivered_us, gave_up_us";

pub(super) fn alert_from_row(r: &AnyRow) -> StoreResult<Alert> {
    let output: String = r.try_get(4)?;
    let payload: String = r.try_get(6)?;
    Ok(Alert {
        id: r.try_get(0)?,
        incident_id: r.try_get(1)?,
        hit_id: r.try_get(2)?,
        token_id: r.try_get(3)?,
        output: serde_json::from_str(&output).context("alert output is not JSON")?,
        idempotency_key: r.try_get(5)?,
        payload: serde_json::from_str(&payload).context("alert payload is not JSON")?,
        created_us: r.try_get(7)?,
        next_attempt_us: r.try_get(8)?,
        attempts: r.try_get(9)?,
        last_error: r.try_get(10)?,
        delivered_us: r.try_get(11)?,
        gave_up_us: r.try_get(12)?,
    })
}

pub(super) async fn insert_alert(
    tx: &mut WriteTx,
    incident_id: i64,
    hit_id: i64,
    token_id: &str,
    key: &str,
    a: &NewAlert,
    now: Micros,
) -> StoreResult<i64> {
    let mut payload = a.payload.clone();
    payload["idempotency_key"] = key.into();
    if incident_id > 0 {
        payload["incident_id"] = incident_id.into();
        payload["hit_id"] = hit_id.into();
    }
    Ok(sqlx::query(
        "INSERT INTO alerts (incident_id, hit_id, token_id, output, idempotency_key, payload, created_us, next_attempt_us, attempts) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7, 0) RETURNING id",
    )
    .bind(incident_id)
    .bind(hit_id)
    .bind(token_id)
    .bind(a.output.to_string())
    .bind(key)
    .bind(payload.to_string())
    .bind(now)
    .fetch_one(&mut **tx)
    .await?
    .try_get(0)?)
}

pub(super) async fn due_alerts(s: &SqlStore, now: Micros, limit: i64) -> StoreResult<Vec<Alert>> {
    let rows = sqlx::query(&format!(
        "SELECT {ALERT_COLS} FROM alerts WHERE delivered_us IS NULL AND gave_up_us IS NULL \
         AND next_attempt_us <= $1 ORDER BY next_attempt_us, id LIMIT $2"
    ))
    .bind(now)
    .bind(limit)
    .fetch_all(&s.pool)
    .await?;
    rows.iter().map(alert_from_row).collect()
}

pub(super) async fn claim_due_alerts(
    s: &SqlStore,
    now: Micros,
    limit: i64,
    lease_until: Micros,
    node: &str,
) -> StoreResult<Vec<Alert>> {
    // The outer conditions are checked again on each row as it is updated, so a row another
    // node claimed between the subquery and the update (PostgreSQL re-reads it after the
    // row lock) is skipped rather than taken twice.
    const DUE: &str = "delivered_us IS NULL AND gave_up_us IS NULL AND next_attempt_us <= $2";
    let mut tx = s.begin().await?;
    let mut rows = sqlx::query(&format!(
        "UPDATE alerts SET next_attempt_us = $1, claimed_by = $4 WHERE id IN \
         (SELECT id FROM alerts WHERE {DUE} ORDER BY next_attempt_us, id LIMIT $3) AND {DUE} \
         RETURNING {ALERT_COLS}"
    ))
    .bind(lease_until)
    .bind(now)
    .bind(limit)
    .bind(node)
    .fetch_all(&mut *tx)
    .await?
    .iter()
    .map(alert_from_row)
    .collect::<StoreResult<Vec<Alert>>>()?;
    tx.commit().await?;
    rows.sort_by_key(|a| (a.created_us, a.id));
    Ok(rows)
}

pub(super) async fn release_claims(s: &SqlStore, node: &str, now: Micros) -> StoreResult<u64> {
    let mut tx = s.begin().await?;
    let n = sqlx::query(
        "UPDATE alerts SET next_attempt_us = $1, claimed_by = NULL \
         WHERE claimed_by = $2 AND delivered_us IS NULL AND gave_up_us IS NULL",
    )
    .bind(now)
    .bind(node)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(n)
}

pub(super) async fn finish_alerts(s: &SqlStore, results: &[AlertResult]) -> StoreResult<()> {
    if results.is_empty() {
        return Ok(());
    }
    let mut tx = s.begin().await?;
    // Incidents one of whose alerts went out are `notified` (kept on the incident, so
    // listings need not look through the outbox).
    let mut notified: Vec<i64> = Vec::new();
    for r in results {
        match &r.outcome {
            AlertOutcome::Delivered { when } => {
                let row = sqlx::query(
                    "UPDATE alerts SET delivered_us = $1, attempts = $2, last_error = NULL, claimed_by = NULL \
                     WHERE id = $3 RETURNING incident_id",
                )
                .bind(*when)
                .bind(r.attempts)
                .bind(r.id)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some(incident) = row.map(|r| r.try_get::<i64, _>(0)).transpose()?.filter(|i| *i > 0) {
                    notified.push(incident);
                }
            }
            AlertOutcome::Failed { error, next_attempt_us, gave_up_us } => {
                sqlx::query(
                    "UPDATE alerts SET attempts = $1, last_error = $2, next_attempt_us = $3, gave_up_us = $4, \
                     claimed_by = NULL WHERE id = $5",
                )
                .bind(r.attempts)
                .bind(error.as_str())
                .bind(*next_attempt_us)
                .bind(*gave_up_us)
                .bind(r.id)
                .execute(&mut *tx)
                .await?;
            }
        }
    }
    notified.sort_unstable();
    notified.dedup();
    update_incidents(&mut tx, &notified, |_| "notified = 1".into()).await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn list_alerts(s: &SqlStore, undelivered_only: bool, limit: i64) -> StoreResult<Vec<Alert>> {
    let cond = if undelivered_only { "WHERE delivered_us IS NULL" } else { "" };
    let rows = sqlx::query(&format!("SELECT {ALERT_COLS} FROM alerts {cond} ORDER BY id DESC LIMIT $1"))
        .bind(limit)
        .fetch_all(&s.pool)
        .await?;
    rows.iter().map(alert_from_row).collect()
}

pub(super) async fn insert_alerts(
    s: &SqlStore,
    alerts: &[NewAlert],
    key_prefix: &str,
    audit: &AuditEntry,
) -> StoreResult<()> {
    let mut tx = s.begin().await?;
    let now = now_us();
    for (i, a) in alerts.iter().enumerate() {
        insert_alert(&mut tx, 0, 0, "", &format!("{key_prefix}-{i}"), a, now).await?;
    }
    audited(tx, audit, ()).await
}

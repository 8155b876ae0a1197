//! Alert outputs configured through the management API.

use anyhow::Context;
use sqlx::Row;

use super::*;
use crate::model::*;

pub(super) async fn fetch_alert_outputs(conn: &mut sqlx::AnyConnection) -> StoreResult<Vec<AlertOutput>> {
    let rows =
        sqlx::query("SELECT id, flock_id, output, created_us, created_by FROM alert_outputs ORDER BY created_us, id")
            .fetch_all(&mut *conn)
            .await?;
    rows.iter()
        .map(|r| {
            let output: String = r.try_get(2)?;
            Ok(AlertOutput {
                id: r.try_get(0)?,
                flock_id: r.try_get(1)?,
                output: serde_json::from_str(&output).context("alert output is not JSON")?,
                created_us: r.try_get(3)?,
                created_by: r.try_get(4)?,
            })
        })
        .collect()
}

pub(super) async fn list_alert_outputs(s: &SqlStore) -> StoreResult<Vec<AlertOutput>> {
    let mut conn = s.pool.acquire().await?;
    fetch_alert_outputs(&mut conn).await
}

pub(super) async fn insert_alert_output(s: &SqlStore, o: &AlertOutput, audit: &AuditEntry) -> StoreResult<()> {
    let mut tx = s.begin().await?;
    sqlx::query("INSERT INTO alert_outputs (id, flock_id, output, created_us, created_by) VALUES ($1, $2, $3, $4, $5)")
        .bind(o.id.as_str())
        .bind(o.flock_id.as_deref())
        .bind(o.output.to_string())
        .bind(o.created_us)
        .bind(o.created_by.as_str())
        .execute(&mut *tx)
        .await?;
    audited(tx, audit, ()).await
}

pub(super) async fn delete_alert_output(s: &SqlStore, id: &str, audit: &AuditEntry) -> StoreResult<bool> {
    delete_audited(s, "DELETE FROM alert_outputs WHERE id = $1", id, audit).await
}

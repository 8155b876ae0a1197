//! Flocks: the groups tokens belong to, with their summaries.

use sqlx::Row;

use super::*;
use crate::model::*;

pub(super) async fn list_flocks(s: &SqlStore) -> StoreResult<Vec<Flock>> {
    let rows =
        sqlx::query("SELECT id, name, created_us FROM flocks ORDER BY created_us, id").fetch_all(&s.pool).await?;
    rows.iter().map(|r| Ok(Flock { id: r.try_get(0)?, name: r.try_get(1)?, created_us: r.try_get(2)? })).collect()
}

pub(super) async fn get_flock(s: &SqlStore, id: &str) -> StoreResult<Option<Flock>> {
    let row =
        sqlx::query("SELECT id, name, created_us FROM flocks WHERE id = $1").bind(id).fetch_optional(&s.pool).await?;
    row.map(|r| Ok(Flock { id: r.try_get(0)?, name: r.try_get(1)?, created_us: r.try_get(2)? })).transpose()
}

pub(super) async fn insert_flock(s: &SqlStore, f: &Flock, audit: &AuditEntry) -> StoreResult<()> {
    let mut tx = s.begin().await?;
    sqlx::query("INSERT INTO flocks (id, name, created_us) VALUES ($1, $2, $3)")
        .bind(f.id.as_str())
        .bind(f.name.as_str())
        .bind(f.created_us)
        .execute(&mut *tx)
        .await?;
    audited(tx, audit, ()).await
}

pub(super) async fn rename_flock(s: &SqlStore, id: &str, name: &str, audit: &AuditEntry) -> StoreResult<bool> {
    let mut tx = s.begin().await?;
    let n = sqlx::query("UPDATE flocks SET name = $1 WHERE id = $2")
        .bind(name)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    audited(tx, audit, n > 0).await
}

pub(super) async fn delete_flock(s: &SqlStore, id: &str, audit: &AuditEntry) -> StoreResult<FlockDeletion> {
    let mut tx = s.begin().await?;
    let exists: i64 =
        sqlx::query("SELECT COUNT(*) FROM flocks WHERE id = $1").bind(id).fetch_one(&mut *tx).await?.try_get(0)?;
    if exists == 0 {
        return Ok(FlockDeletion::NotFound);
    }
    let tokens: i64 = sqlx::query("SELECT COUNT(*) FROM tokens WHERE flock_id = $1")
        .bind(id)
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
    if tokens > 0 {
        return Ok(FlockDeletion::NotEmpty);
    }
    sqlx::query("DELETE FROM flocks WHERE id = $1").bind(id).execute(&mut *tx).await?;
    sqlx::query("DELETE FROM alert_outputs WHERE flock_id = $1").bind(id).execute(&mut *tx).await?;
    audited(tx, audit, FlockDeletion::Deleted).await
}

pub(super) async fn flock_summary(s: &SqlStore, id: &str) -> StoreResult<FlockSummary> {
    let row = sqlx::query(
        "SELECT \
           (SELECT COUNT(*) FROM tokens WHERE flock_id = $1), \
           (SELECT COUNT(*) FROM tokens WHERE flock_id = $1 AND enabled = 1), \
           (SELECT COUNT(*) FROM tokens t WHERE t.flock_id = $1 \
              AND EXISTS (SELECT 1 FROM incidents i WHERE i.token_id = t.id)), \
           (SELECT COUNT(*) FROM incidents WHERE flock_id = $1), \
           (SELECT COUNT(*) FROM incidents WHERE flock_id = $1 AND acknowledged = 0)",
    )
    .bind(id)
    .fetch_one(&s.pool)
    .await?;
    let kinds =
        sqlx::query("SELECT kind, COUNT(*) FROM tokens WHERE flock_id = $1 GROUP BY kind ORDER BY COUNT(*) DESC, kind")
            .bind(id)
            .fetch_all(&s.pool)
            .await?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<StoreResult<Vec<(String, i64)>>>()?;
    Ok(FlockSummary {
        token_count: row.try_get(0)?,
        enabled_token_count: row.try_get(1)?,
        triggered_token_count: row.try_get(2)?,
        incident_count: row.try_get(3)?,
        unacknowledged_incident_count: row.try_get(4)?,
        kinds,
    })
}

pub(super) async fn flock_token_ids(s: &SqlStore, id: &str) -> StoreResult<Vec<String>> {
    let rows = sqlx::query("SELECT id FROM tokens WHERE flock_id = $1 ORDER BY created_us, id")
        .bind(id)
        .fetch_all(&s.pool)
        .await?;
    rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
}

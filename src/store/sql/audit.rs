//! The audit log: entries written in the transaction of the change they describe.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::*;
use crate::model::*;

pub(super) fn audit_from_row(r: &AnyRow) -> StoreResult<AuditEntry> {
    Ok(AuditEntry {
        time_us: r.try_get(0)?,
        actor: r.try_get(1)?,
        action: r.try_get(2)?,
        target: r.try_get(3)?,
        description: r.try_get(4)?,
        src_ip: r.try_get(5)?,
        dialect: r.try_get(6)?,
    })
}

pub(super) async fn insert_audit(tx: &mut WriteTx, a: &AuditEntry) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO audit_log (time_us, actor, action, target, description, src_ip, dialect) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(a.time_us)
    .bind(a.actor.as_str())
    .bind(a.action.as_str())
    .bind(a.target.as_str())
    .bind(a.description.as_str())
    .bind(a.src_ip.as_str())
    .bind(a.dialect.as_str())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub(super) async fn append_audit(s: &SqlStore, audit: &AuditEntry) -> StoreResult<()> {
    let tx = s.begin().await?;
    audited(tx, audit, ()).await
}

pub(super) async fn list_audit(s: &SqlStore, limit: i64) -> StoreResult<Vec<AuditEntry>> {
    let rows = sqlx::query(
        "SELECT time_us, actor, action, target, description, src_ip, dialect FROM audit_log \
         ORDER BY id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(&s.pool)
    .await?;
    rows.iter().map(audit_from_row).collect()
}

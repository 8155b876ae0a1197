//! Named leases: which node of several sharing one database does a singular job (ingesting
//! CloudTrail) right now. Taking or renewing one is a single upsert whose update applies only
//! when the lease is free, expired or the asker's own, so concurrent askers cannot both win on
//! either engine (PostgreSQL locks the conflicting row; SQLite writers are serial). No audit:
//! machine bookkeeping.

use super::*;
use crate::model::*;

pub(super) async fn try_lease(
    s: &SqlStore,
    name: &str,
    holder: &str,
    now_us: Micros,
    ttl_us: Micros,
) -> StoreResult<bool> {
    let mut tx = s.begin().await?;
    let n = sqlx::query(
        "INSERT INTO leases (name, holder, expires_us) VALUES ($1, $2, $4) \
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_us = excluded.expires_us \
         WHERE leases.holder = $2 OR leases.expires_us <= $3",
    )
    .bind(name)
    .bind(holder)
    .bind(now_us)
    .bind(now_us.saturating_add(ttl_us))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(n > 0)
}

pub(super) async fn release_lease(s: &SqlStore, name: &str, holder: &str) -> StoreResult<()> {
    let mut tx = s.begin().await?;
    sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2").bind(name).bind(holder).execute(&mut *tx).await?;
    tx.commit().await
}

//! A poller's own bookkeeping (the CloudTrail ingester's): named values it saves between runs,
//! and the ledger of the log objects each source has processed. Machine state, not management
//! actions: nothing here is audited.

use std::collections::HashSet;

use sqlx::Row;

use super::*;
use crate::model::*;
use crate::store::args::{Arg, Args};

/// Most keys looked up in one statement (SQLite binds at most 32766 values; this stays well
/// under, and under older builds' 999).
const KEYS_PER_QUERY: usize = 500;

pub(super) async fn get_poller_state(s: &SqlStore, name: &str) -> StoreResult<Option<String>> {
    let row = sqlx::query("SELECT value FROM poller_state WHERE name = $1").bind(name).fetch_optional(&s.pool).await?;
    Ok(row.map(|r| r.try_get(0)).transpose()?)
}

pub(super) async fn put_poller_state(s: &SqlStore, name: &str, value: &str) -> StoreResult<()> {
    let mut tx = s.begin().await?;
    sqlx::query(
        "INSERT INTO poller_state (name, value, updated_us) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_us = excluded.updated_us",
    )
    .bind(name)
    .bind(value)
    .bind(now_us())
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

pub(super) async fn objects_done(s: &SqlStore, source: &str, keys: &[String]) -> StoreResult<HashSet<String>> {
    let mut done = HashSet::new();
    for chunk in keys.chunks(KEYS_PER_QUERY) {
        let mut args = Args::default();
        let src = args.push(Arg::S(source.to_string()));
        let list = args.list(chunk.iter().map(|k| Arg::S(k.clone())));
        let sql = format!("SELECT object_key FROM ingested_objects WHERE source = {src} AND object_key IN ({list})");
        for r in args.bind(sqlx::query(&sql)).fetch_all(&s.pool).await? {
            done.insert(r.try_get(0)?);
        }
    }
    Ok(done)
}

pub(super) async fn mark_object_done(s: &SqlStore, source: &str, key: &str, now_us: Micros) -> StoreResult<()> {
    let mut tx = s.begin().await?;
    sqlx::query(
        "INSERT INTO ingested_objects (source, object_key, done_us) VALUES ($1, $2, $3) \
         ON CONFLICT (source, object_key) DO UPDATE SET done_us = excluded.done_us",
    )
    .bind(source)
    .bind(key)
    .bind(now_us)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

pub(super) async fn prune_objects_done(s: &SqlStore, older_than_us: Micros) -> StoreResult<u64> {
    let mut tx = s.begin().await?;
    let n = sqlx::query("DELETE FROM ingested_objects WHERE done_us < $1")
        .bind(older_than_us)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(n)
}

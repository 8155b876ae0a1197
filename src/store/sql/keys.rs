//! API keys: the Console's and the dialects' credentials, by their secret's hash.

use anyhow::Context;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::*;
use crate::model::*;
use crate::store::args::{Arg, Args};

pub(super) const KEY_COLS: &str = "key_id, secret_hash, role, flock_id, active, expire_us, description, \
     created_us, last_used_us, created_by, annotations";

pub(super) fn key_from_row(r: &AnyRow) -> StoreResult<ApiKey> {
    let role: String = r.try_get(2)?;
    Ok(ApiKey {
        key_id: r.try_get(0)?,
        secret_hash: r.try_get(1)?,
        role: Role::parse(&role).with_context(|| format!("unknown role {role:?} in api_keys"))?,
        flock_id: r.try_get(3)?,
        active: r.try_get::<i64, _>(4)? != 0,
        expire_us: r.try_get(5)?,
        description: r.try_get(6)?,
        created_us: r.try_get(7)?,
        last_used_us: r.try_get(8)?,
        created_by: r.try_get(9)?,
        annotations: serde_json::from_str(&r.try_get::<String, _>(10)?).context("key annotations are not JSON")?,
    })
}

pub(super) async fn insert_key(tx: &mut WriteTx, k: &ApiKey) -> StoreResult<()> {
    sqlx::query(&format!("INSERT INTO api_keys ({KEY_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"))
        .bind(k.key_id.as_str())
        .bind(k.secret_hash.as_str())
        .bind(k.role.as_str())
        .bind(k.flock_id.as_deref())
        .bind(b(k.active))
        .bind(k.expire_us)
        .bind(k.description.as_str())
        .bind(k.created_us)
        .bind(k.last_used_us)
        .bind(k.created_by.as_str())
        .bind(serde_json::to_string(&k.annotations)?)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub(super) async fn count_api_keys(s: &SqlStore) -> StoreResult<i64> {
    Ok(sqlx::query("SELECT COUNT(*) FROM api_keys").fetch_one(&s.pool).await?.try_get(0)?)
}

pub(super) async fn insert_api_key(s: &SqlStore, k: &ApiKey, audit: &AuditEntry) -> StoreResult<()> {
    let mut tx = s.begin().await?;
    insert_key(&mut tx, k).await?;
    audited(tx, audit, ()).await
}

pub(super) async fn insert_first_api_key(s: &SqlStore, k: &ApiKey, audit: &AuditEntry) -> StoreResult<bool> {
    let mut tx = s.begin().await?;
    if s.engine == Engine::Postgres {
        // Readers may go on; a second would-be first key waits here, then sees this one.
        sqlx::query("LOCK TABLE api_keys IN SHARE ROW EXCLUSIVE MODE").execute(&mut *tx).await?;
    }
    let n: i64 = sqlx::query("SELECT COUNT(*) FROM api_keys").fetch_one(&mut *tx).await?.try_get(0)?;
    if n > 0 {
        return Ok(false);
    }
    insert_key(&mut tx, k).await?;
    audited(tx, audit, true).await
}

pub(super) async fn api_key_by_hash(s: &SqlStore, secret_hash: &str) -> StoreResult<Option<ApiKey>> {
    let row = sqlx::query(&format!("SELECT {KEY_COLS} FROM api_keys WHERE secret_hash = $1"))
        .bind(secret_hash)
        .fetch_optional(&s.pool)
        .await?;
    row.as_ref().map(key_from_row).transpose()
}

pub(super) async fn touch_api_key(s: &SqlStore, key_id: &str, when: Micros) -> StoreResult<()> {
    sqlx::query("UPDATE api_keys SET last_used_us = $1 WHERE key_id = $2")
        .bind(when)
        .bind(key_id)
        .execute(&s.pool)
        .await?;
    Ok(())
}

pub(super) async fn list_api_keys(s: &SqlStore) -> StoreResult<Vec<ApiKey>> {
    let rows =
        sqlx::query(&format!("SELECT {KEY_COLS} FROM api_keys ORDER BY created_us, key_id")).fetch_all(&s.pool).await?;
    rows.iter().map(key_from_row).collect()
}

pub(super) async fn get_api_key(s: &SqlStore, key_id: &str) -> StoreResult<Option<ApiKey>> {
    let row = sqlx::query(&format!("SELECT {KEY_COLS} FROM api_keys WHERE key_id = $1"))
        .bind(key_id)
        .fetch_optional(&s.pool)
        .await?;
    row.as_ref().map(key_from_row).transpose()
}

pub(super) async fn update_api_key(
    s: &SqlStore,
    key_id: &str,
    change: &KeyChange,
    audit: &AuditEntry,
) -> StoreResult<Option<ApiKey>> {
    let mut tx = s.begin().await?;
    let mut args = Args::default();
    let mut sets = Vec::new();
    if let Some(r) = change.role {
        sets.push(format!("role = {}", args.push(Arg::S(r.as_str().into()))));
    }
    if let Some(a) = change.active {
        sets.push(format!("active = {}", args.push(Arg::I(b(a)))));
    }
    if let Some(e) = change.expire_us {
        sets.push(format!("expire_us = {}", args.push(Arg::I(e))));
    }
    if let Some(d) = &change.description {
        sets.push(format!("description = {}", args.push(Arg::S(d.clone()))));
    }
    if !sets.is_empty() {
        let id = args.push(Arg::S(key_id.into()));
        let sql = format!("UPDATE api_keys SET {} WHERE key_id = {id}", sets.join(", "));
        args.bind(sqlx::query(&sql)).execute(&mut *tx).await?;
    }
    let row = sqlx::query(&format!("SELECT {KEY_COLS} FROM api_keys WHERE key_id = $1"))
        .bind(key_id)
        .fetch_optional(&mut *tx)
        .await?;
    let key = row.as_ref().map(key_from_row).transpose()?;
    audited(tx, audit, key).await
}

pub(super) async fn delete_api_key(s: &SqlStore, key_id: &str, audit: &AuditEntry) -> StoreResult<bool> {
    delete_audited(s, "DELETE FROM api_keys WHERE key_id = $1", key_id, audit).await
}

pub(super) async fn insert_api_key_once(s: &SqlStore, k: &ApiKey, audit: &AuditEntry, mark: &str) -> StoreResult<bool> {
    let mut tx = s.begin().await?;
    let marked = sqlx::query("INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
        .bind(mark)
        .bind(k.key_id.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if marked == 0 {
        return Ok(false);
    }
    insert_key(&mut tx, k).await?;
    audited(tx, audit, true).await
}

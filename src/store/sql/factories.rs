//! Factory tokens (Falcon's registration tokens) and the FQL queries over them and their audit events.

use anyhow::Context;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::*;
use crate::model::*;
use crate::store::args::{Arg, Args};
use crate::store::fql_sql;

pub(super) const FACTORY_COLS: &str =
    "id, value_hash, label, flock_id, created_us, expires_us, revoked_us, last_used_us, \
     cidrs, use_count, created_by, value_sealed";

pub(super) fn factory_from_row(r: &AnyRow) -> StoreResult<FactoryToken> {
    let cidrs: String = r.try_get(8)?;
    Ok(FactoryToken {
        id: r.try_get(0)?,
        value_hash: r.try_get(1)?,
        label: r.try_get(2)?,
        flock_id: r.try_get(3)?,
        created_us: r.try_get(4)?,
        expires_us: r.try_get(5)?,
        revoked_us: r.try_get(6)?,
        last_used_us: r.try_get(7)?,
        cidrs: serde_json::from_str(&cidrs).context("factory cidrs are not a JSON list")?,
        use_count: r.try_get(9)?,
        created_by: r.try_get(10)?,
        value_sealed: r.try_get(11)?,
    })
}

impl SqlStore {
    /// The first column of the rows of `table` within `scope` matching the query's filter,
    /// sorted and paged, and the number of matching rows in all.
    async fn query_ids(
        &self,
        table: &str,
        scope: &str,
        fields: &[fql_sql::Field],
        default_order: &str,
        q: &crate::model::Query,
        now: Micros,
    ) -> StoreResult<(Vec<AnyRow>, i64)> {
        let mut args = Args::default();
        let cond = match &q.filter {
            Some(f) => fql_sql::compile(f, fields, &mut args, now)?,
            None => "1=1".to_string(),
        };
        let total: i64 = args
            .bind(sqlx::query(&format!("SELECT COUNT(*) FROM {table} WHERE {scope} AND {cond}")))
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
        let order = match &q.sort {
            Some(s) => format!("{}, id", fql_sql::order_by(s, fields, &mut args, now)?),
            None => default_order.to_string(),
        };
        let (limit, offset) = (args.push(Arg::I(q.limit)), args.push(Arg::I(q.offset)));
        let sql =
            format!("SELECT id FROM {table} WHERE {scope} AND {cond} ORDER BY {order} LIMIT {limit} OFFSET {offset}");
        Ok((args.bind(sqlx::query(&sql)).fetch_all(&self.pool).await?, total))
    }
}

pub(super) async fn insert_factory(s: &SqlStore, f: &FactoryToken, audit: &AuditEntry) -> StoreResult<()> {
    let mut tx = s.begin().await?;
    sqlx::query(&format!(
        "INSERT INTO factory_tokens ({FACTORY_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
    ))
    .bind(f.id.as_str())
    .bind(f.value_hash.as_str())
    .bind(f.label.as_str())
    .bind(f.flock_id.as_str())
    .bind(f.created_us)
    .bind(f.expires_us)
    .bind(f.revoked_us)
    .bind(f.last_used_us)
    .bind(serde_json::to_string(&f.cidrs)?)
    .bind(f.use_count)
    .bind(f.created_by.as_str())
    .bind(f.value_sealed.as_deref())
    .execute(&mut *tx)
    .await?;
    audited(tx, audit, ()).await
}

pub(super) async fn factory_by_hash(s: &SqlStore, value_hash: &str) -> StoreResult<Option<FactoryToken>> {
    let row = sqlx::query(&format!("SELECT {FACTORY_COLS} FROM factory_tokens WHERE value_hash = $1"))
        .bind(value_hash)
        .fetch_optional(&s.pool)
        .await?;
    row.as_ref().map(factory_from_row).transpose()
}

pub(super) async fn get_factory(s: &SqlStore, id: &str) -> StoreResult<Option<FactoryToken>> {
    let row = sqlx::query(&format!("SELECT {FACTORY_COLS} FROM factory_tokens WHERE id = $1"))
        .bind(id)
        .fetch_optional(&s.pool)
        .await?;
    row.as_ref().map(factory_from_row).transpose()
}

pub(super) async fn list_factories(s: &SqlStore) -> StoreResult<Vec<FactoryToken>> {
    let rows = sqlx::query(&format!("SELECT {FACTORY_COLS} FROM factory_tokens ORDER BY created_us, id"))
        .fetch_all(&s.pool)
        .await?;
    rows.iter().map(factory_from_row).collect()
}

pub(super) async fn update_factory(
    s: &SqlStore,
    id: &str,
    change: &FactoryChange,
    audit: &AuditEntry,
) -> StoreResult<Option<FactoryToken>> {
    let mut tx = s.begin().await?;
    let row = sqlx::query(&format!("SELECT {FACTORY_COLS} FROM factory_tokens WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let mut f = factory_from_row(&row)?;
    if let Some(l) = &change.label {
        f.label = l.clone();
    }
    if let Some(e) = change.expires_us {
        f.expires_us = e;
    }
    if let Some(r) = change.revoked_us {
        f.revoked_us = r;
    }
    sqlx::query("UPDATE factory_tokens SET label = $1, expires_us = $2, revoked_us = $3 WHERE id = $4")
        .bind(f.label.as_str())
        .bind(f.expires_us)
        .bind(f.revoked_us)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    audited(tx, audit, Some(f)).await
}

pub(super) async fn delete_factory(s: &SqlStore, id: &str, audit: &AuditEntry) -> StoreResult<bool> {
    delete_audited(s, "DELETE FROM factory_tokens WHERE id = $1", id, audit).await
}

pub(super) async fn touch_factory(s: &SqlStore, id: &str, when: Micros) -> StoreResult<()> {
    sqlx::query("UPDATE factory_tokens SET last_used_us = $1, use_count = use_count + 1 WHERE id = $2")
        .bind(when)
        .bind(id)
        .execute(&s.pool)
        .await?;
    Ok(())
}

pub(super) async fn query_factories(
    s: &SqlStore,
    q: &crate::model::Query,
    now: Micros,
) -> StoreResult<(Vec<String>, i64)> {
    let (ids, total) =
        s.query_ids("factory_tokens", "1=1", fql_sql::FACTORY_FIELDS, "created_us DESC, id DESC", q, now).await?;
    Ok((ids.into_iter().map(|r| r.try_get::<String, _>(0)).collect::<Result<_, _>>()?, total))
}

pub(super) async fn query_factory_audit(
    s: &SqlStore,
    q: &crate::model::Query,
    now: Micros,
) -> StoreResult<(Vec<i64>, i64)> {
    let scope = "action IN ('factory_create', 'factory_update', 'factory_revoke', 'factory_restore', 'factory_delete')";
    let (rows, total) = s.query_ids("audit_log", scope, fql_sql::AUDIT_FIELDS, "time_us DESC, id DESC", q, now).await?;
    Ok((rows.into_iter().map(|r| r.try_get::<i64, _>(0)).collect::<Result<_, _>>()?, total))
}

pub(super) async fn factory_audit_events(s: &SqlStore, ids: &[i64]) -> StoreResult<Vec<AuditEvent>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut args = Args::default();
    let list = args.list(ids.iter().take(1000).map(|i| Arg::I(*i)));
    let sql = format!(
        "SELECT id, time_us, actor, {}, target, description, src_ip, dialect FROM audit_log \
         WHERE id IN ({list}) AND action LIKE 'factory\\_%' ESCAPE '\\' ORDER BY id",
        fql_sql::AUDIT_ACTION,
    );
    let rows = args.bind(sqlx::query(&sql)).fetch_all(&s.pool).await?;
    rows.iter()
        .map(|r| {
            Ok(AuditEvent {
                id: r.try_get(0)?,
                entry: AuditEntry {
                    time_us: r.try_get(1)?,
                    actor: r.try_get(2)?,
                    action: r.try_get(3)?,
                    target: r.try_get(4)?,
                    description: r.try_get(5)?,
                    src_ip: r.try_get(6)?,
                    dialect: r.try_get(7)?,
                },
            })
        })
        .collect()
}

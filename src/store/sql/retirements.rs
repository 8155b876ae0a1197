//! The retirement queue: what deleted tokens' kinds must still undo outside Trapline (an IAM
//! user, ...). A row is written in the transaction that deletes its token
//! ([`super::tokens::delete_token`]), so no delete can forget it, and stays until its kind's
//! `retire` succeeds; failed attempts move its next try on and keep their error for the
//! operator to see.

use anyhow::Context;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::*;
use crate::model::*;

/// Longest error text kept for a failed attempt, in bytes (cut at a character boundary).
const MAX_ERROR: usize = 2048;

const RETIREMENT_COLS: &str = "id, token_id, kind, params, created_us, attempts, last_error";

fn retirement_from_row(r: &AnyRow) -> StoreResult<Retirement> {
    Ok(Retirement {
        id: r.try_get(0)?,
        token_id: r.try_get(1)?,
        kind: r.try_get(2)?,
        params: serde_json::from_str(&r.try_get::<String, _>(3)?).context("retirement params are not JSON")?,
        created_us: r.try_get(4)?,
        attempts: r.try_get(5)?,
        last_error: r.try_get(6)?,
    })
}

/// Queues the retirement of a token being deleted in `tx`, due at once (`now_us`).
pub(super) async fn queue_retirement(
    tx: &mut WriteTx,
    token_id: &str,
    kind: &str,
    params: &str,
    now_us: Micros,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO retirements (token_id, kind, params, created_us, attempts, next_try_us, last_error) \
         VALUES ($1, $2, $3, $4, 0, $4, NULL)",
    )
    .bind(token_id)
    .bind(kind)
    .bind(params)
    .bind(now_us)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub(super) async fn due_retirements(s: &SqlStore, now_us: Micros, limit: i64) -> StoreResult<Vec<Retirement>> {
    let sql =
        format!("SELECT {RETIREMENT_COLS} FROM retirements WHERE next_try_us <= $1 ORDER BY next_try_us, id LIMIT $2");
    let rows = sqlx::query(&sql).bind(now_us).bind(limit).fetch_all(&s.pool).await?;
    rows.iter().map(retirement_from_row).collect()
}

pub(super) async fn retirement_failed(s: &SqlStore, id: i64, error: &str, next_try_us: Micros) -> StoreResult<()> {
    let mut end = error.len().min(MAX_ERROR);
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    let mut tx = s.begin().await?;
    sqlx::query("UPDATE retirements SET attempts = attempts + 1, last_error = $1, next_try_us = $2 WHERE id = $3")
        .bind(&error[..end])
        .bind(next_try_us)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

pub(super) async fn retirement_done(s: &SqlStore, id: i64) -> StoreResult<()> {
    let mut tx = s.begin().await?;
    sqlx::query("DELETE FROM retirements WHERE id = $1").bind(id).execute(&mut *tx).await?;
    tx.commit().await
}

pub(super) async fn list_retirements(s: &SqlStore) -> StoreResult<Vec<Retirement>> {
    let rows = sqlx::query(&format!("SELECT {RETIREMENT_COLS} FROM retirements ORDER BY created_us, id"))
        .fetch_all(&s.pool)
        .await?;
    rows.iter().map(retirement_from_row).collect()
}

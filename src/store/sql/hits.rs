//! Recording hits (the hot path) and reading them back.

use anyhow::Context;
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::incidents::{incident_search_text, Stamping};
use super::outbox::insert_alert;
use super::outputs::fetch_alert_outputs;
use super::tokens::{token_from_row, TOKEN_COLS_NO_COUNT};
use super::*;
use crate::hits::{HitRow, HitTx};
use crate::model::*;
use crate::store::StoreError;

pub(super) const HIT_COLS: &str =
    "id, incident_id, token_id, time_us, channel, src_ip, src_port, data, alert_status, dst_ip, dst_port";

pub(super) fn hit_from_row(r: &AnyRow) -> StoreResult<Hit> {
    let channel: String = r.try_get(4)?;
    let data: String = r.try_get(7)?;
    Ok(Hit {
        id: r.try_get(0)?,
        incident_id: r.try_get(1)?,
        token_id: r.try_get(2)?,
        time_us: r.try_get(3)?,
        channel: Channel::parse(&channel).context("unknown channel in hits")?,
        src_ip: r.try_get(5)?,
        src_port: port(r, 6)?,
        data: serde_json::from_str(&data).context("hit data is not JSON")?,
        alert_status: AlertStatus::parse(&r.try_get::<String, _>(8)?).context("unknown alert status in hits")?,
        dst_ip: r.try_get(9)?,
        dst_port: port(r, 10)?,
    })
}

/// The statements of the hit pipeline ([`crate::hits`]) inside one write transaction.
struct SqlHitTx {
    tx: WriteTx,
    /// Incidents created or joined by the batch get a new `updated_id`.
    stamping: Stamping,
    /// Share-locks the token row on PostgreSQL, so a delete waits for the batch and never
    /// leaves an incident without its token.
    token_lock: &'static str,
}

impl HitTx for SqlHitTx {
    type Error = StoreError;

    async fn token_for_update(&mut self, token_id: &str) -> StoreResult<Option<Token>> {
        let sql = format!("SELECT {TOKEN_COLS_NO_COUNT} FROM tokens t WHERE t.id = $1{}", self.token_lock);
        let row = sqlx::query(&sql).bind(token_id).fetch_optional(&mut *self.tx).await?;
        row.as_ref().map(token_from_row).transpose()
    }

    async fn token_of_key(&mut self, key: &TriggerKey) -> StoreResult<Option<String>> {
        let row = sqlx::query("SELECT token_id FROM token_keys WHERE scheme = $1 AND value = $2")
            .bind(key.scheme.as_str())
            .bind(key.value.as_str())
            .fetch_optional(&mut *self.tx)
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    async fn dedupe_seen(&mut self, token_id: &str, dedupe_key: &str) -> StoreResult<bool> {
        Ok(sqlx::query("SELECT id FROM hits WHERE token_id = $1 AND dedupe_key = $2 LIMIT 1")
            .bind(token_id)
            .bind(dedupe_key)
            .fetch_optional(&mut *self.tx)
            .await?
            .is_some())
    }

    async fn open_incident(
        &mut self,
        token_id: &str,
        src_ip: &str,
        group_key: &str,
        since_us: Micros,
    ) -> StoreResult<Option<i64>> {
        let row = sqlx::query(
            "SELECT id FROM incidents WHERE token_id = $1 AND src_ip = $2 AND group_key = $3 AND acknowledged = 0 \
             AND last_hit_us >= $4 ORDER BY id DESC LIMIT 1",
        )
        .bind(token_id)
        .bind(src_ip)
        .bind(group_key)
        .bind(since_us)
        .fetch_optional(&mut *self.tx)
        .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    async fn join_incident(&mut self, incident_id: i64, time_us: Micros) -> StoreResult<()> {
        let stamp = self.stamping.value(&mut self.tx).await?;
        sqlx::query(
            "UPDATE incidents SET last_hit_us = CASE WHEN last_hit_us > $1 THEN last_hit_us ELSE $1 END, \
             updated_us = CASE WHEN updated_us > $1 THEN updated_us ELSE $1 END, \
             updated_id = COALESCE($3, updated_id) WHERE id = $2",
        )
        .bind(time_us)
        .bind(incident_id)
        .bind(stamp)
        .execute(&mut *self.tx)
        .await?;
        self.stamping.touched(incident_id);
        Ok(())
    }

    async fn last_alert_us(&mut self, token_id: &str) -> StoreResult<Option<Micros>> {
        let row = sqlx::query(
            "SELECT created_us FROM incidents WHERE token_id = $1 AND alerted = 1 ORDER BY created_us DESC LIMIT 1",
        )
        .bind(token_id)
        .fetch_optional(&mut *self.tx)
        .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    async fn alerts_since(&mut self, token_id: &str, since_us: Micros) -> StoreResult<i64> {
        Ok(sqlx::query("SELECT COUNT(*) FROM incidents WHERE token_id = $1 AND alerted = 1 AND created_us > $2")
            .bind(token_id)
            .bind(since_us)
            .fetch_one(&mut *self.tx)
            .await?
            .try_get(0)?)
    }

    async fn insert_incident(&mut self, token: &Token, h: &NewHit, group_key: &str, alerted: bool) -> StoreResult<i64> {
        let stamp = self.stamping.value(&mut self.tx).await?;
        let id: i64 = sqlx::query(
            "INSERT INTO incidents (token_id, flock_id, kind, memo, channel, src_ip, created_us, updated_us, acknowledged, \
             alerted, last_hit_us, group_key, search_text, src_port, dst_ip, dst_port, updated_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7, 0, $8, $7, $9, $10, $11, $12, $13, COALESCE($14, 0)) RETURNING id",
        )
        .bind(token.id.as_str())
        .bind(token.flock_id.as_str())
        .bind(token.kind.as_str())
        .bind(token.memo.as_str())
        .bind(h.channel.as_str())
        .bind(h.src_ip.as_str())
        .bind(h.time_us)
        .bind(b(alerted))
        .bind(group_key)
        .bind(incident_search_text(&token.memo, &h.src_ip, &token.id, &token.kind))
        .bind(h.src_port as i64)
        .bind(h.dst_ip.as_str())
        .bind(h.dst_port as i64)
        .bind(stamp)
        .fetch_one(&mut *self.tx)
        .await?
        .try_get(0)?;
        self.stamping.touched(id);
        Ok(id)
    }

    async fn insert_hit(&mut self, row: &HitRow<'_>) -> StoreResult<i64> {
        let h = row.hit;
        Ok(sqlx::query(
            "INSERT INTO hits (incident_id, token_id, time_us, channel, src_ip, src_port, data, dedupe_key, alert_status, \
             dst_ip, dst_port, private_data) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id",
        )
        .bind(row.incident_id.unwrap_or(0))
        .bind(row.token_id)
        .bind(h.time_us)
        .bind(h.channel.as_str())
        .bind(h.src_ip.as_str())
        .bind(h.src_port as i64)
        .bind(row.data.to_string())
        .bind(row.dedupe_key)
        .bind(row.status.as_str())
        .bind(h.dst_ip.as_str())
        .bind(h.dst_port as i64)
        .bind(h.private.as_ref().map(Value::to_string))
        .fetch_one(&mut *self.tx)
        .await?
        .try_get(0)?)
    }

    async fn alert_outputs(&mut self) -> StoreResult<Vec<AlertOutput>> {
        fetch_alert_outputs(&mut self.tx).await
    }

    async fn insert_alert(
        &mut self,
        incident_id: i64,
        hit_id: i64,
        token_id: &str,
        key: &str,
        alert: &NewAlert,
        time_us: Micros,
    ) -> StoreResult<()> {
        insert_alert(&mut self.tx, incident_id, hit_id, token_id, key, alert, time_us).await?;
        Ok(())
    }
}

pub(super) async fn record_hits(s: &SqlStore, hits: &[NewHit], rules: &HitRules) -> StoreResult<Vec<HitOutcome>> {
    let mut tx =
        SqlHitTx { tx: s.begin().await?, stamping: Stamping::for_engine(s.engine), token_lock: s.row_lock(false) };
    let out = crate::hits::record(&mut tx, hits, rules).await?;
    let SqlHitTx { mut tx, stamping, .. } = tx;
    stamping.finish(&mut tx).await?;
    tx.commit().await?;
    Ok(out)
}

pub(super) async fn token_hits(
    s: &SqlStore,
    token_id: &str,
    limit: i64,
    before_id: Option<i64>,
) -> StoreResult<Vec<Hit>> {
    let sql = format!("SELECT {HIT_COLS} FROM hits WHERE token_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3");
    let rows =
        sqlx::query(&sql).bind(token_id).bind(before_id.unwrap_or(i64::MAX)).bind(limit).fetch_all(&s.pool).await?;
    rows.iter().map(hit_from_row).collect()
}

pub(super) async fn amend_hit(
    s: &SqlStore,
    hit_id: i64,
    token_id: &str,
    guard: &str,
    key: &str,
    value: Value,
) -> StoreResult<bool> {
    let mut tx = s.begin().await?;
    let row = sqlx::query("SELECT data, private_data FROM hits WHERE id = $1 AND token_id = $2")
        .bind(hit_id)
        .bind(token_id)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(row) = row else { return Ok(false) };
    let mut data: Value = serde_json::from_str(&row.try_get::<String, _>(0)?).context("hit data is not JSON")?;
    let private: Option<String> = row.try_get(1)?;
    let private: Value = match private {
        Some(text) => serde_json::from_str(&text).context("private hit data is not JSON")?,
        None => Value::Null,
    };
    let expected = private.get(AMEND_GUARD).and_then(Value::as_str).unwrap_or("");
    if expected.is_empty() || !crate::auth::ct_eq(expected, guard) || !data.is_object() || data.get(key).is_some() {
        return Ok(false);
    }
    data[key] = value;
    sqlx::query("UPDATE hits SET data = $1 WHERE id = $2")
        .bind(data.to_string())
        .bind(hit_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(true)
}

//! Recording hits (the hot path) and reading them back.

use anyhow::Context;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::incidents::{incident_search_text, Stamping};
use super::outbox::insert_alert;
use super::outputs::fetch_alert_outputs;
use super::tokens::{token_from_row, TOKEN_COLS_NO_COUNT};
use super::*;
use crate::model::*;

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

/// Puts an alert-worthy hit into an incident, by the noise rules ([`crate::noise`]): its
/// source's open incident when one is within the grouping window, else a new incident that
/// alerts unless the token's cooldown or rate limit holds it back (the reason goes into
/// `data`). Returns the hit's status and its incident.
pub(super) async fn place_in_incident(
    tx: &mut WriteTx,
    stamping: &mut Stamping,
    rules: &crate::noise::NoiseRules,
    token: &Token,
    h: &NewHit,
    data: &mut serde_json::Value,
) -> StoreResult<(AlertStatus, i64)> {
    let group = crate::noise::group_key(h);
    if rules.group_window_secs > 0 {
        let open = sqlx::query(
            "SELECT id FROM incidents WHERE token_id = $1 AND src_ip = $2 AND group_key = $3 AND acknowledged = 0 \
             AND last_hit_us >= $4 ORDER BY id DESC LIMIT 1",
        )
        .bind(token.id.as_str())
        .bind(h.src_ip.as_str())
        .bind(group.as_str())
        .bind(h.time_us - rules.group_window_secs * 1_000_000)
        .fetch_optional(&mut **tx)
        .await?;
        if let Some(row) = open {
            let id: i64 = row.try_get(0)?;
            let stamp = stamping.value(tx).await?;
            sqlx::query(
                "UPDATE incidents SET last_hit_us = CASE WHEN last_hit_us > $1 THEN last_hit_us ELSE $1 END, \
                 updated_us = CASE WHEN updated_us > $1 THEN updated_us ELSE $1 END, \
                 updated_id = COALESCE($3, updated_id) WHERE id = $2",
            )
            .bind(h.time_us)
            .bind(id)
            .bind(stamp)
            .execute(&mut **tx)
            .await?;
            stamping.touched(id);
            return Ok((AlertStatus::Grouped, id));
        }
    }
    let (cooldown, max_per_hour) = (rules.cooldown(token), rules.max_per_hour(token));
    let mut history = crate::noise::AlertHistory::default();
    if cooldown != 0 {
        history.last_alert_us = sqlx::query(
            "SELECT created_us FROM incidents WHERE token_id = $1 AND alerted = 1 ORDER BY created_us DESC LIMIT 1",
        )
        .bind(token.id.as_str())
        .fetch_optional(&mut **tx)
        .await?
        .map(|r| r.try_get(0))
        .transpose()?;
    }
    if max_per_hour > 0 {
        history.alerts_last_hour =
            sqlx::query("SELECT COUNT(*) FROM incidents WHERE token_id = $1 AND alerted = 1 AND created_us > $2")
                .bind(token.id.as_str())
                .bind(h.time_us - crate::noise::HOUR_US)
                .fetch_one(&mut **tx)
                .await?
                .try_get(0)?;
    }
    let why = crate::noise::throttled(cooldown, max_per_hour, history, h.time_us);
    let alerted = why.is_none();
    if let Some(why) = why {
        data["throttled"] = why.into();
    }
    let stamp = stamping.value(tx).await?;
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
    .bind(group.as_str())
    .bind(incident_search_text(&token.memo, &h.src_ip, &token.id, &token.kind))
    .bind(h.src_port as i64)
    .bind(h.dst_ip.as_str())
    .bind(h.dst_port as i64)
    .bind(stamp)
    .fetch_one(&mut **tx)
    .await?
    .try_get(0)?;
    stamping.touched(id);
    Ok((if alerted { AlertStatus::Alerted } else { AlertStatus::Throttled }, id))
}

pub(super) async fn record_hits(s: &SqlStore, hits: &[NewHit], rules: &HitRules) -> StoreResult<Vec<HitOutcome>> {
    let mut tx = s.begin().await?;
    let mut out = Vec::with_capacity(hits.len());
    // Incidents created or joined by this batch get a new `updated_id`.
    let mut stamping = Stamping::for_engine(s.engine);
    // The API-configured outputs, read once per batch and only if some hit alerts.
    let mut managed: Option<Vec<AlertOutput>> = None;
    for h in hits {
        // The token is read inside the write transaction, so a token disabled or deleted
        // a moment ago is seen as such. (No hit count here: it is not needed to answer.)
        // (On PostgreSQL the row is share-locked, so a delete waits for this batch and
        // never leaves an incident without its token.)
        let row =
            sqlx::query(&format!("SELECT {TOKEN_COLS_NO_COUNT} FROM tokens t WHERE t.id = $1{}", s.row_lock(false)))
                .bind(h.token_id.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        let token = match row.as_ref().map(token_from_row).transpose()? {
            Some(t) if t.enabled => t,
            _ => {
                out.push(HitOutcome::Unknown);
                continue;
            }
        };
        let mut data = h.data.clone();
        let (status, incident_id, dedupe_key) = match (rules.judge)(&token, h) {
            Judgement::Drop => {
                out.push(HitOutcome::Dropped { token });
                continue;
            }
            Judgement::Ignore { reason } => {
                data["ignored"] = reason.into();
                (AlertStatus::Ignored, None, None)
            }
            Judgement::Alert { extra, dedupe_key } => {
                if let serde_json::Value::Object(m) = &mut data {
                    m.extend(extra);
                }
                let seen = match &dedupe_key {
                    Some(k) => sqlx::query("SELECT id FROM hits WHERE token_id = $1 AND dedupe_key = $2 LIMIT 1")
                        .bind(token.id.as_str())
                        .bind(k.as_str())
                        .fetch_optional(&mut *tx)
                        .await?
                        .is_some(),
                    None => false,
                };
                if seen {
                    data["ignored"] = "repeat of a trigger already alerted".into();
                    (AlertStatus::Ignored, None, dedupe_key)
                } else {
                    let (status, id) =
                        place_in_incident(&mut tx, &mut stamping, &rules.noise, &token, h, &mut data).await?;
                    (status, Some(id), dedupe_key)
                }
            }
        };
        let hit_id: i64 = sqlx::query(
            "INSERT INTO hits (incident_id, token_id, time_us, channel, src_ip, src_port, data, dedupe_key, alert_status, \
             dst_ip, dst_port) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
        )
        .bind(incident_id.unwrap_or(0))
        .bind(h.token_id.as_str())
        .bind(h.time_us)
        .bind(h.channel.as_str())
        .bind(h.src_ip.as_str())
        .bind(h.src_port as i64)
        .bind(data.to_string())
        .bind(dedupe_key.as_deref())
        .bind(status.as_str())
        .bind(h.dst_ip.as_str())
        .bind(h.dst_port as i64)
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
        if let (AlertStatus::Alerted, Some(incident_id)) = (status, incident_id) {
            // The alerts are in the outbox in the same transaction as their hit: nothing
            // acknowledged can lose its alert.
            if managed.is_none() {
                managed = Some(fetch_alert_outputs(&mut tx).await?);
            }
            let outputs = managed.as_deref().unwrap_or_default();
            for (i, a) in (rules.alerter)(&token, h, outputs).into_iter().enumerate() {
                let key = format!("{}hit-{hit_id}-{i}", rules.key_prefix);
                insert_alert(&mut tx, incident_id, hit_id, &token.id, &key, &a, h.time_us).await?;
            }
        }
        out.push(HitOutcome::Recorded { hit_id, incident_id, status, token });
    }
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

pub(super) async fn attach_hit_data(
    s: &SqlStore,
    hit_id: i64,
    token_id: &str,
    nonce: &str,
    key: &str,
    value: serde_json::Value,
) -> StoreResult<bool> {
    let mut tx = s.begin().await?;
    let row = sqlx::query("SELECT data FROM hits WHERE id = $1 AND token_id = $2")
        .bind(hit_id)
        .bind(token_id)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(row) = row else { return Ok(false) };
    let text: String = row.try_get(0)?;
    let mut data: serde_json::Value = serde_json::from_str(&text).context("hit data is not JSON")?;
    let expected = data.get("_report_nonce").and_then(|v| v.as_str()).unwrap_or("");
    if expected.is_empty() || !crate::auth::ct_eq(expected, nonce) || data.get(key).is_some() {
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

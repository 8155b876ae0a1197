//! Incidents: listing, counting and changing them, and the `updated_id` change sequence they move in.

use anyhow::Context;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::audit::insert_audit;
use super::hits::{hit_from_row, HIT_COLS};
use super::*;
use crate::model::*;
use crate::store::args::{Arg, Args};

pub(super) const INCIDENT_COLS: &str = "id, token_id, flock_id, kind, memo, channel, src_ip, created_us, updated_us, \
     acknowledged, alerted, updated_id, notified, src_port, dst_ip, dst_port";

/// The counter behind `incidents.updated_id`.
pub(super) const INCIDENT_UPDATES: &str = "incident_updates";

pub(super) fn incident_from_row(r: &AnyRow) -> StoreResult<Incident> {
    let channel: String = r.try_get(5)?;
    Ok(Incident {
        id: r.try_get(0)?,
        token_id: r.try_get(1)?,
        flock_id: r.try_get(2)?,
        kind: r.try_get(3)?,
        memo: r.try_get(4)?,
        channel: Channel::parse(&channel).context("unknown channel in incidents")?,
        src_ip: r.try_get(6)?,
        created_us: r.try_get(7)?,
        updated_us: r.try_get(8)?,
        acknowledged: r.try_get::<i64, _>(9)? != 0,
        alerted: r.try_get::<i64, _>(10)? != 0,
        updated_id: r.try_get(11)?,
        hash_id: incident_hash(r.try_get(0)?),
        notified: r.try_get::<i64, _>(12)? != 0,
        src_port: port(r, 13)?,
        dst_ip: r.try_get(14)?,
        dst_port: port(r, 15)?,
        events: Vec::new(),
        events_count: 0,
    })
}

/// The text an incident is found by with `filter_str`: memo, source, token id and kind, folded.
pub(super) fn incident_search_text(memo: &str, src_ip: &str, token_id: &str, kind: &str) -> String {
    fold(&format!("{memo}\n{src_ip}\n{token_id}\n{kind}"))
}

/// WHERE clause (without the keyword) for an incident filter.
pub(super) fn incident_where(f: &IncidentFilter, args: &mut Args) -> String {
    let mut conds = vec!["1=1".to_string()];
    if let Some(id) = f.id {
        conds.push(format!("id = {}", args.push(Arg::I(id))));
    }
    if let Some(h) = &f.hash_id {
        match incident_by_hash(h) {
            Some(id) => conds.push(format!("id = {}", args.push(Arg::I(id)))),
            None => conds.push("1=0".into()),
        }
    }
    if let Some(kinds) = &f.kinds {
        if kinds.is_empty() {
            conds.push("1=0".into());
        } else {
            conds.push(format!("kind IN ({})", args.list(kinds.iter().map(|k| Arg::S(k.clone())))));
        }
    }
    if let Some(t) = &f.text {
        let text = format!("search_text LIKE {} ESCAPE '\\'", args.push(Arg::S(contains_pattern(&fold(t)))));
        if f.text_kinds.is_empty() {
            conds.push(text);
        } else {
            let kinds = args.list(f.text_kinds.iter().map(|k| Arg::S(k.clone())));
            conds.push(format!("({text} OR kind IN ({kinds}))"));
        }
    }
    if let Some(u) = f.updated_after {
        conds.push(format!("updated_id > {}", args.push(Arg::I(u))));
    }
    if let Some(t) = &f.token_id {
        conds.push(format!("token_id = {}", args.push(Arg::S(t.clone()))));
    }
    if let Some(ip) = &f.src_ip {
        conds.push(format!("src_ip = {}", args.push(Arg::S(ip.clone()))));
    }
    if let Some(fl) = &f.flock_id {
        conds.push(format!("flock_id = {}", args.push(Arg::S(fl.clone()))));
    }
    if let Some(a) = f.acknowledged {
        conds.push(format!("acknowledged = {}", args.push(Arg::I(b(a)))));
    }
    if let Some(t) = f.created_before_us {
        conds.push(format!("created_us < {}", args.push(Arg::I(t))));
    }
    if let Some(t) = f.created_after_us {
        conds.push(format!("created_us > {}", args.push(Arg::I(t))));
    }
    conds.join(" AND ")
}

/// How a hit batch gives the incidents it creates or joins their new `updated_id`: one value
/// for the whole batch, in either case.
pub(super) enum Stamping {
    /// SQLite runs one writer at a time, so the value is taken at the first touch and written
    /// with the change itself (no second pass over the rows and their index).
    Early(Option<i64>),
    /// PostgreSQL: taken last, just before the commit (see [`stamp_updates`]), so the counter
    /// row is locked only for the commit and nodes do not queue on it for a whole batch.
    Late(Vec<i64>),
}

impl Stamping {
    pub(super) fn for_engine(engine: Engine) -> Stamping {
        match engine {
            Engine::Sqlite => Stamping::Early(None),
            Engine::Postgres => Stamping::Late(Vec::new()),
        }
    }

    /// The value to write with a change now (None: stamped at the end).
    pub(super) async fn value(&mut self, tx: &mut WriteTx) -> StoreResult<Option<i64>> {
        match self {
            Stamping::Early(Some(v)) => Ok(Some(*v)),
            Stamping::Early(taken) => {
                let v = next_update_id(tx).await?;
                *taken = Some(v);
                Ok(Some(v))
            }
            Stamping::Late(_) => Ok(None),
        }
    }

    pub(super) fn touched(&mut self, id: i64) {
        if let Stamping::Late(ids) = self {
            ids.push(id);
        }
    }

    /// Stamps what is still to stamp; call last before the commit.
    pub(super) async fn finish(self, tx: &mut WriteTx) -> StoreResult<()> {
        if let Stamping::Late(mut ids) = self {
            ids.sort_unstable();
            ids.dedup();
            stamp_updates(tx, &ids).await?;
        }
        Ok(())
    }
}

/// Gives the incidents a transaction created or changed their new place in the change
/// sequence: one value for all of them, taken last, just before the commit. The counter row
/// stays locked until then, so transactions take their values in the order they commit and a
/// poller that has seen `updated_id` N can never later find a change stamped N or lower.
pub(super) async fn stamp_updates(tx: &mut WriteTx, ids: &[i64]) -> StoreResult<Option<i64>> {
    if ids.is_empty() {
        return Ok(None);
    }
    let stamp = next_update_id(tx).await?;
    update_incidents(tx, ids, |args| format!("updated_id = {}", args.push(Arg::I(stamp)))).await?;
    Ok(Some(stamp))
}

/// `UPDATE incidents SET <set> WHERE id IN (<ids>)`, in chunks of ids; `set` binds its own
/// values into the chunk's arguments.
pub(super) async fn update_incidents(
    tx: &mut WriteTx,
    ids: &[i64],
    set: impl Fn(&mut Args) -> String,
) -> StoreResult<()> {
    for chunk in ids.chunks(500) {
        let mut args = Args::default();
        let set = set(&mut args);
        let sql = format!("UPDATE incidents SET {set} WHERE id IN ({})", args.list(chunk.iter().map(|id| Arg::I(*id))));
        args.bind(sqlx::query(&sql)).execute(&mut **tx).await?;
    }
    Ok(())
}

pub(super) async fn next_update_id(tx: &mut WriteTx) -> StoreResult<i64> {
    Ok(sqlx::query("UPDATE counters SET value = value + 1 WHERE name = $1 RETURNING value")
        .bind(INCIDENT_UPDATES)
        .fetch_one(&mut **tx)
        .await?
        .try_get(0)?)
}

impl SqlStore {
    async fn fetch_incidents(&self, filter: &IncidentFilter) -> StoreResult<Vec<Incident>> {
        let mut args = Args::default();
        let mut cond = incident_where(filter, &mut args);
        let start =
            PageStart { key: filter.start.key.map(|(a, b)| (Arg::I(a), Arg::I(b))), backwards: filter.start.backwards };
        let (page, order) = match filter.order {
            IncidentOrder::Newest => keyset(("created_us", "id"), true, &start, &mut args),
            IncidentOrder::Updated => keyset(("updated_id", "id"), false, &start, &mut args),
        };
        if let Some(p) = page {
            cond = format!("{cond} AND {p}");
        }
        let mut sql = format!("SELECT {INCIDENT_COLS} FROM incidents WHERE {cond} ORDER BY {order}");
        if let Some(limit) = filter.limit {
            sql.push_str(&format!(" LIMIT {}", args.push(Arg::I(limit))));
        }
        let rows = args.bind(sqlx::query(&sql)).fetch_all(&self.pool).await?;
        let mut incidents = rows.iter().map(incident_from_row).collect::<StoreResult<Vec<_>>>()?;
        if start.backwards {
            incidents.reverse();
        }
        if incidents.is_empty() {
            return Ok(incidents);
        }
        // Events of all these incidents in one query per chunk, at most `event_limit` each.
        let index: std::collections::HashMap<i64, usize> =
            incidents.iter().enumerate().map(|(i, inc)| (inc.id, i)).collect();
        let ids: Vec<i64> = incidents.iter().map(|i| i.id).collect();
        for chunk in ids.chunks(500) {
            let mut args = Args::default();
            let list = args.list(chunk.iter().map(|id| Arg::I(*id)));
            let source = match filter.event_limit {
                Some(n) => format!(
                    "(SELECT {HIT_COLS}, ROW_NUMBER() OVER (PARTITION BY incident_id ORDER BY time_us, id) AS rn \
                     FROM hits WHERE incident_id IN ({list})) ranked WHERE rn <= {}",
                    args.push(Arg::I(n))
                ),
                None => format!("hits WHERE incident_id IN ({list})"),
            };
            let sql = format!("SELECT {HIT_COLS} FROM {source} ORDER BY time_us, id");
            let rows = args.bind(sqlx::query(&sql)).fetch_all(&self.pool).await?;
            for row in &rows {
                let hit = hit_from_row(row)?;
                if let Some(&i) = index.get(&hit.incident_id) {
                    incidents[i].events.push(hit);
                }
            }
            if filter.event_limit.is_some() {
                let mut args = Args::default();
                let list = args.list(chunk.iter().map(|id| Arg::I(*id)));
                let sql = format!(
                    "SELECT incident_id, COUNT(*) FROM hits WHERE incident_id IN ({list}) GROUP BY incident_id"
                );
                for row in args.bind(sqlx::query(&sql)).fetch_all(&self.pool).await? {
                    if let Some(&i) = index.get(&row.try_get::<i64, _>(0)?) {
                        incidents[i].events_count = row.try_get(1)?;
                    }
                }
            }
        }
        if filter.event_limit.is_none() {
            for i in &mut incidents {
                i.events_count = i.events.len() as i64;
            }
        }
        Ok(incidents)
    }
}

pub(super) async fn list_incidents(s: &SqlStore, filter: &IncidentFilter) -> StoreResult<Vec<Incident>> {
    s.fetch_incidents(filter).await
}

pub(super) async fn count_incidents(s: &SqlStore, filter: &IncidentFilter) -> StoreResult<(i64, Option<i64>)> {
    let mut args = Args::default();
    let sql = format!("SELECT COUNT(*), MAX(updated_id) FROM incidents WHERE {}", incident_where(filter, &mut args));
    let row = args.bind(sqlx::query(&sql)).fetch_one(&s.pool).await?;
    Ok((row.try_get(0)?, row.try_get(1)?))
}

pub(super) async fn incident_sources(s: &SqlStore, filter: &IncidentFilter) -> StoreResult<Vec<(String, i64)>> {
    let mut args = Args::default();
    let sql = format!(
        "SELECT src_ip, COUNT(*) FROM incidents WHERE {} GROUP BY src_ip ORDER BY COUNT(*) DESC, src_ip",
        incident_where(filter, &mut args)
    );
    let rows = args.bind(sqlx::query(&sql)).fetch_all(&s.pool).await?;
    rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
}

pub(super) async fn set_acknowledged(
    s: &SqlStore,
    filter: &IncidentFilter,
    acknowledged: bool,
    audit: &AuditEntry,
) -> StoreResult<Vec<i64>> {
    let mut tx = s.begin().await?;
    let mut args = Args::default();
    let cond = incident_where(filter, &mut args);
    // Only incidents whose state changes move in the change sequence; nothing is stamped
    // (or audited) when nothing matches.
    let sql = format!("SELECT id, acknowledged FROM incidents WHERE {cond}{}", s.row_lock(true));
    let rows = args.bind(sqlx::query(&sql)).fetch_all(&mut *tx).await?;
    let mut ids = Vec::with_capacity(rows.len());
    let mut changed = Vec::new();
    for r in &rows {
        let id: i64 = r.try_get(0)?;
        ids.push(id);
        if r.try_get::<i64, _>(1)? != b(acknowledged) {
            changed.push(id);
        }
    }
    if ids.is_empty() {
        return Ok(ids);
    }
    let now = now_us();
    update_incidents(&mut tx, &changed, |args| {
        format!("acknowledged = {}, updated_us = {}", args.push(Arg::I(b(acknowledged))), args.push(Arg::I(now)))
    })
    .await?;
    insert_audit(&mut tx, audit).await?;
    stamp_updates(&mut tx, &changed).await?;
    tx.commit().await?;
    ids.sort_unstable();
    Ok(ids)
}

pub(super) async fn delete_incidents(
    s: &SqlStore,
    filter: &IncidentFilter,
    audit: &AuditEntry,
) -> StoreResult<Vec<i64>> {
    let mut tx = s.begin().await?;
    let mut args = Args::default();
    let cond = incident_where(filter, &mut args);
    let sql = format!("DELETE FROM hits WHERE incident_id IN (SELECT id FROM incidents WHERE {cond})");
    args.bind(sqlx::query(&sql)).execute(&mut *tx).await?;
    let sql = format!("DELETE FROM incidents WHERE {cond} RETURNING id");
    let rows = args.bind(sqlx::query(&sql)).fetch_all(&mut *tx).await?;
    let mut ids = rows.iter().map(|r| r.try_get::<i64, _>(0)).collect::<Result<Vec<_>, _>>()?;
    ids.sort_unstable();
    audited(tx, audit, ids).await
}

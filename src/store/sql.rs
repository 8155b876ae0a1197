//! [`Store`] over sqlx's `Any` driver: the same SQL text for SQLite and PostgreSQL.
//!
//! SQLite runs in WAL mode with `synchronous=FULL`, so a committed transaction survives a
//! process kill or power loss; write transactions begin `IMMEDIATE` so two writers queue on the
//! busy timeout instead of failing on a lock upgrade.

use anyhow::Context;
use async_trait::async_trait;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Executor, Row, Transaction};

use super::args::{Arg, Args};
use super::{fql_sql, migrations, FlockDeletion, HitRules, Store, TokenDeletion};
use crate::model::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Engine {
    Sqlite,
    Postgres,
}

pub struct SqlStore {
    pool: AnyPool,
    engine: Engine,
    /// SQLite allows one writer at a time. Writers of this process queue here, in order and
    /// without sleeping, instead of in SQLite's busy handler, which backs off with sleeps of
    /// up to 100 ms: the hit writer never waits behind the outbox or the API for longer than
    /// their transaction takes. (Other processes still meet the busy timeout.)
    write_gate: Option<std::sync::Arc<tokio::sync::Mutex<()>>>,
}

/// A write transaction, holding the SQLite write gate until it commits or is dropped.
pub(super) struct WriteTx {
    tx: Transaction<'static, Any>,
    _gate: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl WriteTx {
    async fn commit(self) -> anyhow::Result<()> {
        Ok(self.tx.commit().await?)
    }
}

impl std::ops::Deref for WriteTx {
    type Target = sqlx::AnyConnection;
    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

const TOKEN_COLS: &str = "t.id, t.kind, t.memo, t.flock_id, t.enabled, t.created_us, t.updated_id, \
     t.params, t.created_by, (SELECT COUNT(*) FROM hits h WHERE h.token_id = t.id AND h.incident_id > 0), \
     t.alert_webhook_url, t.alert_email, t.alert_cooldown_secs, t.alert_max_per_hour, t.ignore_sources, \
     (SELECT COUNT(*) FROM incidents i WHERE i.token_id = t.id AND i.acknowledged = 0)";
/// The same columns with constants in place of the counts, for the hot path.
const TOKEN_COLS_NO_COUNT: &str = "t.id, t.kind, t.memo, t.flock_id, t.enabled, t.created_us, t.updated_id, \
     t.params, t.created_by, 0, t.alert_webhook_url, t.alert_email, t.alert_cooldown_secs, t.alert_max_per_hour, \
     t.ignore_sources, 0";
const INCIDENT_COLS: &str = "id, token_id, flock_id, kind, memo, channel, src_ip, created_us, updated_us, \
     acknowledged, alerted, updated_id, notified, src_port, dst_ip, dst_port";
const HIT_COLS: &str =
    "id, incident_id, token_id, time_us, channel, src_ip, src_port, data, alert_status, dst_ip, dst_port";
const KEY_COLS: &str = "key_id, secret_hash, role, flock_id, active, expire_us, description, \
     created_us, last_used_us, created_by, annotations";
const FACTORY_COLS: &str = "id, value_hash, label, flock_id, created_us, expires_us, revoked_us, last_used_us, \
     cidrs, use_count, created_by, value_sealed";
/// The counter behind `incidents.updated_id`.
const INCIDENT_UPDATES: &str = "incident_updates";

/// Case-folded text for case-insensitive search. Folding happens here, in Rust, because the
/// engines disagree: SQLite's LOWER() folds ASCII only, PostgreSQL's all of Unicode.
fn fold(s: &str) -> String {
    s.to_lowercase()
}

fn b(v: bool) -> i64 {
    v as i64
}

fn token_from_row(r: &AnyRow) -> anyhow::Result<Token> {
    let params: String = r.try_get(7)?;
    Ok(Token {
        id: r.try_get(0)?,
        kind: r.try_get(1)?,
        memo: r.try_get(2)?,
        flock_id: r.try_get(3)?,
        enabled: r.try_get::<i64, _>(4)? != 0,
        created_us: r.try_get(5)?,
        updated_id: r.try_get(6)?,
        params: serde_json::from_str(&params).context("token params are not JSON")?,
        created_by: r.try_get(8)?,
        triggered_count: r.try_get(9)?,
        alert_webhook_url: r.try_get(10)?,
        alert_email: r.try_get(11)?,
        alert_cooldown_secs: r.try_get(12)?,
        alert_max_per_hour: r.try_get(13)?,
        ignore_sources: serde_json::from_str(&r.try_get::<String, _>(14)?)
            .context("token ignore_sources are not a JSON list")?,
        unacked_count: r.try_get(15)?,
    })
}

/// A port as stored (BIGINT) back to a port.
fn port(r: &AnyRow, i: usize) -> anyhow::Result<u16> {
    Ok(u16::try_from(r.try_get::<i64, _>(i)?).unwrap_or(0))
}

/// The text a token is found by with word-prefix search: its memo's words and its id, each
/// preceded by a space (so `LIKE '% word%'` matches at word starts only).
fn search_words(memo: &str, id: &str) -> String {
    let mut out = String::from(" ");
    for w in crate::model::search_words(memo).iter().map(String::as_str).chain([id]) {
        out.push_str(w);
        out.push(' ');
    }
    out
}

/// The text an incident is found by with `filter_str`: memo, source, token id and kind, folded.
fn incident_search_text(memo: &str, src_ip: &str, token_id: &str, kind: &str) -> String {
    fold(&format!("{memo}\n{src_ip}\n{token_id}\n{kind}"))
}

/// `text` for a LIKE pattern, matching literally (`%` and `_` escaped with `\`).
fn like_escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

/// A LIKE pattern matching `text` anywhere.
fn contains_pattern(text: &str) -> String {
    format!("%{}%", like_escape(text))
}

/// Keyset paging over a listing ordered by two columns. `descending` is the listing's own
/// direction; going backwards, rows come in the opposite order (the caller reverses them).
/// Returns the condition (or None for the first page) and the ORDER BY text.
fn keyset(
    cols: (&str, &str),
    descending: bool,
    start: &PageStart<(Arg, Arg)>,
    args: &mut Args,
) -> (Option<String>, String) {
    let reverse = descending != start.backwards;
    let (dir, cmp) = if reverse { ("DESC", "<") } else { ("ASC", ">") };
    let order = format!("{} {dir}, {} {dir}", cols.0, cols.1);
    let cond = start.key.as_ref().map(|(a, b)| {
        let (a, b) = (args.push(a.clone()), args.push(b.clone()));
        format!("({c0} {cmp} {a} OR ({c0} = {a} AND {c1} {cmp} {b}))", c0 = cols.0, c1 = cols.1)
    });
    (cond, order)
}

fn incident_from_row(r: &AnyRow) -> anyhow::Result<Incident> {
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

fn hit_from_row(r: &AnyRow) -> anyhow::Result<Hit> {
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

fn key_from_row(r: &AnyRow) -> anyhow::Result<ApiKey> {
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

fn factory_from_row(r: &AnyRow) -> anyhow::Result<FactoryToken> {
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

fn audit_from_row(r: &AnyRow) -> anyhow::Result<AuditEntry> {
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

/// WHERE clause (without the keyword) for an incident filter.
fn incident_where(f: &IncidentFilter, args: &mut Args) -> String {
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

/// WHERE conditions (over `tokens t`) for a token filter.
fn token_conds(f: &TokenFilter, args: &mut Args) -> Vec<String> {
    let mut conds = vec!["1=1".to_string()];
    if let Some(k) = &f.kind {
        conds.push(format!("t.kind = {}", args.push(Arg::S(k.clone()))));
    }
    if let Some(fl) = &f.flock_id {
        conds.push(format!("t.flock_id = {}", args.push(Arg::S(fl.clone()))));
    }
    if let Some(m) = &f.memo_contains {
        conds.push(format!("t.memo_folded LIKE {} ESCAPE '\\'", args.push(Arg::S(contains_pattern(&fold(m))))));
    }
    for w in &f.words {
        // A word start: the stored text puts a space before every word.
        let pat = format!("% {}%", like_escape(&fold(w)));
        conds.push(format!("t.search_words LIKE {} ESCAPE '\\'", args.push(Arg::S(pat))));
    }
    if let Some(e) = f.enabled {
        conds.push(format!("t.enabled = {}", args.push(Arg::I(b(e)))));
    }
    conds
}

/// Retention may delete a hit that raised no incident or whose incident is acknowledged.
const LOOSE_HIT: &str =
    "(h.incident_id = 0 OR NOT EXISTS (SELECT 1 FROM incidents i WHERE i.id = h.incident_id AND i.acknowledged = 0))";

impl SqlStore {
    /// Deletes the hits `h` that `pick` (with `args` as $1, $2, …) selects, oldest first, at
    /// most `chunk` per transaction; collects their incident ids. Returns how many went.
    async fn delete_hits_chunked(
        &self,
        pick: &str,
        args: &[Arg],
        chunk: i64,
        incidents: &mut Vec<i64>,
    ) -> anyhow::Result<u64> {
        let mut all = Args::from_vec(args.to_vec());
        let limit = all.push(Arg::I(chunk));
        let sql = format!(
            "DELETE FROM hits WHERE id IN (SELECT h.id FROM hits h WHERE {pick} ORDER BY h.id LIMIT {limit}) \
             RETURNING incident_id"
        );
        let mut n = 0;
        loop {
            let mut tx = self.begin().await?;
            let rows = all.bind(sqlx::query(&sql)).fetch_all(&mut *tx).await?;
            tx.commit().await?;
            for r in &rows {
                incidents.push(r.try_get(0)?);
            }
            n += rows.len() as u64;
            if (rows.len() as i64) < chunk {
                return Ok(n);
            }
        }
    }
}

async fn insert_key(tx: &mut WriteTx, k: &ApiKey, audit: &AuditEntry) -> anyhow::Result<()> {
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
    insert_audit(tx, audit).await
}

/// Puts an alert-worthy hit into an incident, by the noise rules ([`crate::noise`]): its
/// source's open incident when one is within the grouping window, else a new incident that
/// alerts unless the token's cooldown or rate limit holds it back (the reason goes into
/// `data`). Returns the hit's status and its incident.
async fn place_in_incident(
    tx: &mut WriteTx,
    stamping: &mut Stamping,
    rules: &crate::noise::NoiseRules,
    token: &Token,
    h: &NewHit,
    data: &mut serde_json::Value,
) -> anyhow::Result<(AlertStatus, i64)> {
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

/// How a hit batch gives the incidents it creates or joins their new `updated_id`: one value
/// for the whole batch, in either case.
enum Stamping {
    /// SQLite runs one writer at a time, so the value is taken at the first touch and written
    /// with the change itself (no second pass over the rows and their index).
    Early(Option<i64>),
    /// PostgreSQL: taken last, just before the commit (see [`stamp_updates`]), so the counter
    /// row is locked only for the commit and nodes do not queue on it for a whole batch.
    Late(Vec<i64>),
}

impl Stamping {
    fn for_engine(engine: Engine) -> Stamping {
        match engine {
            Engine::Sqlite => Stamping::Early(None),
            Engine::Postgres => Stamping::Late(Vec::new()),
        }
    }

    /// The value to write with a change now (None: stamped at the end).
    async fn value(&mut self, tx: &mut WriteTx) -> anyhow::Result<Option<i64>> {
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

    fn touched(&mut self, id: i64) {
        if let Stamping::Late(ids) = self {
            ids.push(id);
        }
    }

    /// Stamps what is still to stamp; call last before the commit.
    async fn finish(self, tx: &mut WriteTx) -> anyhow::Result<()> {
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
async fn stamp_updates(tx: &mut WriteTx, ids: &[i64]) -> anyhow::Result<Option<i64>> {
    if ids.is_empty() {
        return Ok(None);
    }
    let stamp = next_update_id(tx).await?;
    update_incidents(tx, ids, |args| format!("updated_id = {}", args.push(Arg::I(stamp)))).await?;
    Ok(Some(stamp))
}

/// `UPDATE incidents SET <set> WHERE id IN (<ids>)`, in chunks of ids; `set` binds its own
/// values into the chunk's arguments.
async fn update_incidents(tx: &mut WriteTx, ids: &[i64], set: impl Fn(&mut Args) -> String) -> anyhow::Result<()> {
    for chunk in ids.chunks(500) {
        let mut args = Args::default();
        let set = set(&mut args);
        let sql = format!("UPDATE incidents SET {set} WHERE id IN ({})", args.list(chunk.iter().map(|id| Arg::I(*id))));
        args.bind(sqlx::query(&sql)).execute(&mut **tx).await?;
    }
    Ok(())
}

async fn next_update_id(tx: &mut WriteTx) -> anyhow::Result<i64> {
    Ok(sqlx::query("UPDATE counters SET value = value + 1 WHERE name = $1 RETURNING value")
        .bind(INCIDENT_UPDATES)
        .fetch_one(&mut **tx)
        .await?
        .try_get(0)?)
}

async fn fetch_alert_outputs(conn: &mut sqlx::AnyConnection) -> anyhow::Result<Vec<AlertOutput>> {
    let rows =
        sqlx::query("SELECT id, flock_id, output, created_us, created_by FROM alert_outputs ORDER BY created_us, id")
            .fetch_all(&mut *conn)
            .await?;
    rows.iter()
        .map(|r| {
            let output: String = r.try_get(2)?;
            Ok(AlertOutput {
                id: r.try_get(0)?,
                flock_id: r.try_get(1)?,
                output: serde_json::from_str(&output).context("alert output is not JSON")?,
                created_us: r.try_get(3)?,
                created_by: r.try_get(4)?,
            })
        })
        .collect()
}

async fn insert_alert(
    tx: &mut WriteTx,
    incident_id: i64,
    hit_id: i64,
    token_id: &str,
    key: &str,
    a: &NewAlert,
    now: Micros,
) -> anyhow::Result<i64> {
    let mut payload = a.payload.clone();
    payload["idempotency_key"] = key.into();
    if incident_id > 0 {
        payload["incident_id"] = incident_id.into();
        payload["hit_id"] = hit_id.into();
    }
    Ok(sqlx::query(
        "INSERT INTO alerts (incident_id, hit_id, token_id, output, idempotency_key, payload, created_us, next_attempt_us, attempts) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7, 0) RETURNING id",
    )
    .bind(incident_id)
    .bind(hit_id)
    .bind(token_id)
    .bind(a.output.to_string())
    .bind(key)
    .bind(payload.to_string())
    .bind(now)
    .fetch_one(&mut **tx)
    .await?
    .try_get(0)?)
}

const ALERT_COLS: &str = "id, incident_id, hit_id, token_id, output, idempotency_key, payload, created_us, \
     next_attempt_us, attempts, last_error, delivered_us, gave_up_us";

fn alert_from_row(r: &AnyRow) -> anyhow::Result<Alert> {
    let output: String = r.try_get(4)?;
    let payload: String = r.try_get(6)?;
    Ok(Alert {
        id: r.try_get(0)?,
        incident_id: r.try_get(1)?,
        hit_id: r.try_get(2)?,
        token_id: r.try_get(3)?,
        output: serde_json::from_str(&output).context("alert output is not JSON")?,
        idempotency_key: r.try_get(5)?,
        payload: serde_json::from_str(&payload).context("alert payload is not JSON")?,
        created_us: r.try_get(7)?,
        next_attempt_us: r.try_get(8)?,
        attempts: r.try_get(9)?,
        last_error: r.try_get(10)?,
        delivered_us: r.try_get(11)?,
        gave_up_us: r.try_get(12)?,
    })
}

async fn insert_audit(tx: &mut WriteTx, a: &AuditEntry) -> anyhow::Result<()> {
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

/// What is wrong with a SQLite file's header, if anything SQLite itself would only notice when
/// it reads a missing page: a file cut short of the size its header vouches for (checked only
/// with no write-ahead log beside it, since after a crash in mid-checkpoint the log still holds
/// the pages and SQLite puts them back). See <https://www.sqlite.org/fileformat2.html> §1.3.
fn sqlite_header_problem(path: &std::path::Path) -> Option<String> {
    use std::io::Read;
    let len = std::fs::metadata(path).ok()?.len();
    let wal = path.with_extension(match path.extension() {
        Some(e) => format!("{}-wal", e.to_string_lossy()),
        None => "-wal".into(),
    });
    if len == 0 || std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
        return None;
    }
    let mut header = [0u8; 100];
    let mut f = std::fs::File::open(path).ok()?;
    if f.read_exact(&mut header).is_err() {
        return Some(format!("{len} bytes, shorter than a SQLite header"));
    }
    if &header[..16] != b"SQLite format 3\0" {
        return None; // SQLite says "file is not a database" itself
    }
    let page = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65_536,
        n => u64::from(n),
    };
    let pages = u64::from(u32::from_be_bytes([header[28], header[29], header[30], header[31]]));
    let vouched = header[24..28] == header[92..96]; // the size field is valid for this version
    (vouched && pages > 0 && len < pages * page)
        .then(|| format!("{len} bytes where its header says {} pages of {page} bytes: cut short?", pages))
}

/// Opens the SQLite file once, alone, before the pool does: a file that is no database, a
/// damaged one, or one another process holds locked is then reported at once, naming the file
/// and what to do, instead of as "pool timed out" after 30 s.
async fn probe_sqlite(url: &str, path: &std::path::Path) -> anyhow::Result<()> {
    use sqlx::Connection;
    let shown = path.display();
    let explain = |e: sqlx::Error| {
        let code = e.as_database_error().and_then(|d| d.code()).map(|c| c.to_string());
        let hint = match code.as_deref() {
            Some("26") | Some("11") => {
                "it is not a SQLite database or it is damaged: restore it from a backup, or move it (and its -wal \
                 and -shm files) away to start with an empty one"
            }
            Some("5") | Some("6") => {
                "another process holds it locked: is another trapline or a sqlite3 shell using it?"
            }
            Some("8") | Some("14") | Some("23") => "the service's user cannot read and write it or its directory",
            _ => "see the error",
        };
        anyhow::anyhow!("cannot open database {shown}: {hint} ({e})")
    };
    if let Some(problem) = sqlite_header_problem(path) {
        anyhow::bail!(
            "cannot open database {shown}: it is damaged ({problem}): restore it from a backup, or move it away to \
             start with an empty one"
        );
    }
    let mut conn = tokio::time::timeout(std::time::Duration::from_secs(10), sqlx::AnyConnection::connect(url))
        .await
        .map_err(|_| anyhow::anyhow!("cannot open database {shown}: no answer within 10 s"))?
        .map_err(explain)?;
    // Reading the schema reads the header and the first page; BEGIN IMMEDIATE waits (up to the
    // busy timeout) for a lock that another process holds, then says so.
    let checks = async {
        conn.execute("PRAGMA busy_timeout=5000").await?;
        conn.execute("SELECT COUNT(*) FROM sqlite_schema").await?;
        conn.execute("BEGIN IMMEDIATE").await?;
        conn.execute("ROLLBACK").await?;
        Ok::<_, sqlx::Error>(())
    };
    checks.await.map_err(explain)?;
    conn.close().await.map_err(explain)?;
    Ok(())
}

impl SqlStore {
    /// Connects and migrates. `database` is a `postgres://` URL or a SQLite file path
    /// (optionally prefixed `sqlite:`); the SQLite file and its directory are created if missing.
    pub async fn open(database: &str) -> anyhow::Result<SqlStore> {
        sqlx::any::install_default_drivers();
        let (engine, url) = if database.starts_with("postgres://") || database.starts_with("postgresql://") {
            (Engine::Postgres, database.to_string())
        } else {
            let path =
                database.strip_prefix("sqlite://").or_else(|| database.strip_prefix("sqlite:")).unwrap_or(database);
            let path = std::path::absolute(path).with_context(|| format!("bad database path {path:?}"))?;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create database directory {}", dir.display()))?;
            }
            // The database holds where every trap is and what each hit saw: readable by the
            // service's user only, whatever the umask. (SQLite gives its -wal and -shm files
            // the database file's permissions.)
            if !path.exists() {
                use std::os::unix::fs::OpenOptionsExt;
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .with_context(|| format!("cannot create database file {}", path.display()))?;
            }
            let url = format!("sqlite://{}?mode=rwc", path.display());
            probe_sqlite(&url, &path).await?;
            (Engine::Sqlite, url)
        };
        let pool = AnyPoolOptions::new()
            .max_connections(if engine == Engine::Sqlite { 8 } else { 16 })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if engine == Engine::Sqlite {
                        conn.execute("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=10000;")
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .with_context(|| format!("cannot open database {}", redact(database)))?;
        let write_gate = (engine == Engine::Sqlite).then(|| std::sync::Arc::new(tokio::sync::Mutex::new(())));
        let store = SqlStore { pool, engine, write_gate };
        store.migrate().await?;
        store.backfill().await?;
        Ok(store)
    }

    async fn begin(&self) -> anyhow::Result<WriteTx> {
        let gate = match &self.write_gate {
            Some(g) => Some(g.clone().lock_owned().await),
            None => None,
        };
        let tx = match self.engine {
            Engine::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Engine::Postgres => self.pool.begin().await?,
        };
        Ok(WriteTx { tx, _gate: gate })
    }

    async fn migrate(&self) -> anyhow::Result<()> {
        let steps = match self.engine {
            Engine::Sqlite => migrations::SQLITE,
            Engine::Postgres => migrations::POSTGRES,
        };
        {
            let mut tx = self.begin().await?;
            self.lock_migrations(&mut tx).await?;
            (&mut *tx)
                .execute("CREATE TABLE IF NOT EXISTS trapline_schema (version BIGINT PRIMARY KEY, applied_us BIGINT NOT NULL)")
                .await
                .context("cannot create the schema table")?;
            tx.commit().await?;
        }
        for (i, step) in steps.iter().enumerate() {
            let version = i as i64 + 1;
            let mut tx = self.begin().await?;
            self.lock_migrations(&mut tx).await?;
            let done: i64 = sqlx::query("SELECT COUNT(*) FROM trapline_schema WHERE version = $1")
                .bind(version)
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?;
            if done == 0 {
                (&mut *tx).execute(*step).await.with_context(|| format!("migration {version} failed"))?;
                sqlx::query("INSERT INTO trapline_schema (version, applied_us) VALUES ($1, $2)")
                    .bind(version)
                    .bind(now_us())
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        }
        Ok(())
    }

    /// Fills the search texts of rows written before migration 9 added them (they are
    /// folded in Rust, so SQL cannot compute them). Idempotent: rows done have non-empty texts.
    async fn backfill(&self) -> anyhow::Result<()> {
        self.fill_empty("tokens", "search_words", "id, memo", |r| {
            let (id, memo): (String, String) = (r.try_get(0)?, r.try_get(1)?);
            Ok((search_words(&memo, &id), Arg::S(id)))
        })
        .await?;
        self.fill_empty("incidents", "search_text", "id, memo, src_ip, token_id, kind", |r| {
            let text = incident_search_text(
                &r.try_get::<String, _>(1)?,
                &r.try_get::<String, _>(2)?,
                &r.try_get::<String, _>(3)?,
                &r.try_get::<String, _>(4)?,
            );
            Ok((text, Arg::I(r.try_get(0)?)))
        })
        .await
    }

    /// Sets `column` of the rows of `table` where it is empty, 500 rows a transaction: `value`
    /// reads a row's `cols` (its key first) and gives the text and the key.
    async fn fill_empty(
        &self,
        table: &str,
        column: &str,
        cols: &str,
        value: impl Fn(&AnyRow) -> anyhow::Result<(String, Arg)>,
    ) -> anyhow::Result<()> {
        loop {
            let rows = sqlx::query(&format!("SELECT {cols} FROM {table} WHERE {column} = '' LIMIT 500"))
                .fetch_all(&self.pool)
                .await?;
            if rows.is_empty() {
                return Ok(());
            }
            let mut tx = self.begin().await?;
            for r in &rows {
                let (text, key) = value(r)?;
                let mut args = Args::default();
                let (t, k) = (args.push(Arg::S(text)), args.push(key));
                let sql = format!("UPDATE {table} SET {column} = {t} WHERE id = {k}");
                args.bind(sqlx::query(&sql)).execute(&mut *tx).await?;
            }
            tx.commit().await?;
        }
    }

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
    ) -> anyhow::Result<(Vec<AnyRow>, i64)> {
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

    /// Row-lock suffix for a SELECT inside a write transaction: PostgreSQL needs it to keep
    /// the row as read until commit; SQLite's write transactions are serial already.
    fn row_lock(&self, exclusive: bool) -> &'static str {
        match (self.engine, exclusive) {
            (Engine::Sqlite, _) => "",
            (Engine::Postgres, false) => " FOR SHARE",
            (Engine::Postgres, true) => " FOR UPDATE",
        }
    }

    /// Several nodes may start at once against one PostgreSQL: each migration transaction
    /// holds this lock, so one applies a step and the others wait, then see it done. (SQLite's
    /// `BEGIN IMMEDIATE` already serialises writers.)
    async fn lock_migrations(&self, tx: &mut WriteTx) -> anyhow::Result<()> {
        if self.engine == Engine::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock(7427776975)").execute(&mut **tx).await?;
        }
        Ok(())
    }

    async fn fetch_incidents(&self, filter: &IncidentFilter) -> anyhow::Result<Vec<Incident>> {
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
        let mut incidents = rows.iter().map(incident_from_row).collect::<anyhow::Result<Vec<_>>>()?;
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

/// A database URL without its password, for error messages.
fn redact(database: &str) -> String {
    match (database.find("://"), database.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &database[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &database[..s + 3], &creds[..c], &database[at..]),
                None => database.to_string(),
            }
        }
        _ => database.to_string(),
    }
}

#[async_trait]
impl Store for SqlStore {
    fn backend(&self) -> &'static str {
        match self.engine {
            Engine::Sqlite => "sqlite",
            Engine::Postgres => "postgres",
        }
    }

    async fn count_api_keys(&self) -> anyhow::Result<i64> {
        Ok(sqlx::query("SELECT COUNT(*) FROM api_keys").fetch_one(&self.pool).await?.try_get(0)?)
    }

    async fn insert_api_key(&self, k: &ApiKey, audit: &AuditEntry) -> anyhow::Result<()> {
        let mut tx = self.begin().await?;
        insert_key(&mut tx, k, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn insert_first_api_key(&self, k: &ApiKey, audit: &AuditEntry) -> anyhow::Result<bool> {
        let mut tx = self.begin().await?;
        if self.engine == Engine::Postgres {
            // Readers may go on; a second would-be first key waits here, then sees this one.
            sqlx::query("LOCK TABLE api_keys IN SHARE ROW EXCLUSIVE MODE").execute(&mut *tx).await?;
        }
        let n: i64 = sqlx::query("SELECT COUNT(*) FROM api_keys").fetch_one(&mut *tx).await?.try_get(0)?;
        if n > 0 {
            return Ok(false);
        }
        insert_key(&mut tx, k, audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn api_key_by_hash(&self, secret_hash: &str) -> anyhow::Result<Option<ApiKey>> {
        let row = sqlx::query(&format!("SELECT {KEY_COLS} FROM api_keys WHERE secret_hash = $1"))
            .bind(secret_hash)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn touch_api_key(&self, key_id: &str, when: Micros) -> anyhow::Result<()> {
        sqlx::query("UPDATE api_keys SET last_used_us = $1 WHERE key_id = $2")
            .bind(when)
            .bind(key_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn list_api_keys(&self) -> anyhow::Result<Vec<ApiKey>> {
        let rows = sqlx::query(&format!("SELECT {KEY_COLS} FROM api_keys ORDER BY created_us, key_id"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(key_from_row).collect()
    }

    async fn get_api_key(&self, key_id: &str) -> anyhow::Result<Option<ApiKey>> {
        let row = sqlx::query(&format!("SELECT {KEY_COLS} FROM api_keys WHERE key_id = $1"))
            .bind(key_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn update_api_key(
        &self,
        key_id: &str,
        change: &KeyChange,
        audit: &AuditEntry,
    ) -> anyhow::Result<Option<ApiKey>> {
        let mut tx = self.begin().await?;
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
        let Some(row) = row else { return Ok(None) };
        insert_audit(&mut tx, audit).await?;
        let key = key_from_row(&row)?;
        tx.commit().await?;
        Ok(Some(key))
    }

    async fn delete_api_key(&self, key_id: &str, audit: &AuditEntry) -> anyhow::Result<bool> {
        let mut tx = self.begin().await?;
        let n =
            sqlx::query("DELETE FROM api_keys WHERE key_id = $1").bind(key_id).execute(&mut *tx).await?.rows_affected();
        if n == 0 {
            return Ok(false);
        }
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn insert_api_key_once(&self, k: &ApiKey, audit: &AuditEntry, mark: &str) -> anyhow::Result<bool> {
        let mut tx = self.begin().await?;
        let marked = sqlx::query("INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
            .bind(mark)
            .bind(k.key_id.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if marked == 0 {
            return Ok(false);
        }
        insert_key(&mut tx, k, audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn insert_factory(&self, f: &FactoryToken, audit: &AuditEntry) -> anyhow::Result<()> {
        let mut tx = self.begin().await?;
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
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn factory_by_hash(&self, value_hash: &str) -> anyhow::Result<Option<FactoryToken>> {
        let row = sqlx::query(&format!("SELECT {FACTORY_COLS} FROM factory_tokens WHERE value_hash = $1"))
            .bind(value_hash)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(factory_from_row).transpose()
    }

    async fn get_factory(&self, id: &str) -> anyhow::Result<Option<FactoryToken>> {
        let row = sqlx::query(&format!("SELECT {FACTORY_COLS} FROM factory_tokens WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(factory_from_row).transpose()
    }

    async fn list_factories(&self) -> anyhow::Result<Vec<FactoryToken>> {
        let rows = sqlx::query(&format!("SELECT {FACTORY_COLS} FROM factory_tokens ORDER BY created_us, id"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(factory_from_row).collect()
    }

    async fn update_factory(
        &self,
        id: &str,
        change: &FactoryChange,
        audit: &AuditEntry,
    ) -> anyhow::Result<Option<FactoryToken>> {
        let mut tx = self.begin().await?;
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
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(Some(f))
    }

    async fn delete_factory(&self, id: &str, audit: &AuditEntry) -> anyhow::Result<bool> {
        let mut tx = self.begin().await?;
        let n =
            sqlx::query("DELETE FROM factory_tokens WHERE id = $1").bind(id).execute(&mut *tx).await?.rows_affected();
        if n == 0 {
            return Ok(false);
        }
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn touch_factory(&self, id: &str, when: Micros) -> anyhow::Result<()> {
        sqlx::query("UPDATE factory_tokens SET last_used_us = $1, use_count = use_count + 1 WHERE id = $2")
            .bind(when)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn query_factories(&self, q: &crate::model::Query, now: Micros) -> anyhow::Result<(Vec<String>, i64)> {
        let (ids, total) = self
            .query_ids("factory_tokens", "1=1", fql_sql::FACTORY_FIELDS, "created_us DESC, id DESC", q, now)
            .await?;
        Ok((ids.into_iter().map(|r| r.try_get::<String, _>(0)).collect::<Result<_, _>>()?, total))
    }

    async fn query_factory_audit(&self, q: &crate::model::Query, now: Micros) -> anyhow::Result<(Vec<i64>, i64)> {
        let scope =
            "action IN ('factory_create', 'factory_update', 'factory_revoke', 'factory_restore', 'factory_delete')";
        let (rows, total) =
            self.query_ids("audit_log", scope, fql_sql::AUDIT_FIELDS, "time_us DESC, id DESC", q, now).await?;
        Ok((rows.into_iter().map(|r| r.try_get::<i64, _>(0)).collect::<Result<_, _>>()?, total))
    }

    async fn factory_audit_events(&self, ids: &[i64]) -> anyhow::Result<Vec<AuditEvent>> {
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
        let rows = args.bind(sqlx::query(&sql)).fetch_all(&self.pool).await?;
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

    async fn get_setting(&self, name: &str) -> anyhow::Result<Option<String>> {
        let row =
            sqlx::query("SELECT value FROM settings WHERE name = $1").bind(name).fetch_optional(&self.pool).await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    async fn set_setting(&self, name: &str, value: &str, audit: &AuditEntry) -> anyhow::Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )
        .bind(name)
        .bind(value)
        .execute(&mut *tx)
        .await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn due_alerts(&self, now: Micros, limit: i64) -> anyhow::Result<Vec<Alert>> {
        let rows = sqlx::query(&format!(
            "SELECT {ALERT_COLS} FROM alerts WHERE delivered_us IS NULL AND gave_up_us IS NULL \
             AND next_attempt_us <= $1 ORDER BY next_attempt_us, id LIMIT $2"
        ))
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(alert_from_row).collect()
    }

    async fn release_claims(&self, node: &str, now: Micros) -> anyhow::Result<u64> {
        let mut tx = self.begin().await?;
        let n = sqlx::query(
            "UPDATE alerts SET next_attempt_us = $1, claimed_by = NULL \
             WHERE claimed_by = $2 AND delivered_us IS NULL AND gave_up_us IS NULL",
        )
        .bind(now)
        .bind(node)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n)
    }

    async fn claim_due_alerts(
        &self,
        now: Micros,
        limit: i64,
        lease_until: Micros,
        node: &str,
    ) -> anyhow::Result<Vec<Alert>> {
        // The outer conditions are checked again on each row as it is updated, so a row another
        // node claimed between the subquery and the update (PostgreSQL re-reads it after the
        // row lock) is skipped rather than taken twice.
        const DUE: &str = "delivered_us IS NULL AND gave_up_us IS NULL AND next_attempt_us <= $2";
        let mut tx = self.begin().await?;
        let mut rows = sqlx::query(&format!(
            "UPDATE alerts SET next_attempt_us = $1, claimed_by = $4 WHERE id IN \
             (SELECT id FROM alerts WHERE {DUE} ORDER BY next_attempt_us, id LIMIT $3) AND {DUE} \
             RETURNING {ALERT_COLS}"
        ))
        .bind(lease_until)
        .bind(now)
        .bind(limit)
        .bind(node)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(alert_from_row)
        .collect::<anyhow::Result<Vec<Alert>>>()?;
        tx.commit().await?;
        rows.sort_by_key(|a| (a.created_us, a.id));
        Ok(rows)
    }

    async fn finish_alerts(&self, results: &[AlertResult]) -> anyhow::Result<()> {
        if results.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        // Incidents one of whose alerts went out are `notified` (kept on the incident, so
        // listings need not look through the outbox).
        let mut notified: Vec<i64> = Vec::new();
        for r in results {
            match &r.outcome {
                AlertOutcome::Delivered { when } => {
                    let row = sqlx::query(
                        "UPDATE alerts SET delivered_us = $1, attempts = $2, last_error = NULL, claimed_by = NULL \
                         WHERE id = $3 RETURNING incident_id",
                    )
                    .bind(*when)
                    .bind(r.attempts)
                    .bind(r.id)
                    .fetch_optional(&mut *tx)
                    .await?;
                    if let Some(incident) = row.map(|r| r.try_get::<i64, _>(0)).transpose()?.filter(|i| *i > 0) {
                        notified.push(incident);
                    }
                }
                AlertOutcome::Failed { error, next_attempt_us, gave_up_us } => {
                    sqlx::query(
                        "UPDATE alerts SET attempts = $1, last_error = $2, next_attempt_us = $3, gave_up_us = $4, \
                         claimed_by = NULL WHERE id = $5",
                    )
                    .bind(r.attempts)
                    .bind(error.as_str())
                    .bind(*next_attempt_us)
                    .bind(*gave_up_us)
                    .bind(r.id)
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
        notified.sort_unstable();
        notified.dedup();
        update_incidents(&mut tx, &notified, |_| "notified = 1".into()).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_alerts(&self, undelivered_only: bool, limit: i64) -> anyhow::Result<Vec<Alert>> {
        let cond = if undelivered_only { "WHERE delivered_us IS NULL" } else { "" };
        let rows = sqlx::query(&format!("SELECT {ALERT_COLS} FROM alerts {cond} ORDER BY id DESC LIMIT $1"))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(alert_from_row).collect()
    }

    async fn insert_alerts(&self, alerts: &[NewAlert], key_prefix: &str, audit: &AuditEntry) -> anyhow::Result<()> {
        let mut tx = self.begin().await?;
        let now = now_us();
        for (i, a) in alerts.iter().enumerate() {
            insert_alert(&mut tx, 0, 0, "", &format!("{key_prefix}-{i}"), a, now).await?;
        }
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_flocks(&self) -> anyhow::Result<Vec<Flock>> {
        let rows = sqlx::query("SELECT id, name, created_us FROM flocks ORDER BY created_us, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(Flock { id: r.try_get(0)?, name: r.try_get(1)?, created_us: r.try_get(2)? })).collect()
    }

    async fn get_flock(&self, id: &str) -> anyhow::Result<Option<Flock>> {
        let row = sqlx::query("SELECT id, name, created_us FROM flocks WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok(Flock { id: r.try_get(0)?, name: r.try_get(1)?, created_us: r.try_get(2)? })).transpose()
    }

    async fn insert_flock(&self, f: &Flock, audit: &AuditEntry) -> anyhow::Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("INSERT INTO flocks (id, name, created_us) VALUES ($1, $2, $3)")
            .bind(f.id.as_str())
            .bind(f.name.as_str())
            .bind(f.created_us)
            .execute(&mut *tx)
            .await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn rename_flock(&self, id: &str, name: &str, audit: &AuditEntry) -> anyhow::Result<bool> {
        let mut tx = self.begin().await?;
        let n = sqlx::query("UPDATE flocks SET name = $1 WHERE id = $2")
            .bind(name)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 0 {
            return Ok(false);
        }
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn delete_flock(&self, id: &str, audit: &AuditEntry) -> anyhow::Result<FlockDeletion> {
        let mut tx = self.begin().await?;
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
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(FlockDeletion::Deleted)
    }

    async fn flock_summary(&self, id: &str) -> anyhow::Result<FlockSummary> {
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
        .fetch_one(&self.pool)
        .await?;
        let kinds = sqlx::query(
            "SELECT kind, COUNT(*) FROM tokens WHERE flock_id = $1 GROUP BY kind ORDER BY COUNT(*) DESC, kind",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<anyhow::Result<Vec<(String, i64)>>>()?;
        Ok(FlockSummary {
            token_count: row.try_get(0)?,
            enabled_token_count: row.try_get(1)?,
            triggered_token_count: row.try_get(2)?,
            incident_count: row.try_get(3)?,
            unacknowledged_incident_count: row.try_get(4)?,
            kinds,
        })
    }

    async fn flock_token_ids(&self, id: &str) -> anyhow::Result<Vec<String>> {
        let rows = sqlx::query("SELECT id FROM tokens WHERE flock_id = $1 ORDER BY created_us, id")
            .bind(id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    async fn insert_token(&self, t: &Token, files: &[TokenFile], audit: &AuditEntry) -> anyhow::Result<bool> {
        let mut tx = self.begin().await?;
        let flock = sqlx::query(&format!("SELECT id FROM flocks WHERE id = $1{}", self.row_lock(false)))
            .bind(t.flock_id.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        if flock.is_none() {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO tokens (id, kind, memo, memo_folded, flock_id, enabled, created_us, updated_id, params, created_by, \
             alert_webhook_url, alert_email, alert_cooldown_secs, alert_max_per_hour, ignore_sources, search_words) \
             VALUES ($1, $2, $3, $10, $4, $5, $6, $7, $8, $9, $11, $12, $13, $14, $15, $16)",
        )
        .bind(t.id.as_str())
        .bind(t.kind.as_str())
        .bind(t.memo.as_str())
        .bind(t.flock_id.as_str())
        .bind(b(t.enabled))
        .bind(t.created_us)
        .bind(t.updated_id)
        .bind(t.params.to_string())
        .bind(t.created_by.as_str())
        .bind(fold(&t.memo))
        .bind(t.alert_webhook_url.as_deref())
        .bind(t.alert_email.as_deref())
        .bind(t.alert_cooldown_secs)
        .bind(t.alert_max_per_hour)
        .bind(serde_json::to_string(&t.ignore_sources)?)
        .bind(search_words(&t.memo, &t.id))
        .execute(&mut *tx)
        .await?;
        for f in files {
            sqlx::query("INSERT INTO token_files (token_id, name, content_type, data) VALUES ($1, $2, $3, $4)")
                .bind(t.id.as_str())
                .bind(f.name.as_str())
                .bind(f.content_type.as_str())
                .bind(f.data.as_slice())
                .execute(&mut *tx)
                .await?;
        }
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn get_token_file(&self, token_id: &str, name: &str) -> anyhow::Result<Option<TokenFile>> {
        let row = sqlx::query("SELECT name, content_type, data FROM token_files WHERE token_id = $1 AND name = $2")
            .bind(token_id)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok(TokenFile { name: r.try_get(0)?, content_type: r.try_get(1)?, data: r.try_get(2)? })).transpose()
    }

    async fn get_token(&self, id: &str) -> anyhow::Result<Option<Token>> {
        let row = sqlx::query(&format!("SELECT {TOKEN_COLS} FROM tokens t WHERE t.id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(token_from_row).transpose()
    }

    async fn list_tokens(
        &self,
        f: &TokenFilter,
        start: &PageStart<TokenKey>,
        limit: i64,
    ) -> anyhow::Result<Vec<Token>> {
        let mut args = Args::default();
        let mut conds = token_conds(f, &mut args);
        let start = PageStart {
            key: start.key.as_ref().map(|(c, i)| (Arg::I(*c), Arg::S(i.clone()))),
            backwards: start.backwards,
        };
        let (page, order) = keyset(("t.created_us", "t.id"), true, &start, &mut args);
        conds.extend(page);
        let lim = args.push(Arg::I(limit));
        let sql =
            format!("SELECT {TOKEN_COLS} FROM tokens t WHERE {} ORDER BY {order} LIMIT {lim}", conds.join(" AND "));
        let rows = args.bind(sqlx::query(&sql)).fetch_all(&self.pool).await?;
        let mut tokens = rows.iter().map(token_from_row).collect::<anyhow::Result<Vec<_>>>()?;
        if start.backwards {
            tokens.reverse();
        }
        Ok(tokens)
    }

    async fn count_tokens(&self, f: &TokenFilter) -> anyhow::Result<i64> {
        let mut args = Args::default();
        let conds = token_conds(f, &mut args);
        let sql = format!("SELECT COUNT(*) FROM tokens t WHERE {}", conds.join(" AND "));
        Ok(args.bind(sqlx::query(&sql)).fetch_one(&self.pool).await?.try_get(0)?)
    }

    async fn update_token(&self, id: &str, change: &TokenChange, audit: &AuditEntry) -> anyhow::Result<Option<Token>> {
        let mut tx = self.begin().await?;
        let mut args = Args::default();
        let mut sets = vec!["updated_id = updated_id + 1".to_string()];
        if let Some(m) = &change.memo {
            sets.push(format!("memo = {}", args.push(Arg::S(m.clone()))));
            sets.push(format!("memo_folded = {}", args.push(Arg::S(fold(m)))));
            sets.push(format!("search_words = {}", args.push(Arg::S(search_words(m, id)))));
        }
        if let Some(e) = change.enabled {
            sets.push(format!("enabled = {}", args.push(Arg::I(b(e)))));
        }
        if let Some(p) = &change.params {
            sets.push(format!("params = {}", args.push(Arg::S(p.to_string()))));
        }
        match &change.alert_webhook_url {
            Some(Some(u)) => sets.push(format!("alert_webhook_url = {}", args.push(Arg::S(u.clone())))),
            Some(None) => sets.push("alert_webhook_url = NULL".to_string()),
            None => {}
        }
        match &change.alert_email {
            Some(Some(e)) => sets.push(format!("alert_email = {}", args.push(Arg::S(e.clone())))),
            Some(None) => sets.push("alert_email = NULL".to_string()),
            None => {}
        }
        for (col, v) in
            [("alert_cooldown_secs", change.alert_cooldown_secs), ("alert_max_per_hour", change.alert_max_per_hour)]
        {
            match v {
                Some(Some(n)) => sets.push(format!("{col} = {}", args.push(Arg::I(n)))),
                Some(None) => sets.push(format!("{col} = NULL")),
                None => {}
            }
        }
        if let Some(list) = &change.ignore_sources {
            sets.push(format!("ignore_sources = {}", args.push(Arg::S(serde_json::to_string(list)?))));
        }
        let idp = args.push(Arg::S(id.to_string()));
        let sql = format!("UPDATE tokens SET {} WHERE id = {idp}", sets.join(", "));
        let n = args.bind(sqlx::query(&sql)).execute(&mut *tx).await?.rows_affected();
        if n == 0 {
            return Ok(None);
        }
        insert_audit(&mut tx, audit).await?;
        let row = sqlx::query(&format!("SELECT {TOKEN_COLS} FROM tokens t WHERE t.id = $1"))
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
        let token = token_from_row(&row)?;
        tx.commit().await?;
        Ok(Some(token))
    }

    async fn delete_token(&self, id: &str, clear_incidents: bool, audit: &AuditEntry) -> anyhow::Result<TokenDeletion> {
        let mut tx = self.begin().await?;
        // Deleting the row first locks it: a hit batch that has not read the token yet then
        // finds it gone, one that has read it is waited for (it share-locks the row).
        let n = sqlx::query("DELETE FROM tokens WHERE id = $1").bind(id).execute(&mut *tx).await?.rows_affected();
        if n == 0 {
            return Ok(TokenDeletion::NotFound);
        }
        if !clear_incidents {
            let incidents: i64 = sqlx::query("SELECT COUNT(*) FROM incidents WHERE token_id = $1")
                .bind(id)
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?;
            if incidents > 0 {
                return Ok(TokenDeletion::HasIncidents); // dropping the transaction undoes the delete
            }
        }
        sqlx::query("DELETE FROM token_files WHERE token_id = $1").bind(id).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM hits WHERE token_id = $1").bind(id).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM incidents WHERE token_id = $1").bind(id).execute(&mut *tx).await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(TokenDeletion::Deleted)
    }

    async fn record_hits(&self, hits: &[NewHit], rules: &HitRules) -> anyhow::Result<Vec<HitOutcome>> {
        let mut tx = self.begin().await?;
        let mut out = Vec::with_capacity(hits.len());
        // Incidents created or joined by this batch get a new `updated_id`.
        let mut stamping = Stamping::for_engine(self.engine);
        // The API-configured outputs, read once per batch and only if some hit alerts.
        let mut managed: Option<Vec<AlertOutput>> = None;
        for h in hits {
            // The token is read inside the write transaction, so a token disabled or deleted
            // a moment ago is seen as such. (No hit count here: it is not needed to answer.)
            // (On PostgreSQL the row is share-locked, so a delete waits for this batch and
            // never leaves an incident without its token.)
            let row = sqlx::query(&format!(
                "SELECT {TOKEN_COLS_NO_COUNT} FROM tokens t WHERE t.id = $1{}",
                self.row_lock(false)
            ))
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

    async fn token_hits(&self, token_id: &str, limit: i64, before_id: Option<i64>) -> anyhow::Result<Vec<Hit>> {
        let sql = format!("SELECT {HIT_COLS} FROM hits WHERE token_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3");
        let rows = sqlx::query(&sql)
            .bind(token_id)
            .bind(before_id.unwrap_or(i64::MAX))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(hit_from_row).collect()
    }

    async fn list_alert_outputs(&self) -> anyhow::Result<Vec<AlertOutput>> {
        let mut conn = self.pool.acquire().await?;
        fetch_alert_outputs(&mut conn).await
    }

    async fn insert_alert_output(&self, o: &AlertOutput, audit: &AuditEntry) -> anyhow::Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO alert_outputs (id, flock_id, output, created_us, created_by) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(o.id.as_str())
        .bind(o.flock_id.as_deref())
        .bind(o.output.to_string())
        .bind(o.created_us)
        .bind(o.created_by.as_str())
        .execute(&mut *tx)
        .await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_alert_output(&self, id: &str, audit: &AuditEntry) -> anyhow::Result<bool> {
        let mut tx = self.begin().await?;
        let n =
            sqlx::query("DELETE FROM alert_outputs WHERE id = $1").bind(id).execute(&mut *tx).await?.rows_affected();
        if n == 0 {
            return Ok(false);
        }
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn install_id(&self) -> anyhow::Result<String> {
        let mut tx = self.begin().await?;
        sqlx::query("INSERT INTO settings (name, value) VALUES ('install_id', $1) ON CONFLICT (name) DO NOTHING")
            .bind(crate::ids::hex_id(6))
            .execute(&mut *tx)
            .await?;
        let id: String = sqlx::query("SELECT value FROM settings WHERE name = 'install_id'")
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        tx.commit().await?;
        Ok(id)
    }

    async fn attach_hit_data(
        &self,
        hit_id: i64,
        token_id: &str,
        nonce: &str,
        key: &str,
        value: serde_json::Value,
    ) -> anyhow::Result<bool> {
        let mut tx = self.begin().await?;
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

    async fn list_incidents(&self, filter: &IncidentFilter) -> anyhow::Result<Vec<Incident>> {
        self.fetch_incidents(filter).await
    }

    async fn count_incidents(&self, filter: &IncidentFilter) -> anyhow::Result<(i64, Option<i64>)> {
        let mut args = Args::default();
        let sql =
            format!("SELECT COUNT(*), MAX(updated_id) FROM incidents WHERE {}", incident_where(filter, &mut args));
        let row = args.bind(sqlx::query(&sql)).fetch_one(&self.pool).await?;
        Ok((row.try_get(0)?, row.try_get(1)?))
    }

    async fn incident_sources(&self, filter: &IncidentFilter) -> anyhow::Result<Vec<(String, i64)>> {
        let mut args = Args::default();
        let sql = format!(
            "SELECT src_ip, COUNT(*) FROM incidents WHERE {} GROUP BY src_ip ORDER BY COUNT(*) DESC, src_ip",
            incident_where(filter, &mut args)
        );
        let rows = args.bind(sqlx::query(&sql)).fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    async fn set_acknowledged(
        &self,
        filter: &IncidentFilter,
        acknowledged: bool,
        audit: &AuditEntry,
    ) -> anyhow::Result<Vec<i64>> {
        let mut tx = self.begin().await?;
        let mut args = Args::default();
        let cond = incident_where(filter, &mut args);
        // Only incidents whose state changes move in the change sequence; nothing is stamped
        // (or audited) when nothing matches.
        let sql = format!("SELECT id, acknowledged FROM incidents WHERE {cond}{}", self.row_lock(true));
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

    async fn delete_incidents(&self, filter: &IncidentFilter, audit: &AuditEntry) -> anyhow::Result<Vec<i64>> {
        let mut tx = self.begin().await?;
        let mut args = Args::default();
        let cond = incident_where(filter, &mut args);
        let sql = format!("DELETE FROM hits WHERE incident_id IN (SELECT id FROM incidents WHERE {cond})");
        args.bind(sqlx::query(&sql)).execute(&mut *tx).await?;
        let sql = format!("DELETE FROM incidents WHERE {cond} RETURNING id");
        let rows = args.bind(sqlx::query(&sql)).fetch_all(&mut *tx).await?;
        let mut ids = rows.iter().map(|r| r.try_get::<i64, _>(0)).collect::<Result<Vec<_>, _>>()?;
        if !ids.is_empty() {
            insert_audit(&mut tx, audit).await?;
        }
        tx.commit().await?;
        ids.sort_unstable();
        Ok(ids)
    }

    async fn prune(
        &self,
        older_than_us: Option<Micros>,
        keep_per_token: Option<i64>,
        chunk: i64,
    ) -> anyhow::Result<u64> {
        let mut deleted = 0;
        let mut incidents = Vec::new();
        if let Some(cutoff) = older_than_us {
            let pick = format!("h.time_us < $1 AND {LOOSE_HIT}");
            deleted += self.delete_hits_chunked(&pick, &[Arg::I(cutoff)], chunk, &mut incidents).await?;
            let mut tx = self.begin().await?;
            sqlx::query(
                "DELETE FROM alerts WHERE (delivered_us IS NOT NULL OR gave_up_us IS NOT NULL) AND created_us < $1",
            )
            .bind(cutoff)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        }
        if let Some(keep) = keep_per_token {
            let crowded: Vec<String> = sqlx::query("SELECT token_id FROM hits GROUP BY token_id HAVING COUNT(*) > $1")
                .bind(keep)
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>()?;
            for token in crowded {
                // The newest hit past the ones kept: it and older ones may go.
                let edge = sqlx::query("SELECT id FROM hits WHERE token_id = $1 ORDER BY id DESC LIMIT 1 OFFSET $2")
                    .bind(token.as_str())
                    .bind(keep)
                    .fetch_optional(&self.pool)
                    .await?;
                let Some(edge) = edge else { continue };
                let pick = format!("h.token_id = $1 AND h.id <= $2 AND {LOOSE_HIT}");
                let args = [Arg::S(token), Arg::I(edge.try_get(0)?)];
                deleted += self.delete_hits_chunked(&pick, &args, chunk, &mut incidents).await?;
            }
        }
        incidents.sort_unstable();
        incidents.dedup();
        incidents.retain(|&i| i > 0);
        for ids in incidents.chunks(500) {
            let mut args = Args::default();
            let list = args.list(ids.iter().map(|&i| Arg::I(i)));
            let sql = format!(
                "DELETE FROM incidents WHERE id IN ({list}) AND acknowledged = 1 \
                 AND NOT EXISTS (SELECT 1 FROM hits WHERE hits.incident_id = incidents.id)"
            );
            let mut tx = self.begin().await?;
            args.bind(sqlx::query(&sql)).execute(&mut *tx).await?;
            tx.commit().await?;
        }
        Ok(deleted)
    }

    async fn append_audit(&self, audit: &AuditEntry) -> anyhow::Result<()> {
        let mut tx = self.begin().await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_audit(&self, limit: i64) -> anyhow::Result<Vec<AuditEntry>> {
        let rows = sqlx::query(
            "SELECT time_us, actor, action, target, description, src_ip, dialect FROM audit_log \
             ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(audit_from_row).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_only_the_password() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
        assert_eq!(redact("/tmp/x.db"), "/tmp/x.db");
    }

    /// Rows from before migration 9 (empty search texts) are found once the store reopens.
    #[tokio::test]
    async fn reopening_fills_the_search_texts_of_older_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let path = path.to_str().unwrap();
        let store = SqlStore::open(path).await.unwrap();
        let audit = AuditEntry {
            time_us: 1,
            actor: "t".into(),
            action: "token_create".into(),
            target: "t".into(),
            description: String::new(),
            src_ip: String::new(),
            dialect: "test".into(),
        };
        let mut t = crate::kinds::testing::token("dns", serde_json::json!({}));
        t.memo = "Payroll share".into();
        store.insert_token(&t, &[], &audit).await.unwrap();
        let hit = NewHit {
            token_id: t.id.clone(),
            time_us: 5,
            channel: Channel::Dns,
            src_ip: "192.0.2.1".into(),
            src_port: 53,
            dst_ip: String::new(),
            dst_port: 0,
            data: serde_json::json!({}),
        };
        let rules = HitRules::new(
            |_: &Token, _: &NewHit| Judgement::alert(),
            |_: &Token, _: &NewHit, _: &[AlertOutput]| Vec::new(),
        );
        store.record_hits(&[hit], &rules).await.unwrap();
        sqlx::query("UPDATE tokens SET search_words = ''").execute(&store.pool).await.unwrap();
        sqlx::query("UPDATE incidents SET search_text = ''").execute(&store.pool).await.unwrap();
        drop(store);

        let store = SqlStore::open(path).await.unwrap();
        let words = TokenFilter { words: vec!["pay".into()], ..Default::default() };
        assert_eq!(store.count_tokens(&words).await.unwrap(), 1);
        let text = IncidentFilter { text: Some("PAYROLL".into()), ..Default::default() };
        assert_eq!(store.count_incidents(&text).await.unwrap().0, 1);
    }
}

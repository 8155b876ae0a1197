//! [`Store`] over sqlx's `Any` driver: the same SQL text for SQLite and PostgreSQL.
//!
//! SQLite runs in WAL mode with `synchronous=FULL`, so a committed transaction survives a
//! process kill or power loss; write transactions begin `IMMEDIATE` so two writers queue on the
//! busy timeout instead of failing on a lock upgrade.
//!
//! One file per aggregate, each holding its statements as functions over [`SqlStore`]; this
//! file holds the store itself, its transactions and the [`Store`] impl that maps each method
//! to its aggregate's function.

mod audit;
mod factories;
mod flocks;
mod hits;
mod incidents;
mod keys;
mod leases;
mod outbox;
mod outputs;
mod poller;
mod retention;
mod retirements;
mod schema;
mod settings;
mod sqlite_file;
mod tokens;

use anyhow::Context;
use async_trait::async_trait;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Executor, Row, Transaction};

use super::args::{Arg, Args};
use super::{FlockDeletion, HitRules, Store, StoreResult, TokenDeletion};
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
    async fn commit(self) -> StoreResult<()> {
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

/// Case-folded text for case-insensitive search. Folding happens here, in Rust, because the
/// engines disagree: SQLite's LOWER() folds ASCII only, PostgreSQL's all of Unicode.
fn fold(s: &str) -> String {
    s.to_lowercase()
}

fn b(v: bool) -> i64 {
    v as i64
}

/// A port as stored (BIGINT) back to a port.
fn port(r: &AnyRow, i: usize) -> StoreResult<u16> {
    Ok(u16::try_from(r.try_get::<i64, _>(i)?).unwrap_or(0))
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
            sqlite_file::probe_sqlite(&url, &path).await?;
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

    async fn begin(&self) -> StoreResult<WriteTx> {
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

    /// Row-lock suffix for a SELECT inside a write transaction: PostgreSQL needs it to keep
    /// the row as read until commit; SQLite's write transactions are serial already.
    fn row_lock(&self, exclusive: bool) -> &'static str {
        match (self.engine, exclusive) {
            (Engine::Sqlite, _) => "",
            (Engine::Postgres, false) => " FOR SHARE",
            (Engine::Postgres, true) => " FOR UPDATE",
        }
    }
}

/// What an audited write did, as far as keeping it goes: a write that changed nothing (a
/// missing row, a refused delete) is rolled back and leaves no audit entry.
pub(super) trait Changed {
    fn changed(&self) -> bool;
}

impl Changed for () {
    fn changed(&self) -> bool {
        true
    }
}

impl Changed for bool {
    fn changed(&self) -> bool {
        *self
    }
}

impl<T> Changed for Option<T> {
    fn changed(&self) -> bool {
        self.is_some()
    }
}

impl<T> Changed for Vec<T> {
    fn changed(&self) -> bool {
        !self.is_empty()
    }
}

impl Changed for TokenDeletion {
    fn changed(&self) -> bool {
        *self == TokenDeletion::Deleted
    }
}

impl Changed for FlockDeletion {
    fn changed(&self) -> bool {
        *self == FlockDeletion::Deleted
    }
}

/// Ends a management write: when `outcome` changed something, writes `audit` in the same
/// transaction and commits; otherwise rolls everything back. Returns `outcome`.
pub(super) async fn audited<T: Changed>(mut tx: WriteTx, audit: &AuditEntry, outcome: T) -> StoreResult<T> {
    if outcome.changed() {
        audit::insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
    }
    Ok(outcome)
}

/// Deletes the row that `sql` (a DELETE with one parameter, `$1` = `id`) names, with its audit
/// entry; false (and nothing written) when there was no such row.
pub(super) async fn delete_audited(s: &SqlStore, sql: &str, id: &str, audit: &AuditEntry) -> StoreResult<bool> {
    let mut tx = s.begin().await?;
    let n = sqlx::query(sql).bind(id).execute(&mut *tx).await?.rows_affected();
    audited(tx, audit, n > 0).await
}

#[async_trait]
impl Store for SqlStore {
    fn backend(&self) -> &'static str {
        match self.engine {
            Engine::Sqlite => "sqlite",
            Engine::Postgres => "postgres",
        }
    }

    async fn count_api_keys(&self) -> StoreResult<i64> {
        keys::count_api_keys(self).await
    }

    async fn insert_api_key(&self, k: &ApiKey, audit: &AuditEntry) -> StoreResult<()> {
        keys::insert_api_key(self, k, audit).await
    }

    async fn insert_first_api_key(&self, k: &ApiKey, audit: &AuditEntry) -> StoreResult<bool> {
        keys::insert_first_api_key(self, k, audit).await
    }

    async fn api_key_by_hash(&self, secret_hash: &str) -> StoreResult<Option<ApiKey>> {
        keys::api_key_by_hash(self, secret_hash).await
    }

    async fn touch_api_key(&self, key_id: &str, when: Micros) -> StoreResult<()> {
        keys::touch_api_key(self, key_id, when).await
    }

    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKey>> {
        keys::list_api_keys(self).await
    }

    async fn get_api_key(&self, key_id: &str) -> StoreResult<Option<ApiKey>> {
        keys::get_api_key(self, key_id).await
    }

    async fn update_api_key(
        &self,
        key_id: &str,
        change: &KeyChange,
        audit: &AuditEntry,
    ) -> StoreResult<Option<ApiKey>> {
        keys::update_api_key(self, key_id, change, audit).await
    }

    async fn delete_api_key(&self, key_id: &str, audit: &AuditEntry) -> StoreResult<bool> {
        keys::delete_api_key(self, key_id, audit).await
    }

    async fn insert_api_key_once(&self, k: &ApiKey, audit: &AuditEntry, mark: &str) -> StoreResult<bool> {
        keys::insert_api_key_once(self, k, audit, mark).await
    }

    async fn insert_factory(&self, f: &FactoryToken, audit: &AuditEntry) -> StoreResult<()> {
        factories::insert_factory(self, f, audit).await
    }

    async fn factory_by_hash(&self, value_hash: &str) -> StoreResult<Option<FactoryToken>> {
        factories::factory_by_hash(self, value_hash).await
    }

    async fn get_factory(&self, id: &str) -> StoreResult<Option<FactoryToken>> {
        factories::get_factory(self, id).await
    }

    async fn list_factories(&self) -> StoreResult<Vec<FactoryToken>> {
        factories::list_factories(self).await
    }

    async fn update_factory(
        &self,
        id: &str,
        change: &FactoryChange,
        audit: &AuditEntry,
    ) -> StoreResult<Option<FactoryToken>> {
        factories::update_factory(self, id, change, audit).await
    }

    async fn delete_factory(&self, id: &str, audit: &AuditEntry) -> StoreResult<bool> {
        factories::delete_factory(self, id, audit).await
    }

    async fn touch_factory(&self, id: &str, when: Micros) -> StoreResult<()> {
        factories::touch_factory(self, id, when).await
    }

    async fn query_factories(&self, q: &crate::model::Query, now: Micros) -> StoreResult<(Vec<String>, i64)> {
        factories::query_factories(self, q, now).await
    }

    async fn query_factory_audit(&self, q: &crate::model::Query, now: Micros) -> StoreResult<(Vec<i64>, i64)> {
        factories::query_factory_audit(self, q, now).await
    }

    async fn factory_audit_events(&self, ids: &[i64]) -> StoreResult<Vec<AuditEvent>> {
        factories::factory_audit_events(self, ids).await
    }

    async fn get_setting(&self, name: &str) -> StoreResult<Option<String>> {
        settings::get_setting(self, name).await
    }

    async fn set_setting(&self, name: &str, value: &str, audit: &AuditEntry) -> StoreResult<()> {
        settings::set_setting(self, name, value, audit).await
    }

    async fn due_alerts(&self, now: Micros, limit: i64) -> StoreResult<Vec<Alert>> {
        outbox::due_alerts(self, now, limit).await
    }

    async fn release_claims(&self, node: &str, now: Micros) -> StoreResult<u64> {
        outbox::release_claims(self, node, now).await
    }

    async fn claim_due_alerts(
        &self,
        now: Micros,
        limit: i64,
        lease_until: Micros,
        node: &str,
    ) -> StoreResult<Vec<Alert>> {
        outbox::claim_due_alerts(self, now, limit, lease_until, node).await
    }

    async fn finish_alerts(&self, results: &[AlertResult]) -> StoreResult<()> {
        outbox::finish_alerts(self, results).await
    }

    async fn list_alerts(&self, undelivered_only: bool, limit: i64) -> StoreResult<Vec<Alert>> {
        outbox::list_alerts(self, undelivered_only, limit).await
    }

    async fn insert_alerts(&self, alerts: &[NewAlert], key_prefix: &str, audit: &AuditEntry) -> StoreResult<()> {
        outbox::insert_alerts(self, alerts, key_prefix, audit).await
    }

    async fn list_flocks(&self) -> StoreResult<Vec<Flock>> {
        flocks::list_flocks(self).await
    }

    async fn get_flock(&self, id: &str) -> StoreResult<Option<Flock>> {
        flocks::get_flock(self, id).await
    }

    async fn insert_flock(&self, f: &Flock, audit: &AuditEntry) -> StoreResult<()> {
        flocks::insert_flock(self, f, audit).await
    }

    async fn rename_flock(&self, id: &str, name: &str, audit: &AuditEntry) -> StoreResult<bool> {
        flocks::rename_flock(self, id, name, audit).await
    }

    async fn delete_flock(&self, id: &str, audit: &AuditEntry) -> StoreResult<FlockDeletion> {
        flocks::delete_flock(self, id, audit).await
    }

    async fn flock_summary(&self, id: &str) -> StoreResult<FlockSummary> {
        flocks::flock_summary(self, id).await
    }

    async fn flock_token_ids(&self, id: &str) -> StoreResult<Vec<String>> {
        flocks::flock_token_ids(self, id).await
    }

    async fn insert_token(
        &self,
        t: &Token,
        files: &[TokenFile],
        keys: &[TriggerKey],
        audit: &AuditEntry,
    ) -> StoreResult<bool> {
        tokens::insert_token(self, t, files, keys, audit).await
    }

    async fn get_token_file(&self, token_id: &str, name: &str) -> StoreResult<Option<TokenFile>> {
        tokens::get_token_file(self, token_id, name).await
    }

    async fn get_token(&self, id: &str) -> StoreResult<Option<Token>> {
        tokens::get_token(self, id).await
    }

    async fn list_tokens(&self, f: &TokenFilter, start: &PageStart<TokenKey>, limit: i64) -> StoreResult<Vec<Token>> {
        tokens::list_tokens(self, f, start, limit).await
    }

    async fn count_tokens(&self, f: &TokenFilter) -> StoreResult<i64> {
        tokens::count_tokens(self, f).await
    }

    async fn update_token(&self, id: &str, change: &TokenChange, audit: &AuditEntry) -> StoreResult<Option<Token>> {
        tokens::update_token(self, id, change, audit).await
    }

    async fn delete_token(
        &self,
        id: &str,
        clear_incidents: bool,
        audit: &AuditEntry,
        retire: bool,
    ) -> StoreResult<TokenDeletion> {
        tokens::delete_token(self, id, clear_incidents, audit, retire).await
    }

    async fn trigger_keys(&self, scheme: KeyScheme) -> StoreResult<Vec<(String, String)>> {
        tokens::trigger_keys(self, scheme).await
    }

    async fn record_hits(&self, hits: &[NewHit], rules: &HitRules) -> StoreResult<Vec<HitOutcome>> {
        hits::record_hits(self, hits, rules).await
    }

    async fn token_hits(&self, token_id: &str, limit: i64, before_id: Option<i64>) -> StoreResult<Vec<Hit>> {
        hits::token_hits(self, token_id, limit, before_id).await
    }

    async fn list_alert_outputs(&self) -> StoreResult<Vec<AlertOutput>> {
        outputs::list_alert_outputs(self).await
    }

    async fn insert_alert_output(&self, o: &AlertOutput, audit: &AuditEntry) -> StoreResult<()> {
        outputs::insert_alert_output(self, o, audit).await
    }

    async fn delete_alert_output(&self, id: &str, audit: &AuditEntry) -> StoreResult<bool> {
        outputs::delete_alert_output(self, id, audit).await
    }

    async fn install_id(&self) -> StoreResult<String> {
        settings::install_id(self).await
    }

    async fn amend_hit(
        &self,
        hit_id: i64,
        token_id: &str,
        guard: &str,
        key: &str,
        value: serde_json::Value,
    ) -> StoreResult<bool> {
        hits::amend_hit(self, hit_id, token_id, guard, key, value).await
    }

    async fn list_incidents(&self, filter: &IncidentFilter) -> StoreResult<Vec<Incident>> {
        incidents::list_incidents(self, filter).await
    }

    async fn count_incidents(&self, filter: &IncidentFilter) -> StoreResult<(i64, Option<i64>)> {
        incidents::count_incidents(self, filter).await
    }

    async fn incident_sources(&self, filter: &IncidentFilter) -> StoreResult<Vec<(String, i64)>> {
        incidents::incident_sources(self, filter).await
    }

    async fn set_acknowledged(
        &self,
        filter: &IncidentFilter,
        acknowledged: bool,
        audit: &AuditEntry,
    ) -> StoreResult<Vec<i64>> {
        incidents::set_acknowledged(self, filter, acknowledged, audit).await
    }

    async fn delete_incidents(&self, filter: &IncidentFilter, audit: &AuditEntry) -> StoreResult<Vec<i64>> {
        incidents::delete_incidents(self, filter, audit).await
    }

    async fn prune(&self, older_than_us: Option<Micros>, keep_per_token: Option<i64>, chunk: i64) -> StoreResult<u64> {
        retention::prune(self, older_than_us, keep_per_token, chunk).await
    }

    async fn get_poller_state(&self, name: &str) -> StoreResult<Option<String>> {
        poller::get_poller_state(self, name).await
    }

    async fn put_poller_state(&self, name: &str, value: &str) -> StoreResult<()> {
        poller::put_poller_state(self, name, value).await
    }

    async fn objects_done(&self, source: &str, keys: &[String]) -> StoreResult<std::collections::HashSet<String>> {
        poller::objects_done(self, source, keys).await
    }

    async fn mark_object_done(&self, source: &str, key: &str, now_us: Micros) -> StoreResult<()> {
        poller::mark_object_done(self, source, key, now_us).await
    }

    async fn prune_objects_done(&self, older_than_us: Micros) -> StoreResult<u64> {
        poller::prune_objects_done(self, older_than_us).await
    }

    async fn try_lease(&self, name: &str, holder: &str, now_us: Micros, ttl_us: Micros) -> StoreResult<bool> {
        leases::try_lease(self, name, holder, now_us, ttl_us).await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> StoreResult<()> {
        leases::release_lease(self, name, holder).await
    }

    async fn due_retirements(&self, now_us: Micros, limit: i64) -> StoreResult<Vec<Retirement>> {
        retirements::due_retirements(self, now_us, limit).await
    }

    async fn retirement_failed(&self, id: i64, error: &str, next_try_us: Micros) -> StoreResult<()> {
        retirements::retirement_failed(self, id, error, next_try_us).await
    }

    async fn retirement_done(&self, id: i64) -> StoreResult<()> {
        retirements::retirement_done(self, id).await
    }

    async fn list_retirements(&self) -> StoreResult<Vec<Retirement>> {
        retirements::list_retirements(self).await
    }

    async fn append_audit(&self, audit: &AuditEntry) -> StoreResult<()> {
        audit::append_audit(self, audit).await
    }

    async fn list_audit(&self, limit: i64) -> StoreResult<Vec<AuditEntry>> {
        audit::list_audit(self, limit).await
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
}

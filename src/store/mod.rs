//! Persistence: one [`Store`] trait, implemented for SQLite (embedded, the default) and
//! PostgreSQL (shared by several nodes at scale).
//!
//! Both engines run the same SQL text through [`sql::SqlStore`]: statements use `$N` placeholders
//! and only types both engines agree on (BIGINT, TEXT), so the only per-engine code is the
//! schema's few type names ([`migrations`], one list rendered per engine), connection setup and
//! how a write transaction begins. What a hit becomes is decided in [`crate::hits`]; the store
//! only runs its statements. Failures are a [`StoreError`]. The conformance suite in
//! `tests/store_conformance.rs` runs against both; `tests/store_upgrade.rs` opens databases an
//! earlier release wrote.
//!
//! Every mutating method that corresponds to a management action takes the [`AuditEntry`] and
//! writes it in the same transaction, so the audit log can never miss a change that happened.
//! Machine bookkeeping (a poller's state and processed objects, leases, the retirement queue's
//! attempts) is no management action and leaves no audit entry.

pub mod args;
pub mod error;
pub mod fql_sql;
pub mod migrations;
pub mod sql;

use async_trait::async_trait;

use crate::model::*;

pub use error::{StoreError, StoreResult};
pub use sql::SqlStore;

pub use crate::hits::{Alerter, HitRules, Judge};

/// Result of trying to delete a token; the check for incidents and the delete are one
/// transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenDeletion {
    Deleted,
    NotFound,
    /// It has incidents, and they were not to be cleared: nothing was deleted.
    HasIncidents,
}

/// Result of trying to delete a flock; the emptiness check and the delete are one transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlockDeletion {
    Deleted,
    NotFound,
    NotEmpty,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;

    // --- API keys
    async fn count_api_keys(&self) -> StoreResult<i64>;
    async fn insert_api_key(&self, key: &ApiKey, audit: &AuditEntry) -> StoreResult<()>;
    /// Inserts `key` only if there is no key at all, atomically (several nodes may try at
    /// once); false when some key exists.
    async fn insert_first_api_key(&self, key: &ApiKey, audit: &AuditEntry) -> StoreResult<bool>;
    async fn api_key_by_hash(&self, secret_hash: &str) -> StoreResult<Option<ApiKey>>;
    async fn touch_api_key(&self, key_id: &str, when: Micros) -> StoreResult<()>;
    /// Oldest first.
    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKey>>;
    async fn get_api_key(&self, key_id: &str) -> StoreResult<Option<ApiKey>>;
    /// None when there is no such key.
    async fn update_api_key(&self, key_id: &str, change: &KeyChange, audit: &AuditEntry)
        -> StoreResult<Option<ApiKey>>;
    /// False when there is no such key.
    async fn delete_api_key(&self, key_id: &str, audit: &AuditEntry) -> StoreResult<bool>;
    /// Inserts `k` and sets the setting `mark` (to the key's id) in one transaction, unless
    /// `mark` is set already: then nothing is written and the answer is false. For keys that may
    /// be made once for good (the provision key's admin), even after that key is gone.
    async fn insert_api_key_once(&self, k: &ApiKey, audit: &AuditEntry, mark: &str) -> StoreResult<bool>;

    // --- factory tokens
    async fn insert_factory(&self, f: &FactoryToken, audit: &AuditEntry) -> StoreResult<()>;
    async fn factory_by_hash(&self, value_hash: &str) -> StoreResult<Option<FactoryToken>>;
    async fn get_factory(&self, id: &str) -> StoreResult<Option<FactoryToken>>;
    /// Oldest first.
    async fn list_factories(&self) -> StoreResult<Vec<FactoryToken>>;
    /// None when there is no such factory token.
    async fn update_factory(
        &self,
        id: &str,
        change: &FactoryChange,
        audit: &AuditEntry,
    ) -> StoreResult<Option<FactoryToken>>;
    /// False when there is no such factory token.
    async fn delete_factory(&self, id: &str, audit: &AuditEntry) -> StoreResult<bool>;
    /// Records a use: last-used time and use count.
    async fn touch_factory(&self, id: &str, when: Micros) -> StoreResult<()>;
    /// Ids of the factory tokens matching `q` (newest first unless sorted) and how many match
    /// in all. A filter the entity cannot use fails with [`StoreError::Fql`].
    async fn query_factories(&self, q: &Query, now: Micros) -> StoreResult<(Vec<String>, i64)>;
    /// Ids of the factory-token audit events matching `q`, and how many match in all.
    async fn query_factory_audit(&self, q: &Query, now: Micros) -> StoreResult<(Vec<i64>, i64)>;
    /// Factory-token audit events by id (Falcon action names).
    async fn factory_audit_events(&self, ids: &[i64]) -> StoreResult<Vec<AuditEvent>>;

    // --- settings
    async fn get_setting(&self, name: &str) -> StoreResult<Option<String>>;
    async fn set_setting(&self, name: &str, value: &str, audit: &AuditEntry) -> StoreResult<()>;

    // --- flocks
    async fn list_flocks(&self) -> StoreResult<Vec<Flock>>;
    async fn get_flock(&self, id: &str) -> StoreResult<Option<Flock>>;
    async fn insert_flock(&self, flock: &Flock, audit: &AuditEntry) -> StoreResult<()>;
    /// False when there is no such flock.
    async fn rename_flock(&self, id: &str, name: &str, audit: &AuditEntry) -> StoreResult<bool>;
    async fn delete_flock(&self, id: &str, audit: &AuditEntry) -> StoreResult<FlockDeletion>;
    async fn flock_summary(&self, id: &str) -> StoreResult<FlockSummary>;
    /// Ids of the flock's tokens, oldest first.
    async fn flock_token_ids(&self, id: &str) -> StoreResult<Vec<String>>;

    // --- tokens
    /// Stores a token, its files and its trigger keys (into the key index hits resolve
    /// [`TokenRef::Key`] through), in one transaction. False (and nothing stored) when the
    /// token's flock does not exist; the check holds the flock against a concurrent delete
    /// until the token is in. A key that already names a token is an error, and then nothing
    /// is stored.
    async fn insert_token(
        &self,
        token: &Token,
        files: &[TokenFile],
        keys: &[TriggerKey],
        audit: &AuditEntry,
    ) -> StoreResult<bool>;
    async fn get_token_file(&self, token_id: &str, name: &str) -> StoreResult<Option<TokenFile>>;
    async fn get_token(&self, id: &str) -> StoreResult<Option<Token>>;
    /// Up to `limit` tokens matching `filter`, newest first (by creation time, then id),
    /// starting after (or, backwards, just before) `start`'s key.
    async fn list_tokens(
        &self,
        filter: &TokenFilter,
        start: &PageStart<TokenKey>,
        limit: i64,
    ) -> StoreResult<Vec<Token>>;
    /// How many tokens match `filter`.
    async fn count_tokens(&self, filter: &TokenFilter) -> StoreResult<i64>;
    /// Applies the change and bumps `updated_id`; None when there is no such token.
    async fn update_token(&self, id: &str, change: &TokenChange, audit: &AuditEntry) -> StoreResult<Option<Token>>;
    /// Deletes a token with its files, its trigger keys and its hits. A token with incidents is deleted only
    /// with `clear_incidents`, and then its incidents go too. With `retire`, a [`Retirement`] of
    /// the token (its id, kind and settings; created and due at `audit.time_us`) is queued in
    /// the same transaction, so a deleted token's outside resources are never forgotten; a
    /// delete that does not happen queues nothing.
    async fn delete_token(
        &self,
        id: &str,
        clear_incidents: bool,
        audit: &AuditEntry,
        retire: bool,
    ) -> StoreResult<TokenDeletion>;
    /// Every key of the scheme in the key index, as (key value, token id), by value: of
    /// enabled and disabled tokens alike (a listener prefilters what it reads by them;
    /// recording still checks the token).
    async fn trigger_keys(&self, scheme: KeyScheme) -> StoreResult<Vec<(String, String)>>;

    // --- hits: the hot path
    /// Records a batch of hits in ONE transaction (group commit), by the pipeline in
    /// [`crate::hits`]. Each hit is checked against
    /// its token inside that transaction (named by id, or by a trigger key through the key
    /// index; unknown or disabled tokens store nothing), judged by
    /// `rules.judge` (ignore lists, the token's kind: alert, ignore or drop), and then put
    /// through the noise rules ([`crate::noise`]): it joins its source's open incident, or
    /// opens a new one that alerts or is throttled. Returns one outcome per hit, in order;
    /// when this returns Ok, every `Recorded` hit is durable. Alerting hits also get their
    /// alerts (from `rules.alerter`) into the outbox, in the same transaction.
    async fn record_hits(&self, hits: &[NewHit], rules: &HitRules) -> StoreResult<Vec<HitOutcome>>;
    /// Deletes stored hits that the retention rules let go: older than `older_than_us`, or
    /// beyond the newest `keep_per_token` of their token. Hits of unacknowledged incidents are
    /// never deleted; an acknowledged incident left with no hits goes too, and so do delivered
    /// or abandoned outbox alerts older than `older_than_us`. Works in small transactions (at
    /// most `chunk` rows each) so hits never wait long for the writer. Returns the hits deleted.
    async fn prune(&self, older_than_us: Option<Micros>, keep_per_token: Option<i64>, chunk: i64) -> StoreResult<u64>;
    /// The stored hits of a token, ignored ones included, newest first: at most `limit`, and
    /// only those with ids below `before_id` when given (the next page).
    async fn token_hits(&self, token_id: &str, limit: i64, before_id: Option<i64>) -> StoreResult<Vec<Hit>>;

    // --- alert outputs configured through the API
    /// Oldest first.
    async fn list_alert_outputs(&self) -> StoreResult<Vec<AlertOutput>>;
    async fn insert_alert_output(&self, o: &AlertOutput, audit: &AuditEntry) -> StoreResult<()>;
    /// False when there is no such output.
    async fn delete_alert_output(&self, id: &str, audit: &AuditEntry) -> StoreResult<bool>;
    /// This installation's id: made once, by whichever node asks first.
    async fn install_id(&self) -> StoreResult<String>;

    // --- alert outbox
    /// Undelivered alerts whose next attempt is due, oldest first.
    async fn due_alerts(&self, now: Micros, limit: i64) -> StoreResult<Vec<Alert>>;
    /// Takes up to `limit` due alerts for delivery, in one statement, by moving their next
    /// attempt to `lease_until`: an alert another node claimed a moment ago is no longer due
    /// and is skipped (several nodes may share the outbox). Oldest first.
    /// `node` is recorded as the holder of the lease.
    async fn claim_due_alerts(
        &self,
        now: Micros,
        limit: i64,
        lease_until: Micros,
        node: &str,
    ) -> StoreResult<Vec<Alert>>;
    /// Makes the unfinished alerts whose lease `node` holds due at once (a node that starts
    /// again takes back its previous run's claims); returns how many.
    async fn release_claims(&self, node: &str, now: Micros) -> StoreResult<u64>;
    /// Records finished delivery attempts, all in one transaction.
    async fn finish_alerts(&self, results: &[AlertResult]) -> StoreResult<()>;
    /// Newest first.
    async fn list_alerts(&self, undelivered_only: bool, limit: i64) -> StoreResult<Vec<Alert>>;
    /// Alerts outside any hit (test alerts); keys are `<key_prefix>-<n>`.
    async fn insert_alerts(&self, alerts: &[NewAlert], key_prefix: &str, audit: &AuditEntry) -> StoreResult<()>;
    /// The one way to add to a recorded hit later: puts `value` under `key` in the data of hit
    /// `hit_id` of `token_id`, once (a key the data has already is never replaced), if `guard`
    /// is the [`AMEND_GUARD`] stored in the hit's private data when it was recorded. False when
    /// nothing matched. The browser scanner's report uses it today; an SMTP message body that
    /// comes after its envelope was recorded, and the rest of a MySQL handshake, will too.
    async fn amend_hit(
        &self,
        hit_id: i64,
        token_id: &str,
        guard: &str,
        key: &str,
        value: serde_json::Value,
    ) -> StoreResult<bool>;

    // --- incidents
    /// The incidents matching `filter`, in its order from its page start, each with its
    /// events.
    async fn list_incidents(&self, filter: &IncidentFilter) -> StoreResult<Vec<Incident>>;
    /// How many incidents match `filter` (its order, page and limit aside), and the greatest
    /// `updated_id` among them.
    async fn count_incidents(&self, filter: &IncidentFilter) -> StoreResult<(i64, Option<i64>)>;
    /// The sources of the incidents matching `filter`, with how many each, most first.
    async fn incident_sources(&self, filter: &IncidentFilter) -> StoreResult<Vec<(String, i64)>>;
    /// Sets the acknowledged state of every incident matching `filter`; returns their ids.
    /// Those whose state changed get a new `updated_id`.
    async fn set_acknowledged(
        &self,
        filter: &IncidentFilter,
        acknowledged: bool,
        audit: &AuditEntry,
    ) -> StoreResult<Vec<i64>>;
    /// Deletes the incidents matching `filter` and their hits; returns their ids.
    async fn delete_incidents(&self, filter: &IncidentFilter, audit: &AuditEntry) -> StoreResult<Vec<i64>>;

    // --- pollers' bookkeeping (no audit)
    /// A poller's saved value under `name` (a listing's start, a checkpoint).
    async fn get_poller_state(&self, name: &str) -> StoreResult<Option<String>>;
    /// Saves `value` under `name`, replacing what was there.
    async fn put_poller_state(&self, name: &str, value: &str) -> StoreResult<()>;
    /// Which of `keys` are marked done for `source` (any number of keys).
    async fn objects_done(&self, source: &str, keys: &[String]) -> StoreResult<std::collections::HashSet<String>>;
    /// Marks the object `key` of `source` done at `now_us` (again: the time moves on).
    async fn mark_object_done(&self, source: &str, key: &str, now_us: Micros) -> StoreResult<()>;
    /// Forgets the objects marked done before `older_than_us`; returns how many.
    async fn prune_objects_done(&self, older_than_us: Micros) -> StoreResult<u64>;

    // --- leases (no audit)
    /// Takes the lease `name` for `holder` until `now_us + ttl_us`, atomically, if it is free,
    /// expired (its end at or before `now_us`) or held by `holder` already (then it is
    /// extended); false when another holder has it. Of several nodes asking at once, one wins.
    async fn try_lease(&self, name: &str, holder: &str, now_us: Micros, ttl_us: Micros) -> StoreResult<bool>;
    /// Gives the lease up, if `holder` has it (otherwise nothing changes).
    async fn release_lease(&self, name: &str, holder: &str) -> StoreResult<()>;

    // --- the retirement queue (queued by `delete_token`; no audit)
    /// Up to `limit` retirements due at `now_us`, the longest due first.
    async fn due_retirements(&self, now_us: Micros, limit: i64) -> StoreResult<Vec<Retirement>>;
    /// Records a failed attempt: one more attempt, its error, next try at `next_try_us`.
    async fn retirement_failed(&self, id: i64, error: &str, next_try_us: Micros) -> StoreResult<()>;
    /// Removes a retirement that succeeded.
    async fn retirement_done(&self, id: i64) -> StoreResult<()>;
    /// Every queued retirement, oldest first.
    async fn list_retirements(&self) -> StoreResult<Vec<Retirement>>;

    // --- audit log
    async fn append_audit(&self, audit: &AuditEntry) -> StoreResult<()>;
    /// Newest first.
    async fn list_audit(&self, limit: i64) -> StoreResult<Vec<AuditEntry>>;
}

/// Opens the store a `--database` value names: `postgres://` / `postgresql://` URLs select
/// PostgreSQL, anything else is a SQLite file path. Applies migrations.
pub async fn open(database: &str) -> anyhow::Result<std::sync::Arc<dyn Store>> {
    Ok(std::sync::Arc::new(SqlStore::open(database).await?))
}

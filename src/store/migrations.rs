//! Schema migrations: one list of steps for both engines, applied in order at start-up.
//!
//! Each step is written once; the few type names the engines spell differently are placeholders
//! (`{INT}`, `{SERIAL}`, `{BYTES}`) that [`render`] fills per engine. Steps are tracked by number,
//! and the rendered text of every released step is exactly what the earlier per-engine lists
//! held (this was checked step by step when the lists were merged).
//!
//! Written by hand rather than with `sqlx::migrate!` because the two engines need different DDL
//! but share everything else, and because several PostgreSQL nodes may start at once: the
//! runner takes an advisory lock there so exactly one applies each step. Each step runs in its
//! own transaction together with the row that records it.
//!
//! Step 2 adds `tokens.memo_folded`, the memo case-folded by Trapline itself (see
//! `store::sql::fold`) for case-insensitive search that behaves the same on both engines.
//!
//! Step 3 adds `hits.dedupe_key` (a kind's "same trigger again" key; hits with
//! `incident_id = 0` are stored but ignored, raising no incident) and `token_files`.
//!
//! Step 4 adds `api_keys.created_by` and `factory_tokens`.
//!
//! Step 5 adds `settings` (name → value, e.g. Falcon's customer settings).
//!
//! Step 6 adds the alert outbox (`alerts`: one row per alert and output, written in the
//! transaction of its hit) and `tokens.alert_webhook_url`.
//!
//! Step 7 adds `tokens.alert_email`.
//!
//! Step 8 adds noise control: per-token `alert_cooldown_secs`, `alert_max_per_hour` and
//! `ignore_sources` (a JSON list of networks, like `factory_tokens.cidrs`);
//! `incidents.alerted` (0 when throttled), `incidents.last_hit_us` and `incidents.group_key`
//! (for grouping repeats, see `crate::noise`); `hits.alert_status`; and `alert_outputs`, the
//! outputs configured through the API (global, or one flock's when `flock_id` is set).
//!
//! Step 9 serves the documented Console feeds and searches: `incidents.updated_id` (one
//! installation-wide change sequence, kept in `counters`, for `incidents_since` polling),
//! `incidents.notified` (set once one of its alerts is delivered), the first hit's ports and
//! destination on the incident and
//! `hits.dst_ip`/`dst_port`, the case-folded search texts `incidents.search_text` (for
//! `filter_str`) and `tokens.search_words` (for word-prefix `search_string`), both filled by
//! the store after migrating (see `SqlStore::backfill`); `factory_tokens.value_sealed` (the
//! value, encrypted, so Falcon can show it again); `api_keys.annotations` (Conjur host
//! annotations); and `alerts.claimed_by`, the node that holds an alert's delivery lease.
//!
//! Step 10 records in `settings` that the provision key is spent when an admin key it made
//! exists (from now on the mark is written with that key, so it outlives the key).
//!
//! Step 11 is the hit contract: `hits.private_data` (what a listener keeps for itself, JSON,
//! NULL when none; never read back into a hit's data) and `token_keys`, the key index by which
//! a hit names its token with a trigger key (scheme and value, unique; written with the token,
//! deleted with it). Release 605748e kept the browser scanner's nonce in the hit's data as
//! `_report_nonce`; the step is followed, in its transaction, by a data move written in Rust
//! (the engines share no JSON functions: `move_report_nonces` in `store/sql/schema.rs`) that takes it out of
//! the data into the private data's `amend_guard`, so an old hit's report can still be attached
//! and the nonce is never shown.
//!
//! Step 12 serves the honey AWS keys. `poller_state` (name → value) and `ingested_objects` (the
//! log objects a source has processed, by source and key) are a poller's own bookkeeping, never
//! audited; `leases` lets one node of several ingest at a time; `retirements` queues what a
//! deleted token's kind must still undo outside Trapline (written in the delete's transaction,
//! retried until done). `hits_events` holds a [`Judgement::Once`](crate::model::Judgement::Once)
//! event's dedupe key (`event:` and its id, see [`crate::hits::EVENT_KEY_PREFIX`]) unique per
//! token, so an event delivered twice is stored once even by two transactions at a time; no
//! earlier hit has such a key (the pipeline escapes kinds' own keys that look like one).
//!
//! Conventions both schemas follow so one SQL text works on both: integers are `{INT}` (BIGINT;
//! SQLite INTEGER), booleans are BIGINT 0/1, times are BIGINT microseconds since the epoch (UTC), JSON
//! is TEXT.

/// The steps, in order, for both engines: `{INT}`, `{SERIAL}` and `{BYTES}` stand for the
/// engine's type names ([`render`]). Never edit a released step; append a new one.
pub const STEPS: &[&str] = &[
    r#"
CREATE TABLE flocks (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_us {INT} NOT NULL
);
INSERT INTO flocks (id, name, created_us) VALUES ('flock:default', 'Default Flock', 0);
CREATE TABLE api_keys (
    key_id TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    flock_id TEXT,
    active {INT} NOT NULL,
    expire_us {INT} NOT NULL,
    description TEXT NOT NULL,
    created_us {INT} NOT NULL,
    last_used_us {INT}
);
CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    memo TEXT NOT NULL,
    flock_id TEXT NOT NULL,
    enabled {INT} NOT NULL,
    created_us {INT} NOT NULL,
    updated_id {INT} NOT NULL,
    params TEXT NOT NULL,
    created_by TEXT NOT NULL
);
CREATE INDEX tokens_order ON tokens (created_us, id);
CREATE INDEX tokens_flock ON tokens (flock_id);
CREATE TABLE incidents (
    id {SERIAL},
    token_id TEXT NOT NULL,
    flock_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    memo TEXT NOT NULL,
    channel TEXT NOT NULL,
    src_ip TEXT NOT NULL,
    created_us {INT} NOT NULL,
    updated_us {INT} NOT NULL,
    acknowledged {INT} NOT NULL
);
CREATE INDEX incidents_token ON incidents (token_id);
CREATE INDEX incidents_created ON incidents (created_us);
CREATE TABLE hits (
    id {SERIAL},
    incident_id {INT} NOT NULL,
    token_id TEXT NOT NULL,
    time_us {INT} NOT NULL,
    channel TEXT NOT NULL,
    src_ip TEXT NOT NULL,
    src_port {INT} NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX hits_incident ON hits (incident_id);
CREATE INDEX hits_token ON hits (token_id);
CREATE TABLE audit_log (
    id {SERIAL},
    time_us {INT} NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    description TEXT NOT NULL,
    src_ip TEXT NOT NULL,
    dialect TEXT NOT NULL
);
"#,
    r#"
ALTER TABLE tokens ADD COLUMN memo_folded TEXT NOT NULL DEFAULT '';
UPDATE tokens SET memo_folded = LOWER(memo);
"#,
    r#"
ALTER TABLE hits ADD COLUMN dedupe_key TEXT;
CREATE INDEX hits_dedupe ON hits (token_id, dedupe_key);
CREATE TABLE token_files (
    token_id TEXT NOT NULL,
    name TEXT NOT NULL,
    content_type TEXT NOT NULL,
    data {BYTES} NOT NULL,
    PRIMARY KEY (token_id, name)
);
"#,
    r#"
ALTER TABLE api_keys ADD COLUMN created_by TEXT NOT NULL DEFAULT 'cli';
CREATE TABLE factory_tokens (
    id TEXT PRIMARY KEY,
    value_hash TEXT NOT NULL UNIQUE,
    label TEXT NOT NULL,
    flock_id TEXT NOT NULL,
    created_us {INT} NOT NULL,
    expires_us {INT},
    revoked_us {INT},
    last_used_us {INT},
    cidrs TEXT NOT NULL,
    use_count {INT} NOT NULL,
    created_by TEXT NOT NULL
);
"#,
    r#"
CREATE TABLE settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"#,
    r#"
ALTER TABLE tokens ADD COLUMN alert_webhook_url TEXT;
CREATE TABLE alerts (
    id {SERIAL},
    incident_id {INT} NOT NULL,
    hit_id {INT} NOT NULL,
    token_id TEXT NOT NULL,
    output TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    payload TEXT NOT NULL,
    created_us {INT} NOT NULL,
    next_attempt_us {INT} NOT NULL,
    attempts {INT} NOT NULL,
    last_error TEXT,
    delivered_us {INT},
    gave_up_us {INT}
);
CREATE INDEX alerts_due ON alerts (delivered_us, gave_up_us, next_attempt_us);
"#,
    r#"
ALTER TABLE tokens ADD COLUMN alert_email TEXT;
"#,
    r#"
ALTER TABLE tokens ADD COLUMN alert_cooldown_secs {INT};
ALTER TABLE tokens ADD COLUMN alert_max_per_hour {INT};
ALTER TABLE tokens ADD COLUMN ignore_sources TEXT NOT NULL DEFAULT '[]';
ALTER TABLE incidents ADD COLUMN alerted {INT} NOT NULL DEFAULT 1;
ALTER TABLE incidents ADD COLUMN last_hit_us {INT} NOT NULL DEFAULT 0;
ALTER TABLE incidents ADD COLUMN group_key TEXT NOT NULL DEFAULT '';
UPDATE incidents SET last_hit_us = created_us;
ALTER TABLE hits ADD COLUMN alert_status TEXT NOT NULL DEFAULT 'alerted';
UPDATE hits SET alert_status = 'ignored' WHERE incident_id = 0;
CREATE INDEX incidents_by_source ON incidents (token_id, src_ip, group_key, last_hit_us);
CREATE INDEX incidents_alerted ON incidents (token_id, alerted, created_us);
CREATE TABLE alert_outputs (
    id TEXT PRIMARY KEY,
    flock_id TEXT,
    output TEXT NOT NULL,
    created_us {INT} NOT NULL,
    created_by TEXT NOT NULL
);
"#,
    r#"
ALTER TABLE incidents ADD COLUMN updated_id {INT} NOT NULL DEFAULT 0;
ALTER TABLE incidents ADD COLUMN notified {INT} NOT NULL DEFAULT 0;
ALTER TABLE incidents ADD COLUMN search_text TEXT NOT NULL DEFAULT '';
ALTER TABLE incidents ADD COLUMN src_port {INT} NOT NULL DEFAULT 0;
ALTER TABLE incidents ADD COLUMN dst_ip TEXT NOT NULL DEFAULT '';
ALTER TABLE incidents ADD COLUMN dst_port {INT} NOT NULL DEFAULT 0;
UPDATE incidents SET updated_id = id;
UPDATE incidents SET notified = 1 WHERE id IN (SELECT incident_id FROM alerts WHERE delivered_us IS NOT NULL);
UPDATE incidents SET src_port = COALESCE((SELECT h.src_port FROM hits h WHERE h.incident_id = incidents.id ORDER BY h.id LIMIT 1), 0);
CREATE TABLE counters (name TEXT PRIMARY KEY, value {INT} NOT NULL);
INSERT INTO counters (name, value) SELECT 'incident_updates', COALESCE(MAX(id), 0) FROM incidents;
CREATE INDEX incidents_updated ON incidents (updated_id, id);
ALTER TABLE hits ADD COLUMN dst_ip TEXT NOT NULL DEFAULT '';
ALTER TABLE hits ADD COLUMN dst_port {INT} NOT NULL DEFAULT 0;
ALTER TABLE tokens ADD COLUMN search_words TEXT NOT NULL DEFAULT '';
ALTER TABLE factory_tokens ADD COLUMN value_sealed TEXT;
ALTER TABLE api_keys ADD COLUMN annotations TEXT NOT NULL DEFAULT '[]';
ALTER TABLE alerts ADD COLUMN claimed_by TEXT;
"#,
    r#"
INSERT INTO settings (name, value)
SELECT 'provision_spent', key_id FROM api_keys WHERE created_by = 'provision' AND role = 'admin' ORDER BY key_id LIMIT 1;
"#,
    r#"
ALTER TABLE hits ADD COLUMN private_data TEXT;
CREATE TABLE token_keys (
    scheme TEXT NOT NULL,
    value TEXT NOT NULL,
    token_id TEXT NOT NULL,
    PRIMARY KEY (scheme, value)
);
CREATE INDEX token_keys_token ON token_keys (token_id);
"#,
    r#"
CREATE TABLE poller_state (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_us {INT} NOT NULL
);
CREATE TABLE ingested_objects (
    source TEXT NOT NULL,
    object_key TEXT NOT NULL,
    done_us {INT} NOT NULL,
    PRIMARY KEY (source, object_key)
);
CREATE INDEX ingested_objects_done ON ingested_objects (done_us);
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_us {INT} NOT NULL
);
CREATE TABLE retirements (
    id {SERIAL},
    token_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    params TEXT NOT NULL,
    created_us {INT} NOT NULL,
    attempts {INT} NOT NULL,
    next_try_us {INT} NOT NULL,
    last_error TEXT
);
CREATE INDEX retirements_due ON retirements (next_try_us, id);
CREATE UNIQUE INDEX hits_events ON hits (token_id, dedupe_key) WHERE substr(dedupe_key, 1, 6) = 'event:';
"#,
];

/// The step ([`STEPS`], counted from 1) after which, in the same transaction, the store moves
/// release 605748e's `_report_nonce` out of hit data (see the module docs).
pub const PRIVATE_DATA_STEP: usize = 11;

/// The type names a step's placeholders stand for on one engine.
#[derive(Debug, Clone, Copy)]
pub struct Types {
    /// `{INT}`: a 64-bit integer (SQLite's INTEGER is one).
    pub int: &'static str,
    /// `{SERIAL}`: an integer primary key the engine numbers, never reusing a number.
    pub serial: &'static str,
    /// `{BYTES}`: a byte string.
    pub bytes: &'static str,
}

pub const SQLITE: Types = Types { int: "INTEGER", serial: "INTEGER PRIMARY KEY AUTOINCREMENT", bytes: "BLOB" };

pub const POSTGRES: Types =
    Types { int: "BIGINT", serial: "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", bytes: "BYTEA" };

/// `step` with its placeholders replaced by `types`' names.
pub fn render(step: &str, types: Types) -> String {
    step.replace("{SERIAL}", types.serial).replace("{INT}", types.int).replace("{BYTES}", types.bytes)
}

/// The steps of [`STEPS`] rendered for one engine, in order (step N, as `trapline_schema.version`
/// records it, is the N-th).
pub fn rendered(types: Types) -> impl Iterator<Item = String> {
    STEPS.iter().map(move |s| render(s, types))
}
#[cfg(test)]
mod tests {
    use super::*;

    /// The event keys the unique index covers are exactly the pipeline's.
    #[test]
    fn the_event_index_matches_the_event_key_prefix() {
        let prefix = crate::hits::EVENT_KEY_PREFIX;
        assert!(STEPS[11].contains(&format!("substr(dedupe_key, 1, {}) = '{prefix}'", prefix.len())));
    }

    #[test]
    fn every_placeholder_is_rendered_on_both_engines() {
        for types in [SQLITE, POSTGRES] {
            for (i, step) in rendered(types).enumerate() {
                assert!(!step.contains('{') && !step.contains('}'), "step {} keeps a placeholder: {step}", i + 1);
            }
        }
    }
}

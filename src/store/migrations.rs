//! Schema migrations, one list per engine, applied in order at start-up.
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
//! Conventions both schemas follow so one SQL text works on both: integers are BIGINT (SQLite
//! INTEGER), booleans are BIGINT 0/1, times are BIGINT microseconds since the epoch (UTC), JSON
//! is TEXT.

/// Steps for SQLite. Never edit a released step; append a new one.
pub const SQLITE: &[&str] = &[
    r#"
CREATE TABLE flocks (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_us INTEGER NOT NULL
);
INSERT INTO flocks (id, name, created_us) VALUES ('flock:default', 'Default Flock', 0);
CREATE TABLE api_keys (
    key_id TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    flock_id TEXT,
    active INTEGER NOT NULL,
    expire_us INTEGER NOT NULL,
    description TEXT NOT NULL,
    created_us INTEGER NOT NULL,
    last_used_us INTEGER
);
CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    memo TEXT NOT NULL,
    flock_id TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    created_us INTEGER NOT NULL,
    updated_id INTEGER NOT NULL,
    params TEXT NOT NULL,
    created_by TEXT NOT NULL
);
CREATE INDEX tokens_order ON tokens (created_us, id);
CREATE INDEX tokens_flock ON tokens (flock_id);
CREATE TABLE incidents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    token_id TEXT NOT NULL,
    flock_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    memo TEXT NOT NULL,
    channel TEXT NOT NULL,
    src_ip TEXT NOT NULL,
    created_us INTEGER NOT NULL,
    updated_us INTEGER NOT NULL,
    acknowledged INTEGER NOT NULL
);
CREATE INDEX incidents_token ON incidents (token_id);
CREATE INDEX incidents_created ON incidents (created_us);
CREATE TABLE hits (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id INTEGER NOT NULL,
    token_id TEXT NOT NULL,
    time_us INTEGER NOT NULL,
    channel TEXT NOT NULL,
    src_ip TEXT NOT NULL,
    src_port INTEGER NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX hits_incident ON hits (incident_id);
CREATE INDEX hits_token ON hits (token_id);
CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time_us INTEGER NOT NULL,
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
    data BLOB NOT NULL,
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
    created_us INTEGER NOT NULL,
    expires_us INTEGER,
    revoked_us INTEGER,
    last_used_us INTEGER,
    cidrs TEXT NOT NULL,
    use_count INTEGER NOT NULL,
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
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id INTEGER NOT NULL,
    hit_id INTEGER NOT NULL,
    token_id TEXT NOT NULL,
    output TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    payload TEXT NOT NULL,
    created_us INTEGER NOT NULL,
    next_attempt_us INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    last_error TEXT,
    delivered_us INTEGER,
    gave_up_us INTEGER
);
CREATE INDEX alerts_due ON alerts (delivered_us, gave_up_us, next_attempt_us);
"#,
    r#"
ALTER TABLE tokens ADD COLUMN alert_email TEXT;
"#,
    r#"
ALTER TABLE tokens ADD COLUMN alert_cooldown_secs INTEGER;
ALTER TABLE tokens ADD COLUMN alert_max_per_hour INTEGER;
ALTER TABLE tokens ADD COLUMN ignore_sources TEXT NOT NULL DEFAULT '[]';
ALTER TABLE incidents ADD COLUMN alerted INTEGER NOT NULL DEFAULT 1;
ALTER TABLE incidents ADD COLUMN last_hit_us INTEGER NOT NULL DEFAULT 0;
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
    created_us INTEGER NOT NULL,
    created_by TEXT NOT NULL
);
"#,
    r#"
ALTER TABLE incidents ADD COLUMN updated_id INTEGER NOT NULL DEFAULT 0;
ALTER TABLE incidents ADD COLUMN notified INTEGER NOT NULL DEFAULT 0;
ALTER TABLE incidents ADD COLUMN search_text TEXT NOT NULL DEFAULT '';
ALTER TABLE incidents ADD COLUMN src_port INTEGER NOT NULL DEFAULT 0;
ALTER TABLE incidents ADD COLUMN dst_ip TEXT NOT NULL DEFAULT '';
ALTER TABLE incidents ADD COLUMN dst_port INTEGER NOT NULL DEFAULT 0;
UPDATE incidents SET updated_id = id;
UPDATE incidents SET notified = 1 WHERE id IN (SELECT incident_id FROM alerts WHERE delivered_us IS NOT NULL);
UPDATE incidents SET src_port = COALESCE((SELECT h.src_port FROM hits h WHERE h.incident_id = incidents.id ORDER BY h.id LIMIT 1), 0);
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO counters (name, value) SELECT 'incident_updates', COALESCE(MAX(id), 0) FROM incidents;
CREATE INDEX incidents_updated ON incidents (updated_id, id);
ALTER TABLE hits ADD COLUMN dst_ip TEXT NOT NULL DEFAULT '';
ALTER TABLE hits ADD COLUMN dst_port INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tokens ADD COLUMN search_words TEXT NOT NULL DEFAULT '';
ALTER TABLE factory_tokens ADD COLUMN value_sealed TEXT;
ALTER TABLE api_keys ADD COLUMN annotations TEXT NOT NULL DEFAULT '[]';
ALTER TABLE alerts ADD COLUMN claimed_by TEXT;
"#,
    r#"
INSERT INTO settings (name, value)
SELECT 'provision_spent', key_id FROM api_keys WHERE created_by = 'provision' AND role = 'admin' ORDER BY key_id LIMIT 1;
"#,
];

/// Steps for PostgreSQL, one for one with [`SQLITE`].
pub const POSTGRES: &[&str] = &[
    r#"
CREATE TABLE flocks (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_us BIGINT NOT NULL
);
INSERT INTO flocks (id, name, created_us) VALUES ('flock:default', 'Default Flock', 0);
CREATE TABLE api_keys (
    key_id TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    flock_id TEXT,
    active BIGINT NOT NULL,
    expire_us BIGINT NOT NULL,
    description TEXT NOT NULL,
    created_us BIGINT NOT NULL,
    last_used_us BIGINT
);
CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    memo TEXT NOT NULL,
    flock_id TEXT NOT NULL,
    enabled BIGINT NOT NULL,
    created_us BIGINT NOT NULL,
    updated_id BIGINT NOT NULL,
    params TEXT NOT NULL,
    created_by TEXT NOT NULL
);
CREATE INDEX tokens_order ON tokens (created_us, id);
CREATE INDEX tokens_flock ON tokens (flock_id);
CREATE TABLE incidents (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    token_id TEXT NOT NULL,
    flock_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    memo TEXT NOT NULL,
    channel TEXT NOT NULL,
    src_ip TEXT NOT NULL,
    created_us BIGINT NOT NULL,
    updated_us BIGINT NOT NULL,
    acknowledged BIGINT NOT NULL
);
CREATE INDEX incidents_token ON incidents (token_id);
CREATE INDEX incidents_created ON incidents (created_us);
CREATE TABLE hits (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    incident_id BIGINT NOT NULL,
    token_id TEXT NOT NULL,
    time_us BIGINT NOT NULL,
    channel TEXT NOT NULL,
    src_ip TEXT NOT NULL,
    src_port BIGINT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX hits_incident ON hits (incident_id);
CREATE INDEX hits_token ON hits (token_id);
CREATE TABLE audit_log (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    time_us BIGINT NOT NULL,
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
    data BYTEA NOT NULL,
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
    created_us BIGINT NOT NULL,
    expires_us BIGINT,
    revoked_us BIGINT,
    last_used_us BIGINT,
    cidrs TEXT NOT NULL,
    use_count BIGINT NOT NULL,
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
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    incident_id BIGINT NOT NULL,
    hit_id BIGINT NOT NULL,
    token_id TEXT NOT NULL,
    output TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    payload TEXT NOT NULL,
    created_us BIGINT NOT NULL,
    next_attempt_us BIGINT NOT NULL,
    attempts BIGINT NOT NULL,
    last_error TEXT,
    delivered_us BIGINT,
    gave_up_us BIGINT
);
CREATE INDEX alerts_due ON alerts (delivered_us, gave_up_us, next_attempt_us);
"#,
    r#"
ALTER TABLE tokens ADD COLUMN alert_email TEXT;
"#,
    r#"
ALTER TABLE tokens ADD COLUMN alert_cooldown_secs BIGINT;
ALTER TABLE tokens ADD COLUMN alert_max_per_hour BIGINT;
ALTER TABLE tokens ADD COLUMN ignore_sources TEXT NOT NULL DEFAULT '[]';
ALTER TABLE incidents ADD COLUMN alerted BIGINT NOT NULL DEFAULT 1;
ALTER TABLE incidents ADD COLUMN last_hit_us BIGINT NOT NULL DEFAULT 0;
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
    created_us BIGINT NOT NULL,
    created_by TEXT NOT NULL
);
"#,
    r#"
ALTER TABLE incidents ADD COLUMN updated_id BIGINT NOT NULL DEFAULT 0;
ALTER TABLE incidents ADD COLUMN notified BIGINT NOT NULL DEFAULT 0;
ALTER TABLE incidents ADD COLUMN search_text TEXT NOT NULL DEFAULT '';
ALTER TABLE incidents ADD COLUMN src_port BIGINT NOT NULL DEFAULT 0;
ALTER TABLE incidents ADD COLUMN dst_ip TEXT NOT NULL DEFAULT '';
ALTER TABLE incidents ADD COLUMN dst_port BIGINT NOT NULL DEFAULT 0;
UPDATE incidents SET updated_id = id;
UPDATE incidents SET notified = 1 WHERE id IN (SELECT incident_id FROM alerts WHERE delivered_us IS NOT NULL);
UPDATE incidents SET src_port = COALESCE((SELECT h.src_port FROM hits h WHERE h.incident_id = incidents.id ORDER BY h.id LIMIT 1), 0);
CREATE TABLE counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL);
INSERT INTO counters (name, value) SELECT 'incident_updates', COALESCE(MAX(id), 0) FROM incidents;
CREATE INDEX incidents_updated ON incidents (updated_id, id);
ALTER TABLE hits ADD COLUMN dst_ip TEXT NOT NULL DEFAULT '';
ALTER TABLE hits ADD COLUMN dst_port BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tokens ADD COLUMN search_words TEXT NOT NULL DEFAULT '';
ALTER TABLE factory_tokens ADD COLUMN value_sealed TEXT;
ALTER TABLE api_keys ADD COLUMN annotations TEXT NOT NULL DEFAULT '[]';
ALTER TABLE alerts ADD COLUMN claimed_by TEXT;
"#,
    r#"
INSERT INTO settings (name, value)
SELECT 'provision_spent', key_id FROM api_keys WHERE created_by = 'provision' AND role = 'admin' ORDER BY key_id LIMIT 1;
"#,
];

#[cfg(test)]
mod tests {
    #[test]
    fn both_engines_have_the_same_number_of_steps() {
        assert_eq!(super::SQLITE.len(), super::POSTGRES.len());
    }
}

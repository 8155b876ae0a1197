//! The core service: every management rule, once, for every dialect.
//!
//! Dialects parse their requests into calls on [`Core`] and shape its answers; they decide
//! nothing themselves. Each call checks the actor's role and flock scope, validates input,
//! and writes its audit entry in the same transaction as the change.

use std::collections::HashMap;
use std::sync::Arc;

use crate::auth::{self, Actor, Permission};
use crate::error::{CoreError, CoreResult};
use crate::ids;
use crate::kinds::{self, Artefact, Params, Site, Uploads};
use crate::model::*;
use crate::net::NetList;
use crate::sealed::SecretBox;
use crate::store::{FlockDeletion, Store, TokenDeletion};

/// Setting names (Falcon customer settings).
const MAX_ACTIVE_TOKENS: &str = "max_active_tokens";
const TOKENS_REQUIRED: &str = "tokens_required";
/// Largest page of an FQL query.
pub const MAX_QUERY_PAGE: i64 = 1000;
/// Actor id (and `created_by`) of the provision key.
pub const PROVISION: &str = "provision";
/// The setting that records, for good, that the provision key has made an admin key.
const PROVISION_SPENT: &str = "provision_spent";
/// Longest memo accepted, in characters (the Console documents 10,000).
pub const MAX_MEMO_CHARS: usize = 10_000;
/// A token as `actor` may see it: a token's own webhook URL is a bearer secret, shown whole
/// only to those who may change tokens (and so set it); others see its host (audit F4).
fn shown(actor: &Actor, mut t: Token) -> Token {
    if !actor.may(Permission::ChangeTokens) {
        t.alert_webhook_url = t.alert_webhook_url.map(|u| crate::outputs::redact::redact(&u));
    }
    t
}

/// Pages are read one row past their `limit` to learn whether more follow: drops that extra
/// row (the first when paging backwards, as rows come in listing order) and says whether it was
/// there.
fn drop_lookahead<T>(rows: &mut Vec<T>, limit: i64, backwards: bool) -> bool {
    let more = rows.len() as i64 > limit;
    if more {
        if backwards {
            rows.remove(0);
        } else {
            rows.truncate(limit as usize);
        }
    }
    more
}

/// Longest description of a key, in characters (factory labels are memos: [`MAX_MEMO_CHARS`]).
pub const MAX_LABEL_CHARS: usize = 1000;
/// Longest flock name accepted, in characters.
pub const MAX_FLOCK_NAME_CHARS: usize = 100;
/// Largest page of tokens one call returns.
pub const MAX_PAGE: i64 = 5000;
/// Page size when the caller names none (the Console documents 10).
pub const DEFAULT_PAGE: i64 = 10;
/// Most tokens one unpaginated listing returns.
pub const MAX_ALL_TOKENS: usize = 20_000;
/// The most incidents one call returns.
pub const MAX_INCIDENTS: i64 = 10_000;
/// Events an incident carries in listings when the caller names no `event_limit`: one source
/// repeating a hit grows one incident without bound, and its hits stay reachable, paged,
/// through [`Core::token_hits`].
pub const DEFAULT_EVENT_LIMIT: i64 = 100;
/// Roughly how much hit data one listing may hold in memory (the JSON of its events); past
/// it the listing ends early and says more follow, so answers stay bounded whatever is stored.
pub const LISTING_BUDGET: usize = 32 * 1024 * 1024;
/// Incidents read from the store at a time while a listing fills.
pub const LISTING_CHUNK: i64 = 200;
/// Longest test-alert description kept, in characters (as SpaceSiren cuts token descriptions).
pub const MAX_TEST_DESCRIPTION: usize = 300;
/// Most annotations one enrolled host may carry.
pub const MAX_ANNOTATIONS: usize = 64;
/// How often (at most) a key's last-used time is written.
const TOUCH_INTERVAL_US: i64 = 60_000_000;

pub struct Core {
    pub store: Arc<dyn Store>,
    pub site: Site,
    failed_logins: FailedLogins,
    /// SHA-256 of the provision key, when the server has one (see [`Core::with_provision_key`]).
    provision_hash: Option<String>,
    /// Alert outputs and rules (see [`Core::with_alerts`]).
    alerts: Arc<crate::alerts::AlertConfig>,
    /// Seals the secrets that must be shown again (see [`Core::with_secrets`]).
    secrets: Arc<SecretBox>,
    /// Where kinds check what they are given (decoding uploads), off the async workers.
    work: Arc<crate::workpool::WorkPool>,
}

/// A freshly made factory token; `value` is shown once and never stored.
#[derive(Debug, Clone)]
pub struct CreatedFactory {
    pub factory: FactoryToken,
    pub value: String,
}

/// Parses a network restriction by [`crate::net::parse_net`]'s rules, as text (`a.b.c.d/n`,
/// `x::/n`; a bare address becomes a /32 or /128). Kept for callers that store networks as
/// text; lists that are asked about use [`crate::net::NetList`].
pub fn parse_cidr(raw: &str) -> CoreResult<String> {
    Ok(crate::net::parse_net(raw)?.to_string())
}

/// Whether `ip` lies in one of `cidrs`, stored networks as text (an empty list allows
/// everything, as a factory token without networks may be used from anywhere).
pub fn ip_allowed(cidrs: &[String], ip: &str) -> bool {
    cidrs.is_empty() || NetList::from_stored(cidrs).contains_text(ip)
}

/// Failed authentications waiting to be written to the audit log, counted per
/// (source, reason, key, dialect). Bounded: past [`MAX_FAILED_KINDS`] distinct sources,
/// further ones are counted under source `*`.
#[derive(Default)]
struct FailedLogins {
    pending: std::sync::Mutex<HashMap<FailureKey, (u64, Micros)>>,
}

/// (source IP, reason, key id or "", dialect) → (count, first seen).
type FailureKey = (String, &'static str, String, &'static str);

const MAX_FAILED_KINDS: usize = 10_000;

impl FailedLogins {
    fn note(&self, src_ip: &str, why: &'static str, key_id: &str, dialect: &'static str) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let mut k = (src_ip.to_string(), why, key_id.to_string(), dialect);
        if pending.len() >= MAX_FAILED_KINDS && !pending.contains_key(&k) {
            k = ("*".into(), why, String::new(), dialect);
        }
        pending.entry(k).or_insert((0, now_us())).0 += 1;
    }

    fn take(&self) -> Vec<AuditEntry> {
        let drained = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        let mut entries: Vec<AuditEntry> = drained
            .into_iter()
            .map(|((src_ip, why, key_id, dialect), (count, first))| AuditEntry {
                time_us: first,
                actor: "anonymous".into(),
                action: "auth_failed".into(),
                target: key_id,
                description: if count == 1 { why.to_string() } else { format!("{why} ({count} attempts)") },
                src_ip,
                dialect: dialect.into(),
            })
            .collect();
        entries.sort_by_key(|e| e.time_us);
        entries
    }
}

/// What a caller asks for when creating a token.
#[derive(Debug, Clone, Default)]
pub struct NewToken {
    pub kind: String,
    pub memo: String,
    pub flock_id: Option<String>,
    /// Kind-specific parameters, as sent.
    pub params: Params,
    /// Files sent with the request (multipart), by field name.
    pub uploads: Uploads,
    /// The token's own alert settings.
    pub alerting: AlertSettings,
}

/// A token's own alert settings as a caller sends them, as text for the core to check. None
/// leaves a setting as it is (or unset, on create); an empty text clears it (back to the
/// server's default, for cooldown and rate limit).
#[derive(Debug, Clone, Default)]
pub struct AlertSettings {
    /// A webhook this token's alerts also go to.
    pub webhook_url: Option<String>,
    /// Recipients (`a@x;b@y`) this token's alerts are also mailed to.
    pub email: Option<String>,
    /// Seconds between alerts: -1 once only, 0 every incident (see [`crate::noise`]).
    pub cooldown: Option<String>,
    /// Most alerts per hour, 0 for no limit.
    pub max_per_hour: Option<String>,
    /// Comma-separated addresses or networks whose hits of this token never alert.
    pub ignore_sources: Option<String>,
}

impl AlertSettings {
    pub fn is_empty(&self) -> bool {
        self.webhook_url.is_none()
            && self.email.is_none()
            && self.cooldown.is_none()
            && self.max_per_hour.is_none()
            && self.ignore_sources.is_none()
    }

    /// Whether any setting is given a value (blank texts, which on create change nothing,
    /// do not count).
    pub fn sets_anything(&self) -> bool {
        [&self.webhook_url, &self.email, &self.cooldown, &self.max_per_hour, &self.ignore_sources]
            .iter()
            .any(|v| v.as_deref().is_some_and(|t| !t.trim().is_empty()))
    }
}

/// A page of tokens: those asked for, whether more lie beyond them in the direction asked,
/// and how many match in all.
#[derive(Debug, Clone)]
pub struct TokenPage {
    pub tokens: Vec<Token>,
    pub more: bool,
    pub total: i64,
}

/// A page of incidents, as [`TokenPage`], with the greatest `updated_id` of all that match
/// (so a poller that reads the first page knows where the whole listing ends).
#[derive(Debug, Clone)]
pub struct IncidentPage {
    pub incidents: Vec<Incident>,
    pub more: bool,
    pub total: i64,
    pub max_updated_id: Option<i64>,
}

/// A freshly made API key; `secret` is shown once and never stored.
#[derive(Debug, Clone)]
pub struct CreatedKey {
    pub key: ApiKey,
    pub secret: String,
}

/// An incident filter in words, for audit entries.
fn describe_filter(f: &IncidentFilter) -> String {
    let mut parts = Vec::new();
    if let Some(id) = f.id {
        parts.push(format!("incident {id}"));
    }
    if let Some(t) = &f.token_id {
        parts.push(format!("token {t}"));
    }
    if let Some(ip) = &f.src_ip {
        parts.push(format!("source {ip}"));
    }
    if let Some(fl) = &f.flock_id {
        parts.push(format!("flock {fl}"));
    }
    if let Some(a) = f.acknowledged {
        parts.push(if a { "acknowledged".into() } else { "unacknowledged".into() });
    }
    if let Some(t) = f.created_before_us {
        parts.push(format!("created before {}", crate::model::rfc3339(t)));
    }
    if parts.is_empty() {
        "all incidents".into()
    } else {
        parts.join(", ")
    }
}

/// A key description or factory label: may be empty, at most `max` characters.
fn validate_label(name: &'static str, label: &str, max: usize) -> CoreResult<String> {
    let label = label.trim();
    if label.chars().count() > max {
        return Err(CoreError::invalid(name, format!("longer than {max} characters")));
    }
    Ok(label.to_string())
}

fn validate_memo(memo: &str) -> CoreResult<String> {
    let memo = memo.trim();
    if memo.is_empty() {
        return Err(CoreError::EmptyMemo);
    }
    if memo.chars().count() > MAX_MEMO_CHARS {
        return Err(CoreError::invalid("memo", format!("longer than {MAX_MEMO_CHARS} characters")));
    }
    Ok(memo.to_string())
}

fn validate_flock_name(name: &str) -> CoreResult<String> {
    let name = name.trim();
    if name.is_empty() {
        return Err(CoreError::FlockNameEmpty);
    }
    if name.chars().count() > MAX_FLOCK_NAME_CHARS {
        return Err(CoreError::FlockNameTooLong);
    }
    Ok(name.to_string())
}

/// The sealing context of a factory token's value.
fn factory_context(id: &str) -> String {
    format!("factory:{id}")
}

impl Core {
    pub fn new(store: Arc<dyn Store>, site: Site) -> Core {
        let alerts = Arc::new(crate::alerts::AlertConfig::default());
        Core {
            store,
            site,
            failed_logins: FailedLogins::default(),
            provision_hash: None,
            alerts,
            secrets: Arc::new(SecretBox::ephemeral()),
            work: Arc::new(crate::workpool::WorkPool::for_host()),
        }
    }

    /// Sets the key that seals recoverable secrets (the server's `secrets.key`); without it,
    /// values sealed now cannot be shown after a restart.
    pub fn with_secrets(mut self, secrets: Arc<SecretBox>) -> Core {
        self.secrets = secrets;
        self
    }

    /// Sets the alert outputs and rules.
    pub fn with_alerts(mut self, alerts: Arc<crate::alerts::AlertConfig>) -> Core {
        self.alerts = alerts;
        self
    }

    /// Checks a token's alert settings and turns them into a change (and a description of it
    /// for the audit log).
    fn check_alert_settings(&self, a: &AlertSettings) -> CoreResult<(TokenChange, Vec<String>)> {
        fn given(v: &Option<String>) -> Option<Option<&str>> {
            v.as_deref().map(|t| Some(t.trim()).filter(|t| !t.is_empty()))
        }
        fn number(field: &'static str, text: &str, check: fn(i64) -> Result<i64, String>) -> CoreResult<i64> {
            let n: i64 = text.parse().map_err(|_| CoreError::invalid(field, "must be a whole number"))?;
            check(n).map_err(|e| CoreError::invalid(field, e))
        }
        let mut change = TokenChange::default();
        let mut said = Vec::new();
        if let Some(url) = given(&a.webhook_url) {
            let url = url
                .map(|u| {
                    crate::outputs::webhook::validate_url(u, self.alerts.allow_private)
                        .map_err(|e| CoreError::invalid("alert_webhook_url", e))
                })
                .transpose()?;
            said.push(url.as_ref().map_or("token webhook removed".into(), |u| {
                format!("alerts also to {}", crate::outputs::redact::redact(u))
            }));
            change.alert_webhook_url = Some(url);
        }
        if let Some(list) = given(&a.email) {
            let list = list
                .map(|l| {
                    if self.alerts.smtp_url.is_none() {
                        return Err(CoreError::invalid("alert_email", "needs an SMTP server (--smtp-url)"));
                    }
                    crate::outputs::email::parse_recipients(l)
                        .map(|to| to.join(";"))
                        .map_err(|e| CoreError::invalid("alert_email", e))
                })
                .transpose()?;
            said.push(list.as_ref().map_or("token e-mail removed".into(), |l| format!("alerts also mailed to {l}")));
            change.alert_email = Some(list);
        }
        if let Some(v) = given(&a.cooldown) {
            let v = v.map(|t| number("alert_cooldown", t, crate::noise::check_cooldown)).transpose()?;
            said.push(v.map_or("default alert cooldown".into(), |n| format!("alert cooldown {n}")));
            change.alert_cooldown_secs = Some(v);
        }
        if let Some(v) = given(&a.max_per_hour) {
            let v = v.map(|t| number("alert_max_per_hour", t, crate::noise::check_max_per_hour)).transpose()?;
            said.push(v.map_or("default alert rate limit".into(), |n| format!("at most {n} alerts per hour")));
            change.alert_max_per_hour = Some(v);
        }
        if let Some(v) = given(&a.ignore_sources) {
            let list = NetList::parse(v.unwrap_or("").split(','))
                .map_err(|e| CoreError::invalid("ignore_sources", CoreError::from(e).to_string()))?
                .texts();
            if list.len() > crate::noise::MAX_IGNORE_SOURCES {
                return Err(CoreError::invalid(
                    "ignore_sources",
                    format!("at most {} networks", crate::noise::MAX_IGNORE_SOURCES),
                ));
            }
            said.push(format!("ignore list: {}", if list.is_empty() { "none".into() } else { list.join(", ") }));
            change.ignore_sources = Some(list);
        }
        Ok((change, said))
    }

    /// Changes a token's own alert settings (webhook, e-mail, cooldown, rate limit, ignore
    /// list); fields left None stay as they are.
    pub async fn set_alert_settings(&self, actor: &Actor, id: &str, settings: &AlertSettings) -> CoreResult<Token> {
        self.require(actor, Permission::ChangeTokens).await?;
        let (change, said) = self.check_alert_settings(settings)?;
        self.change_token(actor, id, change, "token_update", said.join("; ")).await
    }

    /// Queues a clearly labelled test alert, carrying `description` (cut to
    /// [`MAX_TEST_DESCRIPTION`] characters), for every output; returns how many (0 when none
    /// is configured, which is logged).
    pub async fn send_test_alert(&self, actor: &Actor, description: Option<&str>) -> CoreResult<usize> {
        self.require(actor, Permission::ManageIncidents).await?;
        let managed = self.store.list_alert_outputs().await?;
        let description: Option<String> = description
            .map(|d| d.trim().chars().take(MAX_TEST_DESCRIPTION).collect::<String>())
            .filter(|d| !d.is_empty());
        let alerts = crate::alerts::test_alerts(&self.alerts, &managed, &actor.id, description.as_deref());
        if alerts.is_empty() {
            tracing::warn!(by = %actor.id, "test alert requested, but no alert output is configured");
            return Ok(0);
        }
        let audit = self.audit(actor, "test_alert", "outputs", format!("test alert to {} outputs", alerts.len()));
        self.store.insert_alerts(&alerts, &format!("test-{}", ids::hex_id(8)), &audit).await?;
        Ok(alerts.len())
    }

    /// The alert outputs: those from the configuration (fixed while running) and those added
    /// through the API.
    pub async fn list_alert_outputs(&self, actor: &Actor) -> CoreResult<(Vec<serde_json::Value>, Vec<AlertOutput>)> {
        self.require(actor, Permission::ManageOutputs).await?;
        Ok((self.alerts.outputs.clone(), self.store.list_alert_outputs().await?))
    }

    /// Adds an output (`TYPE=TARGET`, as `--alert-outputs` takes it) for every token, or for
    /// the tokens of `flock_id`. Webhook targets are checked now, and again at delivery.
    pub async fn add_alert_output(&self, actor: &Actor, spec: &str, flock_id: Option<&str>) -> CoreResult<AlertOutput> {
        self.require(actor, Permission::ManageOutputs).await?;
        if spec.len() > 2048 {
            return Err(CoreError::invalid("output", "is too long"));
        }
        let output = crate::outputs::parse_output(spec, self.alerts.allow_private)
            .map_err(|e| CoreError::invalid("output", e))?;
        if output["type"] == "email" && self.alerts.smtp_url.is_none() {
            return Err(CoreError::invalid("output", "e-mail needs an SMTP server (--smtp-url)"));
        }
        let flock_id = flock_id.map(str::trim).filter(|f| !f.is_empty());
        if let Some(f) = flock_id {
            if self.store.get_flock(f).await?.is_none() {
                return Err(CoreError::FlockNotFound);
            }
        }
        let existing = self.store.list_alert_outputs().await?;
        if existing.iter().any(|o| o.output == output && o.flock_id.as_deref() == flock_id) {
            return Err(CoreError::invalid("output", "is already configured"));
        }
        let o = AlertOutput {
            id: format!("out_{}", ids::hex_id(8)),
            flock_id: flock_id.map(str::to_string),
            output,
            created_us: now_us(),
            created_by: actor.id.clone(),
        };
        let scope = o.flock_id.as_deref().unwrap_or("every flock");
        let audit = self.audit(actor, "output_add", &o.id, format!("{} output for {scope}", o.output["type"]));
        self.store.insert_alert_output(&o, &audit).await?;
        Ok(o)
    }

    /// Removes an output added through the API; false when there is none with that id.
    pub async fn delete_alert_output(&self, actor: &Actor, id: &str) -> CoreResult<bool> {
        self.require(actor, Permission::ManageOutputs).await?;
        let audit = self.audit(actor, "output_delete", id, "output removed".into());
        Ok(self.store.delete_alert_output(id.trim(), &audit).await?)
    }

    /// Every stored hit of a token, ignored and throttled ones included, newest first.
    /// A token's stored hits, newest first: at most `limit` (1 to 1000), below the hit id
    /// `before` when given, and whether more follow.
    pub async fn token_hits(
        &self,
        actor: &Actor,
        id: &str,
        limit: i64,
        before: Option<i64>,
    ) -> CoreResult<(Vec<Hit>, bool)> {
        self.require(actor, Permission::Read).await?;
        let token = self.visible_token(actor, id).await?;
        let limit = limit.clamp(1, 1000);
        let mut hits = self.store.token_hits(&token.id, limit + 1, before).await?;
        let more = drop_lookahead(&mut hits, limit, false);
        Ok((hits, more))
    }

    /// The alert outbox, newest first (deliveries still pending or given up, or all).
    pub async fn list_alerts(&self, actor: &Actor, undelivered_only: bool, limit: i64) -> CoreResult<Vec<Alert>> {
        self.require(actor, Permission::Read).await?;
        if actor.flock_id.is_some() {
            return self.deny(actor, Permission::Read, "alerts").await;
        }
        Ok(self.store.list_alerts(undelivered_only, limit.clamp(1, 1000)).await?)
    }

    /// Arms the provision key: it may create keys until it has made an admin key.
    pub fn with_provision_key(mut self, value: &str) -> Core {
        self.provision_hash = Some(auth::hash_secret(value));
        self
    }

    fn audit(&self, actor: &Actor, action: &str, target: &str, description: String) -> AuditEntry {
        AuditEntry {
            time_us: now_us(),
            actor: actor.id.clone(),
            action: action.into(),
            target: target.into(),
            description,
            src_ip: actor.src_ip.clone(),
            dialect: actor.dialect.into(),
        }
    }

    /// Checks a permission; a refusal is itself audited.
    async fn require(&self, actor: &Actor, p: Permission) -> CoreResult<()> {
        if actor.may(p) {
            return Ok(());
        }
        self.deny(actor, p, "").await
    }

    async fn deny<T>(&self, actor: &Actor, p: Permission, target: &str) -> CoreResult<T> {
        let entry = self.audit(actor, "permission_denied", target, format!("refused: may not {}", p.describe()));
        self.store.append_audit(&entry).await?;
        Err(CoreError::Forbidden(p))
    }

    // ------------------------------------------------------------------ credentials

    /// Turns a presented secret into an actor. Failures are counted in memory and reach the
    /// audit log through [`Core::flush_failed_logins`], so a flood of bad credentials costs no
    /// storage write per request.
    pub async fn authenticate(&self, secret: Option<&str>, src_ip: &str, dialect: &'static str) -> CoreResult<Actor> {
        let secret = match secret.map(str::trim) {
            Some(s) if !s.is_empty() => s,
            _ => {
                self.failed_logins.note(src_ip, "no credential", "", dialect);
                return Err(CoreError::Unauthenticated);
            }
        };
        let hash = auth::hash_secret(secret);
        let key = match self.store.api_key_by_hash(&hash).await? {
            Some(k) if auth::ct_eq(&k.secret_hash, &hash) => k,
            _ => {
                self.failed_logins.note(src_ip, "unknown credential", "", dialect);
                return Err(CoreError::Unauthenticated);
            }
        };
        let now = now_us();
        if let Some(why) = auth::key_unusable(&key, now) {
            self.failed_logins.note(src_ip, why, &key.key_id, dialect);
            return Err(CoreError::Unauthenticated);
        }
        if key.last_used_us.is_none_or(|t| now - t > TOUCH_INTERVAL_US) {
            // Bookkeeping only: a busy store must not turn a valid request away.
            if let Err(e) = self.store.touch_api_key(&key.key_id, now).await {
                tracing::warn!(error = %e, key = %key.key_id, "could not record key use");
            }
        }
        Ok(Actor { id: key.key_id, role: key.role, flock_id: key.flock_id, src_ip: src_ip.into(), dialect })
    }

    /// Writes the failed authentications counted since the last call to the audit log, one
    /// entry per (source, reason, key, dialect). Returns how many entries it wrote.
    pub async fn flush_failed_logins(&self) -> CoreResult<usize> {
        let entries = self.failed_logins.take();
        for e in &entries {
            self.store.append_audit(e).await?;
        }
        Ok(entries.len())
    }

    /// Makes a new API key. `by` is who asks (an admin actor, or the local CLI).
    pub async fn create_key(
        &self,
        by: &Actor,
        role: Role,
        flock_id: Option<String>,
        description: String,
    ) -> CoreResult<CreatedKey> {
        self.create_key_with(by, role, flock_id, description, true, 0).await
    }

    /// [`Core::create_key`] with the key's state set: `active`, and `expire_us` (0 = never).
    pub async fn create_key_with(
        &self,
        by: &Actor,
        role: Role,
        flock_id: Option<String>,
        description: String,
        active: bool,
        expire_us: Micros,
    ) -> CoreResult<CreatedKey> {
        self.require(by, Permission::ManageKeys).await?;
        if by.flock_id.is_some() {
            // A key limited to one flock cannot mint keys.
            return self.deny(by, Permission::ManageKeys, "").await;
        }
        if let Some(f) = &flock_id {
            if self.store.get_flock(f).await?.is_none() {
                return Err(CoreError::FlockNotFound);
            }
        }
        let description = validate_label("description", &description, MAX_LABEL_CHARS)?;
        if role == Role::Deploy && flock_id.is_none() {
            return Err(CoreError::invalid("flock", "is required for deploy keys: they work inside one flock"));
        }
        let (mut key, secret) = Self::new_key(role, flock_id, description, &by.id);
        key.active = active;
        key.expire_us = expire_us;
        let audit = self.audit(
            by,
            "key_create",
            &key.key_id,
            format!(
                "created {} key{}",
                role.as_str(),
                key.flock_id.as_ref().map(|f| format!(" for {f}")).unwrap_or_default()
            ),
        );
        if by.id == PROVISION && role == Role::Admin {
            // Spent for good once it has made an admin, whatever becomes of that key.
            if !self.store.insert_api_key_once(&key, &audit, PROVISION_SPENT).await? {
                self.failed_logins.note(&by.src_ip, "provision key already used for an admin key", "", by.dialect);
                return Err(CoreError::Unauthenticated);
            }
            return Ok(CreatedKey { key, secret });
        }
        self.store.insert_api_key(&key, &audit).await?;
        Ok(CreatedKey { key, secret })
    }

    fn new_key(role: Role, flock_id: Option<String>, description: String, created_by: &str) -> (ApiKey, String) {
        let secret = ids::secret();
        let key = ApiKey {
            key_id: ids::key_id(),
            secret_hash: auth::hash_secret(&secret),
            role,
            flock_id,
            active: true,
            expire_us: 0,
            description,
            created_us: now_us(),
            last_used_us: None,
            created_by: created_by.to_string(),
            annotations: Vec::new(),
        };
        (key, secret)
    }

    /// On a store with no keys at all, makes the first admin key. None when keys exist. The
    /// check and the insert are one transaction, so of several nodes starting at once on an
    /// empty database exactly one makes (and prints) the key.
    pub async fn bootstrap_admin(&self) -> CoreResult<Option<CreatedKey>> {
        if self.store.count_api_keys().await? > 0 {
            return Ok(None);
        }
        let (key, secret) =
            Self::new_key(Role::Admin, None, "first admin key, made at first start".into(), "bootstrap");
        let audit = self.audit(&Actor::local(), "key_create", &key.key_id, "created the first admin key".into());
        Ok(self.store.insert_first_api_key(&key, &audit).await?.then_some(CreatedKey { key, secret }))
    }

    /// A key presented as id + secret (SpaceSiren): both must match.
    pub async fn authenticate_pair(
        &self,
        key_id: Option<&str>,
        secret: Option<&str>,
        src_ip: &str,
        dialect: &'static str,
    ) -> CoreResult<Actor> {
        let actor = self.authenticate(secret, src_ip, dialect).await?;
        if key_id.is_some_and(|k| auth::ct_eq(k.trim(), &actor.id)) {
            Ok(actor)
        } else {
            self.failed_logins.note(src_ip, "key id does not match the secret", "", dialect);
            Err(CoreError::Unauthenticated)
        }
    }

    /// A key already proven (by a session token its dialect issued): it must still exist and
    /// be usable.
    pub async fn authenticate_key_id(&self, key_id: &str, src_ip: &str, dialect: &'static str) -> CoreResult<Actor> {
        let key = match self.store.get_api_key(key_id).await? {
            Some(k) => k,
            None => {
                self.failed_logins.note(src_ip, "session for a key that no longer exists", "", dialect);
                return Err(CoreError::Unauthenticated);
            }
        };
        if let Some(why) = auth::key_unusable(&key, now_us()) {
            self.failed_logins.note(src_ip, why, &key.key_id, dialect);
            return Err(CoreError::Unauthenticated);
        }
        Ok(Actor { id: key.key_id, role: key.role, flock_id: key.flock_id, src_ip: src_ip.into(), dialect })
    }

    /// Enrols a host with a factory token (Conjur host factory): a new deploy key for the
    /// factory's flock, usable by the host to mint and download its own tokens, keeping the
    /// host's annotations (name/value pairs).
    pub async fn enrol_host(
        &self,
        factory_actor: &Actor,
        factory: &FactoryToken,
        host_id: &str,
        annotations: Vec<(String, String)>,
    ) -> CoreResult<CreatedKey> {
        if factory_actor.id != format!("factory:{}", factory.id) {
            return self.deny(factory_actor, Permission::ManageKeys, "").await;
        }
        let host = host_id.trim();
        let ok = !host.is_empty()
            && host.len() <= 255
            && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@' | b'/'));
        if !ok {
            return Err(CoreError::invalid("id", "must be a host name (letters, digits, . _ - @ /)"));
        }
        if annotations.len() > MAX_ANNOTATIONS {
            return Err(CoreError::invalid("annotations", format!("at most {MAX_ANNOTATIONS}")));
        }
        for (name, value) in &annotations {
            if name.trim().is_empty() || name.len() > 255 || value.len() > 4096 {
                return Err(CoreError::invalid(
                    "annotations",
                    "need a name of 1 to 255 bytes and a value of at most 4096 bytes",
                ));
            }
        }
        let (mut key, secret) =
            Self::new_key(Role::Deploy, Some(factory.flock_id.clone()), format!("host {host}"), &factory_actor.id);
        key.annotations = annotations;
        let audit = self.audit(
            factory_actor,
            "host_enrol",
            &key.key_id,
            format!("enrolled host {host} in {}", factory.flock_id),
        );
        self.store.insert_api_key(&key, &audit).await?;
        Ok(CreatedKey { key, secret })
    }

    /// The provision key, which can only create keys, and only until it has made an admin key
    /// (for good: demoting or deleting that key does not re-arm it).
    pub async fn authenticate_provision(&self, value: &str, src_ip: &str, dialect: &'static str) -> CoreResult<Actor> {
        let matches = self.provision_hash.as_deref().is_some_and(|h| auth::ct_eq(h, &auth::hash_secret(value.trim())));
        if !matches {
            self.failed_logins.note(src_ip, "wrong provision key", "", dialect);
            return Err(CoreError::Unauthenticated);
        }
        if self.store.get_setting(PROVISION_SPENT).await?.is_some() {
            self.failed_logins.note(src_ip, "provision key already used for an admin key", "", dialect);
            return Err(CoreError::Unauthenticated);
        }
        Ok(Actor { id: PROVISION.into(), role: Role::Admin, flock_id: None, src_ip: src_ip.into(), dialect })
    }

    /// Every key (no secrets), for admins without a flock scope.
    pub async fn list_keys(&self, actor: &Actor) -> CoreResult<Vec<ApiKey>> {
        self.require_key_admin(actor).await?;
        Ok(self.store.list_api_keys().await?)
    }

    pub async fn get_key(&self, actor: &Actor, key_id: &str) -> CoreResult<ApiKey> {
        self.require_key_admin(actor).await?;
        self.store.get_api_key(key_id.trim()).await?.ok_or(CoreError::KeyNotFound)
    }

    pub async fn update_key(&self, actor: &Actor, key_id: &str, mut change: KeyChange) -> CoreResult<ApiKey> {
        self.require_key_admin(actor).await?;
        if let Some(d) = &change.description {
            change.description = Some(validate_label("description", d, MAX_LABEL_CHARS)?);
        }
        let mut what = Vec::new();
        if let Some(r) = change.role {
            what.push(format!("role {}", r.as_str()));
        }
        if let Some(a) = change.active {
            what.push(if a { "activated".to_string() } else { "deactivated".to_string() });
        }
        if let Some(e) = change.expire_us {
            what.push(if e == 0 { "no expiry".to_string() } else { format!("expires {}", crate::model::rfc3339(e)) });
        }
        if change.description.is_some() {
            what.push("description changed".into());
        }
        let audit = self.audit(actor, "key_update", key_id, format!("key changed: {}", what.join(", ")));
        self.store.update_api_key(key_id.trim(), &change, &audit).await?.ok_or(CoreError::KeyNotFound)
    }

    pub async fn delete_key(&self, actor: &Actor, key_id: &str) -> CoreResult<()> {
        self.require_key_admin(actor).await?;
        let audit = self.audit(actor, "key_delete", key_id, "deleted key".into());
        if self.store.delete_api_key(key_id.trim(), &audit).await? {
            Ok(())
        } else {
            Err(CoreError::KeyNotFound)
        }
    }

    async fn require_key_admin(&self, actor: &Actor) -> CoreResult<()> {
        self.require(actor, Permission::ManageKeys).await?;
        if actor.flock_id.is_some() || actor.id == PROVISION {
            return self.deny(actor, Permission::ManageKeys, "").await;
        }
        Ok(())
    }

    // ------------------------------------------------------------------ factory tokens

    /// Makes a factory token for `flock_id` (default: the actor's flock, else the default flock).
    pub async fn create_factory(
        &self,
        actor: &Actor,
        label: &str,
        flock_id: Option<&str>,
        expires_us: Option<Micros>,
        cidrs: &[String],
    ) -> CoreResult<CreatedFactory> {
        self.require(actor, Permission::ManageFactories).await?;
        let label = validate_label("label", label, MAX_MEMO_CHARS)?;
        let flock_id = match flock_id.map(str::trim).filter(|f| !f.is_empty()) {
            Some(f) => f.to_string(),
            None => actor.flock_id.clone().unwrap_or_else(|| DEFAULT_FLOCK.to_string()),
        };
        self.visible_flock(actor, &flock_id).await?;
        let cidrs = cidrs.iter().map(|c| parse_cidr(c)).collect::<CoreResult<Vec<_>>>()?;
        if expires_us.is_some_and(|e| e <= now_us()) {
            return Err(CoreError::invalid("expiration", "must be in the future"));
        }
        let (max_active, _) = self.read_factory_settings().await?;
        if max_active > 0 {
            let now = now_us();
            let active =
                self.store.list_factories().await?.iter().filter(|f| f.status(now) == FactoryStatus::Valid).count();
            if active as i64 >= max_active {
                return Err(CoreError::invalid(
                    "max_active_tokens",
                    format!("reached: {active} valid factory tokens exist (the limit is {max_active})"),
                ));
            }
        }
        let value = ids::hex_id(32);
        let id = ids::hex_id(16);
        let factory = FactoryToken {
            value_sealed: Some(self.secrets.seal(&factory_context(&id), &value)),
            id,
            value_hash: auth::hash_secret(&value),
            label,
            flock_id,
            created_us: now_us(),
            expires_us,
            revoked_us: None,
            last_used_us: None,
            cidrs,
            use_count: 0,
            created_by: actor.id.clone(),
        };
        let audit = self.audit(actor, "factory_create", &factory.id, format!("factory token for {}", factory.flock_id));
        self.store.insert_factory(&factory, &audit).await?;
        Ok(CreatedFactory { factory, value })
    }

    /// A factory token's value, shown again to whoever may manage it; None for tokens made
    /// before values were kept (or sealed with another installation's key).
    pub fn factory_value(&self, f: &FactoryToken) -> Option<String> {
        self.secrets.open(&factory_context(&f.id), f.value_sealed.as_deref()?)
    }

    pub async fn list_factories(&self, actor: &Actor) -> CoreResult<Vec<FactoryToken>> {
        self.require(actor, Permission::ManageFactories).await?;
        let mut all = self.store.list_factories().await?;
        all.retain(|f| actor.sees_flock(&f.flock_id));
        Ok(all)
    }

    /// A factory token the actor may manage, by id or by its value.
    pub async fn find_factory(&self, actor: &Actor, id: Option<&str>, value: Option<&str>) -> CoreResult<FactoryToken> {
        self.require(actor, Permission::ManageFactories).await?;
        let found = match (id.map(str::trim).filter(|s| !s.is_empty()), value.map(str::trim).filter(|s| !s.is_empty()))
        {
            (Some(id), _) => self.store.get_factory(id).await?,
            (None, Some(v)) => {
                let h = auth::hash_secret(v);
                self.store.factory_by_hash(&h).await?.filter(|f| auth::ct_eq(&f.value_hash, &h))
            }
            (None, None) => return Err(CoreError::invalid("factory_auth", "is required")),
        };
        found.filter(|f| actor.sees_flock(&f.flock_id)).ok_or(CoreError::FactoryNotFound)
    }

    pub async fn update_factory(&self, actor: &Actor, id: &str, mut change: FactoryChange) -> CoreResult<FactoryToken> {
        let f = self.find_factory(actor, Some(id), None).await?;
        if let Some(label) = &change.label {
            change.label = Some(validate_label("label", label, MAX_MEMO_CHARS)?);
        }
        let action = match change.revoked_us {
            Some(Some(_)) => "factory_revoke",
            Some(None) => "factory_restore",
            None => "factory_update",
        };
        let mut what = Vec::new();
        match change.revoked_us {
            Some(Some(_)) => what.push("revoked".to_string()),
            Some(None) => what.push("restored".to_string()),
            None => {}
        }
        if let Some(l) = &change.label {
            what.push(format!("label set to {l:?}"));
        }
        match change.expires_us {
            Some(Some(e)) => what.push(format!("expiry set to {}", crate::model::rfc3339(e))),
            Some(None) => what.push("expiry removed".into()),
            None => {}
        }
        let audit = self.audit(actor, action, &f.id, format!("factory token {:?}: {}", f.label, what.join(", ")));
        self.store.update_factory(&f.id, &change, &audit).await?.ok_or(CoreError::FactoryNotFound)
    }

    pub async fn delete_factory(&self, actor: &Actor, f: &FactoryToken) -> CoreResult<()> {
        let audit = self.audit(actor, "factory_delete", &f.id, format!("deleted factory token {:?}", f.label));
        if self.store.delete_factory(&f.id, &audit).await? {
            Ok(())
        } else {
            Err(CoreError::FactoryNotFound)
        }
    }

    async fn require_unscoped_factory_admin(&self, actor: &Actor) -> CoreResult<()> {
        self.require(actor, Permission::ManageFactories).await?;
        if actor.flock_id.is_some() {
            return self.deny(actor, Permission::ManageFactories, "").await;
        }
        Ok(())
    }

    /// A store query's FQL mistakes become parameter errors; other failures stay storage errors.
    fn query_error(e: anyhow::Error) -> CoreError {
        match e.downcast::<crate::fql::FqlError>() {
            Ok(f) => CoreError::invalid("filter", format!("is invalid at position {}: {}", f.position, f.message)),
            Err(e) => CoreError::Storage(e),
        }
    }

    fn check_page(q: &Query) -> CoreResult<()> {
        if !(1..=MAX_QUERY_PAGE).contains(&q.limit) {
            return Err(CoreError::invalid("limit", format!("must be between 1 and {MAX_QUERY_PAGE}")));
        }
        if q.offset < 0 {
            return Err(CoreError::invalid("offset", "must not be negative"));
        }
        Ok(())
    }

    /// Ids of the factory tokens matching an FQL query, and how many match in all.
    pub async fn query_factories(&self, actor: &Actor, q: &Query) -> CoreResult<(Vec<String>, i64)> {
        self.require_unscoped_factory_admin(actor).await?;
        Self::check_page(q)?;
        self.store.query_factories(q, now_us()).await.map_err(Self::query_error)
    }

    /// The factory tokens with these ids (unknown ids are left out).
    pub async fn get_factories(&self, actor: &Actor, ids: &[String]) -> CoreResult<Vec<FactoryToken>> {
        self.require_unscoped_factory_admin(actor).await?;
        let mut out = Vec::new();
        for id in ids.iter().take(MAX_QUERY_PAGE as usize) {
            if let Some(f) = self.store.get_factory(id.trim()).await? {
                out.push(f);
            }
        }
        Ok(out)
    }

    /// Ids of the factory-token audit events matching an FQL query, and how many in all.
    pub async fn query_factory_audit(&self, actor: &Actor, q: &Query) -> CoreResult<(Vec<i64>, i64)> {
        self.require_unscoped_factory_admin(actor).await?;
        Self::check_page(q)?;
        self.store.query_factory_audit(q, now_us()).await.map_err(Self::query_error)
    }

    pub async fn factory_audit_events(&self, actor: &Actor, ids: &[i64]) -> CoreResult<Vec<AuditEvent>> {
        self.require_unscoped_factory_admin(actor).await?;
        Ok(self.store.factory_audit_events(ids).await?)
    }

    /// (most valid factory tokens at once, 0 = no limit; whether tokens are required).
    pub async fn factory_settings(&self, actor: &Actor) -> CoreResult<(i64, bool)> {
        self.require(actor, Permission::Read).await?;
        self.read_factory_settings().await
    }

    async fn read_factory_settings(&self) -> CoreResult<(i64, bool)> {
        let max = self.store.get_setting(MAX_ACTIVE_TOKENS).await?.and_then(|v| v.parse().ok()).unwrap_or(0);
        let required = self.store.get_setting(TOKENS_REQUIRED).await?.is_some_and(|v| v == "true");
        Ok((max, required))
    }

    pub async fn set_factory_settings(
        &self,
        actor: &Actor,
        max_active: Option<i64>,
        required: Option<bool>,
    ) -> CoreResult<(i64, bool)> {
        self.require_unscoped_factory_admin(actor).await?;
        if let Some(m) = max_active {
            if !(0..=1_000_000).contains(&m) {
                return Err(CoreError::invalid("max_active_tokens", "must be between 0 (no limit) and 1000000"));
            }
            let audit = self.audit(actor, "settings_update", MAX_ACTIVE_TOKENS, format!("max_active_tokens = {m}"));
            self.store.set_setting(MAX_ACTIVE_TOKENS, &m.to_string(), &audit).await?;
        }
        if let Some(r) = required {
            let audit = self.audit(actor, "settings_update", TOKENS_REQUIRED, format!("tokens_required = {r}"));
            self.store.set_setting(TOKENS_REQUIRED, &r.to_string(), &audit).await?;
        }
        self.read_factory_settings().await
    }

    /// Turns a factory token's value into an actor that may create and download tokens in its
    /// flock and nothing else — if it is valid and used from one of its networks.
    pub async fn authenticate_factory(
        &self,
        value: Option<&str>,
        src_ip: &str,
        dialect: &'static str,
    ) -> CoreResult<(Actor, FactoryToken)> {
        let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
            self.failed_logins.note(src_ip, "no factory token", "", dialect);
            return Err(CoreError::Unauthenticated);
        };
        let hash = auth::hash_secret(value);
        let f = match self.store.factory_by_hash(&hash).await? {
            Some(f) if auth::ct_eq(&f.value_hash, &hash) => f,
            _ => {
                self.failed_logins.note(src_ip, "unknown factory token", "", dialect);
                return Err(CoreError::Unauthenticated);
            }
        };
        let now = now_us();
        let why = match f.status(now) {
            FactoryStatus::Revoked => Some("factory token revoked"),
            FactoryStatus::Expired => Some("factory token expired"),
            FactoryStatus::Valid if !ip_allowed(&f.cidrs, src_ip) => Some("factory token used outside its networks"),
            FactoryStatus::Valid => None,
        };
        if let Some(why) = why {
            self.failed_logins.note(src_ip, why, &format!("factory:{}", f.id), dialect);
            return Err(CoreError::Unauthenticated);
        }
        if let Err(e) = self.store.touch_factory(&f.id, now).await {
            tracing::warn!(error = %e, factory = %f.id, "could not record factory token use");
        }
        let actor = Actor {
            id: format!("factory:{}", f.id),
            role: Role::Deploy,
            flock_id: Some(f.flock_id.clone()),
            src_ip: src_ip.into(),
            dialect,
        };
        Ok((actor, f))
    }

    // ------------------------------------------------------------------ tokens

    pub async fn create_token(&self, actor: &Actor, req: NewToken) -> CoreResult<Token> {
        self.require(actor, Permission::CreateTokens).await?;
        let memo = validate_memo(&req.memo)?;
        let kind = kinds::find(req.kind.trim()).ok_or(CoreError::UnknownKind)?;
        if req.params.get("custom_domain").is_some_and(|d| !d.trim().is_empty()) {
            // Silently using the default domain instead would plant tokens that point
            // somewhere the caller did not ask for.
            return Err(CoreError::invalid(
                "custom_domain",
                format!("is not supported: this server serves its own token domain, {}", self.site.domain),
            ));
        }
        let flock_id = match req.flock_id.as_deref().map(str::trim).filter(|f| !f.is_empty()) {
            Some(f) => f.to_string(),
            None => actor.flock_id.clone().unwrap_or_else(|| DEFAULT_FLOCK.to_string()),
        };
        if !actor.sees_flock(&flock_id) || self.store.get_flock(&flock_id).await?.is_none() {
            return Err(CoreError::FlockNotFound);
        }
        if req.alerting.sets_anything() {
            // Routing or silencing alerts is changing the token: a credential that may only
            // create (deploy keys, factory strings) must not mail anyone its own text, post to
            // its own webhook or mint tokens that never alert. The flock's outputs apply.
            self.require(actor, Permission::ChangeTokens).await?;
        }
        let (alerting, _) = self.check_alert_settings(&req.alerting)?;
        // Checking uploads can take a lot of CPU and memory (decoding an image): never on the
        // threads that serve hits, and refused with Busy when too much is queued.
        let (create, params, uploads) = (kind.create, req.params, req.uploads);
        let created = self.work.run(move || create(&params, &uploads)).await??;
        let token = Token {
            id: ids::token_id(),
            kind: kind.name.to_string(),
            memo,
            flock_id,
            enabled: true,
            created_us: now_us(),
            updated_id: 1,
            params: created.params,
            created_by: actor.id.clone(),
            triggered_count: 0,
            unacked_count: 0,
            alert_webhook_url: alerting.alert_webhook_url.flatten(),
            alert_email: alerting.alert_email.flatten(),
            alert_cooldown_secs: alerting.alert_cooldown_secs.flatten(),
            alert_max_per_hour: alerting.alert_max_per_hour.flatten(),
            ignore_sources: alerting.ignore_sources.unwrap_or_default(),
        };
        let audit =
            self.audit(actor, "token_create", &token.id, format!("created {} token in {}", token.kind, token.flock_id));
        if !self.store.insert_token(&token, &created.files, &audit).await? {
            return Err(CoreError::FlockNotFound); // deleted a moment ago
        }
        Ok(token)
    }

    /// A token the actor may see, or TokenNotFound (never revealing tokens of other flocks).
    pub async fn get_token(&self, actor: &Actor, id: &str) -> CoreResult<Token> {
        self.require(actor, Permission::Read).await?;
        Ok(shown(actor, self.visible_token(actor, id).await?))
    }

    async fn visible_token(&self, actor: &Actor, id: &str) -> CoreResult<Token> {
        let id = id.trim();
        if !ids::is_token_id(id) {
            return Err(CoreError::TokenNotFound);
        }
        match self.store.get_token(id).await? {
            Some(t) if actor.sees_flock(&t.flock_id) => Ok(t),
            _ => Err(CoreError::TokenNotFound),
        }
    }

    /// The filter limited to what the actor may see: a flock it names must exist and be
    /// visible (else FlockNotFound), a kind must exist, and flock-scoped actors see their
    /// flock only.
    async fn scope_tokens(&self, actor: &Actor, mut filter: TokenFilter) -> CoreResult<TokenFilter> {
        self.require(actor, Permission::Read).await?;
        if let Some(f) = &filter.flock_id {
            self.visible_flock(actor, f).await?;
        }
        if let Some(scope) = &actor.flock_id {
            filter.flock_id = Some(scope.clone());
        }
        if let Some(k) = &filter.kind {
            if kinds::find(k).is_none() {
                return Err(CoreError::UnknownKind);
            }
        }
        Ok(filter)
    }

    /// A page of the tokens matching `filter` (newest first) from `start`, `limit` of them
    /// (default [`DEFAULT_PAGE`], at most [`MAX_PAGE`]).
    pub async fn list_tokens(
        &self,
        actor: &Actor,
        filter: TokenFilter,
        start: &PageStart<TokenKey>,
        limit: Option<i64>,
    ) -> CoreResult<TokenPage> {
        let filter = self.scope_tokens(actor, filter).await?;
        let limit = limit.unwrap_or(DEFAULT_PAGE);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(CoreError::invalid("limit", format!("must be between 1 and {MAX_PAGE}")));
        }
        let mut tokens = self.store.list_tokens(&filter, start, limit + 1).await?;
        let more = drop_lookahead(&mut tokens, limit, start.backwards);
        let tokens = tokens.into_iter().map(|t| shown(actor, t)).collect();
        let total = self.store.count_tokens(&filter).await?;
        Ok(TokenPage { tokens, more, total })
    }

    /// Every token matching `filter`, in one list; refuses (asking for pagination) past
    /// [`MAX_ALL_TOKENS`].
    pub async fn all_tokens(&self, actor: &Actor, filter: TokenFilter) -> CoreResult<Vec<Token>> {
        let filter = self.scope_tokens(actor, filter).await?;
        if self.store.count_tokens(&filter).await? > MAX_ALL_TOKENS as i64 {
            return Err(CoreError::invalid(
                "canarytokens",
                format!("more than {MAX_ALL_TOKENS} match: use canarytokens/paginate"),
            ));
        }
        let mut all: Vec<Token> = Vec::new();
        loop {
            let start = PageStart { key: all.last().map(|t| (t.created_us, t.id.clone())), backwards: false };
            let page = self.store.list_tokens(&filter, &start, MAX_PAGE).await?;
            let done = (page.len() as i64) < MAX_PAGE;
            all.extend(page);
            if done || all.len() > MAX_ALL_TOKENS {
                return Ok(all.into_iter().map(|t| shown(actor, t)).collect());
            }
        }
    }

    async fn change_token(
        &self,
        actor: &Actor,
        id: &str,
        change: TokenChange,
        action: &str,
        description: String,
    ) -> CoreResult<Token> {
        self.require(actor, Permission::ChangeTokens).await?;
        let token = self.visible_token(actor, id).await?;
        let audit = self.audit(actor, action, &token.id, description);
        self.store.update_token(&token.id, &change, &audit).await?.ok_or(CoreError::TokenNotFound)
    }

    pub async fn update_memo(&self, actor: &Actor, id: &str, memo: &str) -> CoreResult<Token> {
        let memo = validate_memo(memo)?;
        let change = TokenChange { memo: Some(memo), ..Default::default() };
        self.change_token(actor, id, change, "token_update", "changed memo".into()).await
    }

    /// Points a redirect token (or a QR code) somewhere else.
    pub async fn set_redirect_url(&self, actor: &Actor, id: &str, url: &str) -> CoreResult<Token> {
        self.require(actor, Permission::ChangeTokens).await?;
        let token = self.visible_token(actor, id).await?;
        if !kinds::redirect::takes_redirect(&token.kind) {
            return Err(CoreError::invalid("canarytoken", "is not a token that redirects"));
        }
        let url = kinds::redirect::validate_url(url)?;
        let mut params = token.params.clone();
        params[kinds::redirect::PARAM] = url.clone().into();
        let change = TokenChange { params: Some(params), ..Default::default() };
        self.change_token(actor, &token.id, change, "token_update", format!("redirect to {url}")).await
    }

    /// Takes the redirect off a token whose redirect is optional (a QR code).
    pub async fn remove_redirect_url(&self, actor: &Actor, id: &str) -> CoreResult<Token> {
        self.require(actor, Permission::ChangeTokens).await?;
        let token = self.visible_token(actor, id).await?;
        if !kinds::redirect::redirect_is_optional(&token.kind) {
            return Err(CoreError::invalid("canarytoken", "is not a token whose redirect can be removed"));
        }
        let mut params = token.params.clone();
        if let Some(m) = params.as_object_mut() {
            m.remove(kinds::redirect::PARAM);
        }
        let change = TokenChange { params: Some(params), ..Default::default() };
        self.change_token(actor, &token.id, change, "token_update", "redirect removed".into()).await
    }

    pub async fn set_enabled(&self, actor: &Actor, id: &str, enabled: bool) -> CoreResult<Token> {
        let change = TokenChange { enabled: Some(enabled), ..Default::default() };
        let action = if enabled { "token_enable" } else { "token_disable" };
        self.change_token(actor, id, change, action, action.replace('_', " ")).await
    }

    pub async fn delete_token(&self, actor: &Actor, id: &str, clear_incidents: bool) -> CoreResult<()> {
        self.require(actor, Permission::ChangeTokens).await?;
        if clear_incidents {
            self.require(actor, Permission::ManageIncidents).await?;
        }
        let token = self.visible_token(actor, id).await?;
        let audit = self.audit(
            actor,
            "token_delete",
            &token.id,
            format!("deleted {} token{}", token.kind, if clear_incidents { " and its incidents" } else { "" }),
        );
        match self.store.delete_token(&token.id, clear_incidents, &audit).await? {
            TokenDeletion::Deleted => Ok(()),
            TokenDeletion::NotFound => Err(CoreError::TokenNotFound),
            TokenDeletion::HasIncidents => Err(CoreError::TokenHasIncidents),
        }
    }

    /// Deletes the tokens made on the custom domains named. Tokens here live only on this
    /// server's own zone (`custom_domain` is refused at creation), so no token is on a custom
    /// domain and none is deleted; the call is authorised and its domains checked like any
    /// delete, so a script learns the truth (0) rather than an error or a wrong count.
    pub async fn delete_tokens_on_domains(
        &self,
        actor: &Actor,
        domains: &[String],
        clear_incidents: bool,
    ) -> CoreResult<usize> {
        self.require(actor, Permission::ChangeTokens).await?;
        if clear_incidents {
            self.require(actor, Permission::ManageIncidents).await?;
        }
        if domains.is_empty() {
            return Err(CoreError::invalid("domains", "is required: a comma-separated list of custom domains"));
        }
        for d in domains {
            kinds::cloned_web::validate_domain("domains", d)?;
        }
        Ok(0)
    }

    pub async fn download(&self, actor: &Actor, id: &str) -> CoreResult<Artefact> {
        self.require(actor, Permission::Download).await?;
        let token = self.visible_token(actor, id).await?;
        let kind = kinds::find(&token.kind).ok_or(CoreError::NoFile)?;
        let make = kind.artefact.ok_or(CoreError::NoFile)?;
        let artefact = make(&token, &self.site);
        let audit = self.audit(actor, "token_download", &token.id, format!("downloaded {}", artefact.filename));
        self.store.append_audit(&audit).await?;
        Ok(artefact)
    }

    // ------------------------------------------------------------------ flocks

    pub async fn list_flocks(&self, actor: &Actor) -> CoreResult<Vec<Flock>> {
        self.require(actor, Permission::Read).await?;
        let mut flocks = self.store.list_flocks().await?;
        flocks.retain(|f| actor.sees_flock(&f.id));
        Ok(flocks)
    }

    async fn visible_flock(&self, actor: &Actor, id: &str) -> CoreResult<Flock> {
        match self.store.get_flock(id.trim()).await? {
            Some(f) if actor.sees_flock(&f.id) => Ok(f),
            _ => Err(CoreError::FlockNotFound),
        }
    }

    async fn require_flock_admin(&self, actor: &Actor) -> CoreResult<()> {
        self.require(actor, Permission::ManageFlocks).await?;
        if actor.flock_id.is_some() {
            // A key limited to one flock cannot reshape the set of flocks.
            return self.deny(actor, Permission::ManageFlocks, "").await;
        }
        Ok(())
    }

    pub async fn create_flock(&self, actor: &Actor, name: &str) -> CoreResult<Flock> {
        self.require_flock_admin(actor).await?;
        let name = validate_flock_name(name)?;
        let flock = Flock { id: format!("flock:{}", ids::hex_id(16)), name, created_us: now_us() };
        let audit = self.audit(actor, "flock_create", &flock.id, format!("created flock {:?}", flock.name));
        self.store.insert_flock(&flock, &audit).await?;
        Ok(flock)
    }

    pub async fn rename_flock(&self, actor: &Actor, id: &str, name: &str) -> CoreResult<Flock> {
        self.require_flock_admin(actor).await?;
        let name = validate_flock_name(name)?;
        let mut flock = self.visible_flock(actor, id).await?;
        let audit = self.audit(actor, "flock_rename", &flock.id, format!("renamed {:?} to {:?}", flock.name, name));
        if !self.store.rename_flock(&flock.id, &name, &audit).await? {
            return Err(CoreError::FlockNotFound);
        }
        flock.name = name;
        Ok(flock)
    }

    pub async fn delete_flock(&self, actor: &Actor, id: &str) -> CoreResult<()> {
        self.require_flock_admin(actor).await?;
        let flock = self.visible_flock(actor, id).await?;
        if flock.id == DEFAULT_FLOCK {
            return Err(CoreError::DefaultFlock);
        }
        let audit = self.audit(actor, "flock_delete", &flock.id, format!("deleted flock {:?}", flock.name));
        match self.store.delete_flock(&flock.id, &audit).await? {
            FlockDeletion::Deleted => Ok(()),
            FlockDeletion::NotFound => Err(CoreError::FlockNotFound),
            FlockDeletion::NotEmpty => Err(CoreError::FlockNotEmpty),
        }
    }

    pub async fn flock_summary(&self, actor: &Actor, id: &str) -> CoreResult<(Flock, FlockSummary)> {
        self.require(actor, Permission::Read).await?;
        let flock = self.visible_flock(actor, id).await?;
        let summary = self.store.flock_summary(&flock.id).await?;
        Ok((flock, summary))
    }

    /// Ids of the flock's tokens (its "sensors").
    pub async fn flock_token_ids(&self, actor: &Actor, id: &str) -> CoreResult<Vec<String>> {
        self.require(actor, Permission::Read).await?;
        let flock = self.visible_flock(actor, id).await?;
        Ok(self.store.flock_token_ids(&flock.id).await?)
    }

    // ------------------------------------------------------------------ incidents

    /// The filter limited to the actor's flock; None when it asks for another flock.
    fn scope_incidents(actor: &Actor, mut filter: IncidentFilter) -> Option<IncidentFilter> {
        if let Some(scope) = &actor.flock_id {
            if filter.flock_id.as_ref().is_some_and(|f| f != scope) {
                return None;
            }
            filter.flock_id = Some(scope.clone());
        }
        if let Some(text) = &filter.text {
            // "Token name" in the Console's words: kinds are found by their human name too.
            let folded = text.to_lowercase();
            filter.text_kinds = kinds::KINDS
                .iter()
                .filter(|k| k.human_name.to_lowercase().contains(&folded))
                .map(|k| k.name.to_string())
                .collect();
        }
        Some(filter)
    }

    /// The filter of a listing, checked: a flock it names must exist and be visible.
    async fn listing_filter(&self, actor: &Actor, filter: IncidentFilter) -> CoreResult<IncidentFilter> {
        self.require(actor, Permission::Read).await?;
        if let Some(f) = &filter.flock_id {
            self.visible_flock(actor, f).await?;
        }
        Self::scope_incidents(actor, filter).ok_or(CoreError::FlockNotFound)
    }

    /// A page of the incidents matching `filter` (in its order, from its page start), at most
    /// `filter.limit` (default and most: [`MAX_INCIDENTS`]).
    pub async fn list_incidents(&self, actor: &Actor, filter: IncidentFilter) -> CoreResult<IncidentPage> {
        let mut filter = self.listing_filter(actor, filter).await?;
        let limit = filter.limit.unwrap_or(MAX_INCIDENTS);
        if !(1..=MAX_INCIDENTS).contains(&limit) {
            return Err(CoreError::invalid("limit", format!("must be between 1 and {MAX_INCIDENTS}")));
        }
        filter.event_limit.get_or_insert(DEFAULT_EVENT_LIMIT);
        let (incidents, more) = self.fill_listing(filter.clone(), limit, LISTING_BUDGET).await?;
        let (total, max_updated_id) = self.store.count_incidents(&filter).await?;
        Ok(IncidentPage { incidents, more, total, max_updated_id })
    }

    /// Up to `limit` incidents of `filter` from its page start, read [`LISTING_CHUNK`] at a
    /// time, stopping early once their events' data passes `budget` bytes; and whether more
    /// follow in the direction asked.
    pub async fn fill_listing(
        &self,
        mut filter: IncidentFilter,
        limit: i64,
        budget: usize,
    ) -> CoreResult<(Vec<Incident>, bool)> {
        let backwards = filter.start.backwards;
        let key = |i: &Incident| match filter.order {
            IncidentOrder::Newest => (i.created_us, i.id),
            IncidentOrder::Updated => (i.updated_id, i.id),
        };
        let mut got: Vec<Incident> = Vec::new();
        let mut bytes = 0;
        loop {
            let want = LISTING_CHUNK.min(limit - got.len() as i64);
            filter.limit = Some(want + 1);
            let mut rows = self.store.list_incidents(&filter).await?;
            let more = drop_lookahead(&mut rows, want, backwards);
            bytes += rows.iter().flat_map(|i| &i.events).map(|h| h.data.to_string().len()).sum::<usize>();
            // The next chunk starts past the far end of this one, in the direction asked.
            let far = if backwards { rows.first() } else { rows.last() };
            filter.start.key = far.map(key).or(filter.start.key);
            if backwards {
                rows.append(&mut got);
                got = rows;
            } else {
                got.append(&mut rows);
            }
            if !more {
                return Ok((got, false));
            }
            if got.len() as i64 >= limit || bytes >= budget {
                return Ok((got, true));
            }
        }
    }

    /// The sources of the incidents matching `filter`, with how many each.
    pub async fn incident_sources(&self, actor: &Actor, filter: IncidentFilter) -> CoreResult<Vec<(String, i64)>> {
        let filter = self.listing_filter(actor, filter).await?;
        Ok(self.store.incident_sources(&filter).await?)
    }

    /// One incident, by id or by hash id.
    pub async fn get_incident(&self, actor: &Actor, which: IncidentFilter) -> CoreResult<Incident> {
        self.require(actor, Permission::Read).await?;
        if which.id.is_none() && which.hash_id.is_none() {
            return Err(CoreError::IncidentNotFound);
        }
        let which = IncidentFilter {
            id: which.id,
            hash_id: which.hash_id,
            limit: Some(1),
            event_limit: Some(DEFAULT_EVENT_LIMIT),
            ..Default::default()
        };
        let filter = Self::scope_incidents(actor, which).ok_or(CoreError::IncidentNotFound)?;
        self.store.list_incidents(&filter).await?.pop().ok_or(CoreError::IncidentNotFound)
    }

    /// Acknowledges (`Some(true)`), unacknowledges (`Some(false)`) or deletes (`None`) the
    /// incidents matching `filter`; returns their ids. A filter naming one incident that does
    /// not exist (or is out of scope) is IncidentNotFound.
    async fn change_incidents(&self, actor: &Actor, filter: IncidentFilter, ack: Option<bool>) -> CoreResult<Vec<i64>> {
        self.require(actor, Permission::ManageIncidents).await?;
        let single = filter.id;
        let Some(filter) = Self::scope_incidents(actor, filter) else {
            return if single.is_some() { Err(CoreError::IncidentNotFound) } else { Ok(Vec::new()) };
        };
        let action = match ack {
            Some(true) => "incident_acknowledge",
            Some(false) => "incident_unacknowledge",
            None => "incident_delete",
        };
        let target = single.map(|i| i.to_string()).unwrap_or_else(|| "incidents".into());
        let audit = self.audit(actor, action, &target, format!("{action}: {}", describe_filter(&filter)));
        let ids = match ack {
            Some(a) => self.store.set_acknowledged(&filter, a, &audit).await?,
            None => self.store.delete_incidents(&filter, &audit).await?,
        };
        if ids.is_empty() && single.is_some() {
            return Err(CoreError::IncidentNotFound);
        }
        Ok(ids)
    }

    /// Acknowledges (or un-) the incidents matching `filter`; returns their ids.
    pub async fn set_acknowledged(&self, actor: &Actor, filter: IncidentFilter, ack: bool) -> CoreResult<Vec<i64>> {
        self.change_incidents(actor, filter, Some(ack)).await
    }

    /// Deletes the incidents matching `filter`; returns the ids of those that went.
    pub async fn delete_incidents(&self, actor: &Actor, filter: IncidentFilter) -> CoreResult<Vec<i64>> {
        self.change_incidents(actor, filter, None).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memo_rules() {
        assert!(matches!(validate_memo("  "), Err(CoreError::EmptyMemo)));
        assert_eq!(validate_memo(" hi ").unwrap(), "hi");
        assert!(validate_memo(&"é".repeat(MAX_MEMO_CHARS)).is_ok());
        assert!(matches!(validate_memo(&"x".repeat(MAX_MEMO_CHARS + 1)), Err(CoreError::InvalidParam { .. })));
    }

    #[test]
    fn flock_name_rules() {
        assert!(matches!(validate_flock_name(""), Err(CoreError::FlockNameEmpty)));
        assert!(matches!(validate_flock_name(&"x".repeat(101)), Err(CoreError::FlockNameTooLong)));
        assert_eq!(validate_flock_name(" Cape Town ").unwrap(), "Cape Town");
    }
}

//! Credentials: API keys (made, listed, changed, deleted), the provision key, enrolled hosts,
//! and turning a presented secret into an [`Actor`]. Failed attempts are counted in memory
//! and written to the audit log in batches.

use std::collections::HashMap;

use crate::auth::{self, Actor, Permission};
use crate::error::{CoreError, CoreResult};
use crate::ids;
use crate::model::*;

use super::{validate_label, Core, MAX_ANNOTATIONS, MAX_LABEL_CHARS, PROVISION};

/// The setting that records, for good, that the provision key has made an admin key.
const PROVISION_SPENT: &str = "provision_spent";
/// How often (at most) a key's last-used time is written.
const TOUCH_INTERVAL_US: i64 = 60_000_000;

/// Failed authentications waiting to be written to the audit log, counted per
/// (source, reason, key, dialect). Bounded: past [`MAX_FAILED_KINDS`] distinct sources,
/// further ones are counted under source `*`.
#[derive(Default)]
pub(super) struct FailedLogins {
    pending: std::sync::Mutex<HashMap<FailureKey, (u64, Micros)>>,
}

impl FailedLogins {
    pub(super) fn note(&self, src_ip: &str, why: &'static str, key_id: &str, dialect: &'static str) {
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

/// (source IP, reason, key id or "", dialect) → (count, first seen).
type FailureKey = (String, &'static str, String, &'static str);

const MAX_FAILED_KINDS: usize = 10_000;

/// A freshly made API key; `secret` is shown once and never stored.
#[derive(Debug, Clone)]
pub struct CreatedKey {
    pub key: ApiKey,
    pub secret: String,
}

impl Core {
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
}

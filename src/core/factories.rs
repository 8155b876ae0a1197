//! Factory tokens (Conjur host factories, the Console's factory auth strings, Falcon's
//! installation tokens): made, found, changed, queried, and turned into an actor that may
//! only create and download tokens in its flock.

use crate::auth::{self, Actor, Permission};
use crate::error::{CoreError, CoreResult};
use crate::ids;
use crate::model::*;

use super::{ip_allowed, parse_cidr, validate_label, Core, MAX_MEMO_CHARS, MAX_QUERY_PAGE};

/// Setting names (Falcon customer settings).
const MAX_ACTIVE_TOKENS: &str = "max_active_tokens";
const TOKENS_REQUIRED: &str = "tokens_required";

/// A freshly made factory token; `value` is shown once and never stored.
#[derive(Debug, Clone)]
pub struct CreatedFactory {
    pub factory: FactoryToken,
    pub value: String,
}

/// The sealing context of a factory token's value.
fn factory_context(id: &str) -> String {
    format!("factory:{id}")
}

impl Core {
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
    fn query_error(e: crate::store::StoreError) -> CoreError {
        e.into()
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
}

//! Tokens: created, read, listed, changed (memo, redirect, enabled, the token's own alert
//! settings), downloaded and deleted, and a token's stored hits.

use crate::auth::{Actor, Permission};
use crate::error::{CoreError, CoreResult};
use crate::ids;
use crate::kinds::{self, Artefact, Params, Uploads};
use crate::model::*;
use crate::net::NetList;
use crate::store::TokenDeletion;

use super::{drop_lookahead, Core, DEFAULT_PAGE, MAX_ALL_TOKENS, MAX_MEMO_CHARS, MAX_PAGE};

/// A token as `actor` may see it: a token's own webhook URL is a bearer secret, shown whole
/// only to those who may change tokens (and so set it); others see its host (audit F4).
fn shown(actor: &Actor, mut t: Token) -> Token {
    if !actor.may(Permission::ChangeTokens) {
        t.alert_webhook_url = t.alert_webhook_url.map(|u| crate::outputs::redact::redact(&u));
    }
    t
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

impl Core {
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
            let url = url.map(|u| crate::alerts::check_token_webhook(&self.alerts, u)).transpose()?;
            said.push(url.as_ref().map_or("token webhook removed".into(), |u| {
                format!("alerts also to {}", crate::outputs::redact::redact(u))
            }));
            change.alert_webhook_url = Some(url);
        }
        if let Some(list) = given(&a.email) {
            let list = list.map(|l| crate::alerts::check_token_email(&self.alerts, l)).transpose()?;
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
        // A kind runs CPU-heavy checks (decoding an image) on the context's work pool, never on
        // the threads that serve hits; the pool refuses with Busy when too much is queued.
        let cx = self.kind_context();
        if let Some(e) = kind.unavailable(&cx) {
            return Err(e);
        }
        let id = ids::token_id();
        let kreq = kinds::CreateRequest { params: &req.params, uploads: &req.uploads, token_id: &id };
        let created = kind.create(&kreq, &cx).await?;
        let token = Token {
            id,
            kind: kind.name().to_string(),
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
        // What the kind made outside Trapline (an IAM user) is undone when the token cannot be
        // stored, or it would be a live credential nobody watches.
        let stored = async {
            for key in &created.keys {
                if self.store.trigger_keys(key.scheme).await?.iter().any(|(k, _)| *k == key.value) {
                    return Err(CoreError::invalid(
                        "canarytoken",
                        format!("{} {} belongs to another token already", key.scheme.as_str(), key.value),
                    ));
                }
            }
            if !self.store.insert_token(&token, &created.files, &created.keys, &audit).await? {
                return Err(CoreError::FlockNotFound); // deleted a moment ago
            }
            Ok(())
        };
        if let Err(e) = stored.await {
            if !created.keys.is_empty() || kind.retires() {
                if let Err(r) = kind.retire(&token, &cx).await {
                    tracing::error!(error = %r, kind = %token.kind, "could not undo a token that was not stored");
                }
            }
            return Err(e);
        }
        Ok(token)
    }

    /// A token the actor may see, or TokenNotFound (never revealing tokens of other flocks).
    pub async fn get_token(&self, actor: &Actor, id: &str) -> CoreResult<Token> {
        self.require(actor, Permission::Read).await?;
        Ok(shown(actor, self.visible_token(actor, id).await?))
    }

    pub(super) async fn visible_token(&self, actor: &Actor, id: &str) -> CoreResult<Token> {
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

    pub(super) async fn change_token(
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
        let updated = kinds::update(&token, &kinds::KindChange::SetRedirect(url))?;
        let change = TokenChange { params: Some(updated.params), ..Default::default() };
        self.change_token(actor, &token.id, change, "token_update", updated.description).await
    }

    /// Takes the redirect off a token whose redirect is optional (a QR code).
    pub async fn remove_redirect_url(&self, actor: &Actor, id: &str) -> CoreResult<Token> {
        self.require(actor, Permission::ChangeTokens).await?;
        let token = self.visible_token(actor, id).await?;
        let updated = kinds::update(&token, &kinds::KindChange::RemoveRedirect)?;
        let change = TokenChange { params: Some(updated.params), ..Default::default() };
        self.change_token(actor, &token.id, change, "token_update", updated.description).await
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
        // A kind whose undoing may fail gets it queued with the delete, and retried from there.
        let queued = kinds::find(&token.kind).is_some_and(|k| k.retires());
        match self.store.delete_token(&token.id, clear_incidents, &audit, queued).await? {
            TokenDeletion::Deleted => {
                // The token is gone whatever its kind says now: a failure to undo what the kind
                // set up elsewhere is the operator's to see, not the caller's.
                if let Some(kind) = kinds::find(&token.kind).filter(|k| !k.retires()) {
                    if let Err(e) = kind.retire(&token, &self.kind_context()).await {
                        tracing::error!(error = %e, token = %token.id, kind = %token.kind, "could not retire token");
                    }
                }
                Ok(())
            }
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
        let artefact = match kind.artefact(&token, &self.view_context()) {
            Some(a) => a,
            None => {
                let stored = kind.stored_artefact(&token).ok_or(CoreError::NoFile)?;
                let file = self.store.get_token_file(&token.id, stored.file).await?.ok_or(CoreError::NoFile)?;
                Artefact { filename: stored.filename, content_type: stored.content_type, bytes: file.data }
            }
        };
        let audit = self.audit(actor, "token_download", &token.id, format!("downloaded {}", artefact.filename));
        self.store.append_audit(&audit).await?;
        Ok(artefact)
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
}

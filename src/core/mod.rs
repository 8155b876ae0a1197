//! The core service: every management rule, once, for every dialect.
//!
//! Dialects parse their requests into calls on [`Core`] and shape its answers; they decide
//! nothing themselves. Each call checks the actor's role and flock scope, validates input,
//! and writes its audit entry in the same transaction as the change.
//!
//! One file per concern: `credentials` (API keys, the provision key, authentication),
//! `factories` (factory tokens), `tokens`, `flocks`, `incidents` and `alerting` (outputs,
//! test alerts, the outbox). This file holds [`Core`] itself, its constructors, and
//! the permission checks and audit entries every call shares.

mod alerting;
mod credentials;
mod factories;
mod flocks;
mod honey_keys;
mod incidents;
mod tokens;
mod upkeep;

use std::sync::Arc;

use crate::auth::{self, Actor, Permission};
use crate::error::{CoreError, CoreResult};
use crate::kinds::Site;
use crate::model::*;
use crate::net::NetList;
use crate::sealed::SecretBox;
use crate::store::Store;

use credentials::FailedLogins;

pub use credentials::CreatedKey;
pub use factories::CreatedFactory;
pub use incidents::IncidentPage;
pub use tokens::{AlertSettings, NewToken, TokenPage};

/// Largest page of an FQL query.
pub const MAX_QUERY_PAGE: i64 = 1000;
/// Actor id (and `created_by`) of the provision key.
pub const PROVISION: &str = "provision";
/// Longest memo accepted, in characters (the Console documents 10,000).
pub const MAX_MEMO_CHARS: usize = 10_000;
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
    /// AWS for the AWS kinds (see [`Core::with_aws`]).
    aws: Option<Arc<crate::kinds::aws_access::AwsAccess>>,
    /// The signed-exe kind's CA (see [`Core::with_code_signing`]).
    code_signing: Arc<crate::artefacts::authenticode::CodeSigningCa>,
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

/// A key description or factory label: may be empty, at most `max` characters.
fn validate_label(name: &'static str, label: &str, max: usize) -> CoreResult<String> {
    let label = label.trim();
    if label.chars().count() > max {
        return Err(CoreError::invalid(name, format!("longer than {max} characters")));
    }
    Ok(label.to_string())
}

impl Core {
    /// What kinds read to show a token: the site, and the key that opens their sealed secrets.
    pub fn view_context(&self) -> crate::kinds::ViewContext<'_> {
        crate::kinds::ViewContext { site: &self.site, secrets: &self.secrets }
    }

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
            aws: None,
            code_signing: Arc::new(crate::artefacts::authenticode::CodeSigningCa::ephemeral()),
        }
    }

    /// Sets the code-signing CA (the server's `codesign-ca.pem`); without it, a CA of this
    /// process signs.
    pub fn with_code_signing(mut self, ca: Arc<crate::artefacts::authenticode::CodeSigningCa>) -> Core {
        self.code_signing = ca;
        self
    }

    /// Gives the AWS kinds their AWS access (without it they are unavailable).
    pub fn with_aws(mut self, aws: Option<Arc<crate::kinds::aws_access::AwsAccess>>) -> Core {
        self.aws = aws;
        self
    }

    /// What a kind may use beyond its token, for one call.
    pub fn kind_context(&self) -> crate::kinds::KindContext {
        crate::kinds::KindContext {
            site: self.site.clone(),
            work: self.work.clone(),
            secrets: self.secrets.clone(),
            aws: self.aws.clone(),
            code_signing: self.code_signing.clone(),
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
}

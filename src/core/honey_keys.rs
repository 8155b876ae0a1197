//! Tokens named by the credential their kind minted, and their events: for dialects that
//! know tokens only by key (SpaceSiren's `/token` and `/event` name honey AWS keys by access
//! key id and events by CloudTrail event id), over the same tokens and hits as every other
//! dialect. Also the change of a kind's own named settings ([`KindChange::Settings`]).

use crate::auth::{Actor, Permission};
use crate::error::{CoreError, CoreResult};
use crate::kinds::{self, KindChange, Params};
use crate::model::*;

use super::Core;

/// Most events one token's listing returns.
pub const MAX_TOKEN_EVENTS: usize = 10_000;

impl Core {
    /// The token whose minted key is `value` (e.g. an access key id), if the actor may see it.
    pub async fn token_by_key(&self, actor: &Actor, scheme: KeyScheme, value: &str) -> CoreResult<Token> {
        self.require(actor, Permission::Read).await?;
        let value = value.trim();
        let keys = self.store.trigger_keys(scheme).await?;
        let id = keys.into_iter().find(|(k, _)| k == value).map(|(_, id)| id).ok_or(CoreError::TokenNotFound)?;
        self.get_token(actor, &id).await
    }

    /// Sets a kind's own named settings (SpaceSiren's location, description, active,
    /// expire_time) through the kind.
    pub async fn set_kind_settings(&self, actor: &Actor, id: &str, settings: &Params) -> CoreResult<Token> {
        self.require(actor, Permission::ChangeTokens).await?;
        let token = self.visible_token(actor, id).await?;
        let updated = kinds::update(&token, &KindChange::Settings(settings))?;
        let change = TokenChange { params: Some(updated.params), ..Default::default() };
        self.change_token(actor, &token.id, change, "token_update", updated.description).await
    }

    /// Every hit of the token, newest first, at most `MAX_TOKEN_EVENTS` (10,000).
    pub async fn all_token_hits(&self, actor: &Actor, id: &str) -> CoreResult<Vec<Hit>> {
        let mut out: Vec<Hit> = Vec::new();
        loop {
            let before = out.last().map(|h| h.id);
            let (page, more) = self.token_hits(actor, id, 1000, before).await?;
            out.extend(page);
            if !more || out.len() >= MAX_TOKEN_EVENTS {
                out.truncate(MAX_TOKEN_EVENTS);
                return Ok(out);
            }
        }
    }

    /// The hit whose data names `event_id` among the tokens of `kind` the actor sees, with
    /// its token.
    pub async fn hit_by_event_id(&self, actor: &Actor, kind: &str, event_id: &str) -> CoreResult<(Token, Hit)> {
        let filter = TokenFilter { kind: Some(kind.into()), ..TokenFilter::default() };
        for t in self.all_tokens(actor, filter).await? {
            if t.triggered_count == 0 {
                continue;
            }
            for h in self.all_token_hits(actor, &t.id).await? {
                if h.data.get("event_id").and_then(serde_json::Value::as_str) == Some(event_id) {
                    return Ok((t, h));
                }
            }
        }
        Err(CoreError::IncidentNotFound)
    }
}

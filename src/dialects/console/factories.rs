//! Factory auth strings (made, listed, deleted with an API key) and the endpoints that take
//! one instead of a key: create and download a token in the factory's flock.

use serde_json::{json, Value};

use super::{shapes, tokens, Req};
use crate::auth::Actor;
use crate::core::Core;
use crate::error::{CoreError, CoreResult};
use crate::model::*;

pub(super) async fn create_factory(core: &Core, actor: &Actor, req: &Req) -> CoreResult<Value> {
    let memo = req.get("memo").unwrap_or("");
    if memo.trim().is_empty() {
        return Err(CoreError::EmptyMemo);
    }
    let made = core.create_factory(actor, memo, req.opt("flock_id"), None, &[]).await?;
    Ok(json!({
        "factory_auth": made.value,
        "factory_url": "/api/v1/canarytoken/factory",
        "factory_id": made.factory.id,
        "flock_id": made.factory.flock_id,
    }))
}

pub(super) async fn list_factories(core: &Core, actor: &Actor, _req: &Req) -> CoreResult<Value> {
    let now = now_us();
    let list: Vec<Value> = core
        .list_factories(actor)
        .await?
        .iter()
        .map(|f| {
            json!({
                "factory_auth": core.factory_value(f),
                "factory_id": f.id,
                "flock_id": f.flock_id,
                "memo": f.label,
                "created": shapes::epoch_text(f.created_us),
                "last_used": f.last_used_us.map(shapes::epoch_text),
                "use_count": f.use_count,
                "status": f.status(now).as_str(),
            })
        })
        .collect();
    Ok(json!({ "factories": list }))
}

pub(super) async fn delete_factory(core: &Core, actor: &Actor, req: &Req) -> CoreResult<Value> {
    let f = core.find_factory(actor, req.opt("factory_id"), req.opt("factory_auth")).await?;
    core.delete_factory(actor, &f).await?;
    Ok(json!({ "msg": "TokenFactory auth string deleted" }))
}

/// A token made with a factory auth string, which the answer carries back.
pub(super) async fn create_token(core: &Core, actor: &Actor, req: &Req) -> CoreResult<Value> {
    let mut t =
        shapes::token_json(&core.view_context(), &core.create_token(actor, tokens::new_token(req)).await?, false);
    t["factory_auth"] = req.get("factory_auth").unwrap_or("").into();
    Ok(json!({ "canarytoken": t }))
}

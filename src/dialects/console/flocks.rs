//! Flock endpoints: list, create, rename, delete, a flock's tokens and its summary.

use serde_json::{json, Map, Value};

use super::Req;
use crate::auth::Actor;
use crate::core::Core;
use crate::error::{CoreError, CoreResult};

/// Most kinds `flock/summary` lists under `top_tokens`.
const MAX_TOP_TOKENS: i64 = 100;

pub(super) async fn list(core: &Core, actor: &Actor, _req: &Req) -> CoreResult<Value> {
    let m: Map<String, Value> =
        core.list_flocks(actor).await?.into_iter().map(|f| (f.id, Value::String(f.name))).collect();
    Ok(json!({ "flocks": m }))
}

pub(super) async fn create(core: &Core, actor: &Actor, req: &Req) -> CoreResult<Value> {
    let f = core.create_flock(actor, req.get("name").unwrap_or("")).await?;
    Ok(json!({ "flock_id": f.id, "flock": { "flock_id": f.id, "name": f.name } }))
}

pub(super) async fn rename(core: &Core, actor: &Actor, req: &Req) -> CoreResult<Value> {
    let f = core.rename_flock(actor, req.required("flock_id")?, req.get("name").unwrap_or("")).await?;
    Ok(json!({ "flock_id": f.id, "flock": { "flock_id": f.id, "name": f.name } }))
}

pub(super) async fn delete(core: &Core, actor: &Actor, req: &Req) -> CoreResult<Value> {
    core.delete_flock(actor, req.required("flock_id")?).await?;
    Ok(json!({}))
}

/// The flock's tokens (its "sensors").
pub(super) async fn tokens(core: &Core, actor: &Actor, req: &Req) -> CoreResult<Value> {
    Ok(json!({ "sensors": core.flock_token_ids(actor, req.required("flock_id")?).await? }))
}

pub(super) async fn summary(core: &Core, actor: &Actor, req: &Req) -> CoreResult<Value> {
    let top = req.non_negative("num_top_tokens")?.unwrap_or(3);
    if top > MAX_TOP_TOKENS {
        return Err(CoreError::invalid("num_top_tokens", format!("must be at most {MAX_TOP_TOKENS}")));
    }
    let (f, s) = core.flock_summary(actor, req.required("flock_id")?).await?;
    let top_tokens: Vec<Value> =
        s.kinds.iter().take(top as usize).map(|(kind, count)| json!({ "count": count, "kind": kind })).collect();
    Ok(json!({
        "flock_id": f.id,
        "name": f.name,
        "total_tokens": s.token_count,
        "disabled_tokens": s.token_count - s.enabled_token_count,
        "different_token_num": s.kinds.len(),
        "triggered_tokens": s.triggered_token_count,
        "incident_count": s.incident_count,
        "unacknowledged_incident_count": s.unacknowledged_incident_count,
        "top_tokens": top_tokens,
    }))
}

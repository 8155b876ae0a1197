//! Token endpoints: create, fetch, update (memo, redirect, the token's own alert settings),
//! enable and disable, hits, download and delete.

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::{listings, shapes, Req};
use crate::auth::Actor;
use crate::core::{AlertSettings, Core, NewToken};
use crate::error::{CoreError, CoreResult};
use crate::model::*;

/// A token as every endpoint here shows it.
fn one(core: &Core, t: &Token) -> Value {
    shapes::token_json(&core.view_context(), t, false)
}

pub(super) async fn create(core: &Core, actor: &Actor, req: &Req) -> CoreResult<Value> {
    Ok(json!({ "canarytoken": one(core, &core.create_token(actor, new_token(req)).await?) }))
}

pub(super) async fn fetch(core: &Core, actor: &Actor, req: &Req) -> CoreResult<Value> {
    Ok(json!({ "token": one(core, &core.get_token(actor, req.required("canarytoken")?).await?) }))
}

pub(super) async fn fetch_all(core: &Core, actor: &Actor, req: &Req) -> CoreResult<Value> {
    let tokens = core.all_tokens(actor, listings::token_filter(&req.params)?).await?;
    Ok(json!({ "tokens": tokens.iter().map(|t| one(core, t)).collect::<Vec<_>>() }))
}

/// memo, and/or the token's own alert settings (an empty value clears one).
pub(super) async fn update(core: &Core, actor: &Actor, req: &Req) -> CoreResult<Value> {
    let id = req.required("canarytoken")?;
    let alerting = alert_settings(req);
    let mut t = None;
    if req.get("memo").is_some() || alerting.is_empty() {
        t = Some(core.update_memo(actor, id, req.get("memo").unwrap_or("")).await?);
    }
    if !alerting.is_empty() {
        t = Some(core.set_alert_settings(actor, id, &alerting).await?);
    }
    Ok(json!({ "token": one(core, &t.ok_or(CoreError::TokenNotFound)?) }))
}

pub(super) async fn hits(core: &Core, actor: &Actor, req: &Req) -> CoreResult<Value> {
    let before = req.int("before")?;
    let (hits, more) =
        core.token_hits(actor, req.required("canarytoken")?, req.int("limit")?.unwrap_or(100), before).await?;
    // The next page is the hits below the last one listed (ids only grow).
    let next = if more { hits.last().map(|h| Value::from(h.id)) } else { None };
    Ok(json!({ "hits": hits.iter().map(shapes::hit_json).collect::<Vec<_>>(), "next_before": next }))
}

pub(super) async fn set_redirect(core: &Core, actor: &Actor, req: &Req) -> CoreResult<Value> {
    let t = core.set_redirect_url(actor, req.required("canarytoken")?, req.required("redirect_url")?).await?;
    Ok(json!({ "token": one(core, &t) }))
}

pub(super) async fn remove_redirect(core: &Core, actor: &Actor, req: &Req) -> CoreResult<Value> {
    Ok(json!({ "token": one(core, &core.remove_redirect_url(actor, req.required("canarytoken")?).await?) }))
}

pub(super) async fn enable(core: &Core, actor: &Actor, req: &Req) -> CoreResult<Value> {
    core.set_enabled(actor, req.required("canarytoken")?, true).await?;
    Ok(json!({}))
}

pub(super) async fn disable(core: &Core, actor: &Actor, req: &Req) -> CoreResult<Value> {
    core.set_enabled(actor, req.required("canarytoken")?, false).await?;
    Ok(json!({}))
}

pub(super) async fn delete(core: &Core, actor: &Actor, req: &Req) -> CoreResult<Value> {
    let clear = req.bool("clear_incidents")?.unwrap_or(false);
    core.delete_token(actor, req.required("canarytoken")?, clear).await?;
    Ok(json!({}))
}

pub(super) async fn delete_on_domains(core: &Core, actor: &Actor, req: &Req) -> CoreResult<Value> {
    let domains: Vec<String> = req
        .get("domains")
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(str::to_string)
        .collect();
    let clear = req.bool("clear_incidents")?.unwrap_or(false);
    Ok(json!({ "deleted_count": core.delete_tokens_on_domains(actor, &domains, clear).await? }))
}

/// The token's file, as an attachment (also for factory credentials).
pub(super) async fn download(core: &Core, actor: &Actor, req: &Req) -> CoreResult<Response> {
    let a = core.download(actor, req.required("canarytoken")?).await?;
    // canarytools splits on "filename=" and expects exactly "attachment; " before it.
    let name: String = a
        .filename
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' })
        .collect();
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, a.content_type.to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename={name}")),
        ],
        Body::from(a.bytes),
    )
        .into_response())
}

/// A create request: kind, memo, flock and the kind's own parameters and files. Credentials
/// and transport parameters are not the kind's business and are left out.
pub(super) fn new_token(req: &Req) -> NewToken {
    let mut params = req.params.0.clone();
    for transport in ["auth_token", "factory_auth"].iter().chain(ALERT_PARAMS) {
        params.remove(*transport);
    }
    NewToken {
        kind: req.get("kind").unwrap_or("").to_string(),
        memo: req.get("memo").unwrap_or("").to_string(),
        flock_id: req.opt("flock_id").map(str::to_string),
        params,
        uploads: req.uploads.clone(),
        alerting: alert_settings(req),
    }
}

/// The token's own alert settings, as create and update take them.
const ALERT_PARAMS: &[&str] =
    &["alert_webhook_url", "alert_email", "alert_cooldown", "alert_max_per_hour", "ignore_sources"];

fn alert_settings(req: &Req) -> AlertSettings {
    let given = |name: &str| req.get(name).map(str::to_string);
    AlertSettings {
        webhook_url: given("alert_webhook_url"),
        email: given("alert_email"),
        cooldown: given("alert_cooldown"),
        max_per_hour: given("alert_max_per_hour"),
        ignore_sources: given("ignore_sources"),
    }
}

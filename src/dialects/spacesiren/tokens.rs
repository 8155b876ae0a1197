//! SpaceSiren `/token` (POST, GET, PATCH, DELETE) and `/event` (GET): honey AWS keys and
//! their events, as SpaceSiren's API documents them, over Trapline's `aws-id` tokens and
//! their hits — the same tokens the Console lists as kind `aws-id`.
//!
//! Shapes: `POST` answers the token flat; `GET` with `access_key_id` answers `{"token": …}`,
//! without it `{"count", "tokens": [flat items with `username` in place of `user`]}`; `PATCH`
//! wraps its answer in `"key"` (as SpaceSiren does); `DELETE` is 204, deleting the token with
//! its events (SpaceSiren scrubs them) and, through the retirement queue, the IAM key and user.
//! An event is `{event_id, access_key_id, alerted, event_name, event_time, event_region,
//! request_parameters, source_ip_address, user_agent}`; the event id is CloudTrail's eventID.
//! `active` and `expire_time` are the token's own settings (an inactive or expired key's uses
//! are recorded with `alerted: false`), not the Console's enabled flag.

// Parsing helpers return a ready error `Response` on a cold path; boxing it buys nothing.
#![allow(clippy::result_large_err)]
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use super::{bad_request, core_error, error, opt_flag, opt_string, reply, wrong_type, MAX_EXPIRE_SECS};
use crate::auth::Actor;
use crate::core::{Core, NewToken};
use crate::dialects::json_body::{field_int, FieldType, WrongType};
use crate::error::CoreError;
use crate::kinds::aws_id::{secret, AwsIdParams};
use crate::kinds::{params, Params};
use crate::model::{AlertStatus, Hit, KeyScheme, Token, TokenFilter};

const KIND: &str = "aws-id";
/// SpaceSiren's 404 texts: `/token` names a honey token, `/event` a token.
const NOT_FOUND: &str = "Honey token not found.";
const NO_TOKEN: &str = "Token not found.";
const NO_EVENT: &str = "Event not found.";

/// A string parameter that, when present, must be a string (null too is the wrong type).
fn str_param(m: &Map<String, Value>, name: &'static str, required: bool) -> Result<Option<String>, Response> {
    match m.get(name) {
        None if required => Err(bad_request(&format!("Parameter '{name}' is required."))),
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(wrong_type(WrongType { name, wanted: FieldType::String })),
    }
}

/// The token settings of a POST or PATCH body, as the aws-id kind takes them.
fn settings(m: &Map<String, Value>) -> Result<Params, Response> {
    let mut p = Params::new();
    if let Some(a) = opt_flag(m, "active")? {
        p.insert("active".into(), a.to_string());
    }
    match field_int(m, "expire_time").map_err(wrong_type)? {
        None => {}
        Some(t) if (0..=MAX_EXPIRE_SECS).contains(&t) => {
            p.insert("expire_time".into(), t.to_string());
        }
        Some(_) => {
            return Err(bad_request(&format!(
                "Parameter 'expire_time' must be an epoch time in seconds, from 0 (never) to {MAX_EXPIRE_SECS}."
            )))
        }
    }
    for name in ["location", "description"] {
        if let Some(v) = opt_string(m, name)? {
            p.insert(name.into(), v);
        }
    }
    Ok(p)
}

fn not_found(e: CoreError, text: &str) -> Response {
    match e {
        CoreError::TokenNotFound | CoreError::IncidentNotFound => error(StatusCode::NOT_FOUND, text),
        other => core_error(other),
    }
}

/// The token as SpaceSiren shows one: flat, with its `user`.
fn token_json(core: &Core, t: &Token) -> Value {
    let p = params::<AwsIdParams>(t);
    json!({
        "access_key_id": p.access_key_id,
        "secret_access_key": secret(&p, &core.view_context()).unwrap_or_default(),
        "create_time": p.key_create_time,
        "expire_time": p.expire_time,
        "user": {
            "username": p.username,
            "create_time": p.user_create_time,
            "account_id": p.account_id,
            "num_tokens": 1,
        },
        "active": p.active,
        "location": p.location,
        "description": p.description,
    })
}

/// A token as SpaceSiren lists it: `username` in place of `user`.
fn list_item(core: &Core, t: &Token) -> Value {
    let mut v = token_json(core, t);
    let username = v["user"]["username"].take();
    if let Value::Object(m) = &mut v {
        m.remove("user");
        m.insert("username".into(), username);
    }
    v
}

fn event_json(access_key_id: &str, h: &Hit) -> Value {
    let d = &h.data;
    let text = |k: &str| d.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    json!({
        "event_id": text("event_id"),
        "access_key_id": access_key_id,
        "alerted": h.alert_status == AlertStatus::Alerted,
        "event_name": text("event_name"),
        "event_time": d.get("event_time").and_then(Value::as_i64).unwrap_or(h.time_us / 1_000_000),
        "event_region": text("event_region"),
        "request_parameters": d.get("request_parameters").cloned().unwrap_or(Value::Null),
        "source_ip_address": d.get("source_ip_address").and_then(Value::as_str).unwrap_or(&h.src_ip),
        "user_agent": text("user_agent"),
    })
}

async fn by_key(core: &Core, actor: &Actor, access_key_id: &str, missing: &str) -> Result<Token, Response> {
    core.token_by_key(actor, KeyScheme::AwsAccessKeyId, access_key_id).await.map_err(|e| not_found(e, missing))
}

/// The memo the Console shows for a token made through SpaceSiren (which has none).
fn memo_of(settings: &Params) -> String {
    ["description", "location"]
        .iter()
        .filter_map(|k| settings.get(*k).map(|v| v.trim()).filter(|v| !v.is_empty()))
        .next()
        .map_or_else(|| "Honey AWS key (SpaceSiren API)".to_string(), |v| v.chars().take(1000).collect())
}

pub async fn token(
    core: &Core,
    actor: &Actor,
    method: &Method,
    body: &Map<String, Value>,
) -> Result<Response, Response> {
    // Like SpaceSiren, the type of `access_key_id` is checked first, whatever the method.
    let key = str_param(body, "access_key_id", false)?;
    Ok(match *method {
        Method::POST => {
            let settings = settings(body)?;
            let req = NewToken { kind: KIND.into(), memo: memo_of(&settings), params: settings, ..NewToken::default() };
            let t = core.create_token(actor, req).await.map_err(core_error)?;
            reply(StatusCode::OK, token_json(core, &t))
        }
        Method::GET => match key.filter(|k| !k.trim().is_empty()) {
            Some(k) => {
                reply(StatusCode::OK, json!({ "token": token_json(core, &by_key(core, actor, &k, NOT_FOUND).await?) }))
            }
            None => {
                let filter = TokenFilter { kind: Some(KIND.into()), ..TokenFilter::default() };
                let all = core.all_tokens(actor, filter).await.map_err(core_error)?;
                let items: Vec<Value> = all.iter().map(|t| list_item(core, t)).collect();
                reply(StatusCode::OK, json!({ "count": items.len(), "tokens": items }))
            }
        },
        Method::PATCH => {
            let k = str_param(body, "access_key_id", true)?.unwrap_or_default();
            let settings = settings(body)?;
            let t = by_key(core, actor, &k, NOT_FOUND).await?;
            let t = if settings.is_empty() {
                t
            } else {
                core.set_kind_settings(actor, &t.id, &settings).await.map_err(|e| not_found(e, NOT_FOUND))?
            };
            reply(StatusCode::OK, json!({ "key": token_json(core, &t) }))
        }
        Method::DELETE => {
            let k = str_param(body, "access_key_id", true)?.unwrap_or_default();
            let t = by_key(core, actor, &k, NOT_FOUND).await?;
            core.delete_token(actor, &t.id, true).await.map_err(|e| not_found(e, NOT_FOUND))?;
            StatusCode::NO_CONTENT.into_response()
        }
        _ => error(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed."),
    })
}

pub async fn event(
    core: &Core,
    actor: &Actor,
    method: &Method,
    body: &Map<String, Value>,
) -> Result<Response, Response> {
    let event_id = str_param(body, "event_id", false)?.filter(|e| !e.trim().is_empty());
    let key = str_param(body, "access_key_id", false)?.filter(|k| !k.trim().is_empty());
    if *method != Method::GET {
        return Err(error(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed."));
    }
    Ok(match (event_id, key) {
        (Some(id), _) => {
            let (t, h) = core.hit_by_event_id(actor, KIND, id.trim()).await.map_err(|e| not_found(e, NO_EVENT))?;
            let p = params::<AwsIdParams>(&t);
            reply(StatusCode::OK, json!({ "event": event_json(&p.access_key_id, &h) }))
        }
        (None, Some(k)) => {
            let t = by_key(core, actor, &k, NO_TOKEN).await?;
            let hits = core.all_token_hits(actor, &t.id).await.map_err(core_error)?;
            let p = params::<AwsIdParams>(&t);
            let events: Vec<Value> = hits.iter().map(|h| event_json(&p.access_key_id, h)).collect();
            reply(StatusCode::OK, json!({ "count": events.len(), "access_key_id": p.access_key_id, "events": events }))
        }
        (None, None) => return Err(bad_request("Must specify 'event_id' or 'access_key_id'.")),
    })
}

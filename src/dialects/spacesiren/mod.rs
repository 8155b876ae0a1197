//! SpaceSiren dialect: `/key` (API keys), `/test-alert`, and SpaceSiren-shaped answers on
//! `/token` and `/event` — JSON in and out, as SpaceSiren's API documents it.
//!
//! Keys authenticate with `X-Key-ID` and `X-Secret-ID` (the same key id and secret every other
//! dialect uses). `POST /key` also takes `X-Provision-Key`, the value of `provision.key` in the
//! data directory, so the first keys can be made without one. Parameters travel in a JSON body
//! even on GET and DELETE. A SpaceSiren admin key is an `admin` key; a non-admin one an
//! `analyst` key. Secrets are stored hashed, so only the answer to `POST /key` carries one.
//!
//! Errors are `{"error": "..."}` with SpaceSiren's texts: 401 `Authentication failed.`, 403
//! `Access denied.`, 404 `Key not found.`, and, once the caller is known, the 400s for the body:
//! `Content-Type header must be application/json.` (a body with another media type),
//! `Could not decode json request.`, `Parameter '<name>' must be of type string|bool|int.` and
//! `Parameter 'key_id' is required.` `/token` and `/event` (honey AWS keys) are in `tokens.rs`;
//! on a server without AWS settings they answer 400 saying so.

// Parsing helpers return a ready error `Response` on a cold path; boxing it buys nothing.
#![allow(clippy::result_large_err)]
mod tokens;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use serde_json::{json, Map, Value};

use crate::auth::Actor;
use crate::core::Core;
use crate::dialects::json_body::{self, field_bool, field_int, field_str, FieldType, WrongType};
use crate::error::CoreError;
use crate::http_serve::{self, BodyError};
use crate::model::{ApiKey, KeyChange, Role};

/// Largest request body accepted.
const MAX_BODY: usize = 64 * 1024;
/// Time a client has to send its body.
const BODY_DEADLINE: Duration = Duration::from_secs(30);
/// Latest `expire_time` accepted (9999-12-31T23:59:59Z).
pub const MAX_EXPIRE_SECS: i64 = 253_402_300_799;

pub fn router(core: Arc<Core>) -> Router {
    Router::new()
        .route("/key", any(key))
        .route("/test-alert", any(test_alert))
        .route("/token", any(honey))
        .route("/event", any(honey))
        .with_state(core)
}

fn reply(status: StatusCode, body: Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

fn error(status: StatusCode, message: &str) -> Response {
    reply(status, json!({ "error": message }))
}

fn bad_request(message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, message)
}

fn core_error(e: CoreError) -> Response {
    use CoreError::*;
    match e {
        Unauthenticated => error(StatusCode::UNAUTHORIZED, "Authentication failed."),
        Forbidden(_) => error(StatusCode::FORBIDDEN, "Access denied."),
        KeyNotFound => error(StatusCode::NOT_FOUND, "Key not found."),
        InvalidParam { name, reason } => bad_request(&format!("Parameter '{name}' is invalid: {reason}.")),
        Busy => error(StatusCode::SERVICE_UNAVAILABLE, "Busy, try again shortly."),
        Upstream(m) => error(StatusCode::BAD_GATEWAY, &m),
        Storage(e) => {
            tracing::error!(error = %e, "storage failure in SpaceSiren API");
            error(StatusCode::SERVICE_UNAVAILABLE, "Storage is unavailable, try again.")
        }
        other => bad_request(&other.to_string()),
    }
}

/// `Parameter '<name>' must be of type <type>.`
fn wrong_type(e: WrongType) -> Response {
    let wanted = match e.wanted {
        FieldType::String => "string",
        FieldType::Bool => "bool",
        FieldType::Int => "int",
    };
    bad_request(&format!("Parameter '{}' must be of type {wanted}.", e.name))
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Reads (not yet parses) the body, so the connection stays usable whatever the answer.
async fn read_body(body: axum::body::Body) -> Result<axum::body::Bytes, Response> {
    http_serve::read_body(body, MAX_BODY, BODY_DEADLINE).await.map_err(|e| match e {
        BodyError::TimedOut => error(StatusCode::REQUEST_TIMEOUT, "Request body did not arrive in time."),
        _ => error(StatusCode::PAYLOAD_TOO_LARGE, "Request body is too large or unreadable."),
    })
}

/// The body as SpaceSiren reads it: a body needs `Content-Type: application/json` (parameters
/// such as `; charset=utf-8` are accepted) and must decode to a JSON object. No body (or a
/// blank one) is an empty object.
pub fn body_object(h: &HeaderMap, bytes: &[u8]) -> Result<Map<String, Value>, Response> {
    if bytes.is_empty() {
        return Ok(Map::new());
    }
    let media = header(h, "content-type").map(|c| c.split(';').next().unwrap_or_default().trim());
    if !media.is_some_and(|m| m.eq_ignore_ascii_case("application/json")) {
        return Err(bad_request("Content-Type header must be application/json."));
    }
    json_body::object(bytes).map_err(|_| bad_request("Could not decode json request."))
}

/// An optional string field; another type is SpaceSiren's `must be of type string` 400.
pub fn opt_string(m: &Map<String, Value>, name: &'static str) -> Result<Option<String>, Response> {
    Ok(field_str(m, name).map_err(wrong_type)?.map(str::to_string))
}

/// An optional boolean field; another type is SpaceSiren's `must be of type bool` 400.
pub fn opt_flag(m: &Map<String, Value>, name: &'static str) -> Result<Option<bool>, Response> {
    field_bool(m, name).map_err(wrong_type)
}

/// `expire_time`: epoch seconds, 0 = never; returned as microseconds.
pub fn opt_expire(m: &Map<String, Value>) -> Result<Option<i64>, Response> {
    match field_int(m, "expire_time").map_err(wrong_type)? {
        None => Ok(None),
        Some(secs) if (0..=MAX_EXPIRE_SECS).contains(&secs) => Ok(Some(secs * 1_000_000)),
        Some(_) => Err(bad_request(&format!(
            "Parameter 'expire_time' must be an epoch time in seconds, from 0 (never) to {MAX_EXPIRE_SECS}."
        ))),
    }
}

/// `key_id`: a string on every method (null included: SpaceSiren checks its type first);
/// absent is an error only where it is `required`.
pub fn key_id(m: &Map<String, Value>, required: bool) -> Result<Option<String>, Response> {
    match m.get("key_id") {
        None if required => Err(bad_request("Parameter 'key_id' is required.")),
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(wrong_type(WrongType { name: "key_id", wanted: FieldType::String })),
    }
}

fn key_json(k: &ApiKey) -> Value {
    json!({
        "key_id": k.key_id,
        "create_time": k.created_us / 1_000_000,
        "expire_time": k.expire_us / 1_000_000,
        "active": k.active,
        "admin": k.role == Role::Admin,
        "description": k.description,
    })
}

fn src(peer: SocketAddr) -> String {
    peer.ip().to_canonical().to_string()
}

/// The caller of `X-Key-ID` / `X-Secret-ID`.
async fn key_pair(core: &Core, h: &HeaderMap, src_ip: &str) -> Result<Actor, Response> {
    core.authenticate_pair(header(h, "x-key-id"), header(h, "x-secret-id"), src_ip, "spacesiren")
        .await
        .map_err(core_error)
}

async fn key(State(core): State<Arc<Core>>, ConnectInfo(peer): ConnectInfo<SocketAddr>, req: Request) -> Response {
    let src_ip = src(peer);
    let (parts, body) = req.into_parts();
    let bytes = match read_body(body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let h = &parts.headers;
    let actor = match (parts.method == Method::POST, header(h, "x-provision-key")) {
        (true, Some(p)) => core.authenticate_provision(p, &src_ip, "spacesiren").await.map_err(core_error),
        _ => key_pair(&core, h, &src_ip).await,
    };
    // The caller is known before the body is looked at.
    let run = async {
        let actor = actor?;
        let body = body_object(h, &bytes)?;
        handle(&core, &actor, &parts.method, &body).await
    };
    run.await.unwrap_or_else(|r| r)
}

async fn handle(core: &Core, actor: &Actor, method: &Method, body: &Map<String, Value>) -> Result<Response, Response> {
    // SpaceSiren checks the type of `key_id` on every method before anything else.
    key_id(body, false)?;
    Ok(match *method {
        Method::POST => {
            let role = if opt_flag(body, "admin")?.unwrap_or(false) { Role::Admin } else { Role::Analyst };
            let active = opt_flag(body, "active")?.unwrap_or(true);
            let expire_us = opt_expire(body)?.unwrap_or(0);
            let description = opt_string(body, "description")?.unwrap_or_default();
            let made =
                core.create_key_with(actor, role, None, description, active, expire_us).await.map_err(core_error)?;
            let mut k = key_json(&made.key);
            k["secret_id"] = made.secret.into();
            reply(StatusCode::OK, json!({ "key": k }))
        }
        Method::GET => match key_id(body, false)?.filter(|k| !k.trim().is_empty()) {
            Some(id) => {
                let k = core.get_key(actor, &id).await.map_err(core_error)?;
                reply(StatusCode::OK, json!({ "key": key_json(&k) }))
            }
            None => {
                let keys: Vec<Value> = core.list_keys(actor).await.map_err(core_error)?.iter().map(key_json).collect();
                reply(StatusCode::OK, json!({ "count": keys.len(), "keys": keys }))
            }
        },
        Method::PATCH => {
            let id = key_id(body, true)?.unwrap_or_default();
            let change = KeyChange {
                role: opt_flag(body, "admin")?.map(|a| if a { Role::Admin } else { Role::Analyst }),
                active: opt_flag(body, "active")?,
                expire_us: opt_expire(body)?,
                description: opt_string(body, "description")?,
            };
            let k = core.update_key(actor, &id, change).await.map_err(core_error)?;
            reply(StatusCode::OK, json!({ "key": key_json(&k) }))
        }
        Method::DELETE => {
            let id = key_id(body, true)?.unwrap_or_default();
            core.delete_key(actor, &id).await.map_err(core_error)?;
            StatusCode::NO_CONTENT.into_response()
        }
        _ => error(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed."),
    })
}

/// `POST /test-alert` `{"description"?: string}`: a clearly labelled test alert, carrying the
/// description, through every configured output. The answer is SpaceSiren's
/// `Test alert sent.` whether or not any output is configured (the core logs when none is).
async fn test_alert(
    State(core): State<Arc<Core>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let src_ip = src(peer);
    let (parts, body) = req.into_parts();
    let bytes = match read_body(body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let run = async {
        let actor = key_pair(&core, &parts.headers, &src_ip).await?;
        if parts.method != Method::POST {
            return Err(error(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed."));
        }
        let body = body_object(&parts.headers, &bytes)?;
        let description = field_str(&body, "description").map_err(wrong_type)?;
        core.send_test_alert(&actor, description).await.map_err(core_error)?;
        Ok(reply(StatusCode::OK, json!({ "message": "Test alert sent." })))
    };
    run.await.unwrap_or_else(|r| r)
}

/// `/token` and `/event`: authenticated by the key pair, then the body, then `tokens.rs`.
async fn honey(State(core): State<Arc<Core>>, ConnectInfo(peer): ConnectInfo<SocketAddr>, req: Request) -> Response {
    let src_ip = src(peer);
    let (parts, body) = req.into_parts();
    let bytes = match read_body(body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let run = async {
        let actor = key_pair(&core, &parts.headers, &src_ip).await?;
        let body = body_object(&parts.headers, &bytes)?;
        if parts.uri.path() == "/event" {
            tokens::event(&core, &actor, &parts.method, &body).await
        } else {
            tokens::token(&core, &actor, &parts.method, &body).await
        }
    };
    run.await.unwrap_or_else(|r| r)
}

//! SpaceSiren dialect: `/key` — API keys, JSON in and out, as SpaceSiren's API documents it.
//!
//! Keys authenticate with `X-Key-ID` and `X-Secret-ID` (the same key id and secret every other
//! dialect uses). `POST /key` also takes `X-Provision-Key`, the value of `provision.key` in the
//! data directory, so the first keys can be made without one. Parameters travel in a JSON body
//! even on GET and DELETE. Errors are `{"error": "..."}`. A SpaceSiren admin key is an
//! `admin` key; a non-admin one an `analyst` key. Secrets are stored hashed, so only the
//! answer to `POST /key` carries one.

// Parsing helpers return a ready error `Response` on a cold path; boxing it buys nothing.
#![allow(clippy::result_large_err)]
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
use crate::dialects::json_body::{self, opt_bool, opt_str, NotAnObject};
use crate::error::{CoreError, CoreResult};
use crate::http_serve::{self, BodyError};
use crate::model::{ApiKey, KeyChange, Role};

/// Largest request body accepted.
const MAX_BODY: usize = 64 * 1024;
/// Time a client has to send its body.
const BODY_DEADLINE: Duration = Duration::from_secs(30);

pub fn router(core: Arc<Core>) -> Router {
    Router::new().route("/key", any(key)).route("/test-alert", axum::routing::post(test_alert)).with_state(core)
}

fn reply(status: StatusCode, body: Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

fn error(status: StatusCode, message: &str) -> Response {
    reply(status, json!({ "error": message }))
}

fn core_error(e: CoreError) -> Response {
    use CoreError::*;
    match e {
        Unauthenticated => error(StatusCode::UNAUTHORIZED, "Authentication failed."),
        Forbidden(_) => error(StatusCode::FORBIDDEN, "Access denied."),
        KeyNotFound => error(StatusCode::NOT_FOUND, "Key not found."),
        InvalidParam { name, reason } => error(StatusCode::BAD_REQUEST, &format!("{name} {reason}")),
        Storage(e) => {
            tracing::error!(error = %e, "storage failure in SpaceSiren API");
            error(StatusCode::SERVICE_UNAVAILABLE, "Storage is unavailable, try again.")
        }
        other => error(StatusCode::BAD_REQUEST, &other.to_string()),
    }
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// The JSON body as an object; an empty body is an empty object.
fn body_object(bytes: &[u8]) -> Result<Map<String, Value>, Response> {
    json_body::object(bytes).map_err(|e| match e {
        NotAnObject::WrongType => error(StatusCode::BAD_REQUEST, "Request body must be a JSON object."),
        NotAnObject::Invalid(_) => error(StatusCode::BAD_REQUEST, "Request body is not valid JSON."),
    })
}

fn opt_string(m: &Map<String, Value>, name: &'static str) -> CoreResult<Option<String>> {
    Ok(opt_str(m, name)?.map(str::to_string))
}

/// `expire_time`: epoch seconds, 0 = never; returned as microseconds.
fn opt_expire(m: &Map<String, Value>) -> CoreResult<Option<i64>> {
    match m.get("expire_time") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_i64() {
            Some(secs) if (0..=253_402_300_799).contains(&secs) => Ok(Some(secs * 1_000_000)),
            _ => Err(CoreError::invalid("expire_time", "must be an epoch time in seconds (0 = never)")),
        },
    }
}

fn key_id(m: &Map<String, Value>, required: bool) -> CoreResult<Option<String>> {
    match opt_string(m, "key_id")?.filter(|k| !k.trim().is_empty()) {
        None if required => Err(CoreError::invalid("key_id", "is required")),
        other => Ok(other),
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

async fn key(State(core): State<Arc<Core>>, ConnectInfo(peer): ConnectInfo<SocketAddr>, req: Request) -> Response {
    let src_ip = peer.ip().to_canonical().to_string();
    let (parts, body) = req.into_parts();
    // Read (not yet parse) the body first, so the connection stays usable whatever the answer.
    let bytes = match http_serve::read_body(body, MAX_BODY, BODY_DEADLINE).await {
        Ok(b) => b,
        Err(BodyError::TimedOut) => return error(StatusCode::REQUEST_TIMEOUT, "Request body did not arrive in time."),
        Err(_) => return error(StatusCode::PAYLOAD_TOO_LARGE, "Request body is too large or unreadable."),
    };
    let h = &parts.headers;
    let actor = match (parts.method == Method::POST, header(h, "x-provision-key")) {
        (true, Some(p)) => core.authenticate_provision(p, &src_ip, "spacesiren").await,
        _ => core.authenticate_pair(header(h, "x-key-id"), header(h, "x-secret-id"), &src_ip, "spacesiren").await,
    };
    let actor = match actor {
        Ok(a) => a,
        Err(e) => return core_error(e),
    };
    // The caller is known before the body is looked at.
    let body = match body_object(&bytes) {
        Ok(b) => b,
        Err(r) => return r,
    };
    match handle(&core, &actor, &parts.method, &body).await {
        Ok(r) => r,
        Err(e) => core_error(e),
    }
}

async fn handle(core: &Core, actor: &Actor, method: &Method, body: &Map<String, Value>) -> CoreResult<Response> {
    Ok(match *method {
        Method::POST => {
            let role = if opt_bool(body, "admin")?.unwrap_or(false) { Role::Admin } else { Role::Analyst };
            let made = core
                .create_key_with(
                    actor,
                    role,
                    None,
                    opt_string(body, "description")?.unwrap_or_default(),
                    opt_bool(body, "active")?.unwrap_or(true),
                    opt_expire(body)?.unwrap_or(0),
                )
                .await?;
            let mut k = key_json(&made.key);
            k["secret_id"] = made.secret.into();
            reply(StatusCode::OK, json!({ "key": k }))
        }
        Method::GET => match key_id(body, false)? {
            Some(id) => reply(StatusCode::OK, json!({ "key": key_json(&core.get_key(actor, &id).await?) })),
            None => {
                let keys: Vec<Value> = core.list_keys(actor).await?.iter().map(key_json).collect();
                reply(StatusCode::OK, json!({ "count": keys.len(), "keys": keys }))
            }
        },
        Method::PATCH => {
            let id = key_id(body, true)?.unwrap_or_default();
            let change = KeyChange {
                role: opt_bool(body, "admin")?.map(|a| if a { Role::Admin } else { Role::Analyst }),
                active: opt_bool(body, "active")?,
                expire_us: opt_expire(body)?,
                description: opt_string(body, "description")?,
            };
            reply(StatusCode::OK, json!({ "key": key_json(&core.update_key(actor, &id, change).await?) }))
        }
        Method::DELETE => {
            core.delete_key(actor, &key_id(body, true)?.unwrap_or_default()).await?;
            StatusCode::NO_CONTENT.into_response()
        }
        _ => error(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed."),
    })
}

/// `POST /test-alert`: a clearly labelled test alert through every configured output.
async fn test_alert(
    State(core): State<Arc<Core>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let src_ip = peer.ip().to_canonical().to_string();
    let (parts, body) = req.into_parts();
    if http_serve::read_body(body, MAX_BODY, BODY_DEADLINE).await.is_err() {
        return error(StatusCode::PAYLOAD_TOO_LARGE, "Request body is too large or unreadable.");
    }
    let h = &parts.headers;
    let run = async {
        let actor =
            core.authenticate_pair(header(h, "x-key-id"), header(h, "x-secret-id"), &src_ip, "spacesiren").await?;
        core.send_test_alert(&actor, None).await
    };
    match run.await {
        Ok(n) => reply(StatusCode::OK, json!({ "message": format!("Test alert sent to {n} output(s).") })),
        Err(e) => core_error(e),
    }
}

//! Conjur host-factory dialect: host-factory tokens (expiring, CIDR-restricted enrolment
//! tokens) and host enrolment, as Conjur's API documents them.
//!
//! A Conjur host factory is a Trapline flock: `<account>:host_factory:<flock id>`, e.g.
//! `myorg:host_factory:flock:default`. Host-factory tokens are factory tokens. Enrolling a
//! host returns, as its `api_key`, the auth token of a new deploy key for that flock.
//!
//! Conjur clients log in with `POST /authn/{account}/{login}/authenticate` (login = key id,
//! body = the key's secret) and send the answer back base64-encoded as
//! `Authorization: Token token="..."`. That access token ([`crate::session`]) lives 8 minutes. Errors are Conjur's shapes: 422
//! `{"error": {"code": "argument_error", "message": ...}}`, bare 401, 403 and 404.

// Parsing helpers return a ready error `Response` on a cold path; boxing it buys nothing.
#![allow(clippy::result_large_err)]
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::Router;
use base64::Engine;
use serde_json::{json, Value};

use crate::auth::Actor;
use crate::core::Core;
use crate::error::{CoreError, CoreResult};
use crate::http_serve;
use crate::model::rfc3339;
use crate::session::Sessions;

/// Life of an access token.
const TOKEN_LIFE_SECS: i64 = 8 * 60;
/// Largest body accepted.
const MAX_BODY: usize = 64 * 1024;
/// Most tokens one request may create.
const MAX_COUNT: i64 = 100;

pub struct ConjurState {
    core: Arc<Core>,
    sessions: Sessions,
}

pub fn router(core: Arc<Core>) -> Router {
    let state = Arc::new(ConjurState { core, sessions: Sessions::new(TOKEN_LIFE_SECS) });
    Router::new()
        .route("/authn/{account}/{login}/authenticate", post(authenticate))
        .route("/host_factory_tokens", post(create_tokens))
        .route("/host_factory_tokens/{token}", delete(delete_token))
        .route("/host_factories/hosts", post(enrol))
        .with_state(state)
}

fn argument_error(message: &str) -> Response {
    let body = json!({ "error": { "code": "argument_error", "message": message } });
    (StatusCode::UNPROCESSABLE_ENTITY, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

fn core_error(e: CoreError) -> Response {
    use CoreError::*;
    match e {
        Unauthenticated => StatusCode::UNAUTHORIZED.into_response(),
        Forbidden(_) => StatusCode::FORBIDDEN.into_response(),
        FlockNotFound | FactoryNotFound => StatusCode::NOT_FOUND.into_response(),
        InvalidParam { name, reason } => argument_error(&format!("{name} {reason}")),
        EmptyMemo => argument_error("host_factory is required"),
        Storage(e) => {
            tracing::error!(error = %e, "storage failure in Conjur API");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
        other => argument_error(&other.to_string()),
    }
}

/// `Token token="<value>"` → value.
fn token_header(h: &HeaderMap) -> Option<&str> {
    let v = h.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let rest = v.strip_prefix("Token")?.trim_start();
    let rest = rest.strip_prefix("token=")?;
    Some(rest.trim().trim_matches('"'))
}

/// The key behind a Conjur access token in the Authorization header.
async fn actor(state: &ConjurState, h: &HeaderMap, src_ip: &str) -> CoreResult<Actor> {
    let raw = token_header(h).ok_or(CoreError::Unauthenticated)?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(raw).map_err(|_| CoreError::Unauthenticated)?;
    let key_id = state.sessions.verify(&decoded).ok_or(CoreError::Unauthenticated)?;
    state.core.authenticate_key_id(&key_id, src_ip, "conjur").await
}

/// Reads the body before any answer (refusals included), so the connection stays usable.
async fn body_bytes(body: Body) -> Result<axum::body::Bytes, Response> {
    http_serve::read_body(body, MAX_BODY, Duration::from_secs(30))
        .await
        .map_err(|_| argument_error("request body is too large or did not arrive"))
}

/// Parameters from the query string and a form or JSON body; repeated names (`cidr[]`) kept.
fn params(uri: &axum::http::Uri, h: &HeaderMap, bytes: &[u8]) -> Result<Vec<(String, String)>, Response> {
    let mut out: Vec<(String, String)> =
        uri.query().map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
    let json = h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|c| c.contains("json"));
    if json && !bytes.is_empty() {
        let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(bytes) else {
            return Err(argument_error("request body is not a JSON object"));
        };
        for (k, v) in m {
            match v {
                Value::Array(items) => out.extend(items.iter().map(|i| (k.clone(), scalar(i)))),
                other => out.push((k, scalar(&other))),
            }
        }
    } else {
        out.extend(form_urlencoded::parse(bytes).into_owned());
    }
    Ok(out)
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn first<'a>(p: &'a [(String, String)], name: &str) -> Option<&'a str> {
    p.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn src(peer: SocketAddr) -> String {
    peer.ip().to_canonical().to_string()
}

async fn authenticate(
    State(state): State<Arc<ConjurState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((_account, login)): Path<(String, String)>,
    body: Body,
) -> Response {
    let Ok(Ok(bytes)) = tokio::time::timeout(Duration::from_secs(30), axum::body::to_bytes(body, 4096)).await else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let api_key = String::from_utf8_lossy(&bytes).trim().to_string();
    match state.core.authenticate_pair(Some(&login), Some(&api_key), &src(peer), "conjur").await {
        Ok(a) => {
            (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], state.sessions.issue(&a.id)).into_response()
        }
        Err(e) => core_error(e),
    }
}

/// `<account>:host_factory:<flock id>` → (account, flock id).
fn host_factory(id: &str) -> CoreResult<(&str, &str)> {
    match id.split_once(":host_factory:") {
        Some((account, flock)) if !account.is_empty() && !flock.is_empty() => Ok((account, flock)),
        _ => Err(CoreError::invalid("host_factory", "must look like <account>:host_factory:<flock id>")),
    }
}

async fn create_tokens(
    State(state): State<Arc<ConjurState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = match body_bytes(body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let actor = match actor(&state, &parts.headers, &src(peer)).await {
        Ok(a) => a,
        Err(e) => return core_error(e),
    };
    let p = match params(&parts.uri, &parts.headers, &bytes) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let run = async {
        let hf = first(&p, "host_factory").ok_or_else(|| CoreError::invalid("host_factory", "is required"))?;
        let (account, flock) = host_factory(hf)?;
        let expiration = first(&p, "expiration").ok_or_else(|| CoreError::invalid("expiration", "is required"))?;
        let expires = chrono::DateTime::parse_from_rfc3339(expiration.trim())
            .map_err(|_| CoreError::invalid("expiration", "must be an ISO 8601 time such as 2030-01-01T00:00:00Z"))?
            .timestamp_micros();
        let count =
            match first(&p, "count") {
                None => 1,
                Some(c) => c.trim().parse::<i64>().ok().filter(|n| (1..=MAX_COUNT).contains(n)).ok_or_else(|| {
                    CoreError::invalid("count", format!("must be a whole number from 1 to {MAX_COUNT}"))
                })?,
            };
        let cidrs: Vec<String> =
            p.iter().filter(|(k, _)| k == "cidr[]" || k == "cidr").map(|(_, v)| v.clone()).collect();
        let label = format!("{account}:host_factory:{flock}");
        let mut out = Vec::new();
        for _ in 0..count {
            let made = state.core.create_factory(&actor, &label, Some(flock), Some(expires), &cidrs).await?;
            out.push(json!({
                "expiration": rfc3339(expires),
                "cidr": made.factory.cidrs,
                "token": made.value,
            }));
        }
        CoreResult::Ok(Value::Array(out))
    };
    match run.await {
        Ok(v) => (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response(),
        Err(e) => core_error(e),
    }
}

async fn delete_token(
    State(state): State<Arc<ConjurState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Response {
    let run = async {
        let actor = actor(&state, &headers, &src(peer)).await?;
        let f = state.core.find_factory(&actor, None, Some(&token)).await?;
        state.core.delete_factory(&actor, &f).await
    };
    match run.await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => core_error(e),
    }
}

async fn enrol(
    State(state): State<Arc<ConjurState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let src_ip = src(peer);
    let bytes = match body_bytes(body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    // A missing, unknown, revoked or expired token, or one used from outside its networks: 401.
    let (factory_actor, factory) =
        match state.core.authenticate_factory(token_header(&parts.headers), &src_ip, "conjur").await {
            Ok(x) => x,
            Err(e) => return core_error(e),
        };
    let p = match params(&parts.uri, &parts.headers, &bytes) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let Some(host) = first(&p, "id") else { return argument_error("id is required") };
    match state.core.enrol_host(&factory_actor, &factory, host, Vec::new()).await {
        Ok(made) => {
            let owner = factory.label.clone();
            let account = owner.split(":host_factory:").next().unwrap_or("trapline");
            let annotations: BTreeMap<&str, &str> = BTreeMap::new();
            let body = json!({
                "created_at": rfc3339(made.key.created_us),
                "id": format!("{account}:host:{}", host.trim()),
                "owner": owner,
                "permissions": [],
                "annotations": annotations,
                "restricted_to": factory.cidrs,
                "api_key": made.secret,
                "key_id": made.key.key_id,
            });
            (StatusCode::CREATED, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
        }
        Err(e) => core_error(e),
    }
}

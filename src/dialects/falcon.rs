//! Falcon installation-tokens dialect, as the PyPI `crowdstrike-falconpy` client uses it.
//!
//! OAuth2: `POST /oauth2/token` (form `client_id` = key id, `client_secret` = secret) answers
//! **201** with a bearer token (a [`crate::session`] token, 30 minutes); `POST /oauth2/revoke`
//! (Basic auth, form `token`) revokes one. Installation tokens are factory tokens. Every answer
//! is the Falcon envelope `{"meta": {"query_time", "trace_id", "pagination"?}, "resources",
//! "errors": [{"code", "message", "id"?}]}`; creates answer 201, everything else (DELETE too) 200.
//! `ids` arrive repeated (`?ids=a&ids=b`) or comma-separated. An id that does not exist gets an
//! error of its own (`{"code": 404, "message", "id"}`) next to the resources found: the answer is
//! 200 when at least one id was found and 404 when none was. Every token shown carries its
//! `value` (kept sealed, so it can be shown again; `null` for tokens made before values were
//! kept). Queries page 50 at a time unless `limit` says otherwise. Filters are FQL
//! ([`crate::fql`]); a filter that does not parse is a 400 naming the position. Timestamps are
//! RFC 3339 in UTC, with milliseconds unless they are zero (`2030-01-01T00:00:00Z`, as Falcon's
//! own samples parse them). No `X-Cs-Region` header is ever sent: the client would redirect
//! itself to a public cloud.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use axum::Router;
use base64::Engine;
use serde_json::{json, Map, Value};

use crate::auth::Actor;
use crate::core::Core;
use crate::dialects::json_body::{self, opt_bool, opt_str, NotAnObject};
use crate::error::{CoreError, CoreResult};
use crate::http_serve;
use crate::model::{AuditEvent, FactoryChange, FactoryToken, Micros, Query};
use crate::session::Sessions;

/// Life of a bearer token: the client refreshes it before it runs out.
const TOKEN_LIFE_SECS: i64 = 1800;
const MAX_BODY: usize = 64 * 1024;
/// Page size when the caller names none (Falcon's documented default).
const DEFAULT_LIMIT: i64 = 50;
/// Most ids looked up at once by the core; longer lists are read in chunks.
const IDS_PER_READ: usize = crate::core::MAX_QUERY_PAGE as usize;

pub struct FalconState {
    core: Arc<Core>,
    sessions: Sessions,
}

pub fn router(core: Arc<Core>) -> Router {
    let state = Arc::new(FalconState { core, sessions: Sessions::new(TOKEN_LIFE_SECS) });
    Router::new()
        .route("/oauth2/token", post(token))
        .route("/oauth2/revoke", post(revoke))
        .route("/installation-tokens/{kind}/{what}/v1", any(api))
        .with_state(state)
}

/// One answer in the Falcon envelope.
struct Answer {
    status: StatusCode,
    resources: Vec<Value>,
    /// (code, message, the id it is about).
    errors: Vec<(u16, String, Option<String>)>,
    pagination: Option<(i64, i64, i64)>,
}

impl Answer {
    fn ok(resources: Vec<Value>) -> Answer {
        Answer { status: StatusCode::OK, resources, errors: Vec::new(), pagination: None }
    }
    fn error(status: StatusCode, message: impl Into<String>) -> Answer {
        Answer {
            status,
            resources: Vec::new(),
            errors: vec![(status.as_u16(), message.into(), None)],
            pagination: None,
        }
    }
    /// A 404 for `id`, next to whatever else the answer holds.
    fn not_found(&mut self, what: &str, id: &str) {
        self.errors.push((404, format!("{what} {id} not found"), Some(id.to_string())));
    }
    /// 404 when ids were asked for and none of them was found.
    fn none_found(mut self, found: usize) -> Answer {
        if found == 0 && !self.errors.is_empty() {
            self.status = StatusCode::NOT_FOUND;
        }
        self
    }
    fn into_response(self, started: Instant) -> Response {
        let mut meta = json!({
            "query_time": started.elapsed().as_secs_f64(),
            "trace_id": uuid::Uuid::new_v4().to_string(),
        });
        if let Some((offset, limit, total)) = self.pagination {
            meta["pagination"] = json!({ "offset": offset, "limit": limit, "total": total });
        }
        let errors: Vec<Value> = self
            .errors
            .iter()
            .map(|(c, m, id)| {
                let mut e = json!({ "code": c, "message": m });
                if let Some(id) = id {
                    e["id"] = id.as_str().into();
                }
                e
            })
            .collect();
        let body = json!({ "meta": meta, "resources": self.resources, "errors": errors });
        (self.status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
    }
}

fn core_answer(e: CoreError) -> Answer {
    use CoreError::*;
    match e {
        Unauthenticated => Answer::error(StatusCode::UNAUTHORIZED, "access denied, authorization failed"),
        Forbidden(p) => {
            Answer::error(StatusCode::FORBIDDEN, format!("access denied: this key may not {}", p.describe()))
        }
        FactoryNotFound => Answer::error(StatusCode::NOT_FOUND, "token not found"),
        EmptyMemo => Answer::error(StatusCode::BAD_REQUEST, "label is required"),
        InvalidParam { name, reason } => Answer::error(StatusCode::BAD_REQUEST, format!("{name} {reason}")),
        Busy => Answer::error(StatusCode::SERVICE_UNAVAILABLE, "busy, try again shortly"),
        Upstream(m) => Answer::error(StatusCode::BAD_GATEWAY, m),
        Storage(e) => {
            tracing::error!(error = %e, "storage failure in Falcon API");
            Answer::error(StatusCode::SERVICE_UNAVAILABLE, "storage is unavailable, try again")
        }
        other => Answer::error(StatusCode::BAD_REQUEST, other.to_string()),
    }
}

fn src(peer: SocketAddr) -> String {
    peer.ip().to_canonical().to_string()
}

async fn read_body(body: Body) -> Result<axum::body::Bytes, Answer> {
    http_serve::read_body(body, MAX_BODY, Duration::from_secs(30))
        .await
        .map_err(|_| Answer::error(StatusCode::BAD_REQUEST, "request body is too large or did not arrive"))
}

async fn token(
    State(state): State<Arc<FalconState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Body,
) -> Response {
    let started = Instant::now();
    let bytes = match read_body(body).await {
        Ok(b) => b,
        Err(a) => return a.into_response(started),
    };
    let form: Vec<(String, String)> = form_urlencoded::parse(&bytes).into_owned().collect();
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    match state.core.authenticate_pair(get("client_id"), get("client_secret"), &src(peer), "falcon").await {
        Ok(actor) => {
            let bearer = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(state.sessions.issue(&actor.id));
            // Expire a little early so the client refreshes before the server would refuse.
            let body = json!({ "access_token": bearer, "expires_in": TOKEN_LIFE_SECS - 1, "token_type": "bearer" });
            (StatusCode::CREATED, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
        }
        Err(CoreError::Unauthenticated) => {
            Answer::error(StatusCode::UNAUTHORIZED, "access denied, invalid client_id or client_secret")
                .into_response(started)
        }
        Err(e) => core_answer(e).into_response(started),
    }
}

async fn revoke(
    State(state): State<Arc<FalconState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .and_then(|(_, b64)| base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok())
        .and_then(|raw| String::from_utf8(raw).ok());
    let bytes = match read_body(body).await {
        Ok(b) => b,
        Err(a) => return a.into_response(started),
    };
    let Some((id, secret)) = basic.as_deref().and_then(|b| b.split_once(':')) else {
        return Answer::error(StatusCode::UNAUTHORIZED, "access denied, authorization failed").into_response(started);
    };
    if let Err(e) = state.core.authenticate_pair(Some(id), Some(secret), &src(peer), "falcon").await {
        return core_answer(e).into_response(started);
    }
    let token = form_urlencoded::parse(&bytes).find(|(k, _)| k == "token").map(|(_, v)| v.into_owned());
    if let Some(raw) = token.and_then(|t| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(t.trim()).ok()) {
        // Only the caller's own tokens.
        if state.sessions.verify(&raw).as_deref() == Some(id) {
            state.sessions.revoke(&raw);
        }
    }
    Answer::ok(Vec::new()).into_response(started)
}

async fn bearer_actor(state: &FalconState, h: &HeaderMap, src_ip: &str) -> CoreResult<Actor> {
    let raw = h
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .and_then(|(_, t)| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(t.trim()).ok())
        .ok_or(CoreError::Unauthenticated)?;
    let key_id = state.sessions.verify(&raw).ok_or(CoreError::Unauthenticated)?;
    state.core.authenticate_key_id(&key_id, src_ip, "falcon").await
}

/// Falcon's timestamps: RFC 3339 in UTC with milliseconds, or whole seconds when the
/// milliseconds are zero (`2030-01-01T00:00:00Z`: Falcon's samples read `expires_timestamp`
/// with `%Y-%m-%dT%H:%M:%SZ`).
fn falcon_time(us: Micros) -> String {
    let t = chrono::DateTime::from_timestamp_micros(us).unwrap_or_default();
    if us.rem_euclid(1_000_000) < 1_000 {
        t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
    }
}

/// A token as Falcon shows it; `value` is None for tokens made before values were kept.
fn token_json(f: &FactoryToken, value: Option<&str>) -> Value {
    json!({
        "id": f.id,
        "value": value,
        "label": f.label,
        "status": f.status(crate::model::now_us()).as_str(),
        "type": "customer_managed",
        "created_timestamp": falcon_time(f.created_us),
        "expires_timestamp": f.expires_us.map(falcon_time),
        "last_used_timestamp": f.last_used_us.map(falcon_time),
        "revoked_timestamp": f.revoked_us.map(falcon_time),
    })
}

fn stored_token_json(core: &Core, f: &FactoryToken) -> Value {
    token_json(f, core.factory_value(f).as_deref())
}

fn event_json(e: &AuditEvent) -> Value {
    json!({
        "id": e.id.to_string(),
        "token_id": e.entry.target,
        "action": e.entry.action,
        "actor": e.entry.actor,
        "description": e.entry.description,
        "timestamp": falcon_time(e.entry.time_us),
    })
}

/// Query parameters, with `ids` split on commas as well.
pub struct Params(pub Vec<(String, String)>);

impl Params {
    fn get(&self, k: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str()).filter(|v| !v.trim().is_empty())
    }
    /// The ids asked for, each once, in the order given.
    pub fn ids(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for id in self.0.iter().filter(|(n, _)| n == "ids").flat_map(|(_, v)| v.split(',')).map(str::trim) {
            if !id.is_empty() && !out.iter().any(|o| o == id) {
                out.push(id.to_string());
            }
        }
        out
    }
    fn int(&self, k: &'static str, default: i64) -> CoreResult<i64> {
        match self.get(k) {
            None => Ok(default),
            Some(v) => v.trim().parse().map_err(|_| CoreError::invalid(k, format!("must be an integer, not {v:?}"))),
        }
    }
    /// The listing a query asks for: its FQL filter parsed, sort, offset and limit.
    pub fn query(&self) -> CoreResult<Query> {
        let filter = match self.get("filter") {
            Some(f) => Some(crate::fql::parse(f).map_err(|e| {
                CoreError::invalid("filter", format!("is invalid at position {}: {}", e.position, e.message))
            })?),
            None => None,
        };
        Ok(Query {
            filter,
            sort: self.get("sort").map(str::to_string),
            offset: self.int("offset", 0)?,
            limit: self.int("limit", DEFAULT_LIMIT)?,
        })
    }
}

/// The body as a JSON object, refused in Falcon's words.
pub fn body_object(bytes: &[u8]) -> CoreResult<Map<String, Value>> {
    json_body::object(bytes).map_err(|e| match e {
        NotAnObject::WrongType => CoreError::invalid("body", "must be a JSON object"),
        NotAnObject::Invalid(e) => CoreError::invalid("body", format!("is not valid JSON: {e}")),
    })
}

/// `expires_timestamp`: RFC 3339 text, or null (never). None when absent.
pub fn expires(m: &Map<String, Value>) -> CoreResult<Option<Option<Micros>>> {
    match m.get("expires_timestamp") {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(Some(None)),
        Some(Value::String(s)) => {
            chrono::DateTime::parse_from_rfc3339(s.trim()).map(|d| Some(Some(d.timestamp_micros()))).map_err(|_| {
                CoreError::invalid("expires_timestamp", "must be an RFC 3339 time such as 2030-01-01T00:00:00Z")
            })
        }
        Some(_) => Err(CoreError::invalid("expires_timestamp", "must be a string or null")),
    }
}

async fn api(
    State(state): State<Arc<FalconState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let src_ip = src(peer);
    // Read the body before any answer, refusals included, so the connection stays usable.
    let bytes = match read_body(body).await {
        Ok(b) => b,
        Err(a) => return a.into_response(started),
    };
    let actor = match bearer_actor(&state, &parts.headers, &src_ip).await {
        Ok(a) => a,
        Err(e) => return core_answer(e).into_response(started),
    };
    let params = Params(
        parts.uri.query().map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default(),
    );
    let path = parts.uri.path().trim_start_matches("/installation-tokens/").trim_end_matches("/v1").to_string();
    match handle(&state.core, &actor, &parts.method, &path, &params, &bytes).await {
        Ok(a) => a.into_response(started),
        Err(e) => core_answer(e).into_response(started),
    }
}

async fn handle(
    core: &Core,
    actor: &Actor,
    method: &Method,
    path: &str,
    p: &Params,
    body: &[u8],
) -> CoreResult<Answer> {
    Ok(match (method.as_str(), path) {
        ("GET", "queries/tokens") => {
            let q = p.query()?;
            let (ids, total) = core.query_factories(actor, &q).await?;
            Answer {
                pagination: Some((q.offset, q.limit, total)),
                ..Answer::ok(ids.into_iter().map(Value::String).collect())
            }
        }
        ("GET", "entities/tokens") => {
            let ids = p.ids();
            let mut found = Vec::new();
            for chunk in ids.chunks(IDS_PER_READ) {
                found.extend(core.get_factories(actor, chunk).await?);
            }
            let mut out = Answer::ok(Vec::new());
            for id in &ids {
                match found.iter().find(|f| &f.id == id) {
                    Some(f) => out.resources.push(stored_token_json(core, f)),
                    None => out.not_found("token", id),
                }
            }
            out.none_found(found.len())
        }
        ("POST", "entities/tokens") => {
            let m = body_object(body)?;
            // falconpy leaves out an empty label: a token without one is labelled "".
            let label = opt_str(&m, "label")?.unwrap_or("");
            let made = core.create_factory(actor, label, None, expires(&m)?.flatten(), &[]).await?;
            Answer { status: StatusCode::CREATED, ..Answer::ok(vec![token_json(&made.factory, Some(&made.value))]) }
        }
        ("PATCH", "entities/tokens") => {
            let m = body_object(body)?;
            let ids = p.ids();
            if ids.is_empty() {
                return Err(CoreError::invalid("ids", "are required"));
            }
            let change = FactoryChange {
                label: opt_str(&m, "label")?.map(str::to_string),
                expires_us: expires(&m)?,
                revoked_us: opt_bool(&m, "revoked")?.map(|r| r.then(crate::model::now_us)),
            };
            let mut out = Answer::ok(Vec::new());
            for id in ids {
                match core.update_factory(actor, &id, change.clone()).await {
                    Ok(f) => out.resources.push(stored_token_json(core, &f)),
                    Err(CoreError::FactoryNotFound) => out.not_found("token", &id),
                    Err(e) => return Err(e),
                }
            }
            let found = out.resources.len();
            out.none_found(found)
        }
        ("DELETE", "entities/tokens") => {
            let ids = p.ids();
            if ids.is_empty() {
                return Err(CoreError::invalid("ids", "are required"));
            }
            let mut out = Answer::ok(Vec::new());
            let mut deleted = 0;
            for id in ids {
                match core.find_factory(actor, Some(&id), None).await {
                    Ok(f) => {
                        core.delete_factory(actor, &f).await?;
                        deleted += 1;
                    }
                    Err(CoreError::FactoryNotFound) => out.not_found("token", &id),
                    Err(e) => return Err(e),
                }
            }
            out.none_found(deleted)
        }
        ("GET", "queries/audit-events") => {
            let q = p.query()?;
            let (ids, total) = core.query_factory_audit(actor, &q).await?;
            let resources = ids.iter().map(|i| Value::String(i.to_string())).collect();
            Answer { pagination: Some((q.offset, q.limit, total)), ..Answer::ok(resources) }
        }
        ("GET", "entities/audit-events") => {
            let ids = p.ids();
            let numbers: Vec<i64> = ids.iter().filter_map(|i| i.parse().ok()).collect();
            let mut found = Vec::new();
            for chunk in numbers.chunks(IDS_PER_READ) {
                found.extend(core.factory_audit_events(actor, chunk).await?);
            }
            let mut out = Answer::ok(Vec::new());
            for id in &ids {
                match found.iter().find(|e| id.parse::<i64>() == Ok(e.id)) {
                    Some(e) => out.resources.push(event_json(e)),
                    None => out.not_found("audit event", id),
                }
            }
            out.none_found(found.len())
        }
        ("GET", "entities/customer-settings") => {
            let (max, required) = core.factory_settings(actor).await?;
            Answer::ok(vec![json!({ "max_active_tokens": max, "tokens_required": required })])
        }
        ("PATCH", "entities/customer-settings") => {
            let m = body_object(body)?;
            let max = match m.get("max_active_tokens") {
                None | Some(Value::Null) => None,
                Some(v) => {
                    Some(v.as_i64().ok_or_else(|| CoreError::invalid("max_active_tokens", "must be an integer"))?)
                }
            };
            let (max, required) = core.set_factory_settings(actor, max, opt_bool(&m, "tokens_required")?).await?;
            Answer::ok(vec![json!({ "max_active_tokens": max, "tokens_required": required })])
        }
        _ => {
            Answer::error(StatusCode::NOT_FOUND, format!("no such operation: {method} /installation-tokens/{path}/v1"))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_absent_never_or_a_time() {
        let m = |v: Value| body_object(v.to_string().as_bytes()).unwrap();
        assert_eq!(expires(&m(json!({}))).unwrap(), None);
        assert_eq!(expires(&m(json!({"expires_timestamp": null}))).unwrap(), Some(None));
        assert_eq!(expires(&m(json!({"expires_timestamp": " "}))).unwrap(), Some(None));
        assert_eq!(expires(&m(json!({"expires_timestamp": "1970-01-01T00:00:01Z"}))).unwrap(), Some(Some(1_000_000)));
        assert!(expires(&m(json!({"expires_timestamp": "tomorrow"}))).is_err());
        assert!(expires(&m(json!({"expires_timestamp": 5}))).is_err());
        assert!(body_object(b"[1]").is_err() && body_object(b"{").is_err());
    }

    #[test]
    fn times_show_milliseconds_only_when_there_are_some() {
        assert_eq!(falcon_time(1_000_000), "1970-01-01T00:00:01Z");
        assert_eq!(falcon_time(1_250_000), "1970-01-01T00:00:01.250Z");
    }
}

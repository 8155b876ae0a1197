//! Conjur host-factory dialect: host-factory tokens (expiring, CIDR-restricted enrolment
//! tokens) and host enrolment, as Conjur's API documents them.
//!
//! A Conjur host factory is a Trapline flock: `<account>:host_factory:<flock id>`, e.g.
//! `myorg:host_factory:flock:default`. Host-factory tokens are factory tokens. Enrolling a
//! host returns, as its `api_key`, the auth token of a new deploy key for that flock; the
//! host's `annotations[<name>]=<value>` are kept on that key and returned as Conjur lists them,
//! `[{"name", "value"}]`.
//!
//! Conjur clients log in with `POST /authn/{account}/{login}/authenticate` (login = key id,
//! body = the key's secret). The answer is the access token's JSON, or with
//! `Accept-Encoding: base64` that JSON base64-encoded (`Content-Encoding: base64`), and it goes
//! back base64-encoded as `Authorization: Token token="..."`. That access token
//! ([`crate::session`]) lives 8 minutes.
//!
//! Errors are Conjur's shapes and texts: 422 `{"error": {"code": "argument_error", "message":
//! ...}}` (`expiration`, `host_factory`, `Input is invalid ISO8601 datetime string: <v>`,
//! `Value for parameter expiration must be in the future: <v>`, `Invalid value for parameter
//! 'count': <v>`, `Invalid id: <id>`), 404 `{"error": {"code": "not_found", "message":
//! "<Kind> '<id>' not found in account '<account>'", ...}}`, and bare 401 and 403. Unlike
//! Conjur, one request makes at most [`MAX_COUNT`] tokens.

// Parsing helpers return a ready error `Response` on a cold path; boxing it buys nothing.
#![allow(clippy::result_large_err)]
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
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime};
use serde_json::{json, Value};

use crate::auth::{Actor, Permission};
use crate::core::Core;
use crate::error::{CoreError, CoreResult};
use crate::http_serve;
use crate::model::{now_us, rfc3339};
use crate::session::Sessions;

/// Life of an access token.
const TOKEN_LIFE_SECS: i64 = 8 * 60;
/// Largest body accepted.
const MAX_BODY: usize = 64 * 1024;
/// Most tokens one request may create (Conjur has no limit).
pub const MAX_COUNT: i64 = 100;

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

fn json_reply(status: StatusCode, body: &Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

fn argument_error(message: &str) -> Response {
    json_reply(StatusCode::UNPROCESSABLE_ENTITY, &json!({ "error": { "code": "argument_error", "message": message } }))
}

/// Conjur's 404 for a record that does not exist (or that the caller cannot see): the
/// message names the record by kind, identifier and account, as Conjur's `RecordNotFound` does.
fn not_found(account: &str, kind: &str, id: &str) -> Response {
    let mut kind_word = kind.to_string();
    if let Some(first) = kind_word.get_mut(..1) {
        first.make_ascii_uppercase();
    }
    let body = json!({ "error": {
        "code": "not_found",
        "message": format!("{kind_word} '{id}' not found in account '{account}'"),
        "target": kind,
        "details": { "code": "not_found", "target": "id", "message": format!("{account}:{kind}:{id}") },
    }});
    json_reply(StatusCode::NOT_FOUND, &body)
}

fn core_error(e: CoreError) -> Response {
    use CoreError::*;
    match e {
        Unauthenticated => StatusCode::UNAUTHORIZED.into_response(),
        Forbidden(_) => StatusCode::FORBIDDEN.into_response(),
        FlockNotFound | FactoryNotFound => StatusCode::NOT_FOUND.into_response(),
        InvalidParam { name, reason } => argument_error(&format!("{name} {reason}")),
        Busy => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        Upstream(_) => StatusCode::BAD_GATEWAY.into_response(),
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

/// Whether the client asked for a base64 access token: `base64` among its `Accept-Encoding`
/// values (any case, as Conjur matches it).
fn wants_base64(h: &HeaderMap) -> bool {
    h.get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|e| e.split(';').next().unwrap_or_default().trim().eq_ignore_ascii_case("base64"))
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

/// Parameters from the query string and a form or JSON body, as Rails reads them: repeated
/// names (`cidr[]`) kept, a JSON array as repeated values, a JSON object `{"k": v}` under `name`
/// as `name[k]=v`, and JSON nulls left out (absent).
fn params(uri: &axum::http::Uri, h: &HeaderMap, bytes: &[u8]) -> Result<Vec<(String, String)>, Response> {
    let mut out: Vec<(String, String)> =
        uri.query().map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
    let json = h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|c| c.contains("json"));
    if !json || bytes.is_empty() {
        out.extend(form_urlencoded::parse(bytes).into_owned());
        return Ok(out);
    }
    let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(bytes) else {
        return Err(argument_error("request body is not a JSON object"));
    };
    for (k, v) in m {
        match v {
            Value::Null => {}
            Value::Array(items) => {
                out.extend(items.iter().filter(|i| !i.is_null()).map(|i| (k.clone(), scalar(i))));
            }
            Value::Object(inner) => {
                for (ik, iv) in inner {
                    match iv {
                        Value::Null => {}
                        Value::Array(_) | Value::Object(_) => {
                            return Err(argument_error(&format!("{k}[{ik}] must be a string, number or boolean")));
                        }
                        other => out.push((format!("{k}[{ik}]"), scalar(&other))),
                    }
                }
            }
            other => out.push((k, scalar(&other))),
        }
    }
    Ok(out)
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The first non-empty value of `name` (Conjur treats an empty one as missing).
fn first<'a>(p: &'a [(String, String)], name: &str) -> Option<&'a str> {
    p.iter().find(|(k, v)| k == name && !v.trim().is_empty()).map(|(_, v)| v.as_str())
}

/// `annotations[<name>]=<value>` pairs, in the order first given; a repeated name keeps its
/// last value (as Rails does).
fn annotations(p: &[(String, String)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in p {
        let Some(name) = k.strip_prefix("annotations[").and_then(|r| r.strip_suffix(']')) else { continue };
        match out.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = v.clone(),
            None => out.push((name.to_string(), v.clone())),
        }
    }
    out
}

fn src(peer: SocketAddr) -> String {
    peer.ip().to_canonical().to_string()
}

async fn authenticate(
    State(state): State<Arc<ConjurState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((_account, login)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Ok(Ok(bytes)) = tokio::time::timeout(Duration::from_secs(30), axum::body::to_bytes(body, 4096)).await else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let api_key = String::from_utf8_lossy(&bytes).trim().to_string();
    match state.core.authenticate_pair(Some(&login), Some(&api_key), &src(peer), "conjur").await {
        Ok(a) if wants_base64(&headers) => {
            let token = base64::engine::general_purpose::STANDARD.encode(state.sessions.issue(&a.id));
            let h = [(header::CONTENT_TYPE, "text/plain; charset=utf-8"), (header::CONTENT_ENCODING, "base64")];
            (StatusCode::OK, h, token).into_response()
        }
        Ok(a) => {
            (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], state.sessions.issue(&a.id)).into_response()
        }
        Err(e) => core_error(e),
    }
}

/// A parsed `host_factory` id: `<account>:host_factory:<id>` (the id is a flock id).
struct HostFactoryId<'a> {
    account: &'a str,
    flock: &'a str,
}

/// Splits a host-factory id as Conjur does (`account:kind:id`, the id keeping any further
/// colons); another kind, or a malformed id, is a 422.
fn host_factory(id: &str) -> Result<HostFactoryId<'_>, Response> {
    let mut parts = id.splitn(3, ':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(account), Some("host_factory"), Some(flock)) if !account.is_empty() && !flock.is_empty() => {
            Ok(HostFactoryId { account, flock })
        }
        (Some(account), Some(kind), Some(rest)) if !account.is_empty() && !kind.is_empty() && !rest.is_empty() => {
            Err(argument_error(&format!("Invalid resource kind: {kind}")))
        }
        _ => {
            Err(argument_error(&format!("Invalid host_factory id: {id} (expected <account>:host_factory:<flock id>)")))
        }
    }
}

/// An ISO 8601 time as Conjur (Ruby's `DateTime.iso8601`) takes it for `expiration`: a date
/// alone (`2050-12-31`, midnight UTC), or a date and time (`T`, or a space) with minutes,
/// optional seconds and fraction, and an optional zone (`Z`, `±HH:MM`, `±HHMM`, `±HH`; none
/// means UTC).
fn parse_iso8601(raw: &str) -> Option<DateTime<FixedOffset>> {
    let s = raw.trim();
    let utc = FixedOffset::east_opt(0)?;
    if s.len() == 10 {
        let d = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
        return d.and_time(NaiveTime::MIN).and_local_timezone(utc).single();
    }
    let (date, rest) = (s.get(..10)?, s.get(10..)?);
    let time = rest.strip_prefix(['T', 't', ' '])?;
    let (clock, offset) = if let Some(c) = time.strip_suffix(['Z', 'z']) {
        (c, utc)
    } else if let Some(at) = time.rfind(['+', '-']) {
        (&time[..at], parse_offset(&time[at..])?)
    } else {
        (time, utc)
    };
    let joined = format!("{date}T{clock}");
    let naive = NaiveDateTime::parse_from_str(&joined, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(&joined, "%Y-%m-%dT%H:%M"))
        .ok()?;
    naive.and_local_timezone(offset).single()
}

/// `+HH:MM`, `-HHMM` or `+HH` → the offset.
fn parse_offset(z: &str) -> Option<FixedOffset> {
    let (sign, rest) = match z.as_bytes().first()? {
        b'+' => (1, &z[1..]),
        b'-' => (-1, &z[1..]),
        _ => return None,
    };
    if !rest.is_ascii() {
        return None;
    }
    let (hh, mm) = match rest.len() {
        2 => (rest, "00"),
        4 => (&rest[..2], &rest[2..]),
        5 if rest.as_bytes()[2] == b':' => (&rest[..2], &rest[3..]),
        _ => return None,
    };
    if !hh.bytes().chain(mm.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (hours, minutes): (i32, i32) = (hh.parse().ok()?, mm.parse().ok()?);
    if hours > 23 || minutes > 59 {
        return None;
    }
    FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60))
}

/// A count as Conjur takes it: a positive whole number (here also at most [`MAX_COUNT`]).
fn parse_count(raw: &str) -> Option<i64> {
    raw.trim().parse::<i64>().ok().filter(|n| (1..=MAX_COUNT).contains(n))
}

/// A `cidr[]` value, normalised; refused with Conjur's wording.
fn parse_cidr(raw: &str) -> Result<String, Response> {
    use crate::net::NetError;
    match crate::net::parse_net(raw) {
        Ok(net) => Ok(net.to_string()),
        Err(NetError::HostBits(raw, net)) => Err(argument_error(&format!(
            "Invalid IP address or CIDR range '{raw}': Value has bits set to right of mask. Did you mean '{net}'?"
        ))),
        Err(NetError::Unparsable(raw)) => Err(argument_error(&format!("Invalid IP address or CIDR range '{raw}'"))),
    }
}

/// Whether `actor` can see flock `flock` (checked first, as Conjur answers 404 for a host
/// factory the caller cannot see before it looks at the other parameters). Callers that may
/// not even read are left to the core, which refuses them (403).
async fn host_factory_visible(core: &Core, actor: &Actor, flock: &str) -> Result<bool, Response> {
    if !actor.may(Permission::Read) {
        return Ok(true);
    }
    let flocks = core.list_flocks(actor).await.map_err(core_error)?;
    Ok(flocks.iter().any(|f| f.id == flock))
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
    let run = async {
        // Conjur's order: the host factory (422, 404), then expiration, count, the time itself.
        let p = params(&parts.uri, &parts.headers, &bytes)?;
        let hf_raw = first(&p, "host_factory").ok_or_else(|| argument_error("host_factory"))?;
        let hf = host_factory(hf_raw.trim())?;
        if !host_factory_visible(&state.core, &actor, hf.flock).await? {
            return Err(not_found(hf.account, "host_factory", hf.flock));
        }
        let expiration = first(&p, "expiration").ok_or_else(|| argument_error("expiration"))?;
        let count = match p.iter().find(|(k, _)| k == "count") {
            None => 1,
            Some((_, c)) => {
                parse_count(c).ok_or_else(|| argument_error(&format!("Invalid value for parameter 'count': {c}")))?
            }
        };
        let expires = parse_iso8601(expiration)
            .ok_or_else(|| argument_error(&format!("Input is invalid ISO8601 datetime string: {expiration}")))?;
        let expires_us = expires.timestamp_micros();
        if expires_us <= now_us() {
            // Ruby's DateTime#to_s: seconds, in the offset it was given with.
            let shown = expires.format("%Y-%m-%dT%H:%M:%S%:z");
            return Err(argument_error(&format!("Value for parameter expiration must be in the future: {shown}")));
        }
        let cidrs = p
            .iter()
            .filter(|(k, _)| k == "cidr[]" || k == "cidr")
            .map(|(_, v)| parse_cidr(v))
            .collect::<Result<Vec<_>, _>>()?;
        let label = format!("{}:host_factory:{}", hf.account, hf.flock);
        let mut out = Vec::new();
        for _ in 0..count {
            let made = match state.core.create_factory(&actor, &label, Some(hf.flock), Some(expires_us), &cidrs).await {
                Ok(m) => m,
                Err(CoreError::FlockNotFound) => return Err(not_found(hf.account, "host_factory", hf.flock)),
                Err(e) => return Err(core_error(e)),
            };
            out.push(json!({
                "expiration": rfc3339(expires_us),
                "cidr": made.factory.cidrs,
                "token": made.value,
            }));
        }
        Ok(json_reply(StatusCode::OK, &Value::Array(out)))
    };
    run.await.unwrap_or_else(|r| r)
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
        Err(CoreError::FactoryNotFound) => not_found("*", "host_factory_token", &token),
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
    let Some(host) = first(&p, "id").map(str::trim) else { return argument_error("id is required") };
    if host.starts_with("conjur/") || host.starts_with("/conjur/") {
        return argument_error(&format!("Invalid id: {host}"));
    }
    let annotations = annotations(&p);
    match state.core.enrol_host(&factory_actor, &factory, host, annotations.clone()).await {
        Ok(made) => {
            // Tokens made here are labelled with their host factory; others (Console, Falcon)
            // answer for their flock under the account `trapline`.
            let (account, owner) = match factory.label.split_once(":host_factory:") {
                Some((account, flock)) if !account.is_empty() && flock == factory.flock_id => {
                    (account.to_string(), factory.label.clone())
                }
                _ => ("trapline".to_string(), format!("trapline:host_factory:{}", factory.flock_id)),
            };
            let annotations: Vec<Value> =
                annotations.iter().map(|(name, value)| json!({ "name": name, "value": value })).collect();
            let body = json!({
                "created_at": rfc3339(made.key.created_us),
                "id": format!("{account}:host:{host}"),
                "owner": owner,
                "permissions": [],
                "annotations": annotations,
                "restricted_to": factory.cidrs,
                "api_key": made.secret,
                "key_id": made.key.key_id,
            });
            json_reply(StatusCode::CREATED, &body)
        }
        Err(e) => core_error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iso(s: &str) -> Option<String> {
        parse_iso8601(s).map(|t| t.to_rfc3339())
    }

    #[test]
    fn counts_and_networks() {
        assert_eq!((parse_count(" 3 "), parse_count("0"), parse_count("x")), (Some(3), None, None));
        assert_eq!(
            (parse_count(&MAX_COUNT.to_string()), parse_count(&(MAX_COUNT + 1).to_string())),
            (Some(MAX_COUNT), None)
        );
        assert_eq!(parse_cidr(" 192.0.2.7 ").ok().as_deref(), Some("192.0.2.7/32"));
        assert_eq!(parse_cidr("10.0.0.0/8").ok().as_deref(), Some("10.0.0.0/8"));
        for bad in ["10.0.0.1/8", "banana"] {
            assert_eq!(parse_cidr(bad).map_err(|r| r.status()), Err(StatusCode::UNPROCESSABLE_ENTITY), "{bad}");
        }
    }

    #[test]
    fn expiration_forms() {
        assert_eq!(iso("2050-12-31").as_deref(), Some("2050-12-31T00:00:00+00:00"));
        assert_eq!(iso("2050-12-31T10:20:30Z").as_deref(), Some("2050-12-31T10:20:30+00:00"));
        assert_eq!(iso("2050-12-31T10:20:30+02:00").as_deref(), Some("2050-12-31T10:20:30+02:00"));
        assert_eq!(iso("2050-12-31T10:20:30-0530").as_deref(), Some("2050-12-31T10:20:30-05:30"));
        assert_eq!(iso("2050-12-31T10:20:30+02").as_deref(), Some("2050-12-31T10:20:30+02:00"));
        assert_eq!(iso("2050-12-31T10:20:30.250Z").as_deref(), Some("2050-12-31T10:20:30.250+00:00"));
        assert_eq!(iso("2050-12-31T10:20").as_deref(), Some("2050-12-31T10:20:00+00:00"));
        assert_eq!(iso("2050-12-31 10:20:30").as_deref(), Some("2050-12-31T10:20:30+00:00"));
        for bad in [
            "",
            "tomorrow",
            "12345",
            "2050-13-01",
            "2050-12-32",
            "2050-12-31T",
            "2050-12-31T25:00:00Z",
            "2050-12-31T10:20:30+2:00",
            "2050-12-31T10:20:30+123",
            "2050-12-31x",
        ] {
            assert_eq!(iso(bad), None, "{bad}");
        }
    }

    #[test]
    fn counts_and_annotations() {
        assert_eq!(parse_count("1"), Some(1));
        assert_eq!(parse_count(" 100 "), Some(100));
        for bad in ["0", "-1", "1.5", "abc", "101", ""] {
            assert_eq!(parse_count(bad), None, "{bad}");
        }
        let p: Vec<(String, String)> =
            [("id", "h"), ("annotations[a]", "1"), ("annotations[b]", "2"), ("annotations[a]", "3")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        assert_eq!(annotations(&p), vec![("a".to_string(), "3".to_string()), ("b".to_string(), "2".to_string())]);
    }

    #[test]
    fn base64_is_asked_for_by_name() {
        let mut h = HeaderMap::new();
        assert!(!wants_base64(&h));
        h.insert(header::ACCEPT_ENCODING, "gzip, deflate".parse().unwrap());
        assert!(!wants_base64(&h));
        h.insert(header::ACCEPT_ENCODING, "gzip, Base64".parse().unwrap());
        assert!(wants_base64(&h));
    }
}

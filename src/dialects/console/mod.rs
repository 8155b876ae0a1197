//! Canary Console dialect: `/api/v1/...`, as the PyPI `canarytools` client, Thinkst's
//! canary-utils scripts and the Console API documentation use it.
//!
//! Parameters come from the query string and from a form (or JSON) body, merged; the secret
//! from `auth_token` or the `X-Canary-Auth-Token` header. Answers are JSON with
//! `"result": "success"`, laid out as the Console lays them out (indented, keys sorted, `": "`,
//! a final newline: shell scripts grep them line by line); errors are
//! `{"result": "error", "message": ...}` with a 4xx status and the exact messages the client
//! maps to typed exceptions. Every endpoint is one row of `ENDPOINTS` (name, methods,
//! credential, handler); the handlers live in files by concern (`tokens`, `factories`,
//! `flocks`, `incidents`, `alerts`), paged listings in `listings`, their cursors in `cursor`,
//! and the shapes of tokens and incidents in `shapes`.

// Parsing helpers return a ready error `Response` (128 bytes) on a cold path; boxing it buys nothing.
#![allow(clippy::result_large_err)]

mod alerts;
pub mod cursor;
mod factories;
mod flocks;
mod incidents;
mod listings;
mod shapes;
mod tokens;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use chrono::NaiveDateTime;
use serde_json::{json, Map, Value};

use crate::auth::Actor;
use crate::core::Core;
use crate::error::{CoreError, CoreResult};
use crate::http_serve::{self, BodyError};
use crate::kinds::{self, Upload, Uploads};
use crate::model::*;

pub use shapes::token_json;

/// Largest request body accepted.
pub const MAX_BODY: usize = 1024 * 1024;
/// Largest multipart body (uploads): a 10 MiB executable or PDF and the form around it;
/// each kind limits its own files further.
pub const MAX_UPLOAD_BODY: usize = 11 * 1024 * 1024;
/// Most parts in one multipart body.
pub const MAX_PARTS: usize = 32;
/// Time a client has to send the whole request body.
const BODY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);
/// Largest single parameter value accepted (memos have their own, smaller limit).
pub const MAX_PARAM: usize = 64 * 1024;

pub fn router(core: Arc<Core>) -> Router {
    Router::new().route("/api/v1/{*endpoint}", any(handle)).fallback(unknown_path).with_state(core)
}

/// Every path the dialect does not serve still answers in its error shape, so clients that
/// always parse JSON get a clear error rather than a decoding failure.
async fn unknown_path(req: Request) -> Response {
    error(StatusCode::NOT_FOUND, "Unknown API endpoint", Some(req.uri().path().chars().take(200).collect()))
}

/// Request parameters, by name, with the typed readings every endpoint uses.
#[derive(Debug, Clone, Default)]
pub(crate) struct Params(BTreeMap<String, String>);

impl Params {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// A present, non-empty value.
    fn opt(&self, name: &str) -> Option<&str> {
        self.get(name).map(str::trim).filter(|v| !v.is_empty())
    }

    fn required(&self, name: &'static str) -> CoreResult<&str> {
        self.opt(name).ok_or_else(|| CoreError::invalid(name, "is required"))
    }

    fn bool(&self, name: &'static str) -> CoreResult<Option<bool>> {
        self.opt(name).map(|v| kinds::parse_bool(name, v)).transpose()
    }

    fn int(&self, name: &'static str) -> CoreResult<Option<i64>> {
        self.opt(name)
            .map(|v| v.parse::<i64>().map_err(|_| CoreError::invalid(name, format!("must be an integer, not {v:?}"))))
            .transpose()
    }

    fn non_negative(&self, name: &'static str) -> CoreResult<Option<i64>> {
        match self.int(name)? {
            Some(n) if n < 0 => Err(CoreError::invalid(name, "must not be negative")),
            other => Ok(other),
        }
    }

    /// Everything but credentials and the cursor: what a listing's cursor must remember.
    fn listing(&self) -> BTreeMap<String, String> {
        self.0
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "auth_token" | "factory_auth" | "cursor"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// A parsed request: merged parameters, files, and where it came from.
struct Req {
    params: Params,
    /// Files of a multipart body, by field name.
    uploads: Uploads,
    header_secret: Option<String>,
    src_ip: String,
    /// `http://<Host>`: the base of links in answers (cursor links).
    base: String,
}

impl std::ops::Deref for Req {
    type Target = Params;
    fn deref(&self) -> &Params {
        &self.params
    }
}

fn respond(status: StatusCode, body: &Value) -> Response {
    // The Console's own layout: Python's json with indent, keys sorted (serde_json's maps are
    // sorted), a final newline.
    let mut text = serde_json::to_string_pretty(body).unwrap_or_default();
    text.push('\n');
    (status, [(header::CONTENT_TYPE, "application/json")], text).into_response()
}

fn error(status: StatusCode, message: &str, detail: Option<String>) -> Response {
    let mut body = json!({ "result": "error", "message": message });
    if let Some(d) = detail {
        body["detail"] = Value::String(d);
    }
    respond(status, &body)
}

fn success(mut body: Value) -> Response {
    body["result"] = Value::String("success".into());
    respond(StatusCode::OK, &body)
}

const BAD_PARAMS: &str = "Could not process the parameters";
/// Parameter name of the "src_host together with node_id" error, which has its own message.
const SRC_AND_NODE: &str = "src_host and node_id";

/// Maps a core error onto the Console's status and message.
fn core_error(e: CoreError) -> Response {
    use CoreError::*;
    match e {
        Unauthenticated => error(StatusCode::UNAUTHORIZED, "Invalid auth_token", None),
        Forbidden(p) => {
            error(StatusCode::FORBIDDEN, "Permission denied", Some(format!("this API key may not {}", p.describe())))
        }
        EmptyMemo => error(StatusCode::BAD_REQUEST, "Empty memo", None),
        UnknownKind => error(StatusCode::BAD_REQUEST, "Supplied kind is not valid.", None),
        InvalidParam { name: SRC_AND_NODE, .. } => {
            error(StatusCode::BAD_REQUEST, "Cannot use src_host and node_id together", None)
        }
        InvalidParam { name: "cloned_web", reason } if reason == kinds::cloned_web::TOO_FEW_LABELS => error(
            StatusCode::BAD_REQUEST,
            "Could not process the parameters. cloned_web is invalid, not enough domain labels",
            None,
        ),
        InvalidParam { name: "older_than", .. } => {
            error(StatusCode::BAD_REQUEST, "Parameter older_than was invalid.", None)
        }
        InvalidParam { name, reason } => error(StatusCode::BAD_REQUEST, BAD_PARAMS, Some(format!("{name} {reason}"))),
        TokenNotFound => error(StatusCode::NOT_FOUND, "Could not find the Canarytoken", None),
        TokenHasIncidents => error(
            StatusCode::BAD_REQUEST,
            "Could not delete Canarydrop",
            Some("the token has incidents: send clear_incidents=true to delete them with it".into()),
        ),
        IncidentNotFound => error(StatusCode::NOT_FOUND, "Incident not found", None),
        KeyNotFound => error(StatusCode::NOT_FOUND, "API key not found", None),
        FactoryNotFound => error(StatusCode::NOT_FOUND, "Factory auth string not found", None),
        OutputNotFound => error(StatusCode::NOT_FOUND, "Alert output not found", None),
        FlockNotFound => error(StatusCode::NOT_FOUND, "Flock does not exist.", None),
        FlockNameEmpty => error(StatusCode::BAD_REQUEST, "Flock name cannot be empty.", None),
        FlockNameTooLong => error(StatusCode::BAD_REQUEST, "Flock name longer than maximum (100 characters).", None),
        DefaultFlock => error(StatusCode::BAD_REQUEST, "Cannot delete default flock", None),
        FlockNotEmpty => error(StatusCode::BAD_REQUEST, "Cannot delete a non-empty flock", None),
        NoFile => error(StatusCode::BAD_REQUEST, "File generation not supported.", None),
        TooLarge { name, limit } => {
            error(StatusCode::PAYLOAD_TOO_LARGE, BAD_PARAMS, Some(format!("{name} is larger than {limit} bytes")))
        }
        Busy => error(StatusCode::SERVICE_UNAVAILABLE, "Too busy, try again shortly", None),
        e @ KindUnavailable { .. } => error(StatusCode::BAD_REQUEST, &e.to_string(), None),
        Upstream(m) => error(StatusCode::BAD_GATEWAY, "Could not create the token in AWS", Some(m)),
        Storage(e) => {
            tracing::error!(error = %e, "storage failure in console API");
            error(StatusCode::SERVICE_UNAVAILABLE, "Storage is unavailable, try again", None)
        }
    }
}

impl Req {
    async fn read(req: Request, peer: SocketAddr) -> Result<Req, Response> {
        let (parts, body) = req.into_parts();
        let mut params = BTreeMap::new();
        if let Some(q) = parts.uri.query() {
            params.extend(form_urlencoded::parse(q.as_bytes()).into_owned());
        }
        let ctype = content_type(&parts.headers);
        let limit = if ctype == "multipart/form-data" { MAX_UPLOAD_BODY } else { MAX_BODY };
        let too_large = || {
            error(StatusCode::PAYLOAD_TOO_LARGE, BAD_PARAMS, Some(format!("request body is larger than {limit} bytes")))
        };
        let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        // The body is read before the caller is known: it gets a deadline as well as a size.
        let bytes = match http_serve::read_body(body, limit, BODY_DEADLINE).await {
            Ok(b) => b,
            Err(BodyError::TooLarge) => return Err(too_large()),
            Err(BodyError::Unreadable) => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    BAD_PARAMS,
                    Some("the request body could not be read".into()),
                ))
            }
            Err(BodyError::TimedOut) => {
                return Err(error(
                    StatusCode::REQUEST_TIMEOUT,
                    BAD_PARAMS,
                    Some(format!("the request body did not arrive within {} s", BODY_DEADLINE.as_secs())),
                ))
            }
        };
        let mut uploads = Uploads::new();
        if !bytes.is_empty() {
            match ctype.as_str() {
                "" | "application/x-www-form-urlencoded" => {
                    params.extend(form_urlencoded::parse(&bytes).into_owned());
                }
                "application/json" => params.extend(json_params(&bytes)?),
                "multipart/form-data" => read_multipart(&parts.headers, bytes, &mut params, &mut uploads).await?,
                other => {
                    return Err(error(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        BAD_PARAMS,
                        Some(format!("content type {other:?} is not accepted here; send a form, multipart or JSON")),
                    ))
                }
            }
        }
        if let Some((k, _)) = params.iter().find(|(_, v)| v.len() > MAX_PARAM) {
            return Err(error(
                StatusCode::BAD_REQUEST,
                BAD_PARAMS,
                Some(format!("{k} is longer than {MAX_PARAM} bytes")),
            ));
        }
        // NUL has no place in any parameter, and PostgreSQL text cannot hold it.
        if let Some((k, _)) = params.iter().find(|(k, v)| k.contains('\0') || v.contains('\0')) {
            let shown: String = k.chars().filter(|c| *c != '\0').take(100).collect();
            return Err(error(StatusCode::BAD_REQUEST, BAD_PARAMS, Some(format!("{shown} contains a NUL character"))));
        }
        let header_secret = parts.headers.get("x-canary-auth-token").and_then(|v| v.to_str().ok()).map(str::to_string);
        // Only a plausible host name goes into links; anything else falls back to the address
        // the request reached.
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .filter(|h| h.len() <= 255 && h.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b)))
            .map(str::to_string)
            .or_else(|| parts.extensions.get::<http_serve::LocalAddr>().map(|l| l.0.to_string()))
            .unwrap_or_else(|| "localhost".into());
        Ok(Req {
            params: Params(params),
            uploads,
            header_secret,
            src_ip: peer.ip().to_canonical().to_string(),
            base: format!("http://{host}"),
        })
    }

    fn secret(&self) -> Option<&str> {
        self.get("auth_token").or(self.header_secret.as_deref())
    }

    /// The `auth_token` parameter, for links that must work fetched as they are.
    fn auth_param(&self) -> Option<&str> {
        self.get("auth_token")
    }
}

/// The parameters and files of `req` exactly as every endpoint reads them (the query string,
/// then a form, JSON or multipart body, with the size, part and NUL checks), as if from a fixed
/// peer and without answering: what the fuzz targets drive.
pub async fn read_params(req: Request) -> Result<(BTreeMap<String, String>, Uploads), Response> {
    let r = Req::read(req, SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    Ok((r.params.0, r.uploads))
}

/// Splits a multipart body into text parameters and files (parts with a file name).
async fn read_multipart(
    headers: &HeaderMap,
    body: axum::body::Bytes,
    params: &mut BTreeMap<String, String>,
    uploads: &mut Uploads,
) -> Result<(), Response> {
    let bad = |d: String| error(StatusCode::BAD_REQUEST, BAD_PARAMS, Some(d));
    let ctype = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let boundary = multer::parse_boundary(ctype).map_err(|e| bad(format!("multipart body: {e}")))?;
    let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(body) });
    let mut parts = multer::Multipart::new(stream, boundary);
    let mut count = 0;
    loop {
        let field = match parts.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => return Ok(()),
            Err(e) => return Err(bad(format!("multipart body: {e}"))),
        };
        count += 1;
        if count > MAX_PARTS {
            return Err(bad(format!("more than {MAX_PARTS} parts")));
        }
        let name = field.name().unwrap_or("").to_string();
        let filename = field.file_name().map(str::to_string);
        let content_type = field.content_type().map(|m| m.essence_str().to_string()).unwrap_or_default();
        let data = field.bytes().await.map_err(|e| bad(format!("multipart part {name:?}: {e}")))?;
        match filename {
            Some(filename) => {
                uploads.insert(name, Upload { filename, content_type, bytes: data.to_vec() });
            }
            None => {
                let text = String::from_utf8(data.to_vec()).map_err(|_| bad(format!("{name} is not UTF-8 text")))?;
                params.insert(name, text);
            }
        }
    }
}

fn content_type(h: &HeaderMap) -> String {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// A flat JSON object as parameters: strings as they are, numbers and booleans as text.
fn json_params(bytes: &[u8]) -> Result<BTreeMap<String, String>, Response> {
    let bad = |d: String| error(StatusCode::BAD_REQUEST, BAD_PARAMS, Some(d));
    let v: Value = serde_json::from_slice(bytes).map_err(|e| bad(format!("body is not valid JSON: {e}")))?;
    let Value::Object(m) = v else { return Err(bad("JSON body must be an object".into())) };
    m.into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k, s)),
            Value::Number(n) => Ok((k, n.to_string())),
            Value::Bool(b) => Ok((k, b.to_string())),
            _ => Err(bad(format!("{k} must be a string, number or boolean"))),
        })
        .collect()
}

/// How an endpoint's caller proves who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Credential {
    /// An API key (`auth_token` or the `X-Canary-Auth-Token` header).
    ApiKey,
    /// A factory auth string (`factory_auth`), and nothing else: so a factory string can mint
    /// and download tokens and do nothing more.
    Factory,
}

/// What a handler answers: the whole response, or a core error for the dialect to word.
type Reply<'a> = Pin<Box<dyn Future<Output = CoreResult<Response>> + Send + 'a>>;
/// A handler, given the endpoint's name (listings answer by it).
type Handler = for<'a> fn(&'a Core, &'a Actor, &'a Req, &'static str) -> Reply<'a>;

/// One endpoint: its name under `/api/v1/`, the methods it takes, who may call it and what
/// answers it.
struct Endpoint {
    name: &'static str,
    methods: &'static [Method],
    credential: Credential,
    handler: Handler,
}

/// A handler answering JSON, `(core, actor, req)`.
macro_rules! json_answer {
    ($f:path) => {
        |c, a, r, _| Box::pin(async move { $f(c, a, r).await.map(success) })
    };
}

/// A handler answering JSON by the endpoint's name, `(core, actor, name, req)`.
macro_rules! named_answer {
    ($f:path) => {
        |c, a, r, e| Box::pin(async move { $f(c, a, e, r).await.map(success) })
    };
}

/// A handler answering with a response of its own (a file).
macro_rules! raw_answer {
    ($f:path) => {
        |c, a, r, _| Box::pin($f(c, a, r))
    };
}

const READ: &[Method] = &[Method::GET, Method::POST];
const WRITE: &[Method] = &[Method::POST];
const DELETE: &[Method] = &[Method::POST, Method::DELETE];

macro_rules! endpoint {
    ($name:literal, $methods:expr, $handler:expr) => {
        endpoint!($name, $methods, Credential::ApiKey, $handler)
    };
    ($name:literal, $methods:expr, $credential:expr, $handler:expr) => {
        Endpoint { name: $name, methods: $methods, credential: $credential, handler: $handler }
    };
}

/// Every endpoint of the dialect, each named once.
static ENDPOINTS: &[Endpoint] = &[
    endpoint!("ping", READ, json_answer!(ping)),
    endpoint!("canarytokens/list", READ, json_answer!(kinds_list)),
    endpoint!("canarytokens/factory/list", READ, json_answer!(factory_kinds_list)),
    endpoint!("canarytokens/paginate", READ, named_answer!(listings::tokens)),
    endpoint!("canarytokens/search", READ, named_answer!(listings::tokens)),
    endpoint!("canarytoken/create", WRITE, json_answer!(tokens::create)),
    endpoint!("canarytoken/fetch", READ, json_answer!(tokens::fetch)),
    endpoint!("canarytokens/fetch", READ, json_answer!(tokens::fetch_all)),
    endpoint!("canarytoken/update", WRITE, json_answer!(tokens::update)),
    endpoint!("canarytoken/update/redirect_url", WRITE, json_answer!(tokens::set_redirect)),
    endpoint!("canarytoken/remove/redirect_url", WRITE, json_answer!(tokens::remove_redirect)),
    endpoint!("canarytoken/enable", WRITE, json_answer!(tokens::enable)),
    endpoint!("canarytoken/disable", WRITE, json_answer!(tokens::disable)),
    endpoint!("canarytoken/hits", READ, json_answer!(tokens::hits)),
    endpoint!("canarytoken/download", READ, raw_answer!(tokens::download)),
    endpoint!("canarytoken/delete", DELETE, json_answer!(tokens::delete)),
    endpoint!("canarytokens/delete", DELETE, json_answer!(tokens::delete_on_domains)),
    endpoint!("canarytoken/create_factory", WRITE, json_answer!(factories::create_factory)),
    endpoint!("canarytoken/list_factories", READ, json_answer!(factories::list_factories)),
    endpoint!("canarytoken/delete_factory", DELETE, json_answer!(factories::delete_factory)),
    endpoint!("canarytoken/factory/create", WRITE, Credential::Factory, json_answer!(factories::create_token)),
    endpoint!("canarytoken/factory", WRITE, Credential::Factory, json_answer!(factories::create_token)),
    endpoint!("canarytoken/factory/download", READ, Credential::Factory, raw_answer!(tokens::download)),
    endpoint!("flocks/list", READ, json_answer!(flocks::list)),
    endpoint!("flock/create", WRITE, json_answer!(flocks::create)),
    endpoint!("flock/rename", WRITE, json_answer!(flocks::rename)),
    endpoint!("flock/delete", DELETE, json_answer!(flocks::delete)),
    endpoint!("flock/list", READ, json_answer!(flocks::tokens)),
    endpoint!("flock/summary", READ, json_answer!(flocks::summary)),
    endpoint!("incidents/all", READ, named_answer!(listings::incidents)),
    endpoint!("incidents/unacknowledged", READ, named_answer!(listings::incidents)),
    endpoint!("incidents/acknowledged", READ, named_answer!(listings::incidents)),
    endpoint!("incidents/search", READ, named_answer!(listings::incidents)),
    endpoint!("incident/fetch", READ, json_answer!(incidents::fetch)),
    endpoint!("incident/acknowledge", WRITE, json_answer!(incidents::acknowledge)),
    endpoint!("incident/unacknowledge", WRITE, json_answer!(incidents::unacknowledge)),
    endpoint!("incident/delete", DELETE, json_answer!(incidents::delete)),
    endpoint!("incidents/acknowledge", WRITE, json_answer!(incidents::acknowledge_many)),
    endpoint!("incidents/unacknowledge", WRITE, json_answer!(incidents::unacknowledge_many)),
    endpoint!("incidents/delete", DELETE, json_answer!(incidents::delete_many)),
    endpoint!("alerts/outputs", READ, json_answer!(alerts::outputs)),
    endpoint!("alerts/outputs/add", WRITE, json_answer!(alerts::add_output)),
    endpoint!("alerts/outputs/delete", DELETE, json_answer!(alerts::delete_output)),
    endpoint!("alerts/outbox", READ, json_answer!(alerts::outbox)),
    endpoint!("alert/test", WRITE, json_answer!(alerts::test)),
];

/// The endpoint named, if the dialect has it.
fn endpoint(name: &str) -> Option<&'static Endpoint> {
    ENDPOINTS.iter().find(|e| e.name == name)
}

async fn handle(State(core): State<Arc<Core>>, ConnectInfo(peer): ConnectInfo<SocketAddr>, req: Request) -> Response {
    let method = req.method().clone();
    // Endpoint names are plain ASCII: take them from the raw path (no percent-decoding, which
    // could fail on bytes that are not UTF-8).
    let name = req.uri().path().trim_start_matches("/api/v1/").trim_end_matches('/').to_string();
    let Some(endpoint) = endpoint(&name) else {
        let shown: String = name.chars().take(200).collect();
        return error(StatusCode::NOT_FOUND, "Unknown API endpoint", Some(format!("/api/v1/{shown}")));
    };
    if !endpoint.methods.contains(&method) {
        let names: Vec<&str> = endpoint.methods.iter().map(Method::as_str).collect();
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method not allowed",
            Some(format!("{name} takes {}", names.join(" or "))),
        );
    }
    let req = match Req::read(req, peer).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let factory_endpoint = endpoint.credential == Credential::Factory;
    let authenticated = if factory_endpoint {
        core.authenticate_factory(req.get("factory_auth"), &req.src_ip, "console").await.map(|(a, _)| a)
    } else {
        core.authenticate(req.secret(), &req.src_ip, "console").await
    };
    let actor = match authenticated {
        Ok(a) => a,
        Err(CoreError::Unauthenticated) if factory_endpoint => {
            return error(StatusCode::UNAUTHORIZED, "Invalid factory_auth", None)
        }
        // The Console words a bad header differently from a bad parameter.
        Err(CoreError::Unauthenticated) if req.get("auth_token").is_none() && req.header_secret.is_some() => {
            return error(StatusCode::UNAUTHORIZED, "Unauthorized", None)
        }
        Err(e) => return core_error(e),
    };
    match (endpoint.handler)(&core, &actor, &req, endpoint.name).await {
        Ok(r) => r,
        Err(e) => core_error(e),
    }
}

async fn ping(_core: &Core, _actor: &Actor, _req: &Req) -> CoreResult<Value> {
    Ok(json!({}))
}

/// The kinds `canarytokens/list` and `canarytokens/factory/list` show: kind → human name, of
/// the kinds available on this server (aws-id needs AWS settings).
fn kind_names(core: &Core) -> Value {
    let cx = core.kind_context();
    let m: Map<String, Value> = kinds::KINDS
        .iter()
        .filter(|k| k.unavailable(&cx).is_none())
        .map(|k| (k.name().to_string(), Value::String(k.human_name().into())))
        .collect();
    Value::Object(m)
}

async fn kinds_list(core: &Core, _actor: &Actor, _req: &Req) -> CoreResult<Value> {
    Ok(json!({ "canarytokens": kind_names(core) }))
}

async fn factory_kinds_list(core: &Core, _actor: &Actor, _req: &Req) -> CoreResult<Value> {
    Ok(json!({ "factory_canarytokens": kind_names(core) }))
}

/// `2019-12-25-12:00:00` (UTC) or epoch seconds, as `newer_than` and `older_than` take them.
fn parse_time(name: &'static str, v: &str) -> CoreResult<Micros> {
    if let Ok(secs) = v.parse::<i64>() {
        return secs.checked_mul(1_000_000).ok_or_else(|| CoreError::invalid(name, "is out of range"));
    }
    NaiveDateTime::parse_from_str(v, "%Y-%m-%d-%H:%M:%S")
        .map(|t| t.and_utc().timestamp_micros())
        .map_err(|_| CoreError::invalid(name, format!("must look like 2019-12-25-12:00:00, not {v:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time("newer_than", "2020-04-06-08:21:55").unwrap(), 1_586_161_315_000_000);
        assert_eq!(parse_time("older_than", "1586161315").unwrap(), 1_586_161_315_000_000);
        assert!(parse_time("newer_than", "yesterday").is_err());
        assert!(parse_time("newer_than", "2020-01-01 00:00").is_err());
    }

    #[test]
    fn answers_are_laid_out_as_the_console_does() {
        let r = success(json!({ "b": 1, "a": { "d": "x", "c": [1] } }));
        let body = futures_util::FutureExt::now_or_never(axum::body::to_bytes(r.into_body(), 1 << 20))
            .expect("a ready body")
            .unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert_eq!(
            text,
            "{\n  \"a\": {\n    \"c\": [\n      1\n    ],\n    \"d\": \"x\"\n  },\n  \"b\": 1,\n  \"result\": \"success\"\n}\n"
        );
    }

    #[test]
    fn method_table_knows_every_documented_endpoint() {
        for e in [
            "ping",
            "canarytokens/list",
            "canarytoken/create",
            "canarytoken/fetch",
            "canarytokens/fetch",
            "canarytokens/paginate",
            "canarytokens/search",
            "canarytoken/update",
            "canarytoken/update/redirect_url",
            "canarytoken/remove/redirect_url",
            "canarytoken/enable",
            "canarytoken/disable",
            "canarytoken/delete",
            "canarytokens/delete",
            "canarytoken/download",
            "flocks/list",
            "flock/list",
            "flock/create",
            "flock/rename",
            "flock/delete",
            "flock/summary",
            "incidents/all",
            "incidents/unacknowledged",
            "incidents/acknowledged",
            "incidents/search",
            "incident/fetch",
            "incident/acknowledge",
            "incident/unacknowledge",
            "incident/delete",
            "incidents/acknowledge",
            "incidents/unacknowledge",
            "incidents/delete",
        ] {
            assert!(endpoint(e).is_some(), "{e}");
        }
        assert!(endpoint("canarytoken/nope").is_none());
        let mut names: Vec<&str> = ENDPOINTS.iter().map(|e| e.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ENDPOINTS.len(), "each endpoint is listed once");
        let factory: Vec<&str> =
            ENDPOINTS.iter().filter(|e| e.credential == Credential::Factory).map(|e| e.name).collect();
        assert_eq!(factory, ["canarytoken/factory/create", "canarytoken/factory", "canarytoken/factory/download"]);
    }
}

//! Canary Console dialect: `/api/v1/...`, as the PyPI `canarytools` client, Thinkst's
//! canary-utils scripts and the Console API documentation use it.
//!
//! Parameters come from the query string and from a form (or JSON) body, merged; the secret
//! from `auth_token` or the `X-Canary-Auth-Token` header. Answers are JSON with
//! `"result": "success"`, laid out as the Console lays them out (indented, keys sorted, `": "`,
//! a final newline: shell scripts grep them line by line); errors are
//! `{"result": "error", "message": ...}` with a 4xx status and the exact messages the client
//! maps to typed exceptions. Paged listings live in `listings`, their cursors in `cursor`,
//! and the shapes of tokens and incidents in `shapes`.

// Parsing helpers return a ready error `Response` (128 bytes) on a cold path; boxing it buys nothing.
#![allow(clippy::result_large_err)]

pub mod cursor;
mod listings;
mod shapes;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use chrono::NaiveDateTime;
use serde_json::{json, Map, Value};

use crate::auth::Actor;
use crate::core::{AlertSettings, Core, NewToken};
use crate::error::{CoreError, CoreResult};
use crate::http_serve::{self, BodyError};
use crate::kinds::{self, Upload, Uploads};
use crate::model::*;

pub use shapes::token_json;

/// Largest request body accepted.
pub const MAX_BODY: usize = 1024 * 1024;
/// Largest multipart body (uploads); each kind limits its own files further.
pub const MAX_UPLOAD_BODY: usize = 3 * 1024 * 1024;
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

/// Endpoints authenticated by a factory auth string instead of an API key.
const FACTORY_ENDPOINTS: &[&str] =
    &["canarytoken/factory/create", "canarytoken/factory", "canarytoken/factory/download"];

/// Which methods each endpoint takes; None for endpoints this dialect does not have.
fn methods(endpoint: &str) -> Option<&'static [Method]> {
    const READ: &[Method] = &[Method::GET, Method::POST];
    const WRITE: &[Method] = &[Method::POST];
    const DELETE: &[Method] = &[Method::POST, Method::DELETE];
    Some(match endpoint {
        "ping"
        | "canarytokens/list"
        | "canarytoken/fetch"
        | "canarytokens/fetch"
        | "canarytokens/paginate"
        | "canarytokens/search"
        | "canarytoken/download"
        | "flocks/list"
        | "flock/list"
        | "flock/summary"
        | "incidents/all"
        | "incidents/unacknowledged"
        | "incidents/acknowledged"
        | "incidents/search"
        | "incident/fetch"
        | "canarytoken/hits" => READ,
        "canarytoken/create"
        | "canarytoken/update"
        | "canarytoken/update/redirect_url"
        | "canarytoken/remove/redirect_url"
        | "canarytoken/enable"
        | "canarytoken/disable"
        | "flock/create"
        | "flock/rename"
        | "incident/acknowledge"
        | "incident/unacknowledge"
        | "incidents/acknowledge"
        | "incidents/unacknowledge" => WRITE,
        "canarytokens/factory/list"
        | "canarytoken/list_factories"
        | "canarytoken/factory/download"
        | "alerts/outbox"
        | "alerts/outputs" => READ,
        "alert/test" | "alerts/outputs/add" => WRITE,
        "canarytoken/create_factory" | "canarytoken/factory/create" | "canarytoken/factory" => WRITE,
        "canarytoken/delete"
        | "canarytokens/delete"
        | "flock/delete"
        | "incident/delete"
        | "incidents/delete"
        | "canarytoken/delete_factory"
        | "alerts/outputs/delete" => DELETE,
        _ => return None,
    })
}

async fn handle(State(core): State<Arc<Core>>, ConnectInfo(peer): ConnectInfo<SocketAddr>, req: Request) -> Response {
    let method = req.method().clone();
    // Endpoint names are plain ASCII: take them from the raw path (no percent-decoding, which
    // could fail on bytes that are not UTF-8).
    let endpoint = req.uri().path().trim_start_matches("/api/v1/").trim_end_matches('/').to_string();
    let Some(allowed) = methods(&endpoint) else {
        let shown: String = endpoint.chars().take(200).collect();
        return error(StatusCode::NOT_FOUND, "Unknown API endpoint", Some(format!("/api/v1/{shown}")));
    };
    if !allowed.contains(&method) {
        let names: Vec<&str> = allowed.iter().map(Method::as_str).collect();
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method not allowed",
            Some(format!("{endpoint} takes {}", names.join(" or "))),
        );
    }
    let req = match Req::read(req, peer).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    // Factory endpoints take a factory auth string and nothing else; every other endpoint an
    // API key. So a factory string can mint and download tokens and do nothing more.
    let factory_endpoint = FACTORY_ENDPOINTS.contains(&endpoint.as_str());
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
    if endpoint == "canarytoken/download" || endpoint == "canarytoken/factory/download" {
        return match download(&core, &actor, &req).await {
            Ok(r) => r,
            Err(e) => core_error(e),
        };
    }
    match run(&core, &actor, &endpoint, &req).await {
        Ok(body) => success(body),
        Err(e) => core_error(e),
    }
}

async fn download(core: &Core, actor: &Actor, req: &Req) -> CoreResult<Response> {
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

/// The kinds `canarytokens/list` and `canarytokens/factory/list` show: kind → human name.
fn kind_names() -> Value {
    let m: Map<String, Value> =
        kinds::KINDS.iter().map(|k| (k.name().to_string(), Value::String(k.human_name().into()))).collect();
    Value::Object(m)
}

async fn run(core: &Core, actor: &Actor, endpoint: &str, req: &Req) -> CoreResult<Value> {
    match endpoint {
        "ping" => Ok(json!({})),
        "canarytokens/list" => Ok(json!({ "canarytokens": kind_names() })),
        "canarytokens/factory/list" => Ok(json!({ "factory_canarytokens": kind_names() })),
        "canarytokens/paginate" | "canarytokens/search" => listings::tokens(core, actor, endpoint, req).await,
        "incidents/all" | "incidents/unacknowledged" | "incidents/acknowledged" | "incidents/search" => {
            listings::incidents(core, actor, endpoint, req).await
        }
        e if e.starts_with("canarytoken") => tokens(core, actor, endpoint, req).await,
        e if e.starts_with("flock") => flocks(core, actor, endpoint, req).await,
        e if e.starts_with("incident") => incidents(core, actor, endpoint, req).await,
        _ => alerts(core, actor, endpoint, req).await,
    }
}

/// Tokens and factories.
async fn tokens(core: &Core, actor: &Actor, endpoint: &str, req: &Req) -> CoreResult<Value> {
    let site = &core.site;
    let one = |t: &Token| shapes::token_json(site, t, false);
    Ok(match endpoint {
        "canarytoken/create" => json!({ "canarytoken": one(&core.create_token(actor, new_token(req)).await?) }),
        "canarytoken/create_factory" => {
            let memo = req.get("memo").unwrap_or("");
            if memo.trim().is_empty() {
                return Err(CoreError::EmptyMemo);
            }
            let made = core.create_factory(actor, memo, req.opt("flock_id"), None, &[]).await?;
            json!({
                "factory_auth": made.value,
                "factory_url": "/api/v1/canarytoken/factory",
                "factory_id": made.factory.id,
                "flock_id": made.factory.flock_id,
            })
        }
        "canarytoken/list_factories" => {
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
            json!({ "factories": list })
        }
        "canarytoken/delete_factory" => {
            let f = core.find_factory(actor, req.opt("factory_id"), req.opt("factory_auth")).await?;
            core.delete_factory(actor, &f).await?;
            json!({ "msg": "TokenFactory auth string deleted" })
        }
        "canarytoken/factory/create" | "canarytoken/factory" => {
            let mut t = one(&core.create_token(actor, new_token(req)).await?);
            t["factory_auth"] = req.get("factory_auth").unwrap_or("").into();
            json!({ "canarytoken": t })
        }
        "canarytoken/fetch" => json!({ "token": one(&core.get_token(actor, req.required("canarytoken")?).await?) }),
        "canarytokens/fetch" => {
            let tokens = core.all_tokens(actor, listings::token_filter(&req.params)?).await?;
            json!({ "tokens": tokens.iter().map(one).collect::<Vec<_>>() })
        }
        "canarytoken/update" => {
            // memo, and/or the token's own alert settings (an empty value clears one).
            let id = req.required("canarytoken")?;
            let alerting = alert_settings(req);
            let mut t = None;
            if req.get("memo").is_some() || alerting.is_empty() {
                t = Some(core.update_memo(actor, id, req.get("memo").unwrap_or("")).await?);
            }
            if !alerting.is_empty() {
                t = Some(core.set_alert_settings(actor, id, &alerting).await?);
            }
            json!({ "token": one(&t.ok_or(CoreError::TokenNotFound)?) })
        }
        "canarytoken/hits" => {
            let before = req.int("before")?;
            let (hits, more) =
                core.token_hits(actor, req.required("canarytoken")?, req.int("limit")?.unwrap_or(100), before).await?;
            // The next page is the hits below the last one listed (ids only grow).
            let next = if more { hits.last().map(|h| Value::from(h.id)) } else { None };
            json!({ "hits": hits.iter().map(shapes::hit_json).collect::<Vec<_>>(), "next_before": next })
        }
        "canarytoken/update/redirect_url" => {
            let t = core.set_redirect_url(actor, req.required("canarytoken")?, req.required("redirect_url")?).await?;
            json!({ "token": one(&t) })
        }
        "canarytoken/remove/redirect_url" => {
            json!({ "token": one(&core.remove_redirect_url(actor, req.required("canarytoken")?).await?) })
        }
        "canarytoken/enable" | "canarytoken/disable" => {
            core.set_enabled(actor, req.required("canarytoken")?, endpoint == "canarytoken/enable").await?;
            json!({})
        }
        "canarytoken/delete" => {
            let clear = req.bool("clear_incidents")?.unwrap_or(false);
            core.delete_token(actor, req.required("canarytoken")?, clear).await?;
            json!({})
        }
        "canarytokens/delete" => {
            let domains: Vec<String> = req
                .get("domains")
                .unwrap_or("")
                .split(',')
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .map(str::to_string)
                .collect();
            let clear = req.bool("clear_incidents")?.unwrap_or(false);
            json!({ "deleted_count": core.delete_tokens_on_domains(actor, &domains, clear).await? })
        }
        other => return Err(CoreError::invalid("endpoint", format!("{other} is not handled"))),
    })
}

/// Most kinds `flock/summary` lists under `top_tokens`.
const MAX_TOP_TOKENS: i64 = 100;

async fn flocks(core: &Core, actor: &Actor, endpoint: &str, req: &Req) -> CoreResult<Value> {
    Ok(match endpoint {
        "flocks/list" => {
            let m: Map<String, Value> =
                core.list_flocks(actor).await?.into_iter().map(|f| (f.id, Value::String(f.name))).collect();
            json!({ "flocks": m })
        }
        "flock/create" => {
            let f = core.create_flock(actor, req.get("name").unwrap_or("")).await?;
            json!({ "flock_id": f.id, "flock": { "flock_id": f.id, "name": f.name } })
        }
        "flock/rename" => {
            let f = core.rename_flock(actor, req.required("flock_id")?, req.get("name").unwrap_or("")).await?;
            json!({ "flock_id": f.id, "flock": { "flock_id": f.id, "name": f.name } })
        }
        "flock/delete" => {
            core.delete_flock(actor, req.required("flock_id")?).await?;
            json!({})
        }
        "flock/list" => json!({ "sensors": core.flock_token_ids(actor, req.required("flock_id")?).await? }),
        "flock/summary" => {
            let top = req.non_negative("num_top_tokens")?.unwrap_or(3);
            if top > MAX_TOP_TOKENS {
                return Err(CoreError::invalid("num_top_tokens", format!("must be at most {MAX_TOP_TOKENS}")));
            }
            let (f, s) = core.flock_summary(actor, req.required("flock_id")?).await?;
            let top_tokens: Vec<Value> = s
                .kinds
                .iter()
                .take(top as usize)
                .map(|(kind, count)| json!({ "count": count, "kind": kind }))
                .collect();
            json!({
                "flock_id": f.id,
                "name": f.name,
                "total_tokens": s.token_count,
                "disabled_tokens": s.token_count - s.enabled_token_count,
                "different_token_num": s.kinds.len(),
                "triggered_tokens": s.triggered_token_count,
                "incident_count": s.incident_count,
                "unacknowledged_incident_count": s.unacknowledged_incident_count,
                "top_tokens": top_tokens,
            })
        }
        other => return Err(CoreError::invalid("endpoint", format!("{other} is not handled"))),
    })
}

/// One incident and bulk actions on incidents.
async fn incidents(core: &Core, actor: &Actor, endpoint: &str, req: &Req) -> CoreResult<Value> {
    let action = match endpoint {
        "incident/acknowledge" | "incidents/acknowledge" => "acknowledged",
        "incident/unacknowledge" | "incidents/unacknowledge" => "unacknowledged",
        _ => "deleted",
    };
    Ok(match endpoint {
        "incident/fetch" => {
            let which = match (req.opt("incident"), req.opt("hash_id")) {
                (Some(_), _) => IncidentFilter { id: Some(incident_id(req)?), ..Default::default() },
                (None, Some(h)) => IncidentFilter { hash_id: Some(h.to_string()), ..Default::default() },
                (None, None) => return Err(CoreError::invalid("incident", "or hash_id is required")),
            };
            let clock = listings::clock(&req.params)?;
            let inc = core.get_incident(actor, which).await?;
            json!({ "incident": shapes::fetched_incident(&inc, &core.site, &clock) })
        }
        "incident/acknowledge" | "incident/unacknowledge" | "incident/delete" => {
            let id = incident_id(req)?;
            let filter = IncidentFilter { id: Some(id), ..Default::default() };
            match endpoint {
                "incident/delete" => core.delete_incidents(actor, filter).await?,
                e => core.set_acknowledged(actor, filter, e == "incident/acknowledge").await?,
            };
            json!({ "action": action, "key": shapes::incident_key(id) })
        }
        "incidents/acknowledge" | "incidents/unacknowledge" | "incidents/delete" => {
            let mut filter = bulk_filter(req)?;
            let ids = match endpoint {
                "incidents/delete" => {
                    if !req.bool("include_unacknowledged")?.unwrap_or(false) {
                        filter.acknowledged = Some(true);
                    }
                    core.delete_incidents(actor, filter).await?
                }
                e => core.set_acknowledged(actor, filter, e == "incidents/acknowledge").await?,
            };
            let keys: Vec<String> = ids.iter().map(|i| shapes::incident_key(*i)).collect();
            json!({ "action": action, "keys": keys })
        }
        other => return Err(CoreError::invalid("endpoint", format!("{other} is not handled"))),
    })
}

/// Alert outputs, the outbox and test alerts (Trapline's own endpoints). The outbox shows
/// targets redacted to callers who may not manage outputs.
async fn alerts(core: &Core, actor: &Actor, endpoint: &str, req: &Req) -> CoreResult<Value> {
    Ok(match endpoint {
        "alerts/outputs" => {
            let (fixed, added) = core.list_alert_outputs(actor).await?;
            let added: Vec<Value> = added.iter().map(output_json).collect();
            json!({ "configured": fixed, "outputs": added })
        }
        "alerts/outputs/add" => {
            let o = core.add_alert_output(actor, req.required("output")?, req.opt("flock_id")).await?;
            json!({ "output": output_json(&o) })
        }
        "alerts/outputs/delete" => {
            if !core.delete_alert_output(actor, req.required("output_id")?).await? {
                return Err(CoreError::OutputNotFound);
            }
            json!({})
        }
        "alert/test" => {
            let n = core.send_test_alert(actor, req.opt("description")).await?;
            if n == 0 {
                return Err(CoreError::invalid("outputs", "none are configured (see alert_webhooks, alert_outputs)"));
            }
            json!({ "outputs": n, "msg": "test alert queued for every configured output" })
        }
        "alerts/outbox" => {
            let pending = !matches!(req.opt("all"), Some("true" | "1"));
            let alerts = core.list_alerts(actor, pending, req.int("limit")?.unwrap_or(100)).await?;
            // Webhook URLs and routing keys are secrets: only those who manage outputs see
            // them whole; everyone else sees the output's type and host (audit F4).
            let whole = actor.may(crate::auth::Permission::ManageOutputs);
            let items: Vec<Value> = alerts
                .iter()
                .map(|a| {
                    let (output, last_error) = if whole {
                        (a.output.clone(), a.last_error.clone())
                    } else {
                        (
                            crate::outputs::redact::output(&a.output),
                            a.last_error.as_deref().map(crate::outputs::redact::redact),
                        )
                    };
                    json!({
                        "id": a.id,
                        "idempotency_key": a.idempotency_key,
                        "output": output,
                        "canarytoken": a.token_id,
                        "incident_id": a.incident_id,
                        "created": shapes::epoch_text(a.created_us),
                        "attempts": a.attempts,
                        "last_error": last_error,
                        "next_attempt": shapes::epoch_text(a.next_attempt_us),
                        "delivered": a.delivered_us.map(shapes::epoch_text),
                        "gave_up": a.gave_up_us.map(shapes::epoch_text),
                    })
                })
                .collect();
            json!({ "alerts": items })
        }
        other => return Err(CoreError::invalid("endpoint", format!("{other} is not handled"))),
    })
}

/// A create request: kind, memo, flock and the kind's own parameters and files. Credentials
/// and transport parameters are not the kind's business and are left out.
fn new_token(req: &Req) -> NewToken {
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

/// An alert output added through the API.
fn output_json(o: &AlertOutput) -> Value {
    json!({
        "id": o.id,
        "flock_id": o.flock_id,
        "output": o.output,
        "created": shapes::epoch_text(o.created_us),
        "created_by": o.created_by,
    })
}

/// Incident ids look like `incident:canarytoken:<n>`; a bare number is accepted too.
fn incident_id(req: &Req) -> CoreResult<i64> {
    let raw = req.required("incident")?;
    raw.rsplit(':').next().and_then(|n| n.parse::<i64>().ok()).ok_or(CoreError::IncidentNotFound)
}

/// The filters of the bulk incident actions.
fn bulk_filter(req: &Req) -> CoreResult<IncidentFilter> {
    let (node, src) = (req.opt("node_id"), req.opt("src_host"));
    if node.is_some() && src.is_some() {
        return Err(CoreError::invalid(SRC_AND_NODE, "cannot be combined"));
    }
    let mut f = IncidentFilter {
        token_id: node.map(str::to_string),
        src_ip: src.map(str::to_string),
        flock_id: req.opt("flock_id").map(str::to_string),
        ..Default::default()
    };
    if let Some(v) = req.opt("older_than") {
        f.created_before_us = Some(now_us() - parse_period(v).ok_or_else(|| CoreError::invalid("older_than", v))?);
    }
    listings::text_filters(&req.params, &mut f)?;
    Ok(f)
}

/// `[quantity][h|d|w]` in microseconds.
fn parse_period(v: &str) -> Option<i64> {
    let unit = match v.chars().last()? {
        'h' => 3_600,
        'd' => 86_400,
        'w' => 604_800,
        _ => return None,
    };
    let n: i64 = v[..v.len() - 1].parse().ok().filter(|n| *n >= 0)?;
    n.checked_mul(unit)?.checked_mul(1_000_000)
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
    fn periods() {
        assert_eq!(parse_period("1h"), Some(3_600_000_000));
        assert_eq!(parse_period("2d"), Some(2 * 86_400_000_000));
        assert_eq!(parse_period("1w"), Some(604_800_000_000));
        for bad in ["", "h", "1x", "-1d", "1.5h", "99999999999999999w"] {
            assert_eq!(parse_period(bad), None, "{bad}");
        }
    }

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
            assert!(methods(e).is_some(), "{e}");
        }
        assert!(methods("canarytoken/nope").is_none());
    }
}

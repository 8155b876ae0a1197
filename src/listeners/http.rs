//! Public trigger HTTP listener.
//!
//! Any request whose path or query holds a token id (the first run of exactly 25 `[0-9a-z]`
//! characters) is a candidate hit: it is recorded with method, path, query, headers and the
//! peer's address if the token exists and is enabled (and its kind's judge agrees). The answer
//! is the kind's ([`HttpAnswer`]): the 1×1 GIF, a redirect, a stored image, or the
//! browser-scanner page. Unknown and disabled tokens, and requests without a token, get the
//! GIF, so a visitor cannot tell a live token from a dead one or from no token at all.
//!
//! The scanner page collects a few browser details and POSTs them back to the token URL with
//! `?tl_report=<hit id>.<nonce>`; the nonce was stored with the hit, so only the page that hit
//! produced can add to it, once. The report joins that hit: it is not a second alert.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Map, Value};

use std::collections::HashMap;
use std::sync::Mutex;

use crate::ids::{is_token_byte, TOKEN_ID_LEN};
use crate::kinds::{self, HttpAnswer};
use crate::model::{now_us, Channel, HitOutcome, NewHit, Token, TokenFile};
use crate::recorder::Recorder;
use crate::store::Store;

/// The smallest transparent GIF (1×1, 43 bytes).
pub const GIF: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff,
    0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x02,
    0x02, 0x44, 0x01, 0x00, 0x3b,
];

/// Longest path, query or single header value kept in a hit; longer ones are cut (the token
/// is found first).
const MAX_KEPT: usize = 2048;
/// Most headers kept in a hit, and most bytes of header names and values together: whoever
/// holds a token URL decides how big its hits are, so each is bounded (about 14 KiB in all).
pub const MAX_HEADERS: usize = 64;
pub const MAX_HEADER_BYTES: usize = 8192;

/// Largest scanner report accepted.
const MAX_REPORT: usize = 16 * 1024;
/// Bytes of stored files (web images) kept in memory.
const FILE_CACHE_BYTES: usize = 64 * 1024 * 1024;

/// (bytes held, files by (token id, file name)).
type FileCache = (usize, HashMap<(String, &'static str), Arc<TokenFile>>);

pub struct HttpState {
    recorder: Recorder,
    store: Arc<dyn Store>,
    /// Token files by (token, name); cleared when full. Files never change, and a deleted
    /// token is unknown before its file would be served, so entries cannot go stale.
    files: Mutex<FileCache>,
}

pub fn router(recorder: Recorder, store: Arc<dyn Store>) -> Router {
    let state = HttpState { recorder, store, files: Mutex::new((0, HashMap::new())) };
    Router::new().fallback(trigger).with_state(Arc::new(state))
}

/// The first run of exactly [`TOKEN_ID_LEN`] token characters in `s`.
pub fn find_token(s: &str) -> Option<&str> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if is_token_byte(b[i]) {
            let start = i;
            while i < b.len() && is_token_byte(b[i]) {
                i += 1;
            }
            if i - start == TOKEN_ID_LEN {
                return Some(&s[start..i]);
            }
        } else {
            i += 1;
        }
    }
    None
}

fn cut(s: &str) -> &str {
    if s.len() <= MAX_KEPT {
        return s;
    }
    let mut end = MAX_KEPT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `user-agent` → `User-Agent`.
fn canonical(name: &HeaderName) -> String {
    name.as_str()
        .split('-')
        .map(|part| {
            let mut c = part.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// The headers a hit keeps: canonical names, values joined and cut, within the limits above.
pub fn headers_json(h: &HeaderMap) -> Map<String, Value> {
    let mut m = Map::new();
    let mut budget = MAX_HEADER_BYTES;
    for name in h.keys().take(MAX_HEADERS) {
        let values: Vec<String> =
            h.get_all(name).iter().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).collect();
        let joined = values.join(", ");
        let value = cut(&joined);
        let cost = name.as_str().len() + value.len();
        if cost > budget {
            break;
        }
        budget -= cost;
        m.insert(canonical(name), Value::String(value.to_string()));
    }
    m
}

fn gif() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "image/gif"), (header::CACHE_CONTROL, "no-store, no-cache, must-revalidate")],
        Body::from(GIF),
    )
        .into_response()
}

async fn trigger(
    State(state): State<Arc<HttpState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let uri = req.uri().clone();
    let path = uri.path();
    let query = uri.query().unwrap_or("");
    let Some(token) = find_token(path).or_else(|| find_token(query)) else {
        return gif();
    };
    let token = token.to_string();
    if req.method() == axum::http::Method::POST {
        if let Some(report) = form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "tl_report") {
            return scanner_report(&state, &token, &report.1, req.into_body()).await;
        }
    }
    let headers = req.headers();
    let useragent =
        headers.get(header::USER_AGENT).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).unwrap_or_default();
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html") || a.contains("application/xhtml"));
    let mut data = json!({
        "method": req.method().as_str(),
        "path": cut(path),
        "query": cut(query),
        "useragent": cut(&useragent),
        "headers": headers_json(headers),
    });
    // Only a browser may get the scanner page, and only its page may report to this hit.
    let nonce = wants_html.then(|| crate::ids::hex_id(12));
    if let Some(n) = &nonce {
        data["_report_nonce"] = n.clone().into();
    }
    let local = req.extensions().get::<crate::http_serve::LocalAddr>().map(|l| l.0);
    let hit = NewHit {
        token_id: token,
        time_us: now_us(),
        channel: Channel::Http,
        src_ip: peer.ip().to_canonical().to_string(),
        src_port: peer.port(),
        dst_ip: local.map(|l| l.ip().to_canonical().to_string()).unwrap_or_default(),
        dst_port: local.map_or(0, |l| l.port()),
        data,
    };
    match state.recorder.record(hit).await {
        Ok(HitOutcome::Unknown) => gif(),
        Ok(HitOutcome::Dropped { token }) => answer(&state, &token, None).await,
        Ok(HitOutcome::Recorded { hit_id, token, .. }) => {
            let report = nonce.map(|n| format!("{hit_id}.{n}"));
            answer(&state, &token, report).await
        }
        Err(e) => {
            // Not recorded: say so to the client so it may retry, and loudly in our log.
            tracing::error!(error = %e, "HTTP hit not recorded");
            (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, "1")], "Service Unavailable").into_response()
        }
    }
}

/// The kind's answer. `report` is set when this request may get the scanner page.
async fn answer(state: &HttpState, token: &Token, report: Option<String>) -> Response {
    match kinds::http_answer(token) {
        HttpAnswer::Gif => gif(),
        HttpAnswer::Redirect(to) => redirect(&to),
        HttpAnswer::Scanner { then } => match (report, then) {
            (Some(report), then) => scanner_page(&token.id, &report, then.as_deref()),
            // Not a browser: a redirect kind still redirects, the rest get the GIF.
            (None, Some(to)) => redirect(&to),
            (None, None) => gif(),
        },
        HttpAnswer::File(name) => match file(state, &token.id, name).await {
            Some(f) => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, f.content_type.clone()), (header::CACHE_CONTROL, "no-store".into())],
                Body::from(f.data.clone()),
            )
                .into_response(),
            None => gif(),
        },
    }
}

fn redirect(to: &str) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, to), (header::CACHE_CONTROL, "no-store")]).into_response()
}

async fn file(state: &HttpState, token_id: &str, name: &'static str) -> Option<Arc<TokenFile>> {
    let key = (token_id.to_string(), name);
    if let Some(f) = state.files.lock().unwrap_or_else(|e| e.into_inner()).1.get(&key) {
        return Some(f.clone());
    }
    let f = match state.store.get_token_file(token_id, name).await {
        Ok(Some(f)) => Arc::new(f),
        Ok(None) => return None,
        Err(e) => {
            tracing::warn!(error = %e, token = token_id, "could not read token file");
            return None;
        }
    };
    let mut cache = state.files.lock().unwrap_or_else(|e| e.into_inner());
    if cache.0 + f.data.len() > FILE_CACHE_BYTES {
        *cache = (0, HashMap::new());
    }
    cache.0 += f.data.len();
    cache.1.insert(key, f.clone());
    Some(f)
}

/// A report from the scanner page: `report` is `<hit id>.<nonce>`, the body the details.
async fn scanner_report(state: &HttpState, token_id: &str, report: &str, body: Body) -> Response {
    let done = || StatusCode::NO_CONTENT.into_response();
    let Some((hit, nonce)) = report.split_once('.') else { return done() };
    let Ok(hit_id) = hit.parse::<i64>() else { return done() };
    let Ok(Ok(bytes)) =
        tokio::time::timeout(std::time::Duration::from_secs(10), axum::body::to_bytes(body, MAX_REPORT)).await
    else {
        return done();
    };
    let Ok(details) = serde_json::from_slice::<Value>(&bytes) else { return done() };
    let browser = browser_details(&details);
    match state.store.attach_hit_data(hit_id, token_id, nonce, "browser", browser).await {
        Ok(_) => done(),
        Err(e) => {
            tracing::warn!(error = %e, "could not attach a scanner report");
            done()
        }
    }
}

/// Keeps only the known fields of a scanner report, each bounded.
pub fn browser_details(v: &Value) -> Value {
    let text = |k: &str| Value::String(v.get(k).and_then(Value::as_str).map(|s| cut_to(s, 256)).unwrap_or_default());
    let list = |k: &str, max: usize| {
        Value::Array(
            v.get(k)
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).take(max).map(|s| Value::String(cut_to(s, 256))).collect())
                .unwrap_or_default(),
        )
    };
    json!({
        "language": text("language"),
        "languages": list("languages", 16),
        "platform": text("platform"),
        "user_agent": text("user_agent"),
        "screen": text("screen"),
        "timezone": text("timezone"),
        "plugins": list("plugins", 64),
        "webrtc_local_ips": list("webrtc_local_ips", 16),
    })
}

fn cut_to(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// A JavaScript string literal that is also safe inside a `<script>` element.
fn js_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()).replace("</", "<\\/")
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('"', "&quot;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The browser-scanner page: an ordinary-looking page whose script reports the browser's
/// language, platform, screen, timezone, plugins and the local addresses WebRTC reveals, then
/// (for slow-redirect) moves on; a meta refresh moves on without script too.
fn scanner_page(token_id: &str, report: &str, then: Option<&str>) -> Response {
    let report_url = format!("?tl_report={report}&t={token_id}");
    let refresh = then
        .map(|to| format!("<meta http-equiv=\"refresh\" content=\"3;url={}\">", html_escape(to)))
        .unwrap_or_default();
    let html = SCANNER_PAGE
        .replace("{{REFRESH}}", &refresh)
        .replace("{{REPORT}}", &js_string(&report_url))
        .replace("{{THEN}}", &then.map(js_string).unwrap_or_else(|| "null".into()));
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-store")], html)
        .into_response()
}

const SCANNER_PAGE: &str = r#"<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Loading</title>{{REFRESH}}</head>
<body><p>Loading&hellip;</p>
<script>
(function () {
  var d = {}, sent = false, then = {{THEN}};
  function safe(f, dflt) { try { var v = f(); return v === undefined || v === null ? dflt : v; } catch (e) { return dflt; } }
  d.language = safe(function () { return navigator.language; }, "");
  d.languages = safe(function () { return Array.prototype.slice.call(navigator.languages || []); }, []);
  d.platform = safe(function () { return navigator.platform; }, "");
  d.user_agent = safe(function () { return navigator.userAgent; }, "");
  d.screen = safe(function () { return screen.width + "x" + screen.height + "x" + screen.colorDepth; }, "");
  d.timezone = safe(function () { return Intl.DateTimeFormat().resolvedOptions().timeZone; }, "") ||
    String(new Date().getTimezoneOffset());
  d.plugins = safe(function () {
    var p = []; for (var i = 0; i < navigator.plugins.length; i++) { p.push(navigator.plugins[i].name); } return p;
  }, []);
  d.webrtc_local_ips = [];
  function send() {
    if (sent) { return; } sent = true;
    var x = new XMLHttpRequest();
    x.open("POST", {{REPORT}}, true);
    x.setRequestHeader("Content-Type", "application/json");
    x.onloadend = function () { if (then) { location.replace(then); } };
    x.send(JSON.stringify(d));
  }
  try {
    var pc = new RTCPeerConnection({ iceServers: [] });
    pc.createDataChannel("");
    pc.onicecandidate = function (e) {
      if (!e.candidate) { send(); return; }
      var m = /([0-9]{1,3}(\.[0-9]{1,3}){3}|[0-9a-f-]+\.local)/i.exec(e.candidate.candidate);
      if (m && d.webrtc_local_ips.indexOf(m[1]) < 0) { d.webrtc_local_ips.push(m[1]); }
    };
    pc.createOffer().then(function (o) { return pc.setLocalDescription(o); }).catch(send);
  } catch (e) { send(); }
  setTimeout(send, 1500);
})();
</script></body></html>
"#;

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "abcdefghijklmnopqrstuvwxy";

    #[test]
    fn finds_exact_runs_only() {
        assert_eq!(find_token(&format!("/a/b/{ID}/index.html")), Some(ID));
        assert_eq!(find_token(&format!("x={ID}&y=1")), Some(ID));
        assert_eq!(find_token(&format!("/{ID}z/")), None, "26-char runs are not tokens");
        assert_eq!(find_token("/ABCDEFGHIJKLMNOPQRSTUVWXY/"), None);
        assert_eq!(find_token(&format!("/short/{ID}")), Some(ID));
        assert_eq!(find_token("/%ff%fe/..;/"), None);
        assert_eq!(find_token(""), None);
    }

    #[test]
    fn gif_is_a_gif() {
        assert!(GIF.starts_with(b"GIF89a"));
        assert_eq!(*GIF.last().unwrap(), 0x3b);
    }

    #[test]
    fn header_names_are_canonical() {
        assert_eq!(canonical(&HeaderName::from_static("user-agent")), "User-Agent");
        assert_eq!(canonical(&HeaderName::from_static("x-forwarded-for")), "X-Forwarded-For");
    }

    #[test]
    fn header_bytes_are_bounded() {
        let mut h = HeaderMap::new();
        for i in 0..60 {
            h.insert(HeaderName::try_from(format!("x-h{i}")).unwrap(), "v".repeat(1000).parse().unwrap());
        }
        let m = headers_json(&h);
        let total: usize = m.iter().map(|(k, v)| k.len() + v.as_str().unwrap().len()).sum();
        assert!(total <= MAX_HEADER_BYTES, "{total}");
        assert!(m.len() >= 7, "as many whole headers as fit: {}", m.len());
    }

    #[test]
    fn cut_respects_char_boundaries() {
        let s = "é".repeat(MAX_KEPT);
        assert!(cut(&s).len() <= MAX_KEPT);
        assert_eq!(cut("short"), "short");
    }
}

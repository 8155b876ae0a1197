//! Public trigger HTTP listener.
//!
//! Any request whose path or query holds a token id (the first run of exactly 25 `[0-9a-z]`
//! characters) is a candidate hit: it is handed to the [`HitSink`] with method, path, query,
//! headers and the peer's address, and recorded if the token exists and is enabled (and its
//! kind's judge agrees). The answer is the kind's ([`HttpAnswer`]), chosen from the token the
//! sink's outcome carries: the 1×1 GIF, a redirect, a stored image ([`files`]), or the
//! browser-scanner page ([`scanner`]). Unknown and disabled tokens, and requests without a
//! token, get the GIF, so a visitor cannot tell a live token from a dead one or from no token
//! at all.
//!
//! Connections are capped in all and per source and each request's headers must arrive in
//! time (see [`crate::http_serve`]); the caps are this listener's settings ([`HttpSettings`]).

pub mod files;
pub mod scanner;

pub use scanner::browser_details;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;

use crate::http_serve::{self, Limits};
use crate::ids::{is_token_byte, TOKEN_ID_LEN};
use crate::kinds::{self, HttpAnswer};
use crate::listeners::{at_least_one, Bound, Common, Listener, ListenerContext, GRACE};
#[cfg(test)]
use crate::model::TokenFile;
use crate::model::{amend_guard, now_us, Channel, HitOutcome, NewHit, Token, TokenRef};
use crate::recorder::HitSink;

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
/// Many clients, none of which may hold a connection for long: time to send the headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Where the listener listens unless told otherwise.
const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8081);

/// The HTTP listener's settings: flags `--http-*`, `TRAPLINE_HTTP_*`, TOML `[listeners.http]`.
#[derive(Debug, Clone, Default, PartialEq, clap::Args, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// Public trigger HTTP listener (host:port; port 0 picks a free one).
    #[arg(id = "http_listen", long = "http-listen", value_name = "HOST:PORT", env = "TRAPLINE_HTTP_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Connections the trigger HTTP listener serves at once (default 4096).
    #[arg(id = "http_max_conns", long = "http-max-conns", value_name = "N", env = "TRAPLINE_HTTP_MAX_CONNS")]
    pub max_conns: Option<usize>,
    /// Trigger HTTP connections one source (address, or IPv6 /64) holds at once (default 64);
    /// trusted proxies have no such cap.
    #[arg(
        id = "http_max_conns_per_source",
        long = "http-max-conns-per-source",
        value_name = "N",
        env = "TRAPLINE_HTTP_MAX_CONNS_PER_SOURCE"
    )]
    pub max_conns_per_source: Option<usize>,
}

impl HttpSettings {
    /// The address to listen on, the default filled in.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen.unwrap_or(DEFAULT_LISTEN)
    }
}

/// The HTTP listener, configured.
pub struct Http {
    listen: SocketAddr,
    limits: Limits,
    trusted: Arc<Vec<ipnet::IpNet>>,
}

impl Http {
    /// Checks `s`; the listener is always on.
    pub fn build(s: &HttpSettings, common: &Common) -> anyhow::Result<Option<Box<dyn Listener>>> {
        let limits = Limits {
            max_connections: at_least_one("http_max_conns", s.max_conns, 4096)?,
            max_per_source: at_least_one("http_max_conns_per_source", s.max_conns_per_source, 64)?,
            header_timeout: HEADER_TIMEOUT,
        };
        Ok(Some(Box::new(Http { listen: s.listen_addr(), limits, trusted: common.trusted_proxies.clone() })))
    }
}

#[async_trait]
impl Listener for Http {
    fn name(&self) -> &'static str {
        "http"
    }

    async fn bind(self: Box<Self>) -> anyhow::Result<Box<dyn Bound>> {
        let socket = TcpListener::bind(self.listen)
            .await
            .with_context(|| format!("cannot bind trigger HTTP on {}", self.listen))?;
        let addr = socket.local_addr()?;
        Ok(Box::new(BoundHttp { socket, addr, http: *self }))
    }
}

struct BoundHttp {
    socket: TcpListener,
    addr: SocketAddr,
    http: Http,
}

#[async_trait]
impl Bound for BoundHttp {
    fn local_addr(&self) -> Option<SocketAddr> {
        Some(self.addr)
    }

    fn describe(&self) -> Vec<String> {
        vec![format!("trigger HTTP:     http://{}/", self.addr)]
    }

    async fn run(self: Box<Self>, cx: ListenerContext) -> anyhow::Result<()> {
        let Http { limits, trusted, .. } = self.http;
        http_serve::serve(self.socket, router(cx.hits), limits, trusted, cx.stop, GRACE).await;
        Ok(())
    }
}

struct HttpState {
    sink: Arc<dyn HitSink>,
    files: files::Files,
}

/// The trigger routes: every request is a candidate hit.
pub fn router(sink: Arc<dyn HitSink>) -> Router {
    let state = HttpState { files: files::Files::new(sink.clone()), sink };
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
    cut_to(s, MAX_KEPT)
}

/// `s` cut to at most `max` bytes, at a character boundary.
fn cut_to(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
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
            return scanner::report(state.sink.as_ref(), &token, &report.1, req.into_body()).await;
        }
    }
    let headers = req.headers();
    let useragent =
        headers.get(header::USER_AGENT).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).unwrap_or_default();
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html") || a.contains("application/xhtml"));
    let data = json!({
        "method": req.method().as_str(),
        "path": cut(path),
        "query": cut(query),
        "useragent": cut(&useragent),
        "headers": headers_json(headers),
    });
    // Only a browser may get the scanner page, and only its page may report to this hit: the
    // nonce is the hit's private amendment guard, never shown with its data.
    let nonce = wants_html.then(|| crate::ids::hex_id(12));
    let local = req.extensions().get::<crate::http_serve::LocalAddr>().map(|l| l.0);
    let hit = NewHit {
        token: TokenRef::Id(token),
        time_us: now_us(),
        channel: Channel::Http,
        src_ip: peer.ip().to_canonical().to_string(),
        src_port: peer.port(),
        dst_ip: local.map(|l| l.ip().to_canonical().to_string()).unwrap_or_default(),
        dst_port: local.map_or(0, |l| l.port()),
        data,
        private: nonce.as_deref().map(amend_guard),
        // An HTTP trigger is the source alone: a browser loading the page twice is one.
        group: None,
    };
    match state.sink.record(hit).await {
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
            (Some(report), then) => scanner::page(&token.id, &report, then.as_deref()),
            // Not a browser: a redirect kind still redirects, the rest get the GIF.
            (None, Some(to)) => redirect(&to),
            (None, None) => gif(),
        },
        HttpAnswer::File(name) => match state.files.get(&token.id, name).await {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::testing::token;
    use crate::recorder::testing::{Answer, FakeSink};
    use crate::recorder::{HitAmendment, RecordError};
    use tower::ServiceExt;

    /// Sends `req` through the listener's router over `sink`, from 192.0.2.7:4444.
    async fn send(sink: &Arc<FakeSink>, mut req: axum::http::Request<Body>) -> Response {
        req.extensions_mut().insert(ConnectInfo::<SocketAddr>("192.0.2.7:4444".parse().unwrap()));
        router(sink.clone()).oneshot(req).await.unwrap()
    }

    fn get(uri: &str) -> axum::http::Request<Body> {
        axum::http::Request::get(uri).header("user-agent", "curl/8").body(Body::empty()).unwrap()
    }

    async fn body(r: Response) -> Vec<u8> {
        axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap().to_vec()
    }

    #[tokio::test]
    async fn a_request_naming_a_token_is_handed_to_the_sink() {
        let sink = Arc::new(FakeSink::new(Answer::Record(token("http", json!({"browser_scanner_enabled": "false"})))));
        let r = send(&sink, get(&format!("/static/{ID}/x.png?q=1"))).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(body(r).await, GIF);
        let hits = sink.hits();
        let [hit] = hits.as_slice() else { panic!("one hit: {hits:?}") };
        assert_eq!((&hit.token, hit.channel), (&TokenRef::Id(ID.into()), Channel::Http));
        assert_eq!((hit.src_ip.as_str(), hit.src_port), ("192.0.2.7", 4444));
        assert_eq!(hit.data["method"], "GET");
        assert_eq!(hit.data["path"], format!("/static/{ID}/x.png"));
        assert_eq!(hit.data["query"], "q=1");
        assert_eq!(hit.data["useragent"], "curl/8");
        assert_eq!(hit.data["headers"]["User-Agent"], "curl/8");
        assert_eq!(hit.private, None, "not a browser: no scanner page to report");
        assert_eq!(hit.group, None, "an HTTP trigger is its source alone");

        assert_eq!(body(send(&sink, get("/no/token/here")).await).await, GIF);
        assert_eq!(sink.hits().len(), 1, "no token, nothing handed on");
    }

    #[tokio::test]
    async fn the_answer_follows_the_outcome() {
        let sink = Arc::new(FakeSink::new(Answer::Unknown));
        assert_eq!(body(send(&sink, get(&format!("/{ID}"))).await).await, GIF);
        let redirect = token("fast-redirect", json!({"browser_redirect_url": "https://example.com/next"}));
        sink.set_answer(Answer::Drop(redirect.clone()));
        let r = send(&sink, get(&format!("/{ID}"))).await;
        assert_eq!(r.status(), StatusCode::FOUND, "a dropped hit is still answered as the kind answers");
        assert_eq!(r.headers()[header::LOCATION], "https://example.com/next");
        sink.set_answer(Answer::Fail(RecordError::Overloaded));
        let r = send(&sink, get(&format!("/{ID}"))).await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "not stored: the client may retry");
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
    }

    #[tokio::test]
    async fn a_browser_gets_the_scanner_and_its_report_amends_the_hit() {
        let sink = Arc::new(FakeSink::new(Answer::Record(token("http", json!({})))));
        let page =
            axum::http::Request::get(format!("/{ID}")).header("accept", "text/html").body(Body::empty()).unwrap();
        let html = String::from_utf8(body(send(&sink, page).await).await).unwrap();
        let hit = &sink.hits()[0];
        let nonce = hit.private.as_ref().unwrap()[crate::model::AMEND_GUARD].as_str().unwrap().to_string();
        assert_eq!(nonce.len(), 24);
        assert!(!hit.data.to_string().contains(&nonce), "the nonce is private: {}", hit.data);
        assert!(html.contains(&format!("?tl_report=1.{nonce}&t={ID}")), "the page reports to hit 1");

        let report = axum::http::Request::post(format!("/{ID}?tl_report=1.{nonce}"))
            .body(Body::from(r#"{"language":"de-CH","plugins":["a","b"],"extra":"dropped"}"#))
            .unwrap();
        assert_eq!(send(&sink, report).await.status(), StatusCode::NO_CONTENT);
        let amendments = sink.amendments.lock().unwrap().clone();
        let [HitAmendment { hit_id: 1, token_id, guard: sent, key, value }] = amendments.as_slice() else {
            panic!("one amendment of hit 1: {amendments:?}")
        };
        assert_eq!((token_id.as_str(), sent, key.as_str()), (ID, &nonce, "browser"));
        assert_eq!((&value["language"], &value["plugins"]), (&json!("de-CH"), &json!(["a", "b"])));
        assert!(value.get("extra").is_none());
        assert_eq!(sink.hits().len(), 1, "a report is no hit of its own");
    }

    #[tokio::test]
    async fn stored_files_come_from_the_sink() {
        let mut sink = FakeSink::new(Answer::Record(token("web-image", json!({}))));
        let png = TokenFile { name: "web_image".into(), content_type: "image/png".into(), data: b"PNG!".to_vec() };
        sink.files.insert((ID.into(), "web_image".into()), png);
        let sink = Arc::new(sink);
        let r = send(&sink, get(&format!("/{ID}/i.png"))).await;
        assert_eq!(r.headers()[header::CONTENT_TYPE], "image/png");
        assert_eq!(body(r).await, b"PNG!");
    }

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

//! Public trigger HTTP listener.
//!
//! Any request whose path or query holds a token id (the first run of exactly 25 `[0-9a-z]`
//! characters) is a candidate hit: it is recorded with method, path, query, headers and the
//! peer's address if the token exists and is enabled. Every request gets the same innocuous
//! answer either way — a 1×1 transparent GIF — so a visitor cannot tell a live token from a dead
//! one or from no token at all.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Map, Value};

use crate::ids::{is_token_byte, TOKEN_ID_LEN};
use crate::model::{now_us, Channel, NewHit};
use crate::recorder::Recorder;

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
const MAX_HEADERS: usize = 64;
const MAX_HEADER_BYTES: usize = 8192;

pub fn router(recorder: Recorder) -> Router {
    Router::new().fallback(trigger).with_state(Arc::new(recorder))
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

fn headers_json(h: &HeaderMap) -> Map<String, Value> {
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
    State(recorder): State<Arc<Recorder>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let uri = req.uri();
    let path = uri.path();
    let query = uri.query().unwrap_or("");
    let Some(token) = find_token(path).or_else(|| find_token(query)) else {
        return gif();
    };
    let headers = req.headers();
    let useragent =
        headers.get(header::USER_AGENT).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).unwrap_or_default();
    let hit = NewHit {
        token_id: token.to_string(),
        time_us: now_us(),
        channel: Channel::Http,
        src_ip: peer.ip().to_canonical().to_string(),
        src_port: peer.port(),
        data: json!({
            "method": req.method().as_str(),
            "path": cut(path),
            "query": cut(query),
            "useragent": cut(&useragent),
            "headers": headers_json(headers),
        }),
    };
    match recorder.record(hit).await {
        Ok(_) => gif(),
        Err(e) => {
            // Not recorded: say so to the client so it may retry, and loudly in our log.
            tracing::error!(error = %e, "HTTP hit not recorded");
            (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, "1")], "Service Unavailable").into_response()
        }
    }
}

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

//! The browser scanner: the page the HTTP listener answers browsers with for kinds that ask
//! for it ([`crate::kinds::HttpAnswer::Scanner`]), and the report that page sends back.
//!
//! The page collects a few browser details and POSTs them back to the token URL with
//! `?tl_report=<hit id>.<nonce>`; the nonce was stored with the hit as its private amendment
//! guard, so only the page that hit produced can add to it, once (the [`HitSink`] checks it). The report joins that hit: it is
//! not a second alert.

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::recorder::{HitAmendment, HitSink};

/// Largest scanner report accepted.
const MAX_REPORT: usize = 16 * 1024;
/// Time a scanner report's body has to arrive.
const REPORT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A report from the scanner page: `report` is `<hit id>.<nonce>`, the body the details.
pub(super) async fn report(sink: &dyn HitSink, token_id: &str, report: &str, body: Body) -> Response {
    let done = || StatusCode::NO_CONTENT.into_response();
    let Some((hit, nonce)) = report.split_once('.') else { return done() };
    let Ok(hit_id) = hit.parse::<i64>() else { return done() };
    let Ok(Ok(bytes)) = tokio::time::timeout(REPORT_TIMEOUT, axum::body::to_bytes(body, MAX_REPORT)).await else {
        return done();
    };
    let Ok(details) = serde_json::from_slice::<Value>(&bytes) else { return done() };
    let browser = browser_details(&details);
    let amendment = HitAmendment {
        hit_id,
        token_id: token_id.to_string(),
        guard: nonce.to_string(),
        key: "browser".into(),
        value: browser,
    };
    match sink.amend(amendment).await {
        Ok(_) => done(),
        Err(e) => {
            tracing::warn!(error = %e, "could not attach a scanner report");
            done()
        }
    }
}

/// Keeps only the known fields of a scanner report, each bounded.
pub fn browser_details(v: &Value) -> Value {
    let text = |k: &str| {
        Value::String(v.get(k).and_then(Value::as_str).map(|s| super::cut_to(s, 256).to_string()).unwrap_or_default())
    };
    let list = |k: &str, max: usize| {
        Value::Array(
            v.get(k)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .take(max)
                        .map(|s| Value::String(super::cut_to(s, 256).to_string()))
                        .collect()
                })
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
pub(super) fn page(token_id: &str, report: &str, then: Option<&str>) -> Response {
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

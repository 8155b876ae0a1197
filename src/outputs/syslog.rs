//! Output `syslog`: RFC 5424 messages over UDP (one datagram each) or TCP (RFC 6587 octet
//! counting), configured as `syslog=udp://host:514` or `syslog=tcp://host:6514`.
//!
//! The structured data carries the alert's idempotency key, token, kind and source, so a
//! collector can parse and deduplicate without reading the free text. Collectors usually sit
//! on internal networks and only the operator configures them, so unlike webhooks they may
//! be internal addresses.

use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};

use super::card::Card;

const TIMEOUT: Duration = Duration::from_secs(10);
/// Facility local0.
const FACILITY: u8 = 16;
/// "Alert" for triggers, "notice" for test alerts.
const SEV_ALERT: u8 = 1;
const SEV_NOTICE: u8 = 5;
/// The private enterprise number reserved for documentation (RFC 5612): SD-ID `trapline@32473`.
const SD_ID: &str = "trapline@32473";

/// `udp://host:port` or `tcp://host:port`.
pub fn validate_url(raw: &str) -> Result<String, String> {
    let url = url::Url::parse(raw.trim()).map_err(|_| format!("{raw:?} is not a syslog URL such as udp://host:514"))?;
    if !matches!(url.scheme(), "udp" | "tcp") {
        return Err("a syslog target is udp://host:port or tcp://host:port".into());
    }
    if url.host_str().is_none_or(str::is_empty) || url.port().is_none() {
        return Err("a syslog target needs a host and a port".into());
    }
    Ok(url.to_string())
}

/// An SD-PARAM value: `"`, `\` and `]` escaped.
fn sd_value(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace(']', "\\]")
}

/// One RFC 5424 message for `payload`.
pub fn message(c: &Card, payload: &Value, key: &str) -> String {
    let s = |k: &str| payload.get(k).and_then(Value::as_str).unwrap_or("");
    let pri = FACILITY * 8 + if c.test { SEV_NOTICE } else { SEV_ALERT };
    let time = if s("time").is_empty() { crate::model::rfc3339(crate::model::now_us()) } else { s("time").to_string() };
    let msgid = if c.test { "test" } else { "hit" };
    let mut sd = format!("[{SD_ID} key=\"{}\"", sd_value(key));
    for (name, field) in [("token", "token_id"), ("kind", "kind"), ("flock", "flock_id"), ("src", "src_ip")] {
        if !s(field).is_empty() {
            sd.push_str(&format!(" {name}=\"{}\"", sd_value(s(field))));
        }
    }
    sd.push(']');
    let details: Vec<String> = c.facts.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    let text = format!("{} | {}", c.title, details.join(" | ")).replace(['\n', '\r'], " ");
    format!("<{pri}>1 {time} trapline trapline {} {msgid} {sd} {text}", std::process::id())
}

pub async fn send(url: &str, msg: &str) -> Result<(), String> {
    let url = url::Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
    let (host, port) = (url.host_str().unwrap_or(""), url.port().unwrap_or(514));
    let target = format!("{host}:{port}");
    let io = async {
        match url.scheme() {
            "udp" => {
                let addr = tokio::net::lookup_host(&target)
                    .await?
                    .next()
                    .ok_or_else(|| std::io::Error::other("no address"))?;
                let bind = if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
                let sock = UdpSocket::bind(bind).await?;
                sock.send_to(msg.as_bytes(), addr).await?;
                Ok(())
            }
            _ => {
                let mut stream = TcpStream::connect(&target).await?;
                stream.write_all(format!("{} {msg}", msg.len()).as_bytes()).await?;
                stream.shutdown().await
            }
        }
    };
    match tokio::time::timeout(TIMEOUT, io).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("syslog {target}: {e}")),
        Err(_) => Err(format!("syslog {target}: timed out")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rfc5424_shape() {
        let p = json!({"test": false, "kind": "dns", "kind_name": "DNS", "memo": "a \"quoted\" memo", "token_id": "t1",
                       "flock_id": "flock:default", "time": "2026-11-22T23:03:43Z", "src_ip": "192.0.2.1", "channel": "dns"});
        let m = message(&super::super::card::from_payload(&p), &p, "hit-1-0");
        assert!(m.starts_with("<129>1 2026-11-22T23:03:43Z trapline trapline "), "{m}");
        assert!(m.contains(" hit [trapline@32473 key=\"hit-1-0\" token=\"t1\" kind=\"dns\" flock=\"flock:default\" src=\"192.0.2.1\"] Canarytoken triggered: DNS"), "{m}");
        assert!(m.contains("Memo: a \"quoted\" memo"), "{m}");
        assert_eq!(sd_value(r#"a"b\c]"#), r#"a\"b\\c\]"#);
        assert!(validate_url("udp://10.0.0.5:514").is_ok());
        for bad in ["http://x:1", "udp://host", "tcp://:514", "nonsense"] {
            assert!(validate_url(bad).is_err(), "{bad}");
        }
    }
}

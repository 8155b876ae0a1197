//! Output `webhook`: POSTs the alert as JSON, with an `Idempotency-Key` header so a receiver
//! can drop the duplicates a retry may bring. Every other output is delivered through
//! [`post`] too.
//!
//! Targets are checked twice against server-side request forgery: when configured (scheme,
//! host, and literal addresses) and at delivery, through a resolver that drops loopback,
//! private, link-local, unique-local and other non-public addresses — so a name that later
//! resolves to an internal address (DNS rebinding) is refused too. `allow_private` lifts
//! both checks (for receivers on an internal network, and for tests on loopback).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde_json::Value;

/// Time a delivery may take, connection included.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Addresses no alert may go to unless private targets are allowed.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || v4.octets()[0] == 0
                || (v4.octets()[0] == 100 && (64..128).contains(&v4.octets()[1]))
            // carrier-grade NAT
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (v6.segments()[0] & 0xfe00) == 0xfc00 // unique local
                || (v6.segments()[0] & 0xffc0) == 0xfe80 // link local
        }
    }
}

/// Checks a webhook URL as configured: http(s), a host, and no internal literal address.
pub fn validate_url(raw: &str, allow_private: bool) -> Result<String, String> {
    let url = url::Url::parse(raw.trim()).map_err(|_| format!("{raw:?} is not an absolute URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("a webhook must be an http or https URL".into());
    }
    let Some(host) = url.host() else { return Err("a webhook URL must name a host".into()) };
    if !allow_private {
        let literal = match host {
            url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
            url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
            url::Host::Domain(d) if d.eq_ignore_ascii_case("localhost") || d.ends_with(".localhost") => {
                Some(IpAddr::from([127, 0, 0, 1]))
            }
            url::Host::Domain(_) => None,
        };
        if literal.is_some_and(is_internal) {
            return Err(format!(
                "{host} is an internal address; alerts to loopback, private or link-local targets need \
                 allow_private_alert_targets"
            ));
        }
    }
    Ok(url.to_string())
}

/// A resolver that keeps only public addresses.
struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = addrs.into_iter().filter(|a| !is_internal(a.ip())).collect();
            if public.is_empty() {
                return Err(format!("{host} resolves only to internal addresses").into());
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

/// The HTTP client deliveries share, with its rules.
pub struct Client {
    http: reqwest::Client,
    allow_private: bool,
}

impl Client {
    pub fn new(allow_private: bool) -> anyhow::Result<Client> {
        let mut b = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("Trapline/", env!("CARGO_PKG_VERSION")));
        if !allow_private {
            b = b.dns_resolver(Arc::new(PublicOnly));
        }
        Ok(Client { http: b.build()?, allow_private })
    }
}

/// POSTs `body` as JSON to `url`, with the alert's idempotency key.
pub async fn post(client: &Client, url: &str, body: &Value, key: &str) -> Result<(), String> {
    // Checked again at delivery: the rules may have changed since the alert was queued.
    let url = validate_url(url, client.allow_private)?;
    let resp = client
        .http
        .post(&url)
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .map_err(|e| format!("POST {url}: {e}"))?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(format!("POST {url}: HTTP {}", resp.status().as_u16()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:10.0.0.1",
            "100.64.0.1",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700::1111"] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn urls_are_checked_at_configuration() {
        assert!(validate_url("https://hooks.example.com/x", false).is_ok());
        for bad in [
            "ftp://x.example",
            "not a url",
            "http://127.0.0.1:9/x",
            "http://[::1]/",
            "http://169.254.169.254/latest",
            "http://localhost:8080/",
        ] {
            assert!(validate_url(bad, false).is_err(), "{bad}");
        }
        assert!(validate_url("http://127.0.0.1:9/x", true).is_ok());
    }
}

//! Output `webhook`: POSTs the alert as JSON, with an `Idempotency-Key` header so a receiver
//! can drop the duplicates a retry may bring. Every other output is delivered through
//! [`post`] too.
//!
//! Targets are checked against server-side request forgery by one function, [`validate_url`],
//! both when an output is configured and again before each delivery, so a target refused at
//! one time is refused at the other: scheme and host, literal addresses in every spelling the
//! URL parser accepts, `localhost` names (with or without the trailing dot), and the addresses
//! a name resolves to (the hosts file included). IPv6 forms that carry an IPv4 address
//! (IPv4-mapped, IPv4-compatible, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) are judged by that
//! address. At connection time a resolver refuses names with an internal address again, so a
//! name that starts resolving inward after the check (DNS rebinding) is refused too.
//! `allow_private` lifts all of it (receivers on an internal network, tests on loopback).
//!
//! Errors name a target by scheme and host only: webhook paths are secrets (audit F10).
//!
//! The address rules are written out here rather than taken from `std`: `Ipv4Addr::is_global`
//! and its IPv6 sibling are still unstable, and no small crate covers the embedded-IPv4 forms.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde_json::Value;

use super::redact::redact;

/// Time a delivery may take, connection included.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a name to resolve while checking a target; a slower name counts as
/// unresolvable (see [`validate_url`]).
const RESOLVE_WAIT: Duration = Duration::from_secs(3);

/// Addresses no alert may go to unless private targets are allowed: every address that is not
/// globally reachable unicast. IPv6 addresses carrying an IPv4 address are judged by it.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4_internal(v4),
        IpAddr::V6(v6) => embedded_v4(v6).map_or_else(|| v6_internal(v6), v4_internal),
    }
}

fn v4_internal(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    a == 0 // "this network", 0.0.0.0 included
        || ip.is_private() // 10/8, 172.16/12, 192.168/16
        || ip.is_loopback()
        || ip.is_link_local() // 169.254/16, cloud metadata
        || (a == 100 && (b & 0xc0) == 64) // 100.64/10, carrier-grade NAT
        || (a == 192 && b == 0 && c == 0) // 192.0.0/24, IETF protocol assignments
        || ip.is_documentation() // 192.0.2/24, 198.51.100/24, 203.0.113/24
        || (a == 198 && (b & 0xfe) == 18) // 198.18/15, benchmarking
        || a >= 224 // 224/4 multicast, 240/4 reserved, 255.255.255.255
}

/// The IPv4 address an IPv6 address stands for: IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible
/// `::a.b.c.d` (so `::` and `::1` too, as 0.0.0.0 and 0.0.0.1), NAT64 `64:ff9b::a.b.c.d`
/// (RFC 6052) and 6to4 `2002:AABB:CCDD::/48` (RFC 3056).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let v4 = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    match s {
        [0, 0, 0, 0, 0, 0xffff, hi, lo] | [0, 0, 0, 0, 0, 0, hi, lo] => Some(v4(hi, lo)),
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(v4(hi, lo)),
        [0x2002, hi, lo, ..] => Some(v4(hi, lo)),
        _ => None,
    }
}

fn v6_internal(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    // Global unicast is 2000::/3. Outside it: unique local fc00::/7, link local fe80::/10,
    // site local fec0::/10, multicast ff00::/8, discard 100::/64, local-use NAT64
    // 64:ff9b:1::/48 (whose IPv4 position depends on a prefix length only its network knows),
    // SRv6 5f00::/16, and the unassigned rest.
    (s[0] & 0xe000) != 0x2000
        || (s[0] == 0x2001 && s[1] < 0x0200) // 2001::/23: Teredo, benchmarking, ORCHID, ...
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x3fff && s[1] < 0x1000) // documentation, RFC 9637
}

/// The first internal address among `addrs`, if any. A name with one internal address is
/// refused even when it has public ones too: the connection may go to any of them.
fn first_internal(addrs: impl IntoIterator<Item = IpAddr>) -> Option<IpAddr> {
    addrs.into_iter().find(|ip| is_internal(*ip))
}

fn internal(what: impl std::fmt::Display) -> String {
    format!(
        "{what} is an internal address; alerts to loopback, private, link-local or reserved targets need \
         allow_private_alert_targets"
    )
}

/// Checks an alert target: http(s), a host, and (unless `allow_private`) no internal address.
/// This one check runs when an output or a token webhook is configured and again before each
/// delivery, so both times judge alike.
///
/// A name is resolved (hosts file and DNS, waiting at most three seconds) and refused if any
/// of its addresses is internal. A name that does not resolve is accepted: machines without
/// outside DNS (CI runners, sandboxes, air-gapped staging) configure `hooks.slack.com` too,
/// and refusing there would refuse every real receiver. Nothing is lost by accepting, since the
/// check runs again at delivery and the connection's resolver refuses internal answers.
///
/// Resolution blocks the calling thread; in the server's multi-threaded runtime the wait is
/// handed off with `block_in_place`. [`post`] applies the same rules without resolving: its
/// connection's resolver refuses internal answers.
pub fn validate_url(raw: &str, allow_private: bool) -> Result<String, String> {
    check_with(raw, allow_private, &|host, port| blocking(|| resolve(host, port)))
}

/// [`validate_url`] with the resolver given (tests give their own). The resolver returns
/// `None` when the name does not resolve.
fn check_with(
    raw: &str,
    allow_private: bool,
    resolve: &dyn Fn(&str, u16) -> Option<Vec<IpAddr>>,
) -> Result<String, String> {
    let url = url::Url::parse(raw.trim()).map_err(|_| format!("{:?} is not an absolute URL", redact(raw)))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("a webhook must be an http or https URL".into());
    }
    let Some(host) = url.host() else { return Err("a webhook URL must name a host".into()) };
    if !allow_private {
        match host {
            url::Host::Ipv4(ip) if is_internal(IpAddr::V4(ip)) => return Err(internal(ip)),
            url::Host::Ipv6(ip) if is_internal(IpAddr::V6(ip)) => return Err(internal(format!("[{ip}]"))),
            url::Host::Ipv4(_) | url::Host::Ipv6(_) => {}
            url::Host::Domain(d) => {
                // `localhost.` is `localhost` (a fully qualified name), and RFC 6761 keeps
                // every `*.localhost` on loopback whatever a resolver says.
                let name = d.trim_end_matches('.').to_ascii_lowercase();
                if name.is_empty() {
                    return Err("a webhook URL must name a host".into());
                }
                if name == "localhost" || name.ends_with(".localhost") {
                    return Err(internal(d));
                }
                let port = url.port_or_known_default().unwrap_or(80);
                if let Some(ip) = resolve(d, port).and_then(first_internal) {
                    return Err(internal(format!("{d} resolves to {ip}, which")));
                }
            }
        }
    }
    Ok(url.to_string())
}

/// Resolves `host` like a connection would (hosts file, then DNS), on a thread of its own so
/// a resolver that hangs costs at most [`RESOLVE_WAIT`]. `None`: no answer, or no address.
fn resolve(host: &str, port: u16) -> Option<Vec<IpAddr>> {
    let (tx, rx) = mpsc::channel();
    let name = host.to_string();
    std::thread::Builder::new()
        .name("target-check".into())
        .spawn(move || {
            let addrs: Option<Vec<IpAddr>> =
                (name.as_str(), port).to_socket_addrs().ok().map(|a| a.map(|s| s.ip()).collect());
            let _ = tx.send(addrs);
        })
        .ok()?;
    rx.recv_timeout(RESOLVE_WAIT).ok().flatten().filter(|a| !a.is_empty())
}

/// Runs `f`, which blocks, without stalling the async worker it is called from.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// A resolver that refuses names with an internal address, by the rule of [`validate_url`].
struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if let Some(ip) = first_internal(addrs.iter().map(SocketAddr::ip)) {
                return Err(internal(format!("{host} resolves to {ip}, which")).into());
            }
            if addrs.is_empty() {
                return Err(format!("{host} has no address").into());
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
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

/// POSTs `body` as JSON to `url`, with the alert's idempotency key. An error names the
/// target by scheme and host only (see [`super::redact`]).
pub async fn post(client: &Client, url: &str, body: &Value, key: &str) -> Result<(), String> {
    // Checked again at delivery by the same rules, since they may have changed since the
    // alert was queued. What a name resolves to is judged by the connection's own resolver
    // ([`PublicOnly`]), on the very addresses it connects to, so it is not looked up twice.
    let url = check_with(url, client.allow_private, &|_, _| None)?;
    let shown = redact(&url);
    let resp = client
        .http
        .post(&url)
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .map_err(|e| format!("POST {shown}: {}", redact(&error_chain(e))))?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(format!("POST {shown}: HTTP {}", resp.status().as_u16()))
    }
}

/// A request error and its causes, without the URL reqwest puts in its own message.
fn error_chain(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
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
            "0.1.2.3",
            "100.64.0.1",
            "192.0.0.8",
            "192.0.2.1",
            "198.18.0.1",
            "198.19.255.255",
            "224.0.0.1",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fe80::1",
            "fd00::1",
            "fec0::1",
            "ff02::1",
            "100::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b::a00:1",
            "64:ff9b:1::808:808",
            "2002:7f00:1::",
            "2002:a00:1::1",
            "2001:db8::1",
            "2001::1",
            "2001:2::1",
            "3fff::1",
            "5f00::1",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "198.20.0.1",
            "223.255.255.254",
            "2606:4700::1111",
            "2001:4860:4860::8888",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }

    /// A resolver for the tests: `vm` is loopback (as this sandbox's hosts file has it),
    /// `mixed.example` has a public and a private address, and unknown names do not resolve.
    fn fake(host: &str, _port: u16) -> Option<Vec<IpAddr>> {
        let ips: &[&str] = match host {
            "vm" | "runsc" => &["127.0.0.1"],
            "mixed.example" => &["93.184.215.14", "10.0.0.7"],
            "public.example" => &["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"],
            _ => return None,
        };
        Some(ips.iter().map(|i| i.parse().unwrap()).collect())
    }

    #[test]
    fn every_spelling_of_the_audit_is_refused_at_configuration() {
        // Refused before the fix too.
        let before = [
            "http://localhost/",
            "http://LOCALHOST/",
            "http://x.localhost/",
            "http://0x7f000001/",
            "http://2130706433/",
            "http://017700000001/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "http://127.000.000.001/",
            "http://0.0.0.0/",
            "http://0/",
            "http://[::]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://[0:0:0:0:0:ffff:127.0.0.1]/",
            "http://[::1]/",
            "http://169.254.169.254/latest",
            "http://10.0.0.1/",
            "http://172.16.0.1/",
            "http://192.168.0.1/",
            "http://100.64.0.1/",
            "http://[fd00::1]/",
            "http://192.0.2.1/",
            "http://224.0.0.1/",
            "http://255.255.255.255/",
            "file:///etc/passwd",
            "gopher://example.com/",
            "http://hooks.slack.com@127.0.0.1/",
            "http://hooks.slack.com:x@127.0.0.1:80/",
            "http://127.0.0.1#@hooks.slack.com/",
            "ftp://x.example",
            "not a url",
        ];
        // Accepted at configuration before the fix (delivery refused them).
        let after = [
            "http://localhost./",
            "http://LocalHost./x",
            "http://a.localhost./",
            "http://vm/",
            "http://runsc:8080/",
            "http://[::127.0.0.1]/",
            "http://[64:ff9b::7f00:1]/",
            "http://[64:ff9b::a00:1]/",
            "http://[2002:7f00:1::]/",
            "http://[fec0::1]/",
            "http://198.18.0.1/",
            "http://240.0.0.1/",
            "http://mixed.example/",
        ];
        for bad in before.iter().chain(&after) {
            let e = check_with(bad, false, &fake).expect_err(bad);
            if bad.starts_with("http://") && !bad.contains(' ') {
                assert!(e.contains("internal address"), "{bad}: {e}");
            }
        }
        for good in [
            "https://hooks.slack.com/services/x",
            "https://public.example/h",
            "http://8.8.8.8:8080/",
            "https://[2606:4700::1111]/",
        ] {
            assert!(check_with(good, false, &fake).is_ok(), "{good}");
        }
        // Private targets allowed: every well-formed http(s) URL passes.
        for ok in ["http://127.0.0.1:9/x", "http://localhost./", "http://vm/", "http://[64:ff9b::7f00:1]/"] {
            assert!(check_with(ok, true, &fake).is_ok(), "{ok}");
        }
        assert!(check_with("ftp://x.example", true, &fake).is_err());
    }

    #[test]
    fn the_real_check_resolves_names() {
        assert!(validate_url("https://hooks.example.invalid/x", false).is_ok(), "unresolvable names pass");
        assert!(validate_url("http://localhost:8080/", false).is_err());
        assert!(validate_url("http://127.0.0.1:9/x", true).is_ok());
        // Where the hosts file maps `vm` to loopback (this sandbox does), the check sees it.
        if ("vm", 80).to_socket_addrs().is_ok_and(|mut a| a.all(|s| s.ip().is_loopback())) {
            assert!(validate_url("http://vm/", false).unwrap_err().contains("resolves to 127."));
        }
    }
}

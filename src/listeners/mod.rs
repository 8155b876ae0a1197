//! Listeners: each notices the use of tokens on one protocol, turns it into a
//! [`crate::model::NewHit`], hands it to the [`HitSink`] (the [`crate::recorder::Recorder`]),
//! and answers only once the hit is committed. [`slots`] shares each listener's connection
//! slots fairly between sources.
//!
//! The contract every listener keeps, so that `serve` starts them all in one loop:
//!
//! 1. It owns its settings: one struct (`HttpSettings`, `DnsSettings`, …) that is flattened into
//!    the command line (`--<name>-…`, `TRAPLINE_<NAME>_…`) and read from the TOML section
//!    `[listeners.<name>]` (see [`ListenerSettings`]).
//! 2. A row in [`LISTENERS`] builds it from those settings, checked; `None` leaves it off.
//! 3. [`Listener::bind`] takes its sockets, so start-up fails before anything is served when
//!    one is taken; the [`Bound`] value knows its real address (port 0 → the port it got) and
//!    its start-up lines.
//! 4. [`Bound::run`] serves until the context's `stop` turns true, lets what is in flight
//!    finish (at most [`GRACE`]), and returns. Everything it records or reads goes through
//!    [`ListenerContext::hits`]: no listener holds the store.
//!
//! Adding a listener is its module and one row here (its settings field and its
//! [`LISTENERS`] entry).

pub mod cloudtrail;
pub mod dns;
pub mod dns_wire;
pub mod http;
pub mod slots;
pub mod smtp;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub use crate::recorder::HitSink;

/// How long requests and queries in flight may take to finish at shutdown.
pub const GRACE: Duration = Duration::from_secs(5);

/// Every listener's settings, one section each. The field name is the listener's name: the
/// TOML section `[listeners.<name>]`, and the prefix of its flags, environment variables and
/// (for older files) its flat TOML keys.
#[derive(Debug, Clone, Default, PartialEq, clap::Args, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerSettings {
    #[command(flatten)]
    #[serde(default)]
    pub http: http::HttpSettings,
    #[command(flatten)]
    #[serde(default)]
    pub dns: dns::DnsSettings,
    #[command(flatten)]
    #[serde(default)]
    pub smtp: smtp::SmtpSettings,
    #[command(flatten)]
    #[serde(default)]
    pub cloudtrail: cloudtrail::CloudTrailSettings,
}

/// Settings every listener may read besides its own section.
#[derive(Debug, Clone)]
pub struct Common {
    /// Token DNS zone and NX zone.
    pub domain: String,
    pub nx_domain: String,
    /// The address this installation is reached at (DNS answers give it).
    pub public_ip: IpAddr,
    /// Proxies whose X-Forwarded-For is believed.
    pub trusted_proxies: Arc<Vec<ipnet::IpNet>>,
    /// AWS, when set up (`[aws]`): the AWS poller needs it.
    pub aws: Option<crate::aws::Aws>,
    /// The AWS safety net's poll interval and grace, in seconds.
    pub aws_last_used: (u64, u64),
}

/// Builds one listener from the settings, checked; `None` when it is off.
pub type Build = fn(&ListenerSettings, &Common) -> anyhow::Result<Option<Box<dyn Listener>>>;

/// Every listener, by name (its settings section), in start-up order.
pub const LISTENERS: &[(&str, Build)] = &[
    ("http", |s, c| http::Http::build(&s.http, c)),
    ("dns", |s, c| dns::Dns::build(&s.dns, c)),
    ("smtp", |s, c| smtp::Smtp::build(&s.smtp, c)),
    ("cloudtrail", |s, c| cloudtrail::AwsListener::build(&s.cloudtrail, c)),
];

/// The listeners the settings turn on, in [`LISTENERS`] order.
pub fn build_all(settings: &ListenerSettings, common: &Common) -> anyhow::Result<Vec<Box<dyn Listener>>> {
    let mut out = Vec::new();
    for (_, build) in LISTENERS {
        out.extend(build(settings, common)?);
    }
    Ok(out)
}

/// What a listener gets to run.
#[derive(Clone)]
pub struct ListenerContext {
    /// Where hits go, and where follow-up data and token files come from.
    pub hits: Arc<dyn HitSink>,
    /// The zones and URL base this installation serves.
    pub site: crate::kinds::Site,
    /// Turns true when the server stops.
    pub stop: watch::Receiver<bool>,
    /// This node's name (kept in the data directory), for leases: a restarted node takes its
    /// own lease back at once instead of waiting for it to expire.
    pub node: String,
}

/// A configured listener, not yet bound.
#[async_trait]
pub trait Listener: Send {
    /// Its name, as in [`LISTENERS`] ("http", "dns").
    fn name(&self) -> &'static str;
    /// Takes its sockets (a poller with none returns a [`Bound`] without an address).
    async fn bind(self: Box<Self>) -> anyhow::Result<Box<dyn Bound>>;
}

/// A listener holding its sockets, ready to run.
#[async_trait]
pub trait Bound: Send {
    /// Where it listens (with port 0 resolved); None for a listener without a socket.
    fn local_addr(&self) -> Option<SocketAddr>;
    /// Its start-up lines, e.g. `trigger HTTP:     http://127.0.0.1:8081/`.
    fn describe(&self) -> Vec<String>;
    /// Serves until `cx.stop` turns true, then lets work in flight finish (within [`GRACE`]).
    async fn run(self: Box<Self>, cx: ListenerContext) -> anyhow::Result<()>;
}

/// Resolves once `stop` is true (or its sender is gone).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// A count that must be positive (a cap of 0 would refuse everything), `default` when unset.
pub fn at_least_one(what: &str, v: Option<usize>, default: usize) -> anyhow::Result<usize> {
    let v = v.unwrap_or(default);
    anyhow::ensure!(v >= 1, "{what} must be at least 1");
    Ok(v)
}

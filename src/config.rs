//! Settings for `trapline serve` and the other commands.
//!
//! Each setting comes from, in order of precedence: a command-line flag, a `TRAPLINE_*`
//! environment variable (clap reads both), the TOML file named by `--config`, the default.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

/// Options shared by every command that touches the store.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct StoreArgs {
    /// TOML file with settings (same names as the flags, with underscores).
    #[arg(long, env = "TRAPLINE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory for the SQLite database and other state.
    #[arg(long, env = "TRAPLINE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Database: a SQLite file path, or a postgres:// URL. Default: trapline.db in the data dir.
    #[arg(long, env = "TRAPLINE_DATABASE")]
    pub database: Option<String>,
}

/// Options of `trapline serve`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Management API listener (host:port; port 0 picks a free one).
    #[arg(long, env = "TRAPLINE_API_LISTEN")]
    pub api_listen: Option<SocketAddr>,
    /// Public trigger HTTP listener.
    #[arg(long, env = "TRAPLINE_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
    /// Authoritative DNS listener, UDP and TCP on the same port.
    #[arg(long, env = "TRAPLINE_DNS_LISTEN")]
    pub dns_listen: Option<SocketAddr>,
    /// Token DNS zone: token hostnames are `<id>.<domain>`.
    #[arg(long, env = "TRAPLINE_DOMAIN")]
    pub domain: Option<String>,
    /// Zone answered with NXDOMAIN (after recording).
    #[arg(long, env = "TRAPLINE_NX_DOMAIN")]
    pub nx_domain: Option<String>,
    /// Address the token zone's A/AAAA answers give.
    #[arg(long, env = "TRAPLINE_PUBLIC_IP")]
    pub public_ip: Option<IpAddr>,
    /// Base of token URLs. Default: `http://<http listener address>`.
    #[arg(long, env = "TRAPLINE_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Proxies (addresses or networks, comma-separated) whose X-Forwarded-For is believed.
    /// Default: none — the client address is always the socket peer.
    #[arg(long, env = "TRAPLINE_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Option<Vec<String>>,
    /// Connections the trigger HTTP listener serves at once (default 4096).
    #[arg(long, env = "TRAPLINE_HTTP_MAX_CONNS")]
    pub http_max_conns: Option<usize>,
    /// Trigger HTTP connections one source (address, or IPv6 /64) holds at once (default 64);
    /// trusted proxies have no such cap.
    #[arg(long, env = "TRAPLINE_HTTP_MAX_CONNS_PER_SOURCE")]
    pub http_max_conns_per_source: Option<usize>,
    /// Connections the DNS listener serves at once over TCP (default 256).
    #[arg(long, env = "TRAPLINE_DNS_TCP_MAX_CONNS")]
    pub dns_tcp_max_conns: Option<usize>,
    /// DNS/TCP connections one source (address, or IPv6 /64) holds at once (default 16).
    #[arg(long, env = "TRAPLINE_DNS_TCP_MAX_CONNS_PER_SOURCE")]
    pub dns_tcp_max_conns_per_source: Option<usize>,
    /// Webhooks every alert is POSTed to (comma-separated URLs).
    #[arg(long, env = "TRAPLINE_ALERT_WEBHOOKS", value_delimiter = ',')]
    pub alert_webhooks: Option<Vec<String>>,
    /// Other alert outputs, comma-separated `TYPE=URL` (slack, teams, discord, gchat, webhook)
    /// or `pagerduty=ROUTING_KEY[@URL]`.
    #[arg(long, env = "TRAPLINE_ALERT_OUTPUTS", value_delimiter = ',')]
    pub alert_outputs: Option<Vec<String>>,
    /// Allow alerts to loopback, private and link-local addresses (off: no SSRF into internal
    /// networks).
    #[arg(long, env = "TRAPLINE_ALLOW_PRIVATE_ALERT_TARGETS")]
    pub allow_private_alert_targets: bool,
    /// Sources (addresses or networks, comma-separated) whose hits are stored but never alert,
    /// e.g. your own scanners.
    #[arg(long, env = "TRAPLINE_IGNORE_SOURCES", value_delimiter = ',')]
    pub ignore_sources: Option<Vec<String>>,
    /// SMTP server for e-mail alerts: smtp://host:25, smtp+starttls://user:pass@host:587 or
    /// smtps://user:pass@host:465.
    #[arg(long, env = "TRAPLINE_SMTP_URL")]
    pub smtp_url: Option<String>,
    /// Sender of e-mail alerts (default trapline@localhost).
    #[arg(long, env = "TRAPLINE_SMTP_FROM")]
    pub smtp_from: Option<String>,
    /// Seconds after which a failing alert delivery is given up (default one day).
    #[arg(long, env = "TRAPLINE_ALERT_GIVE_UP_SECS")]
    pub alert_give_up_secs: Option<i64>,
    /// Repeat hits of a token from one source within this many seconds of the last join its
    /// open incident instead of alerting again (default 60; 0 turns grouping off).
    #[arg(long, env = "TRAPLINE_INCIDENT_WINDOW_SECS")]
    pub incident_window_secs: Option<i64>,
    /// Default per-token alert cooldown in seconds: 0 alerts on every incident (the default),
    /// -1 only on a token's first; tokens may set their own.
    #[arg(long, env = "TRAPLINE_ALERT_COOLDOWN_SECS", allow_hyphen_values = true)]
    pub alert_cooldown_secs: Option<i64>,
    /// Default most alerts per token and hour (0, the default: no limit); tokens may set
    /// their own.
    #[arg(long, env = "TRAPLINE_ALERT_MAX_PER_HOUR")]
    pub alert_max_per_hour: Option<i64>,
    /// PEM file of extra CA certificates to trust for the SMTP server (a private CA).
    #[arg(long, env = "TRAPLINE_SMTP_CA_FILE")]
    pub smtp_ca_file: Option<PathBuf>,
    /// Delete stored hits older than this many days (0, the default: keep them all). Hits of
    /// unacknowledged incidents are always kept.
    #[arg(long, env = "TRAPLINE_HIT_RETENTION_DAYS")]
    pub hit_retention_days: Option<i64>,
    /// Keep at most this many hits per token, deleting the oldest (0, the default: no limit).
    /// Hits of unacknowledged incidents are always kept.
    #[arg(long, env = "TRAPLINE_HIT_RETENTION_PER_TOKEN")]
    pub hit_retention_per_token: Option<i64>,
}

/// The TOML file: every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    database: Option<String>,
    api_listen: Option<SocketAddr>,
    http_listen: Option<SocketAddr>,
    dns_listen: Option<SocketAddr>,
    domain: Option<String>,
    nx_domain: Option<String>,
    public_ip: Option<IpAddr>,
    public_url: Option<String>,
    trusted_proxies: Option<Vec<String>>,
    http_max_conns: Option<usize>,
    http_max_conns_per_source: Option<usize>,
    dns_tcp_max_conns: Option<usize>,
    dns_tcp_max_conns_per_source: Option<usize>,
    alert_webhooks: Option<Vec<String>>,
    alert_outputs: Option<Vec<String>>,
    smtp_url: Option<String>,
    smtp_from: Option<String>,
    ignore_sources: Option<Vec<String>>,
    allow_private_alert_targets: Option<bool>,
    alert_give_up_secs: Option<i64>,
    incident_window_secs: Option<i64>,
    alert_cooldown_secs: Option<i64>,
    alert_max_per_hour: Option<i64>,
    smtp_ca_file: Option<PathBuf>,
    hit_retention_days: Option<i64>,
    hit_retention_per_token: Option<i64>,
}

/// Fully resolved settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub database: String,
    pub api_listen: SocketAddr,
    pub http_listen: SocketAddr,
    pub dns_listen: SocketAddr,
    pub domain: String,
    pub nx_domain: String,
    pub public_ip: IpAddr,
    /// None: derive from the bound HTTP address.
    pub public_url: Option<String>,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Connection caps of the trigger HTTP and DNS/TCP listeners, in all and per source.
    pub http_max_conns: usize,
    pub http_max_conns_per_source: usize,
    pub dns_tcp_max_conns: usize,
    pub dns_tcp_max_conns_per_source: usize,
    /// Global alert outputs (webhooks and the typed ones), checked.
    pub alert_outputs: Vec<serde_json::Value>,
    pub allow_private_alert_targets: bool,
    pub alert_give_up_secs: i64,
    pub smtp_url: Option<String>,
    pub smtp_from: String,
    /// Networks whose hits are kept but never alert.
    pub ignore_sources: Vec<String>,
    /// Grouping window, default cooldown and rate limit.
    pub noise: crate::noise::NoiseRules,
    /// PEM text of extra CAs for the SMTP server.
    pub smtp_ca_pem: Option<String>,
    /// Which stored hits may be deleted.
    pub retention: crate::retention::Retention,
}

fn read_file(path: Option<&Path>) -> anyhow::Result<FileConfig> {
    let Some(path) = path else { return Ok(FileConfig::default()) };
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

fn validate_domain(what: &str, d: &str) -> anyhow::Result<String> {
    let d = d.trim().trim_end_matches('.').to_ascii_lowercase();
    let ok = !d.is_empty()
        && d.len() <= 200
        && d.split('.')
            .all(|l| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    anyhow::ensure!(ok, "{what} {d:?} is not a valid DNS name");
    Ok(d)
}

/// A count that must be positive (a cap of 0 would refuse everything), `default` when unset.
fn at_least_one(what: &str, v: Option<usize>, default: usize) -> anyhow::Result<usize> {
    let v = v.unwrap_or(default);
    anyhow::ensure!(v >= 1, "{what} must be at least 1");
    Ok(v)
}

impl Settings {
    pub fn resolve(args: &ServeArgs) -> anyhow::Result<Settings> {
        let file = read_file(args.store.config.as_deref())?;
        let data_dir = args.store.data_dir.clone().or(file.data_dir).unwrap_or_else(|| PathBuf::from("trapline-data"));
        let database = args
            .store
            .database
            .clone()
            .or(file.database)
            .unwrap_or_else(|| data_dir.join("trapline.db").display().to_string());
        let public_url = args.public_url.clone().or(file.public_url).map(|u| u.trim_end_matches('/').to_string());
        if let Some(u) = &public_url {
            anyhow::ensure!(
                u.starts_with("http://") || u.starts_with("https://"),
                "public URL {u:?} must start with http:// or https://"
            );
        }
        let domain =
            validate_domain("domain", &args.domain.clone().or(file.domain).unwrap_or("trapline.localhost".into()))?;
        let nx_domain = validate_domain(
            "NX domain",
            &args.nx_domain.clone().or(file.nx_domain).unwrap_or("nx.trapline.localhost".into()),
        )?;
        anyhow::ensure!(domain != nx_domain, "the NX domain must differ from the token domain ({domain})");
        let smtp_ca_pem = match args.smtp_ca_file.clone().or(file.smtp_ca_file) {
            Some(p) => {
                Some(std::fs::read_to_string(&p).with_context(|| format!("cannot read SMTP CA file {}", p.display()))?)
            }
            None => None,
        };
        Ok(Settings {
            database,
            data_dir,
            api_listen: args.api_listen.or(file.api_listen).unwrap_or(([127, 0, 0, 1], 8080).into()),
            http_listen: args.http_listen.or(file.http_listen).unwrap_or(([127, 0, 0, 1], 8081).into()),
            dns_listen: args.dns_listen.or(file.dns_listen).unwrap_or(([127, 0, 0, 1], 5354).into()),
            domain,
            nx_domain,
            public_ip: args.public_ip.or(file.public_ip).unwrap_or([127, 0, 0, 1].into()),
            public_url,
            trusted_proxies: args
                .trusted_proxies
                .clone()
                .or(file.trusted_proxies)
                .unwrap_or_default()
                .iter()
                .filter(|p| !p.trim().is_empty())
                .map(|p| {
                    crate::core::parse_cidr(p)
                        .map_err(|e| anyhow::anyhow!("trusted proxy: {e}"))?
                        .parse::<ipnet::IpNet>()
                        .map_err(|e| anyhow::anyhow!("trusted proxy {p:?}: {e}"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?,
            http_max_conns: at_least_one("http_max_conns", args.http_max_conns.or(file.http_max_conns), 4096)?,
            http_max_conns_per_source: at_least_one(
                "http_max_conns_per_source",
                args.http_max_conns_per_source.or(file.http_max_conns_per_source),
                64,
            )?,
            dns_tcp_max_conns: at_least_one(
                "dns_tcp_max_conns",
                args.dns_tcp_max_conns.or(file.dns_tcp_max_conns),
                256,
            )?,
            dns_tcp_max_conns_per_source: at_least_one(
                "dns_tcp_max_conns_per_source",
                args.dns_tcp_max_conns_per_source.or(file.dns_tcp_max_conns_per_source),
                16,
            )?,
            alert_outputs: {
                let allow = args.allow_private_alert_targets || file.allow_private_alert_targets.unwrap_or(false);
                let webhooks = args.alert_webhooks.clone().or(file.alert_webhooks).unwrap_or_default();
                let typed = args.alert_outputs.clone().or(file.alert_outputs).unwrap_or_default();
                let specs = webhooks.iter().map(|u| format!("webhook={u}")).chain(typed);
                specs
                    .filter(|spec| !spec.trim().is_empty() && !spec.trim().ends_with('='))
                    .map(|spec| {
                        crate::outputs::parse_output(&spec, allow).map_err(|e| anyhow::anyhow!("alert output: {e}"))
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?
            },
            allow_private_alert_targets: args.allow_private_alert_targets
                || file.allow_private_alert_targets.unwrap_or(false),
            smtp_url: {
                let url = args.smtp_url.clone().or(file.smtp_url.clone()).filter(|u| !u.trim().is_empty());
                let from = args.smtp_from.clone().or(file.smtp_from.clone()).unwrap_or("trapline@localhost".into());
                if let Some(u) = &url {
                    crate::outputs::email::mailer(u, &from, smtp_ca_pem.as_deref())
                        .map_err(|e| anyhow::anyhow!("smtp: {e}"))?;
                }
                url
            },
            smtp_from: args.smtp_from.clone().or(file.smtp_from.clone()).unwrap_or("trapline@localhost".into()),
            ignore_sources: args
                .ignore_sources
                .clone()
                .or(file.ignore_sources)
                .unwrap_or_default()
                .iter()
                .filter(|p| !p.trim().is_empty())
                .map(|p| crate::core::parse_cidr(p).map_err(|e| anyhow::anyhow!("ignore source: {e}")))
                .collect::<anyhow::Result<Vec<_>>>()?,
            alert_give_up_secs: {
                let g = args.alert_give_up_secs.or(file.alert_give_up_secs).unwrap_or(86_400);
                anyhow::ensure!(g > 0, "alert_give_up_secs must be positive");
                g
            },
            noise: {
                use crate::noise;
                let d = noise::NoiseRules::default();
                let window = args.incident_window_secs.or(file.incident_window_secs).unwrap_or(d.group_window_secs);
                let cooldown = args.alert_cooldown_secs.or(file.alert_cooldown_secs).unwrap_or(d.cooldown_secs);
                let max = args.alert_max_per_hour.or(file.alert_max_per_hour).unwrap_or(d.max_per_hour);
                noise::NoiseRules {
                    group_window_secs: noise::check_window(window)
                        .map_err(|e| anyhow::anyhow!("incident_window_secs {e}"))?,
                    cooldown_secs: noise::check_cooldown(cooldown)
                        .map_err(|e| anyhow::anyhow!("alert_cooldown_secs {e}"))?,
                    max_per_hour: noise::check_max_per_hour(max)
                        .map_err(|e| anyhow::anyhow!("alert_max_per_hour {e}"))?,
                }
            },
            smtp_ca_pem,
            retention: {
                let days = args.hit_retention_days.or(file.hit_retention_days).unwrap_or(0);
                let per_token = args.hit_retention_per_token.or(file.hit_retention_per_token).unwrap_or(0);
                anyhow::ensure!(days >= 0, "hit_retention_days must be 0 (keep all) or more");
                anyhow::ensure!(per_token >= 0, "hit_retention_per_token must be 0 (no limit) or more");
                crate::retention::Retention {
                    max_age_days: (days > 0).then_some(days),
                    max_per_token: (per_token > 0).then_some(per_token),
                }
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let s = Settings::resolve(&ServeArgs::default()).unwrap();
        assert_eq!(s.api_listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(s.http_listen, "127.0.0.1:8081".parse().unwrap());
        assert_eq!(s.dns_listen, "127.0.0.1:5354".parse().unwrap());
        assert_eq!(s.domain, "trapline.localhost");
        assert_eq!(s.database, "trapline-data/trapline.db");
        assert_eq!((s.http_max_conns, s.http_max_conns_per_source), (4096, 64));
        assert_eq!((s.dns_tcp_max_conns, s.dns_tcp_max_conns_per_source), (256, 16));
    }

    #[test]
    fn file_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t.toml");
        std::fs::write(
            &f,
            "domain = \"file.example\"\nnx_domain = \"nx.file.example\"\napi_listen = \"127.0.0.1:9000\"\n",
        )
        .unwrap();
        let mut args =
            ServeArgs { store: StoreArgs { config: Some(f.clone()), ..Default::default() }, ..Default::default() };
        let s = Settings::resolve(&args).unwrap();
        assert_eq!(s.domain, "file.example");
        assert_eq!(s.api_listen.port(), 9000);
        args.domain = Some("Flag.Example.".into());
        assert_eq!(Settings::resolve(&args).unwrap().domain, "flag.example");
    }

    #[test]
    fn connection_caps_from_file_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t.toml");
        std::fs::write(&f, "http_max_conns_per_source = 8\ndns_tcp_max_conns_per_source = 4\n").unwrap();
        let mut args = ServeArgs { store: StoreArgs { config: Some(f), ..Default::default() }, ..Default::default() };
        let s = Settings::resolve(&args).unwrap();
        assert_eq!((s.http_max_conns_per_source, s.dns_tcp_max_conns_per_source), (8, 4));
        args.http_max_conns_per_source = Some(2);
        assert_eq!(Settings::resolve(&args).unwrap().http_max_conns_per_source, 2);
    }

    #[test]
    fn rejects_bad_values() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t.toml");
        std::fs::write(&f, "no_such_setting = 1\n").unwrap();
        let args = ServeArgs { store: StoreArgs { config: Some(f), ..Default::default() }, ..Default::default() };
        assert!(Settings::resolve(&args).is_err());
        let args = ServeArgs { domain: Some("bad domain".into()), ..Default::default() };
        assert!(Settings::resolve(&args).is_err());
        let args = ServeArgs { public_url: Some("ftp://x".into()), ..Default::default() };
        assert!(Settings::resolve(&args).is_err());
        let args =
            ServeArgs { domain: Some("t.example".into()), nx_domain: Some("T.example.".into()), ..Default::default() };
        assert!(Settings::resolve(&args).is_err(), "NX domain equal to the token domain");
        let args = ServeArgs { http_max_conns: Some(0), ..Default::default() };
        assert!(Settings::resolve(&args).is_err(), "a cap of 0 connections");
        let args = ServeArgs { dns_tcp_max_conns_per_source: Some(0), ..Default::default() };
        assert!(Settings::resolve(&args).is_err(), "a per-source cap of 0");
    }
}

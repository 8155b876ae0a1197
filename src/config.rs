//! Settings for `trapline serve` and the other commands.
//!
//! Each setting comes from, in order of precedence: a command-line flag, a `TRAPLINE_*`
//! environment variable (clap reads both), the TOML file named by `--config`, the default.
//!
//! Settings that belong to one part live in that part's section, declared once as a struct
//! that is both the flags (flattened into [`ServeArgs`]) and the TOML section: each listener's
//! in `[listeners.<name>]` (see [`crate::listeners::ListenerSettings`]), e-mail alerts' in
//! `[alerts.email]` ([`AlertEmailSettings`]). Flags, environment variables and flat TOML keys of
//! older files keep their names (`--dns-listen`, `TRAPLINE_DNS_LISTEN`, `dns_listen = …`): a
//! section's flat TOML key is its flag's id, and is moved into the section when the file is read.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::listeners::{ListenerSettings, LISTENERS};

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
    #[command(flatten)]
    pub listeners: ListenerSettings,
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
    #[command(flatten)]
    pub alert_email: AlertEmailSettings,
    #[command(flatten)]
    pub aws: crate::aws::AwsSettings,
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
    #[serde(default)]
    listeners: ListenerSettings,
    #[serde(default)]
    alerts: AlertsFile,
    #[serde(default)]
    aws: crate::aws::AwsSettings,
    domain: Option<String>,
    nx_domain: Option<String>,
    public_ip: Option<IpAddr>,
    public_url: Option<String>,
    trusted_proxies: Option<Vec<String>>,
    alert_webhooks: Option<Vec<String>>,
    alert_outputs: Option<Vec<String>>,
    ignore_sources: Option<Vec<String>>,
    allow_private_alert_targets: Option<bool>,
    alert_give_up_secs: Option<i64>,
    incident_window_secs: Option<i64>,
    alert_cooldown_secs: Option<i64>,
    alert_max_per_hour: Option<i64>,
    hit_retention_days: Option<i64>,
    hit_retention_per_token: Option<i64>,
}

/// The TOML file's `[alerts]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertsFile {
    #[serde(default)]
    email: AlertEmailSettings,
}

/// Settings of e-mail alerts: flags `--alert-smtp-*` (or the older `--smtp-*`),
/// `TRAPLINE_SMTP_*`, TOML `[alerts.email]` (or the older flat `smtp_*` keys).
#[derive(Debug, Clone, Default, PartialEq, clap::Args, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlertEmailSettings {
    /// SMTP server for e-mail alerts: smtp://host:25, smtp+starttls://user:pass@host:587 or
    /// smtps://user:pass@host:465.
    #[arg(
        id = "smtp_url",
        long = "alert-smtp-url",
        value_name = "URL",
        visible_alias = "smtp-url",
        env = "TRAPLINE_SMTP_URL"
    )]
    pub url: Option<String>,
    /// Sender of e-mail alerts (default trapline@localhost).
    #[arg(
        id = "smtp_from",
        long = "alert-smtp-from",
        value_name = "ADDRESS",
        visible_alias = "smtp-from",
        env = "TRAPLINE_SMTP_FROM"
    )]
    pub from: Option<String>,
    /// PEM file of extra CA certificates to trust for the SMTP server (a private CA).
    #[arg(
        id = "smtp_ca_file",
        long = "alert-smtp-ca-file",
        value_name = "FILE",
        visible_alias = "smtp-ca-file",
        env = "TRAPLINE_SMTP_CA_FILE"
    )]
    pub ca_file: Option<PathBuf>,
}

/// Fully resolved settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub database: String,
    pub api_listen: SocketAddr,
    /// Each listener's own settings, flags over file; each listener applies its defaults and
    /// checks them when it is built.
    pub listeners: ListenerSettings,
    pub domain: String,
    pub nx_domain: String,
    pub public_ip: IpAddr,
    /// None: derive from the bound HTTP address.
    pub public_url: Option<String>,
    pub trusted_proxies: Vec<ipnet::IpNet>,
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
    /// AWS access (`[aws]`), flags over file; checked when the client is made.
    pub aws: crate::aws::AwsSettings,
}

fn read_file(path: Option<&Path>) -> anyhow::Result<FileConfig> {
    let Some(path) = path else { return Ok(FileConfig::default()) };
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
    parse_file(&text).with_context(|| format!("invalid config file {}", path.display()))
}

fn parse_file(text: &str) -> anyhow::Result<FileConfig> {
    let mut table: toml::Table = toml::from_str(text)?;
    for (name, _) in LISTENERS {
        fold_flat_keys::<ListenerSettings>(&mut table, &["listeners", name], &format!("{name}_"))?;
    }
    fold_flat_keys::<AlertEmailSettings>(&mut table, &["alerts", "email"], "smtp_")?;
    // Deserialized section by section first, so an error names its section.
    for (name, _) in LISTENERS {
        if let Some(section) = table.get("listeners").and_then(|l| l.get(name)) {
            let mut one = toml::Table::new();
            one.insert(name.to_string(), section.clone());
            toml::Value::Table(one)
                .try_into::<ListenerSettings>()
                .map_err(|e| anyhow::anyhow!("[listeners.{name}]: {e}"))?;
        }
    }
    if let Some(section) = table.get("alerts").and_then(|a| a.get("email")) {
        section.clone().try_into::<AlertEmailSettings>().map_err(|e| anyhow::anyhow!("[alerts.email]: {e}"))?;
    }
    Ok(toml::Value::Table(table).try_into()?)
}

/// Moves the flat keys of older files into their section: a key that is the id of one of
/// `T`'s flags (`dns_listen`) and starts with `prefix` (`dns_`) becomes the rest of its name
/// (`listen`) in the table at `path` (`listeners.dns`).
fn fold_flat_keys<T: clap::Args>(table: &mut toml::Table, path: &[&str], prefix: &str) -> anyhow::Result<()> {
    let cmd = T::augment_args(clap::Command::new("trapline"));
    for id in cmd.get_arguments().map(|a| a.get_id().as_str()) {
        let Some(key) = id.strip_prefix(prefix) else { continue };
        let Some(value) = table.remove(id) else { continue };
        let mut section = &mut *table;
        for part in path {
            let entry = section.entry(part.to_string()).or_insert_with(|| toml::Table::new().into());
            section = entry.as_table_mut().ok_or_else(|| anyhow::anyhow!("{} must be a table", path.join(".")))?;
        }
        anyhow::ensure!(
            !section.contains_key(key),
            "{id} is set twice: flat and as {key} in [{}]; keep the one in the section",
            path.join(".")
        );
        section.insert(key.to_string(), value);
    }
    Ok(())
}

/// `flags` over `file`: every setting given as a flag (or environment variable) replaces the
/// file's. Works on the serialized form, so a section's fields are named nowhere else.
fn overlay<T: Serialize + DeserializeOwned>(flags: &T, file: &T) -> anyhow::Result<T> {
    fn merge(into: &mut toml::Table, from: toml::Table) {
        for (k, v) in from {
            match (into.get_mut(&k), v) {
                (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
                (_, v) => {
                    into.insert(k, v);
                }
            }
        }
    }
    let mut merged = toml::Table::try_from(file)?;
    merge(&mut merged, toml::Table::try_from(flags)?);
    Ok(toml::Value::Table(merged).try_into()?)
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
        let email = overlay(&args.alert_email, &file.alerts.email)?;
        let smtp_ca_pem = match &email.ca_file {
            Some(p) => {
                Some(std::fs::read_to_string(p).with_context(|| format!("cannot read SMTP CA file {}", p.display()))?)
            }
            None => None,
        };
        Ok(Settings {
            database,
            data_dir,
            api_listen: args.api_listen.or(file.api_listen).unwrap_or(([127, 0, 0, 1], 8080).into()),
            listeners: overlay(&args.listeners, &file.listeners)?,
            aws: overlay(&args.aws, &file.aws)?,
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
                let url = email.url.clone().filter(|u| !u.trim().is_empty());
                let from = email.from.clone().unwrap_or("trapline@localhost".into());
                if let Some(u) = &url {
                    crate::outputs::email::mailer(u, &from, smtp_ca_pem.as_deref())
                        .map_err(|e| anyhow::anyhow!("smtp: {e}"))?;
                }
                url
            },
            smtp_from: email.from.clone().unwrap_or("trapline@localhost".into()),
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
    use crate::listeners::{build_all, Common};

    fn with_file(text: &str) -> (tempfile::TempDir, ServeArgs) {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t.toml");
        std::fs::write(&f, text).unwrap();
        (dir, ServeArgs { store: StoreArgs { config: Some(f), ..Default::default() }, ..Default::default() })
    }

    /// Builds the listeners `s` describes: that is where their settings are checked.
    fn build(s: &Settings) -> anyhow::Result<usize> {
        let common = Common {
            domain: s.domain.clone(),
            nx_domain: s.nx_domain.clone(),
            public_ip: s.public_ip,
            trusted_proxies: Default::default(),
            aws: None,
            aws_last_used: (300, 1800),
        };
        Ok(build_all(&s.listeners, &common)?.len())
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn parse(args: &[&str]) -> ServeArgs {
        use clap::Parser;
        Cli::try_parse_from(std::iter::once("trapline").chain(args.iter().copied())).unwrap().serve
    }

    #[test]
    fn the_flags_are_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults() {
        let s = Settings::resolve(&ServeArgs::default()).unwrap();
        assert_eq!(s.api_listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(s.listeners.http.listen_addr(), "127.0.0.1:8081".parse().unwrap());
        assert_eq!(s.listeners.dns.listen_addr(), "127.0.0.1:5354".parse().unwrap());
        assert_eq!(s.domain, "trapline.localhost");
        assert_eq!(s.database, "trapline-data/trapline.db");
        assert_eq!(s.listeners, ListenerSettings::default());
        assert_eq!(build(&s).unwrap(), 3, "http and dns are always on; smtp is on by default");
    }

    #[test]
    fn file_then_flags() {
        let (_dir, mut args) =
            with_file("domain = \"file.example\"\nnx_domain = \"nx.file.example\"\napi_listen = \"127.0.0.1:9000\"\n");
        let s = Settings::resolve(&args).unwrap();
        assert_eq!(s.domain, "file.example");
        assert_eq!(s.api_listen.port(), 9000);
        args.domain = Some("Flag.Example.".into());
        assert_eq!(Settings::resolve(&args).unwrap().domain, "flag.example");
    }

    #[test]
    fn flat_listener_keys_of_older_files_still_count() {
        let (_dir, mut args) = with_file(
            "http_listen = \"127.0.0.1:7001\"\nhttp_max_conns = 100\nhttp_max_conns_per_source = 8\n\
             dns_listen = \"127.0.0.1:7002\"\ndns_tcp_max_conns = 50\ndns_tcp_max_conns_per_source = 4\n",
        );
        let s = Settings::resolve(&args).unwrap();
        let (http, dns) = (&s.listeners.http, &s.listeners.dns);
        assert_eq!((http.listen_addr().port(), http.max_conns, http.max_conns_per_source), (7001, Some(100), Some(8)));
        assert_eq!(
            (dns.listen_addr().port(), dns.tcp_max_conns, dns.tcp_max_conns_per_source),
            (7002, Some(50), Some(4))
        );
        args.listeners.http.max_conns_per_source = Some(2);
        let s = Settings::resolve(&args).unwrap();
        assert_eq!(s.listeners.http.max_conns_per_source, Some(2), "a flag beats the file");
        assert_eq!(s.listeners.http.max_conns, Some(100), "and leaves the file's other keys");
    }

    #[test]
    fn listener_sections_then_flags() {
        let (_dir, args) = with_file(
            "domain = \"file.example\"\nnx_domain = \"nx.file.example\"\n\
             [listeners.http]\nlisten = \"127.0.0.1:7001\"\nmax_conns = 9\n\
             [listeners.dns]\nlisten = \"127.0.0.1:7002\"\ntcp_max_conns_per_source = 3\n",
        );
        let s = Settings::resolve(&args).unwrap();
        assert_eq!((s.listeners.http.listen_addr().port(), s.listeners.http.max_conns), (7001, Some(9)));
        assert_eq!((s.listeners.dns.listen_addr().port(), s.listeners.dns.tcp_max_conns_per_source), (7002, Some(3)));
        assert_eq!(s.domain, "file.example");
        let mut flags = parse(&["--dns-listen", "127.0.0.1:7003", "--http-max-conns", "10"]);
        flags.store = args.store.clone();
        let s = Settings::resolve(&flags).unwrap();
        assert_eq!((s.listeners.dns.listen_addr().port(), s.listeners.dns.tcp_max_conns_per_source), (7003, Some(3)));
        assert_eq!((s.listeners.http.listen_addr().port(), s.listeners.http.max_conns), (7001, Some(10)));
    }

    #[test]
    fn sections_refuse_what_they_do_not_know() {
        let (_dir, args) = with_file("[listeners.dns]\nlisten = \"127.0.0.1:7002\"\nmax_conns = 3\n");
        let e = format!("{:#}", Settings::resolve(&args).unwrap_err());
        assert!(e.contains("[listeners.dns]") && e.contains("unknown field `max_conns`"), "{e}");
        assert!(e.contains("tcp_max_conns"), "the message lists what the section knows: {e}");
        let (_dir, args) = with_file("[listeners.ftp]\nlisten = \"127.0.0.1:21\"\n");
        let e = format!("{:#}", Settings::resolve(&args).unwrap_err());
        assert!(e.contains("unknown field `ftp`"), "{e}");
        let (_dir, args) = with_file("[alerts.email]\nserver = \"smtp://x\"\n");
        let e = format!("{:#}", Settings::resolve(&args).unwrap_err());
        assert!(e.contains("[alerts.email]") && e.contains("unknown field `server`"), "{e}");
        let (_dir, args) = with_file("dns_listen = \"127.0.0.1:1\"\n[listeners.dns]\nlisten = \"127.0.0.1:2\"\n");
        let e = format!("{:#}", Settings::resolve(&args).unwrap_err());
        assert!(e.contains("dns_listen is set twice"), "{e}");
        let (_dir, args) = with_file("[listeners.dns]\nlisten = \"nowhere\"\n");
        assert!(Settings::resolve(&args).is_err(), "a bad value in a section");
    }

    #[test]
    fn alert_mail_settings_by_section_flat_key_old_and_new_flag() {
        let (_dir, args) =
            with_file("[alerts.email]\nurl = \"smtp://127.0.0.1:2525\"\nfrom = \"Trapline <t@example.com>\"\n");
        let s = Settings::resolve(&args).unwrap();
        assert_eq!(s.smtp_url.as_deref(), Some("smtp://127.0.0.1:2525"));
        assert_eq!(s.smtp_from, "Trapline <t@example.com>");
        let (_dir, args) = with_file("smtp_url = \"smtp://127.0.0.1:2526\"\n");
        assert_eq!(Settings::resolve(&args).unwrap().smtp_url.as_deref(), Some("smtp://127.0.0.1:2526"));
        for flag in ["--smtp-url", "--alert-smtp-url"] {
            let mut flags = parse(&[flag, "smtp://127.0.0.1:2527", "--smtp-from", "a@example.com"]);
            flags.store = args.store.clone();
            let s = Settings::resolve(&flags).unwrap();
            assert_eq!((s.smtp_url.as_deref(), s.smtp_from.as_str()), (Some("smtp://127.0.0.1:2527"), "a@example.com"));
        }
    }

    #[test]
    fn rejects_bad_values() {
        let (_dir, args) = with_file("no_such_setting = 1\n");
        assert!(Settings::resolve(&args).is_err());
        let args = ServeArgs { domain: Some("bad domain".into()), ..Default::default() };
        assert!(Settings::resolve(&args).is_err());
        let args = ServeArgs { public_url: Some("ftp://x".into()), ..Default::default() };
        assert!(Settings::resolve(&args).is_err());
        let args =
            ServeArgs { domain: Some("t.example".into()), nx_domain: Some("T.example.".into()), ..Default::default() };
        assert!(Settings::resolve(&args).is_err(), "NX domain equal to the token domain");
        let args = parse(&["--http-max-conns", "0"]);
        let e = build(&Settings::resolve(&args).unwrap()).unwrap_err().to_string();
        assert!(e.contains("http_max_conns must be at least 1"), "a cap of 0 connections: {e}");
        let args = parse(&["--dns-tcp-max-conns-per-source", "0"]);
        let e = build(&Settings::resolve(&args).unwrap()).unwrap_err().to_string();
        assert!(e.contains("dns_tcp_max_conns_per_source must be at least 1"), "a per-source cap of 0: {e}");
    }
}

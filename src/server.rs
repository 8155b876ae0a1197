//! `trapline serve`: opens the store, binds every listener, prints where they are, and runs
//! until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use tokio::net::{TcpListener, UdpSocket};

use crate::config::Settings;
use crate::core::{Core, CreatedKey};
use crate::dialects::{conjur, console, falcon, spacesiren};
use crate::http_serve::{self, Limits};
use crate::kinds::Site;
use crate::listeners::slots::Caps;
use crate::listeners::{dns, http};
use crate::recorder::Recorder;
use crate::store;

/// The management API: few clients, so a modest cap, without a per-source one (an operator's
/// scripts may all run on one host); fair shares still apply at the cap.
const API_LIMITS: Limits =
    Limits { max_connections: 512, max_per_source: 512, header_timeout: Duration::from_secs(15) };
/// The public trigger listener: many clients, none of which may hold a connection for long
/// (the connection cap is a setting).
const TRIGGER_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How often counted failed logins are written to the audit log.
const FAILED_LOGIN_FLUSH: Duration = Duration::from_secs(2);
/// How long requests in flight may take to finish at shutdown.
const GRACE: Duration = Duration::from_secs(5);

/// How a new key is shown to the operator, once: one JSON object, fields in this order.
#[derive(Serialize)]
pub struct KeyOut<'a> {
    pub key_id: &'a str,
    pub secret_id: &'a str,
    /// The Canary Console `auth_token`: the same string as `secret_id`.
    pub auth_token: &'a str,
    pub role: &'a str,
    pub flock_id: Option<&'a str>,
}

impl<'a> KeyOut<'a> {
    pub fn of(k: &'a CreatedKey) -> KeyOut<'a> {
        KeyOut {
            key_id: &k.key.key_id,
            secret_id: &k.secret,
            auth_token: &k.secret,
            role: k.key.role.as_str(),
            flock_id: k.key.flock_id.as_deref(),
        }
    }
}

/// The site (zones and URL base) a set of settings describes. Without a public URL, token
/// URLs point at the HTTP listener; when that listens on all interfaces, at the public IP.
pub fn site(settings: &Settings, http_addr: SocketAddr) -> Site {
    let reachable =
        if http_addr.ip().is_unspecified() { SocketAddr::new(settings.public_ip, http_addr.port()) } else { http_addr };
    Site {
        domain: settings.domain.clone(),
        nx_domain: settings.nx_domain.clone(),
        public_url: settings.public_url.clone().unwrap_or_else(|| format!("http://{reachable}")),
    }
}

/// Reads the provision key, making it (mode 0600) on first start.
fn provision_key(path: &std::path::Path) -> anyhow::Result<String> {
    let key = crate::datadir::read_or_create(path, || crate::ids::hex_id(32))?;
    anyhow::ensure!(key.len() >= 32, "{} holds no usable provision key", path.display());
    Ok(key)
}

/// This node's name in outbox leases, kept in the data directory so a restarted node knows
/// the claims of its previous run (made on first start).
fn node_id(path: &std::path::Path) -> anyhow::Result<String> {
    let id = crate::datadir::read_or_create(path, || format!("node-{}", crate::ids::hex_id(8)))?;
    anyhow::ensure!(!id.is_empty(), "{} holds no node id", path.display());
    Ok(id)
}

/// Binds UDP and TCP on the same port. With port 0, retries until both get the same free port.
async fn bind_dns(addr: SocketAddr) -> anyhow::Result<(UdpSocket, TcpListener)> {
    let mut last_err = None;
    for _ in 0..32 {
        let udp = UdpSocket::bind(addr).await.with_context(|| format!("cannot bind DNS (UDP) on {addr}"))?;
        let bound = udp.local_addr()?;
        match TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if addr.port() == 0 => last_err = Some(e),
            Err(e) => return Err(e).with_context(|| format!("cannot bind DNS (TCP) on {addr}")),
        }
    }
    Err(anyhow::anyhow!("no port free for DNS on both UDP and TCP: {last_err:?}"))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler cannot fail on Unix");
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
}

pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    crate::datadir::prepare_dir(&settings.data_dir)?;
    let _serving = crate::datadir::lock_for_serve(&settings.data_dir)?;
    let store = store::open(&settings.database).await?;

    let api = TcpListener::bind(settings.api_listen)
        .await
        .with_context(|| format!("cannot bind the management API on {}", settings.api_listen))?;
    let http_listener = TcpListener::bind(settings.http_listen)
        .await
        .with_context(|| format!("cannot bind trigger HTTP on {}", settings.http_listen))?;
    let (udp, tcp) = bind_dns(settings.dns_listen).await?;
    let (api_addr, http_addr, dns_addr) = (api.local_addr()?, http_listener.local_addr()?, udp.local_addr()?);

    let site = site(&settings, http_addr);
    let provision_path = settings.data_dir.join("provision.key");
    let provision = provision_key(&provision_path)?;
    let alert_cfg = Arc::new(crate::alerts::AlertConfig {
        outputs: settings.alert_outputs.clone(),
        allow_private: settings.allow_private_alert_targets,
        give_up_secs: settings.alert_give_up_secs,
        api_base: format!("http://{api_addr}"),
        smtp_url: settings.smtp_url.clone(),
        smtp_from: settings.smtp_from.clone(),
        smtp_ca_pem: settings.smtp_ca_pem.clone(),
    });
    anyhow::ensure!(
        alert_cfg.smtp_url.is_some() || !alert_cfg.outputs.iter().any(|o| o["type"] == "email"),
        "e-mail alert outputs need an SMTP server: set --smtp-url"
    );
    let secrets = Arc::new(crate::sealed::SecretBox::load_or_create(&settings.data_dir.join("secrets.key"))?);
    let core = Arc::new(
        Core::new(store.clone(), site.clone())
            .with_provision_key(&provision)
            .with_alerts(alert_cfg.clone())
            .with_secrets(secrets),
    );
    let first_key = core.bootstrap_admin().await?;
    let committed = Arc::new(tokio::sync::Notify::new());
    let rules = crate::store::HitRules::new(
        crate::kinds::judge_ignoring(settings.ignore_sources.clone()),
        crate::alerts::alerter(alert_cfg.clone()),
    )
    .with_noise(settings.noise)
    .with_key_prefix(&format!("{}-", store.install_id().await?));
    let (recorder, writer) = Recorder::start(store.clone(), Arc::new(rules), committed.clone());
    let node = node_id(&settings.data_dir.join("node.id"))?;
    let outbox_task = tokio::spawn(crate::alerts::run_outbox(store.clone(), alert_cfg.clone(), committed, node));
    let retention_task = tokio::spawn(crate::retention::run(store.clone(), settings.retention));
    let dns_server = Arc::new(
        dns::DnsServer::new(&site.domain, &site.nx_domain, settings.public_ip, recorder.clone())?
            .with_local_addr(dns_addr),
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let trusted = Arc::new(settings.trusted_proxies.clone());
    // One management listener, one router per dialect.
    let api_router = console::router(core.clone())
        .merge(spacesiren::router(core.clone()))
        .merge(conjur::router(core.clone()))
        .merge(falcon::router(core.clone()));
    let api_task =
        tokio::spawn(http_serve::serve(api, api_router, API_LIMITS, trusted.clone(), stop_rx.clone(), GRACE));
    let http_task = tokio::spawn(http_serve::serve(
        http_listener,
        http::router(recorder.clone(), store.clone()),
        Limits {
            max_connections: settings.http_max_conns,
            max_per_source: settings.http_max_conns_per_source,
            header_timeout: TRIGGER_HEADER_TIMEOUT,
        },
        trusted,
        stop_rx,
        GRACE,
    ));
    let udp_task = tokio::spawn(dns::serve_udp(dns_server.clone(), udp));
    let tcp_task = tokio::spawn(dns::serve_tcp(
        dns_server.clone(),
        tcp,
        Caps { total: settings.dns_tcp_max_conns, per_source: settings.dns_tcp_max_conns_per_source },
    ));

    let storage = match store.backend() {
        "sqlite" => format!("SQLite {}", settings.database),
        other => format!("{other} (shared)"),
    };
    println!("Trapline {} is running", env!("CARGO_PKG_VERSION"));
    println!("  management API:   http://{api_addr}/api/v1/");
    println!("  web UI:           none yet; use the management API");
    println!("  trigger HTTP:     http://{http_addr}/");
    println!(
        "  DNS (UDP+TCP):    {dns_addr}  zone {}, NX zone {}, answers {}",
        site.domain, site.nx_domain, settings.public_ip
    );
    println!("  token URLs:       {}/...", site.public_url);
    println!("  storage:          {storage}");
    let outputs = match alert_cfg.outputs.len() {
        0 => "none (--alert-webhooks, --alert-outputs, or a token's alert_webhook_url)".to_string(),
        _ => {
            let kinds: Vec<&str> = alert_cfg.outputs.iter().filter_map(|o| o["type"].as_str()).collect();
            let webhooks = kinds.iter().filter(|k| **k == "webhook").count();
            let others: Vec<&str> = kinds.iter().copied().filter(|k| *k != "webhook").collect();
            let mut parts = Vec::new();
            if webhooks > 0 {
                parts.push(format!("{webhooks} webhook(s)"));
            }
            if !others.is_empty() {
                parts.push(others.join(", "));
            }
            parts.join(", ")
        }
    };
    println!("  alert outputs:    {outputs}");
    println!("  retention:        {}", settings.retention.describe());
    println!(
        "  provision key:    {} (SpaceSiren X-Provision-Key on POST /key; creates keys until it has made an admin key)",
        provision_path.display()
    );
    if let Some(k) = &first_key {
        println!("First start: created an admin API key. It is shown only this once; keep it safe.");
        println!("Make more with: trapline key create --role admin|analyst|read-only|deploy [--flock FLOCK_ID]");
        println!("{}", serde_json::to_string(&KeyOut::of(k))?);
    }
    println!("Ready.");
    use std::io::Write;
    std::io::stdout().flush()?;

    // Failed logins reach the audit log in batches.
    let flusher = {
        let core = core.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(FAILED_LOGIN_FLUSH);
            loop {
                tick.tick().await;
                if let Err(e) = core.flush_failed_logins().await {
                    tracing::warn!(error = %e, "could not write failed logins to the audit log");
                }
            }
        })
    };

    let mut writer = writer;
    let outcome = tokio::select! {
        _ = shutdown_signal() => Ok(()),
        // The writer only ends when every sender is gone; before shutdown that is a bug, and
        // a server that cannot record hits must not look healthy.
        r = &mut writer => Err(anyhow::anyhow!("the hit writer stopped unexpectedly: {r:?}")),
    };
    tracing::info!("shutting down");
    flusher.abort();
    let _ = core.flush_failed_logins().await;
    let _ = stop_tx.send(true);
    udp_task.abort();
    tcp_task.abort();
    // Undelivered alerts stay in the outbox and go out after the next start.
    outbox_task.abort();
    retention_task.abort();
    let _ = api_task.await;
    let _ = http_task.await;
    // Queued hits are committed before the writer stops (none is acknowledged before that).
    drop(dns_server);
    drop(recorder);
    drop(core);
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
    outcome
}

//! `trapline serve`: opens the store, binds every listener, prints where they are, and runs
//! until SIGINT/SIGTERM.
//!
//! The hit listeners are started by one loop over [`crate::listeners::LISTENERS`]: build all
//! (their settings checked), bind all, print all, run all; at a signal, tell all to stop and
//! wait for them, then for the hit writer to commit what is queued. The management API serves
//! dialects, not hits, so it is started beside them, with the same stop signal.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::config::Settings;
use crate::core::{Core, CreatedKey};
use crate::dialects::{conjur, console, falcon, spacesiren};
use crate::http_serve::{self, Limits};
use crate::kinds::Site;
use crate::listeners::{self, Common, HitSink, ListenerContext, GRACE};
use crate::recorder::Recorder;
use crate::store;

/// The management API: few clients, so a modest cap, without a per-source one (an operator's
/// scripts may all run on one host); fair shares still apply at the cap.
const API_LIMITS: Limits =
    Limits { max_connections: 512, max_per_source: 512, header_timeout: Duration::from_secs(15) };
/// How often counted failed logins are written to the audit log.
const FAILED_LOGIN_FLUSH: Duration = Duration::from_secs(2);
/// How long the hit writer may take to commit the hits still queued at shutdown.
const WRITER_GRACE: Duration = Duration::from_secs(5);

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
    // AWS (the aws-id and aws-s3 kinds, the AWS poller): on when a region is set.
    let aws = crate::aws::Aws::from_settings(&settings.aws)?;
    let aws_access = match &aws {
        Some(client) => Some(Arc::new(crate::kinds::aws_access::AwsAccess::new(
            client.clone(),
            Some(settings.aws.iam_path()?),
            settings.aws.user_tags()?,
        ))),
        None => None,
    };
    let common = Common {
        domain: settings.domain.clone(),
        nx_domain: settings.nx_domain.clone(),
        public_ip: settings.public_ip,
        trusted_proxies: Arc::new(settings.trusted_proxies.clone()),
        aws: aws.clone(),
        aws_last_used: (settings.aws.last_used_interval()?, settings.aws.last_used_grace()),
    };
    let configured = listeners::build_all(&settings.listeners, &common)?;
    crate::datadir::prepare_dir(&settings.data_dir)?;
    let _serving = crate::datadir::lock_for_serve(&settings.data_dir)?;
    let store = store::open(&settings.database).await?;

    let api = TcpListener::bind(settings.api_listen)
        .await
        .with_context(|| format!("cannot bind the management API on {}", settings.api_listen))?;
    let api_addr = api.local_addr()?;
    let mut bound = Vec::new();
    for l in configured {
        let name = l.name();
        bound.push((name, l.bind().await?));
    }
    // Token URLs point at the HTTP listener unless a public URL is set.
    let http_addr = bound
        .iter()
        .find(|(name, _)| *name == "http")
        .and_then(|(_, b)| b.local_addr())
        .unwrap_or_else(|| settings.listeners.http.listen_addr());

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
    // The configured outputs' types, read through the one typed form of an output.
    let types: Vec<&'static str> = alert_cfg
        .outputs
        .iter()
        .map(|o| crate::outputs::OutputSpec::from_value(o).map(|spec| spec.type_name()))
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("alert output: {e}"))?;
    anyhow::ensure!(
        alert_cfg.smtp_url.is_some() || !types.contains(&"email"),
        "e-mail alert outputs need an SMTP server: set --alert-smtp-url (or --smtp-url)"
    );
    let secrets = Arc::new(crate::sealed::SecretBox::load_or_create(&settings.data_dir.join("secrets.key"))?);
    let code_signing = Arc::new(crate::artefacts::authenticode::CodeSigningCa::load_or_create(
        &settings.data_dir.join("codesign-ca.pem"),
    )?);
    let core = Arc::new(
        Core::new(store.clone(), site.clone())
            .with_provision_key(&provision)
            .with_alerts(alert_cfg.clone())
            .with_secrets(secrets)
            .with_aws(aws_access)
            .with_code_signing(code_signing),
    );
    let first_key = core.bootstrap_admin().await?;
    let committed = Arc::new(tokio::sync::Notify::new());
    let rules = crate::store::HitRules::new(
        crate::noise::judge_with_ignore_lists(settings.ignore_sources.clone()),
        crate::alerts::alerter(alert_cfg.clone()),
    )
    .with_noise(settings.noise)
    .with_key_prefix(&format!("{}-", store.install_id().await?));
    let (recorder, writer) = Recorder::start(store.clone(), Arc::new(rules), committed.clone());
    let node = node_id(&settings.data_dir.join("node.id"))?;
    let outbox_task =
        tokio::spawn(crate::alerts::run_outbox(store.clone(), alert_cfg.clone(), committed, node.clone()));
    let retention_task = tokio::spawn(crate::retention::run(store.clone(), settings.retention));

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Retirements of deleted tokens and kinds' upkeep (aws-id key expiry), one node at a time.
    let upkeep_task = tokio::spawn(core.clone().run_upkeep(node.clone(), stop_rx.clone()));
    // One management listener, one router per dialect.
    let api_router = console::router(core.clone())
        .merge(spacesiren::router(core.clone()))
        .merge(conjur::router(core.clone()))
        .merge(falcon::router(core.clone()));
    let api_task = tokio::spawn(http_serve::serve(
        api,
        api_router,
        API_LIMITS,
        common.trusted_proxies.clone(),
        stop_rx.clone(),
        GRACE,
    ));
    let mut banner = Vec::new();
    for (_, b) in &bound {
        banner.extend(b.describe());
    }
    let cx = ListenerContext {
        hits: Arc::new(recorder) as Arc<dyn HitSink>,
        site: site.clone(),
        stop: stop_rx,
        node: node.clone(),
    };
    let mut running = JoinSet::new();
    for (name, b) in bound {
        let cx = cx.clone();
        running.spawn(async move { (name, b.run(cx).await) });
    }
    drop(cx);

    let storage = match store.backend() {
        "sqlite" => format!("SQLite {}", settings.database),
        other => format!("{other} (shared)"),
    };
    println!("Trapline {} is running", env!("CARGO_PKG_VERSION"));
    println!("  management API:   http://{api_addr}/api/v1/");
    println!("  web UI:           none yet; use the management API");
    for line in &banner {
        println!("  {line}");
    }
    println!("  token URLs:       {}/...", site.public_url);
    println!("  storage:          {storage}");
    let kind_cx = core.kind_context();
    let off: Vec<&str> =
        crate::kinds::KINDS.iter().filter(|k| k.unavailable(&kind_cx).is_some()).map(|k| k.name()).collect();
    if !off.is_empty() {
        println!("  kinds off:        {} (they need AWS settings: --aws-region; see the README, AWS)", off.join(", "));
    }
    let unretired = store.list_retirements().await?;
    if !unretired.is_empty() {
        println!(
            "  retirements:      {} deleted token(s) whose AWS resources are not removed yet, retried (trapline retirements)",
            unretired.len()
        );
    }
    let outputs = match alert_cfg.outputs.len() {
        0 => "none (--alert-webhooks, --alert-outputs, or a token's alert_webhook_url)".to_string(),
        _ => {
            let kinds = &types;
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

    // Failed logins reach the audit log in batches; the last batch when the server stops.
    let flusher = {
        let core = core.clone();
        let mut stop = stop_tx.subscribe();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(FAILED_LOGIN_FLUSH);
            loop {
                let stopping = tokio::select! {
                    _ = tick.tick() => false,
                    _ = crate::listeners::stopped(&mut stop) => true,
                };
                if let Err(e) = core.flush_failed_logins().await {
                    tracing::warn!(error = %e, "could not write failed logins to the audit log");
                }
                if stopping {
                    return;
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
        // Listeners serve until told to stop: one that ends before is broken.
        Some(r) = running.join_next() => Err(match r {
            Ok((name, Ok(()))) => anyhow::anyhow!("the {name} listener stopped unexpectedly"),
            Ok((name, Err(e))) => e.context(format!("the {name} listener failed")),
            Err(e) => anyhow::anyhow!("a listener failed: {e}"),
        }),
    };
    tracing::info!("shutting down");
    // Nothing is aborted before the hits are in: a task aborted inside a transaction would
    // keep SQLite's write lock from the hit writer until its connection is used again.
    let _ = stop_tx.send(true);
    let _ = api_task.await;
    let _ = flusher.await;
    let _ = upkeep_task.await;
    // Each listener stops taking work and finishes what it took (within its grace).
    while let Some(r) = running.join_next().await {
        match r {
            Ok((_, Ok(()))) => {}
            Ok((name, Err(e))) => tracing::warn!(error = %e, listener = name, "listener failed while stopping"),
            Err(e) => tracing::warn!(error = %e, "listener task failed while stopping"),
        }
    }
    // Queued hits are committed before the writer stops (none is acknowledged before that):
    // it ends once the last sink is dropped and its queue is drained.
    drop(core);
    let _ = tokio::time::timeout(WRITER_GRACE, writer).await;
    // Undelivered alerts stay in the outbox and go out after the next start.
    outbox_task.abort();
    retention_task.abort();
    outcome
}

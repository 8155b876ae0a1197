//! The `trapline` command.

use clap::{Parser, Subcommand};

use trapline::auth::Actor;
use trapline::config::{ServeArgs, Settings, StoreArgs};
use trapline::core::Core;
use trapline::model::Role;
use trapline::server::{self, KeyOut};

#[derive(Parser)]
#[command(name = "trapline", version, about = "Self-hosted honeytoken (canary token) platform")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every listener: management API, trigger HTTP, authoritative DNS.
    Serve(Box<ServeArgs>),
    /// Manage API keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Helpers for DNS tokens.
    #[command(subcommand)]
    Dns(DnsCommand),
    /// Measure hit throughput and latency against a freshly started release server.
    Bench(trapline::bench::BenchArgs),
    /// List deleted tokens whose outside resources (an aws-id token's IAM user and key) are not
    /// removed yet, with the last error; the server retries them on its own.
    Retirements {
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Create an API key and print it once as JSON (key_id, secret_id, auth_token).
    Create {
        /// admin, analyst, read-only or deploy.
        #[arg(long, default_value = "admin")]
        role: String,
        /// Limit the key to one flock.
        #[arg(long)]
        flock: Option<String>,
        /// What the key is for.
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand)]
enum DnsCommand {
    /// Print the hostname that smuggles DATA to a DNS token (generic-data encoding).
    Encode {
        /// The token's hostname, e.g. <id>.trapline.localhost
        hostname: String,
        /// The data to carry.
        data: String,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TRAPLINE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("trapline: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trapline: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => server::serve(Settings::resolve(&args)?).await,
        Command::Key(KeyCommand::Create { role, flock, description, store }) => {
            let role = Role::parse(&role)
                .ok_or_else(|| anyhow::anyhow!("unknown role {role:?}: use admin, analyst, read-only or deploy"))?;
            let settings = Settings::resolve(&ServeArgs { store, ..Default::default() })?;
            trapline::datadir::prepare_dir(&settings.data_dir)?;
            let store = trapline::store::open(&settings.database).await?;
            let core = Core::new(store, server::site(&settings, settings.listeners.http.listen_addr()));
            let key = core
                .create_key(&Actor::local(), role, flock, description)
                .await
                .map_err(|e| anyhow::anyhow!("cannot create key: {e}"))?;
            println!("{}", serde_json::to_string(&KeyOut::of(&key))?);
            Ok(())
        }
        Command::Dns(DnsCommand::Encode { hostname, data }) => {
            let nonce = (trapline::model::now_us() % 100) as u8;
            let labels = trapline::kinds::dns::encode_generic(data.as_bytes(), nonce);
            let name = format!("{labels}.{}", hostname.trim_end_matches('.'));
            anyhow::ensure!(
                name.len() <= 253,
                "too much data: the name would be {} characters (253 at most)",
                name.len()
            );
            println!("{name}");
            Ok(())
        }
        Command::Bench(args) => trapline::bench::run(args).await,
        Command::Retirements { store } => {
            let settings = Settings::resolve(&ServeArgs { store, ..Default::default() })?;
            let store = trapline::store::open(&settings.database).await?;
            let pending = store.list_retirements().await?;
            for r in &pending {
                let line = serde_json::json!({
                    "token": r.token_id,
                    "kind": r.kind,
                    "deleted": chrono::DateTime::from_timestamp_micros(r.created_us).map(|t| t.to_rfc3339()),
                    "attempts": r.attempts,
                    "last_error": r.last_error,
                });
                println!("{line}");
            }
            if pending.is_empty() {
                eprintln!("no retirements pending");
            }
            Ok(())
        }
    }
}

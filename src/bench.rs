//! `trapline bench`: starts a `trapline serve` (this same binary) on loopback with a fresh
//! data directory, drives token hits at it over HTTP and DNS from concurrent clients, and
//! prints throughput, latency percentiles, and the server's peak memory.
//!
//! Every hit is recorded durably (the server answers only after the commit), and the bench
//! checks afterwards that the stored counts equal the answered requests, so the numbers are
//! for real, durable recording.
//!
//! By default the server runs with its defaults and no alert outputs, so the bench's repeated
//! hits from one source group into one incident each. `--alerts` measures the worst case
//! instead: grouping off and a global webhook to a sink inside the bench, so every hit opens
//! an incident and queues an alert in its transaction; it also reports how fast the outbox
//! delivers them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpStream, UdpSocket};

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Server binary to start. Default: this binary.
    #[arg(long)]
    pub binary: Option<PathBuf>,
    /// Seconds of load per phase.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Concurrent clients per phase.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Database for the server (default: SQLite in a temporary directory).
    #[arg(long)]
    pub database: Option<String>,
    /// Every hit its own alerting incident, delivered to a webhook sink in the bench.
    #[arg(long)]
    pub alerts: bool,
}

/// The `--alerts` webhook receiver: answers 200 to every request and counts them.
async fn start_sink(count: std::sync::Arc<std::sync::atomic::AtomicU64>) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let count = count.clone();
                    async move {
                        let _ = req.into_body().collect().await;
                        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::new())))
                    }
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    Ok(addr)
}

struct Server {
    child: tokio::process::Child,
    api: SocketAddr,
    http: SocketAddr,
    dns: SocketAddr,
    auth: String,
    _dir: tempfile::TempDir,
}

fn after<'a>(line: &'a str, label: &str) -> Option<&'a str> {
    line.trim_start().strip_prefix(label).map(|r| r.split_whitespace().next().unwrap_or(""))
}

fn addr_of(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = url.trim_start_matches("http://");
    let hostport = rest.split('/').next().unwrap_or("");
    hostport.parse().with_context(|| format!("cannot read an address from {url:?}"))
}

async fn start(args: &BenchArgs, sink: Option<SocketAddr>) -> anyhow::Result<Server> {
    let dir = tempfile::tempdir()?;
    let binary = match &args.binary {
        Some(b) => b.clone(),
        None => std::env::current_exe()?,
    };
    let mut cmd = tokio::process::Command::new(&binary);
    cmd.arg("serve")
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--api-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--dns-listen", "127.0.0.1:0"])
        .args(["--domain", "bench.test", "--nx-domain", "nx.bench.test"])
        .env("TRAPLINE_LOG", "warn")
        // A free port for the inbound SMTP listener too (by environment: older binaries,
        // which have none, ignore it).
        .env("TRAPLINE_SMTP_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    if let Some(db) = &args.database {
        cmd.arg("--database").arg(db);
    }
    if let Some(sink) = sink {
        cmd.args(["--incident-window-secs", "0", "--allow-private-alert-targets", "--alert-webhooks"])
            .arg(format!("http://{sink}/alert"));
    }
    let mut child = cmd.spawn().with_context(|| format!("cannot start {}", binary.display()))?;
    let mut lines = BufReader::new(child.stdout.take().context("no stdout")?).lines();
    let (mut api, mut http, mut dns, mut auth) = (None, None, None, None);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let line = tokio::time::timeout_at(deadline.into(), lines.next_line())
            .await
            .context("server did not get ready in 30 s")??
            .context("server exited before it was ready")?;
        if let Some(v) = after(&line, "management API:") {
            api = Some(addr_of(v)?);
        } else if let Some(v) = after(&line, "trigger HTTP:") {
            http = Some(addr_of(v)?);
        } else if let Some(v) = after(&line, "DNS (UDP+TCP):") {
            dns = Some(v.parse()?);
        } else if line.starts_with("{\"key_id\"") {
            let v: serde_json::Value = serde_json::from_str(&line)?;
            auth = v["auth_token"].as_str().map(str::to_string);
        } else if line == "Ready." {
            break;
        }
    }
    Ok(Server {
        child,
        api: api.context("no API address printed")?,
        http: http.context("no HTTP address printed")?,
        dns: dns.context("no DNS address printed")?,
        auth: auth.context("no admin key printed (is the data dir fresh?)")?,
        _dir: dir,
    })
}

/// One keep-alive HTTP/1.1 connection.
struct Conn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(Conn { sender })
    }

    async fn call(
        &mut self,
        method: &str,
        addr: SocketAddr,
        path: &str,
        form: Option<String>,
    ) -> anyhow::Result<(u16, Bytes)> {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", addr.to_string())
            .header("user-agent", "trapline-bench/1");
        if form.is_some() {
            req = req.header("content-type", "application/x-www-form-urlencoded");
        }
        let req = req.body(Full::new(Bytes::from(form.unwrap_or_default())))?;
        self.sender.ready().await?;
        let resp = self.sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

async fn api_call(
    s: &Server,
    method: &str,
    endpoint: &str,
    form: &[(&str, &str)],
) -> anyhow::Result<serde_json::Value> {
    let mut conn = Conn::open(s.api).await?;
    let mut all = vec![("auth_token", s.auth.as_str())];
    all.extend_from_slice(form);
    let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(all).finish();
    let (status, bytes) = if method == "GET" {
        conn.call("GET", s.api, &format!("/api/v1/{endpoint}?{body}"), None).await?
    } else {
        conn.call(method, s.api, &format!("/api/v1/{endpoint}"), Some(body)).await?
    };
    let v: serde_json::Value = serde_json::from_slice(&bytes)?;
    if status != 200 {
        bail!("{endpoint}: {status} {v}");
    }
    Ok(v)
}

struct Phase {
    ok: u64,
    errors: u64,
    latencies_us: Vec<u64>,
    elapsed: Duration,
}

impl Phase {
    fn report(&mut self, what: &str, concurrency: usize) {
        self.latencies_us.sort_unstable();
        let pct = |p: f64| -> f64 {
            if self.latencies_us.is_empty() {
                return 0.0;
            }
            let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
            self.latencies_us[i] as f64 / 1000.0
        };
        println!(
            "{what:<22} {:>9.0} hits/s   p50 {:>6.2} ms   p99 {:>6.2} ms   max {:>7.2} ms   ({} ok, {} errors, {} clients, {:.1} s)",
            self.ok as f64 / self.elapsed.as_secs_f64(),
            pct(0.50),
            pct(0.99),
            pct(1.0),
            self.ok,
            self.errors,
            concurrency,
            self.elapsed.as_secs_f64()
        );
    }
}

async fn run_phase<F, Fut>(concurrency: usize, seconds: u64, worker: F) -> Phase
where
    F: Fn(usize, Instant) -> Fut,
    Fut: std::future::Future<Output = (u64, u64, Vec<u64>)> + Send + 'static,
{
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let handles: Vec<_> = (0..concurrency).map(|i| tokio::spawn(worker(i, deadline))).collect();
    let mut phase = Phase { ok: 0, errors: 0, latencies_us: Vec::new(), elapsed: Duration::ZERO };
    for h in handles {
        if let Ok((ok, err, lat)) = h.await {
            phase.ok += ok;
            phase.errors += err;
            phase.latencies_us.extend(lat);
        }
    }
    phase.elapsed = start.elapsed();
    phase
}

fn dns_query(id: u16, name: &Name) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(id).set_message_type(MessageType::Query).set_op_code(OpCode::Query).set_recursion_desired(true);
    m.add_query(Query::query(name.clone(), RecordType::A));
    m.to_vec().expect("a plain A query always encodes")
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.concurrency > 0 && args.seconds > 0, "concurrency and seconds must be positive");
    if cfg!(debug_assertions) {
        eprintln!("note: this is a debug build; build with --release for meaningful numbers");
    }
    let delivered = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sink = if args.alerts { Some(start_sink(delivered.clone()).await?) } else { None };
    let mut server = start(&args, sink).await?;
    let pid = server.child.id().unwrap_or(0);
    let http_tok = api_call(&server, "POST", "canarytoken/create", &[("kind", "http"), ("memo", "bench http")]).await?;
    let dns_tok = api_call(&server, "POST", "canarytoken/create", &[("kind", "dns"), ("memo", "bench dns")]).await?;
    let http_id = http_tok["canarytoken"]["canarytoken"].as_str().context("no token id")?.to_string();
    let dns_id = dns_tok["canarytoken"]["canarytoken"].as_str().context("no token id")?.to_string();
    let url = http_tok["canarytoken"]["url"].as_str().context("no url")?;
    let path = format!("/{}", url.splitn(4, '/').nth(3).unwrap_or(""));
    let idle_rss = peak_rss_kib(pid);

    println!(
        "trapline bench: {} store, {} clients, {} s per phase, loopback, {}",
        args.database
            .as_deref()
            .map(|d| if d.starts_with("postgres") { "PostgreSQL" } else { "SQLite" })
            .unwrap_or("SQLite (WAL, synchronous=FULL)"),
        args.concurrency,
        args.seconds,
        if args.alerts {
            "every hit an alerting incident with a webhook alert (--alerts)"
        } else {
            "default noise rules (repeats group), no alert outputs"
        }
    );

    let http_addr = server.http;
    let mut http = run_phase(args.concurrency, args.seconds, |_, deadline| {
        let path = path.clone();
        async move {
            let (mut ok, mut err, mut lat) = (0, 0, Vec::new());
            let mut conn = match Conn::open(http_addr).await {
                Ok(c) => c,
                Err(_) => return (0, 1, lat),
            };
            while Instant::now() < deadline {
                let t = Instant::now();
                match conn.call("GET", http_addr, &path, None).await {
                    Ok((200, _)) => {
                        ok += 1;
                        lat.push(t.elapsed().as_micros() as u64);
                    }
                    _ => {
                        err += 1;
                        match Conn::open(http_addr).await {
                            Ok(c) => conn = c,
                            Err(_) => break,
                        }
                    }
                }
            }
            (ok, err, lat)
        }
    })
    .await;
    http.report("HTTP trigger", args.concurrency);

    let dns_addr = server.dns;
    let qname = Name::from_ascii(format!("{dns_id}.bench.test."))?;
    let mut dns = run_phase(args.concurrency, args.seconds, |i, deadline| {
        let qname = qname.clone();
        async move {
            let (mut ok, mut err, mut lat) = (0, 0, Vec::new());
            let Ok(sock) = UdpSocket::bind("127.0.0.1:0").await else { return (0, 1, lat) };
            if sock.connect(dns_addr).await.is_err() {
                return (0, 1, lat);
            }
            let mut buf = [0u8; 1500];
            let mut id = (i as u16).wrapping_mul(7919);
            while Instant::now() < deadline {
                id = id.wrapping_add(1);
                let t = Instant::now();
                if sock.send(&dns_query(id, &qname)).await.is_err() {
                    err += 1;
                    continue;
                }
                match tokio::time::timeout(Duration::from_secs(2), sock.recv(&mut buf)).await {
                    Ok(Ok(n)) => match Message::from_vec(&buf[..n]) {
                        Ok(m)
                            if m.id() == id
                                && m.response_code() == ResponseCode::NoError
                                && !m.answers().is_empty() =>
                        {
                            ok += 1;
                            lat.push(t.elapsed().as_micros() as u64);
                        }
                        _ => err += 1,
                    },
                    _ => err += 1,
                }
            }
            (ok, err, lat)
        }
    })
    .await;
    dns.report("DNS trigger (UDP)", args.concurrency);

    // Every answered hit must be in the store.
    let h = api_call(&server, "GET", "canarytoken/fetch", &[("canarytoken", &http_id)]).await?;
    let d = api_call(&server, "GET", "canarytoken/fetch", &[("canarytoken", &dns_id)]).await?;
    let (hc, dc) =
        (h["token"]["triggered_count"].as_u64().unwrap_or(0), d["token"]["triggered_count"].as_u64().unwrap_or(0));
    println!(
        "recorded hits:         HTTP {hc} stored / {} answered, DNS {dc} stored / {} answered{}",
        http.ok,
        dns.ok,
        if hc >= http.ok && dc >= dns.ok { "  (all answered hits durable)" } else { "  (MISSING HITS)" }
    );
    if args.alerts {
        // Every answered hit queued one alert; wait (up to a minute) for the outbox to drain.
        let queued = http.ok + dns.ok;
        let at_end = delivered.load(std::sync::atomic::Ordering::Relaxed);
        let t = Instant::now();
        while delivered.load(std::sync::atomic::Ordering::Relaxed) < queued && t.elapsed() < Duration::from_secs(60) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let done = delivered.load(std::sync::atomic::Ordering::Relaxed);
        println!(
            "alerts:                {queued} queued, {at_end} delivered during the load, {done} after {:.1} s more{}",
            t.elapsed().as_secs_f64(),
            if done >= queued { "  (all delivered)" } else { "  (NOT ALL DELIVERED)" }
        );
    }
    match (idle_rss, peak_rss_kib(pid)) {
        (Some(idle), Some(peak)) => println!(
            "server memory:         peak RSS {:.1} MiB (after start-up {:.1} MiB)",
            peak as f64 / 1024.0,
            idle as f64 / 1024.0
        ),
        _ => println!("server memory:         unavailable (no /proc)"),
    }
    let _ = server.child.start_kill();
    let _ = server.child.wait().await;
    if hc < http.ok || dc < dns.ok {
        bail!("some answered hits were not stored");
    }
    Ok(())
}

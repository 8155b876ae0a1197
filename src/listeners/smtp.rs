//! Inbound SMTP listener: the mail server of the token zone, for the `smtp` kind (a token is
//! the address `<token id>@<token domain>`; the zone's MX names the zone, whose address is
//! this installation's).
//!
//! It speaks the part of RFC 5321 a sender needs — EHLO/HELO, MAIL, RCPT, DATA (with
//! dot-unstuffing), RSET, NOOP, VRFY, HELP, QUIT — and STARTTLS (RFC 3207) when a certificate
//! is configured. It is never a relay: a recipient outside the token zone gets 550 5.7.1, and
//! one inside it that is not a live token of a kind with a mailbox ([`kinds::Kind::smtp`])
//! gets 550 5.1.1; nothing is ever sent on, and no bounce is ever sent (no backscatter).
//!
//! A delivered message is one hit per token recipient, recorded before the final 250 leaves
//! (a sender whose message got no 250 still has it and tries again). The hit keeps the
//! envelope (HELO name, MAIL FROM, the recipient, whether TLS was on: headers are spoofable,
//! these are what the peer said) and what the message shows of itself, read with
//! `mail-parser`: subject, From, To, Reply-To, Date, Message-ID, the links in its text and
//! HTML, and each attachment's name, type and size — never its bytes. A recipient accepted
//! but never sent a message (RSET, QUIT, a dropped connection) is a hit too, with the envelope
//! only: probing an address is using it.
//!
//! Bounded everywhere: command lines (1 KiB), text lines (8 KiB), message size (a setting,
//! 10 MiB by default, announced with SIZE), token recipients per message, refused recipients
//! and bad commands per session, time per command and per session, and connections in all
//! and per source ([`crate::listeners::slots`]).
//!
//! Written by hand rather than with an SMTP server crate: the subset is small, and the crates
//! (mailin-embedded and others) bring their own threading or TLS stacks and would still need
//! the recipient check, the limits and the hit recording written around them.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::ids::is_token_id;
use crate::kinds;
use crate::listeners::slots::{Caps, Slots};
use crate::listeners::{at_least_one, stopped, Bound, Common, Listener, ListenerContext, GRACE};
use crate::model::{now_us, Channel, NewHit, TokenRef};
use crate::recorder::{HitSink, RecordError};

/// Where the listener listens unless told otherwise.
const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 2525);
/// Largest message accepted unless told otherwise.
const DEFAULT_MAX_MESSAGE: usize = 10 * 1024 * 1024;
/// The largest `max_message_bytes` may be: a message is held in memory while it is read.
const MOST_MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// The SMTP listener's settings: flags `--smtp-listen` and `--smtp-*` below, `TRAPLINE_SMTP_*`,
/// TOML `[listeners.smtp]`. (Alert mail *sent* by Trapline is `[alerts.email]`.)
#[derive(Debug, Clone, Default, PartialEq, clap::Args, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpSettings {
    /// Inbound SMTP listener for the smtp kind's addresses (host:port; port 0 picks a free one;
    /// default 127.0.0.1:2525; mail from the internet arrives on port 25).
    #[arg(id = "smtp_listen", long = "smtp-listen", value_name = "HOST:PORT", env = "TRAPLINE_SMTP_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Run the inbound SMTP listener (default true).
    #[arg(id = "smtp_enabled", long = "smtp-enabled", value_name = "BOOL", env = "TRAPLINE_SMTP_ENABLED")]
    pub enabled: Option<bool>,
    /// Largest message accepted, in bytes (default 10 MiB, at most 64 MiB).
    #[arg(
        id = "smtp_max_message_bytes",
        long = "smtp-max-message-bytes",
        value_name = "N",
        env = "TRAPLINE_SMTP_MAX_MESSAGE_BYTES"
    )]
    pub max_message_bytes: Option<usize>,
    /// SMTP connections served at once (default 256).
    #[arg(id = "smtp_max_conns", long = "smtp-max-conns", value_name = "N", env = "TRAPLINE_SMTP_MAX_CONNS")]
    pub max_conns: Option<usize>,
    /// SMTP connections one source (address, or IPv6 /64) holds at once (default 8).
    #[arg(
        id = "smtp_max_conns_per_source",
        long = "smtp-max-conns-per-source",
        value_name = "N",
        env = "TRAPLINE_SMTP_MAX_CONNS_PER_SOURCE"
    )]
    pub max_conns_per_source: Option<usize>,
    /// PEM certificate chain for STARTTLS (with `--smtp-tls-key`; without both, no STARTTLS).
    #[arg(id = "smtp_tls_cert", long = "smtp-tls-cert", value_name = "FILE", env = "TRAPLINE_SMTP_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of the STARTTLS certificate.
    #[arg(id = "smtp_tls_key", long = "smtp-tls-key", value_name = "FILE", env = "TRAPLINE_SMTP_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
}

/// The SMTP listener, configured.
pub struct Smtp {
    listen: SocketAddr,
    caps: Caps,
    config: Arc<Config>,
}

/// What a session needs to know.
#[derive(Clone)]
pub struct Config {
    /// The token zone: the only domain recipients may be in.
    pub domain: String,
    pub max_message: usize,
    /// STARTTLS, when a certificate is configured.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Smtp {
    /// Checks `s` (and loads the STARTTLS certificate); `None` when the listener is off.
    pub fn build(s: &SmtpSettings, common: &Common) -> anyhow::Result<Option<Box<dyn Listener>>> {
        if s.enabled == Some(false) {
            return Ok(None);
        }
        let caps = Caps {
            total: at_least_one("smtp_max_conns", s.max_conns, 256)?,
            per_source: at_least_one("smtp_max_conns_per_source", s.max_conns_per_source, 8)?,
        };
        let max_message = at_least_one("smtp_max_message_bytes", s.max_message_bytes, DEFAULT_MAX_MESSAGE)?;
        anyhow::ensure!(max_message <= MOST_MAX_MESSAGE, "smtp_max_message_bytes must be at most {MOST_MAX_MESSAGE}");
        let tls = match (&s.tls_cert, &s.tls_key) {
            (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
            (None, None) => None,
            _ => anyhow::bail!("smtp_tls_cert and smtp_tls_key go together: set both, or neither"),
        };
        let config = Arc::new(Config { domain: common.domain.clone(), max_message, tls });
        Ok(Some(Box::new(Smtp { listen: s.listen.unwrap_or(DEFAULT_LISTEN), caps, config })))
    }
}

/// A TLS server configuration (rustls, ring) from PEM files.
fn tls_acceptor(cert: &std::path::Path, key: &std::path::Path) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("cannot read the SMTP certificate {}", cert.display()))?;
    anyhow::ensure!(!chain.is_empty(), "{} holds no certificate", cert.display());
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("cannot read the SMTP private key {}", key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the SMTP certificate and key do not make a TLS server")?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

#[async_trait]
impl Listener for Smtp {
    fn name(&self) -> &'static str {
        "smtp"
    }

    async fn bind(self: Box<Self>) -> anyhow::Result<Box<dyn Bound>> {
        let socket =
            TcpListener::bind(self.listen).await.with_context(|| format!("cannot bind SMTP on {}", self.listen))?;
        let addr = socket.local_addr()?;
        Ok(Box::new(BoundSmtp { socket, addr, smtp: *self }))
    }
}

struct BoundSmtp {
    socket: TcpListener,
    addr: SocketAddr,
    smtp: Smtp,
}

#[async_trait]
impl Bound for BoundSmtp {
    fn local_addr(&self) -> Option<SocketAddr> {
        Some(self.addr)
    }

    fn describe(&self) -> Vec<String> {
        let tls = if self.smtp.config.tls.is_some() { ", STARTTLS" } else { "" };
        vec![format!("SMTP (inbound):   {}  mail for <token id>@{}{tls}", self.addr, self.smtp.config.domain)]
    }

    async fn run(self: Box<Self>, cx: ListenerContext) -> anyhow::Result<()> {
        let BoundSmtp { socket, addr, smtp } = *self;
        let slots = Slots::new(smtp.caps, Vec::new());
        let mut stop = cx.stop.clone();
        let mut conns = JoinSet::new();
        loop {
            let accepted = tokio::select! {
                r = socket.accept() => r,
                _ = stopped(&mut stop) => break,
            };
            while conns.try_join_next().is_some() {}
            let (stream, peer) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "SMTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Some(slot) = slots.admit(peer.ip()) else {
                continue; // over the caps: dropping the stream closes it
            };
            let (config, hits, mut stop) = (smtp.config.clone(), cx.hits.clone(), cx.stop.clone());
            let local = stream.local_addr().unwrap_or(addr);
            conns.spawn(async move {
                let ends = Ends { peer, local };
                let closing: Closing<'_> = Box::pin(async {
                    tokio::select! {
                        _ = slot.evicted() => {}
                        _ = stopped(&mut stop) => {}
                    }
                });
                serve_connection(Box::new(stream), ends, config, hits, closing).await;
                drop(slot);
            });
        }
        drop(socket);
        let _ = tokio::time::timeout(GRACE, async { while conns.join_next().await.is_some() {} }).await;
        Ok(())
    }
}

// ---------------------------------------------------------------- limits and parsing

/// Longest command line, CRLF included. RFC 5321 4.5.3.1.4 allows 512; ESMTP parameters need
/// a little more.
pub const MAX_COMMAND_LINE: usize = 1024;
/// Longest line of message text, CRLF included. RFC 5321 4.5.3.1.6 says 1000; some mailers
/// send longer lines, so this is lenient but bounded.
pub const MAX_TEXT_LINE: usize = 8192;
/// Token recipients one message may have.
pub const MAX_RECIPIENTS: usize = 16;
/// Refused recipients before the session is closed (address harvesting).
pub const MAX_REFUSED: usize = 20;
/// Unknown or out-of-order commands before the session is closed.
pub const MAX_ERRORS: usize = 10;
/// How long the client may take to send one command or one line of text.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one connection may last in all.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(300);
/// Links and attachments kept of one message.
pub const MAX_LINKS: usize = 32;
pub const MAX_ATTACHMENTS: usize = 32;

/// What one line read gave.
#[derive(Debug, PartialEq)]
enum Line {
    /// A line (CRLF or LF stripped).
    Text(Vec<u8>),
    /// A line longer than the limit (read to its end and thrown away).
    TooLong,
    /// The client closed the connection (a partial last line is dropped).
    Closed,
}

/// Reads one line of at most `max` bytes (terminator included) without buffering more than
/// that of it.
async fn read_line<R: AsyncBufReadExt + Unpin>(r: &mut R, max: usize) -> std::io::Result<Line> {
    let mut line = Vec::new();
    let mut too_long = false;
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            return Ok(Line::Closed);
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        if !too_long {
            if line.len() + take > max {
                too_long = true;
                line.clear();
            } else {
                line.extend_from_slice(&buf[..take]);
            }
        }
        r.consume(take);
        if done {
            if too_long {
                return Ok(Line::TooLong);
            }
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(Line::Text(line));
        }
    }
}

/// The address inside a `MAIL FROM:` / `RCPT TO:` argument: `<a@b>` (an empty `<>` is the null
/// sender), followed by optional ESMTP parameters.
pub fn parse_path<'a>(arg: &'a str, verb: &str) -> Option<(&'a str, &'a str)> {
    let rest = arg.get(..verb.len()).filter(|p| p.eq_ignore_ascii_case(verb)).map(|_| &arg[verb.len()..])?;
    let rest = rest.trim_start();
    let rest = rest.strip_prefix('<')?;
    let end = rest.find('>')?;
    let path = &rest[..end];
    // A source route (`@a,@b:user@c`, RFC 5321 4.1.2) is allowed and ignored.
    let path = path.rsplit_once(':').filter(|_| path.starts_with('@')).map_or(path, |(_, p)| p);
    Some((path, rest[end + 1..].trim()))
}

/// The links (http, https) in a text, in order, each once.
pub fn links(text: &str, out: &mut Vec<String>) {
    let lower = text.to_ascii_lowercase();
    let mut at = 0;
    while out.len() < MAX_LINKS {
        let next = [lower[at..].find("http://"), lower[at..].find("https://")].into_iter().flatten().min();
        let Some(start) = next.map(|i| at + i) else { break };
        let end = text[start..]
            .find(|c: char| c.is_whitespace() || "\"'<>()[]{}`\\^|".contains(c))
            .map_or(text.len(), |i| start + i);
        let link = text[start..end].trim_end_matches(['.', ',', ';', ':', '!', '?']);
        if link.len() > "https://".len() && !out.iter().any(|l| l == link) {
            out.push(link.to_string());
        }
        at = end.max(start + 1);
    }
}

/// What a message shows of itself: headers a reader sees, links in its text, and its
/// attachments' names, types and sizes — never their bytes.
pub fn summarize(raw: &[u8]) -> Value {
    use mail_parser::MimeHeaders;
    let mut out = Map::new();
    out.insert("size".into(), raw.len().into());
    let Some(m) = mail_parser::MessageParser::default().parse(raw) else {
        out.insert("parsed".into(), false.into());
        return Value::Object(out);
    };
    let text = |v: Option<&str>| v.map(|s| Value::String(s.to_string()));
    let addr = |a: Option<&mail_parser::Address>| {
        a.map(|a| {
            let list: Vec<Value> = a
                .iter()
                .take(MAX_LINKS)
                .map(|x| match (&x.name, &x.address) {
                    (Some(n), Some(a)) => format!("{n} <{a}>"),
                    (None, Some(a)) => a.to_string(),
                    (Some(n), None) => n.to_string(),
                    (None, None) => String::new(),
                })
                .map(Value::String)
                .collect();
            Value::Array(list)
        })
    };
    let fields: [(&str, Option<Value>); 6] = [
        ("subject", text(m.subject())),
        ("from", addr(m.from())),
        ("to", addr(m.to())),
        ("reply_to", addr(m.reply_to())),
        ("date", m.date().map(|d| Value::String(d.to_rfc3339()))),
        ("message_id", text(m.message_id())),
    ];
    for (k, v) in fields {
        if let Some(v) = v {
            out.insert(k.into(), v);
        }
    }
    let mut found = Vec::new();
    for i in 0..m.text_body_count() {
        if let Some(t) = m.body_text(i) {
            links(&t, &mut found);
        }
    }
    for i in 0..m.html_body_count() {
        if let Some(h) = m.body_html(i) {
            links(&h, &mut found);
        }
    }
    out.insert("links".into(), found.into());
    let attachments: Vec<Value> = m
        .attachments()
        .take(MAX_ATTACHMENTS)
        .map(|a| {
            let ctype = a.content_type().map(|c| match c.subtype() {
                Some(sub) => format!("{}/{}", c.ctype(), sub),
                None => c.ctype().to_string(),
            });
            json!({ "filename": a.attachment_name(), "content_type": ctype, "size": a.len() })
        })
        .collect();
    out.insert("attachments".into(), attachments.into());
    Value::Object(out)
}

// ---------------------------------------------------------------- one connection

/// Both ends of a connection: the sender, and this listener as the sender reached it.
#[derive(Debug, Clone, Copy)]
pub struct Ends {
    pub peer: SocketAddr,
    pub local: SocketAddr,
}

/// A connection's byte stream, plain or TLS.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

struct Envelope {
    mail_from: String,
    /// Token recipients (each token once).
    recipients: Vec<Recipient>,
}

struct Recipient {
    /// As the sender wrote it.
    address: String,
    token: String,
    /// Whether its kind keeps the message ([`kinds::SmtpBehaviour::reads_message`]).
    reads_message: bool,
}

struct Session {
    ends: Ends,
    helo: Option<String>,
    envelope: Option<Envelope>,
    tls: bool,
    errors: usize,
    refused: usize,
}

enum Next {
    Quit,
    StartTls,
}

/// Writes one reply (several lines: all but the last with `-` after the code).
async fn reply<W: AsyncWrite + Unpin>(w: &mut W, code: u16, lines: &[&str]) -> std::io::Result<()> {
    let mut out = String::new();
    for (i, l) in lines.iter().enumerate() {
        let sep = if i + 1 == lines.len() { ' ' } else { '-' };
        out.push_str(&format!("{code}{sep}{l}\r\n"));
    }
    w.write_all(out.as_bytes()).await?;
    w.flush().await
}

/// Resolves when a session must end early: the server stops, or the connection's slot goes to
/// a newcomer. The session notices it between commands (421), so an envelope it accepted is
/// still recorded.
pub type Closing<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>;

/// Serves one connection until QUIT, an error, a limit, the end of its lifetime or `closing`.
pub async fn serve_connection(
    stream: Box<dyn Stream>,
    ends: Ends,
    cfg: Arc<Config>,
    sink: Arc<dyn HitSink>,
    mut closing: Closing<'_>,
) {
    let deadline = Instant::now() + SESSION_LIFETIME;
    let mut s = Session { ends, helo: None, envelope: None, tls: false, errors: 0, refused: 0 };
    let mut conn = BufReader::new(stream);
    if reply(conn.get_mut(), 220, &[&format!("{} ESMTP", cfg.domain)]).await.is_err() {
        return;
    }
    loop {
        match tokio::time::timeout_at(deadline, commands(&mut conn, &mut s, &cfg, sink.as_ref(), &mut closing)).await {
            Ok(Ok(Next::StartTls)) => {
                let Some(acceptor) = cfg.tls.clone() else { break };
                // Whatever the client sent after STARTTLS and before the handshake is thrown
                // away with the buffer (RFC 3207 section 4.2): it would be plaintext injected
                // into the TLS session.
                let plain = conn.into_inner();
                match tokio::time::timeout(COMMAND_TIMEOUT, acceptor.accept(plain)).await {
                    Ok(Ok(tls)) => conn = BufReader::new(Box::new(tls)),
                    _ => return,
                }
                // The session starts over, as after a fresh greeting (RFC 3207 section 4.2).
                s.helo = None;
                s.tls = true;
            }
            Ok(Ok(Next::Quit)) | Ok(Err(_)) => break,
            Err(_) => {
                let _ = reply(conn.get_mut(), 421, &["4.4.2 session too long, closing"]).await;
                break;
            }
        }
    }
    abandon(&mut s, sink.as_ref()).await;
}

/// The hit data of one token recipient.
fn hit_data(s: &Session, env: &Envelope, addr: &str, message: Option<&Value>) -> Value {
    let mut d = json!({
        "helo": s.helo.clone().unwrap_or_default(),
        "mail_from": env.mail_from,
        "rcpt_to": addr,
        "recipients": env.recipients.len(),
        "tls": s.tls,
    });
    if let Some(m) = message {
        d["message"] = m.clone();
    }
    d
}

/// The group of an SMTP hit ([`NewHit::group`]): the envelope's sender and the token address
/// (case-folded: mail domains and, here, token mailboxes are case-insensitive). The same sender
/// mailing the address again from the same source joins the open incident, as a client
/// retrying a delivery does; another sender is another trigger.
fn group(env: &Envelope, address: &str) -> String {
    serde_json::to_string(&[env.mail_from.to_lowercase(), address.to_lowercase()]).unwrap_or_default()
}

/// Records one hit per token recipient; Ok(false) when the sink could not take any of them.
async fn record(s: &Session, env: &Envelope, message: Option<&Value>, sink: &dyn HitSink) -> bool {
    let mut taken = false;
    for r in &env.recipients {
        let message = message.filter(|_| r.reads_message);
        let hit = NewHit {
            token: TokenRef::Id(r.token.clone()),
            time_us: now_us(),
            channel: Channel::Smtp,
            src_ip: s.ends.peer.ip().to_canonical().to_string(),
            src_port: s.ends.peer.port(),
            dst_ip: s.ends.local.ip().to_canonical().to_string(),
            dst_port: s.ends.local.port(),
            data: hit_data(s, env, &r.address, message),
            private: None,
            group: Some(group(env, &r.address)),
        };
        match sink.record(hit).await {
            Ok(_) => taken = true,
            Err(e) => tracing::error!(error = %e, token = %r.token, "SMTP hit not recorded"),
        }
    }
    taken
}

/// Records the hits of an envelope that got no message (RSET, a new EHLO, QUIT, a dropped
/// connection): the address was used all the same.
async fn abandon(s: &mut Session, sink: &dyn HitSink) {
    if let Some(env) = s.envelope.take() {
        record(s, &env, None, sink).await;
    }
}

/// Why a recipient is refused.
#[derive(Debug, PartialEq)]
pub enum Refusal {
    /// Another domain: never relayed.
    NotOurs,
    /// The token zone, but no live token with a mailbox.
    NoSuchUser,
}

/// The token id a recipient names, if it is `<token id>@<domain>` (the local part compared
/// case-insensitively, as token ids are lower case).
pub fn token_recipient(addr: &str, domain: &str) -> Result<String, Refusal> {
    let (local, host) = addr.rsplit_once('@').ok_or(Refusal::NotOurs)?;
    if !host.trim_end_matches('.').eq_ignore_ascii_case(domain) {
        return Err(Refusal::NotOurs);
    }
    let local = local.to_ascii_lowercase();
    if is_token_id(&local) {
        Ok(local)
    } else {
        Err(Refusal::NoSuchUser)
    }
}

/// Whether `token` names a live token whose kind has a mailbox: None if not, else whether
/// the kind reads messages.
async fn mailbox(token: &str, sink: &dyn HitSink) -> Result<Option<bool>, RecordError> {
    let found = sink.live_token(token).await?;
    let kind = found.and_then(|t| kinds::find(&t.kind));
    Ok(kind.and_then(|k| k.smtp()).map(|b| b.reads_message()))
}

/// Reads and answers commands until the session ends or asks for TLS.
async fn commands(
    conn: &mut BufReader<Box<dyn Stream>>,
    s: &mut Session,
    cfg: &Config,
    sink: &dyn HitSink,
    closing: &mut Closing<'_>,
) -> std::io::Result<Next> {
    loop {
        let read = tokio::select! {
            biased;
            _ = closing.as_mut() => {
                reply(conn.get_mut(), 421, &["4.3.2 closing, try again later"]).await?;
                return Ok(Next::Quit);
            }
            read = tokio::time::timeout(COMMAND_TIMEOUT, read_line(conn, MAX_COMMAND_LINE)) => read,
        };
        let line = match read {
            Err(_) => {
                reply(conn.get_mut(), 421, &["4.4.2 idle too long, closing"]).await?;
                return Ok(Next::Quit);
            }
            Ok(r) => r?,
        };
        let line = match line {
            Line::Closed => return Ok(Next::Quit),
            Line::TooLong => {
                if error(conn.get_mut(), s, "5.5.2 line too long").await? {
                    return Ok(Next::Quit);
                }
                continue;
            }
            Line::Text(l) => String::from_utf8_lossy(&l).into_owned(),
        };
        let (verb, arg) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        let verb = verb.to_ascii_uppercase();
        let arg = arg.trim();
        let w = conn.get_mut();
        match verb.as_str() {
            "EHLO" | "HELO" if arg.is_empty() => reply(w, 501, &["5.5.4 a domain name is required"]).await?,
            "EHLO" => {
                abandon(s, sink).await;
                s.helo = Some(cut(arg, 255));
                let size = format!("SIZE {}", cfg.max_message);
                let mut lines = vec![cfg.domain.as_str(), size.as_str(), "8BITMIME", "ENHANCEDSTATUSCODES"];
                if cfg.tls.is_some() && !s.tls {
                    lines.push("STARTTLS");
                }
                lines.push("HELP");
                reply(w, 250, &lines).await?;
            }
            "HELO" => {
                abandon(s, sink).await;
                s.helo = Some(cut(arg, 255));
                reply(w, 250, &[&cfg.domain]).await?;
            }
            "STARTTLS" if cfg.tls.is_none() || s.tls => reply(w, 502, &["5.5.1 STARTTLS not available"]).await?,
            "STARTTLS" => {
                abandon(s, sink).await;
                reply(w, 220, &["2.0.0 ready to start TLS"]).await?;
                return Ok(Next::StartTls);
            }
            "MAIL" if s.helo.is_none() => reply(w, 503, &["5.5.1 EHLO or HELO first"]).await?,
            "MAIL" if s.envelope.is_some() => reply(w, 503, &["5.5.1 sender already given"]).await?,
            "MAIL" => match parse_path(arg, "FROM:") {
                None => reply(w, 501, &["5.5.4 syntax: MAIL FROM:<address>"]).await?,
                Some((from, params)) => {
                    let declared = params
                        .split_ascii_whitespace()
                        .find_map(|p| p.get(..5).filter(|k| k.eq_ignore_ascii_case("SIZE=")).map(|_| &p[5..]))
                        .and_then(|n| n.parse::<u64>().ok());
                    if declared.is_some_and(|n| n > cfg.max_message as u64) {
                        reply(w, 552, &["5.3.4 message too big"]).await?;
                    } else {
                        s.envelope = Some(Envelope { mail_from: cut(from, 320), recipients: Vec::new() });
                        reply(w, 250, &["2.1.0 ok"]).await?;
                    }
                }
            },
            "RCPT" if s.envelope.is_none() => reply(w, 503, &["5.5.1 MAIL first"]).await?,
            "RCPT" => match parse_path(arg, "TO:") {
                None => reply(w, 501, &["5.5.4 syntax: RCPT TO:<address>"]).await?,
                Some((to, _)) => {
                    let found = match token_recipient(to, &cfg.domain) {
                        Ok(token) => match mailbox(&token, sink).await {
                            Ok(Some(reads_message)) => Ok((token, reads_message)),
                            Ok(None) => Err(Refusal::NoSuchUser),
                            Err(e) => {
                                tracing::error!(error = %e, "SMTP recipient lookup failed");
                                reply(w, 451, &["4.3.0 try again later"]).await?;
                                continue;
                            }
                        },
                        Err(r) => Err(r),
                    };
                    let env = s.envelope.as_mut().expect("checked above");
                    match found {
                        Ok((t, _)) if env.recipients.iter().any(|r| r.token == t) => {
                            reply(w, 250, &["2.1.5 ok"]).await?
                        }
                        Ok(_) if env.recipients.len() >= MAX_RECIPIENTS => {
                            reply(w, 452, &["4.5.3 too many recipients"]).await?
                        }
                        Ok((token, reads_message)) => {
                            env.recipients.push(Recipient { address: cut(to, 320), token, reads_message });
                            reply(w, 250, &["2.1.5 ok"]).await?
                        }
                        Err(r) => {
                            s.refused += 1;
                            let text = match r {
                                Refusal::NotOurs => "5.7.1 relaying denied",
                                Refusal::NoSuchUser => "5.1.1 no such user",
                            };
                            reply(w, 550, &[text]).await?;
                            if s.refused >= MAX_REFUSED {
                                reply(w, 421, &["4.7.0 too many refused recipients, closing"]).await?;
                                return Ok(Next::Quit);
                            }
                        }
                    }
                }
            },
            "DATA" if s.envelope.as_ref().is_none_or(|e| e.recipients.is_empty()) => {
                reply(w, 554, &["5.5.1 no valid recipients"]).await?
            }
            "DATA" => {
                reply(w, 354, &["end data with <CR><LF>.<CR><LF>"]).await?;
                let answer = match read_message(conn, cfg.max_message).await? {
                    Message::Closed => return Ok(Next::Quit),
                    Message::TooBig => (552, "5.3.4 message too big"),
                    Message::BadLine => (500, "5.5.2 line too long"),
                    Message::Done(raw) => {
                        let env = s.envelope.take().expect("checked above");
                        let summary = summarize(&raw);
                        if record(s, &env, Some(&summary), sink).await {
                            (250, "2.0.0 ok: queued")
                        } else {
                            (451, "4.3.0 try again later")
                        }
                    }
                };
                // A refused message still used its addresses.
                abandon(s, sink).await;
                reply(conn.get_mut(), answer.0, &[answer.1]).await?;
            }
            "RSET" => {
                abandon(s, sink).await;
                reply(w, 250, &["2.0.0 ok"]).await?
            }
            "NOOP" => reply(w, 250, &["2.0.0 ok"]).await?,
            "VRFY" | "EXPN" => reply(w, 252, &["2.5.2 cannot verify; send some mail"]).await?,
            "HELP" => reply(w, 214, &["2.0.0 see RFC 5321"]).await?,
            "QUIT" => {
                abandon(s, sink).await;
                reply(w, 221, &["2.0.0 bye"]).await?;
                return Ok(Next::Quit);
            }
            _ => {
                if error(w, s, "5.5.2 command not recognised").await? {
                    return Ok(Next::Quit);
                }
            }
        }
    }
}

/// Answers a bad command with 500; true (after a 421) once there were too many.
async fn error<W: AsyncWrite + Unpin>(w: &mut W, s: &mut Session, text: &str) -> std::io::Result<bool> {
    s.errors += 1;
    reply(w, 500, &[text]).await?;
    if s.errors >= MAX_ERRORS {
        reply(w, 421, &["4.7.0 too many errors, closing"]).await?;
        return Ok(true);
    }
    Ok(false)
}

enum Message {
    Done(Vec<u8>),
    TooBig,
    BadLine,
    Closed,
}

/// Reads message text up to the lone `.` line, undoing dot-stuffing (RFC 5321 section 4.5.2).
/// Past `max` bytes, or after an overlong line, the text is read to its end and thrown away.
async fn read_message<R: AsyncBufReadExt + Unpin>(r: &mut R, max: usize) -> std::io::Result<Message> {
    let mut raw = Vec::new();
    let (mut too_big, mut bad_line) = (false, false);
    loop {
        let line = match tokio::time::timeout(COMMAND_TIMEOUT, read_line(r, MAX_TEXT_LINE)).await {
            Err(_) => return Ok(Message::Closed),
            Ok(l) => l?,
        };
        match line {
            Line::Closed => return Ok(Message::Closed),
            Line::TooLong => bad_line = true,
            Line::Text(l) if l == b"." => break,
            Line::Text(l) => {
                let l = l.strip_prefix(b".").unwrap_or(&l);
                if raw.len() + l.len() + 2 > max {
                    too_big = true;
                }
                if !too_big && !bad_line {
                    raw.extend_from_slice(l);
                    raw.extend_from_slice(b"\r\n");
                }
            }
        }
    }
    Ok(if too_big {
        Message::TooBig
    } else if bad_line {
        Message::BadLine
    } else {
        Message::Done(raw)
    })
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn cut(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, DuplexStream};

    use super::*;
    use crate::recorder::testing::{Answer, FakeSink};

    const TOKEN: &str = "abcdefghijklmnopqrstuvwxy";

    fn config() -> Arc<Config> {
        Arc::new(Config { domain: "t.test".into(), max_message: 4096, tls: None })
    }

    fn sink(kind: &str) -> Arc<FakeSink> {
        Arc::new(FakeSink::new(Answer::Record(crate::kinds::testing::token(kind, json!({})))))
    }

    /// A client on one end of a pipe, the session on the other.
    struct Client {
        io: DuplexStream,
        session: tokio::task::JoinHandle<()>,
    }

    impl Client {
        async fn start(sink: Arc<FakeSink>) -> Client {
            let (io, server) = tokio::io::duplex(64 * 1024);
            let ends = Ends { peer: "192.0.2.7:4000".parse().unwrap(), local: "198.51.100.1:25".parse().unwrap() };
            let session = tokio::spawn(serve_connection(
                Box::new(server),
                ends,
                config(),
                sink,
                Box::pin(std::future::pending()),
            ));
            let mut c = Client { io, session };
            assert!(c.read().await.starts_with("220 t.test ESMTP"));
            c
        }

        /// Reads one whole reply (up to the line with a space after the code).
        async fn read(&mut self) -> String {
            let mut got = Vec::new();
            loop {
                let mut b = [0u8; 1];
                if self.io.read(&mut b).await.unwrap() == 0 {
                    break;
                }
                got.push(b[0]);
                if got.ends_with(b"\r\n") {
                    let text = String::from_utf8_lossy(&got).into_owned();
                    let last = text.trim_end().rsplit("\r\n").next().unwrap().to_string();
                    if last.as_bytes().get(3) == Some(&b' ') {
                        return text;
                    }
                }
            }
            String::from_utf8_lossy(&got).into_owned()
        }

        async fn say(&mut self, line: &str) -> String {
            self.io.write_all(format!("{line}\r\n").as_bytes()).await.unwrap();
            self.read().await
        }

        async fn quit(mut self) {
            assert!(self.say("QUIT").await.starts_with("221"));
            self.session.await.unwrap();
        }
    }

    const MESSAGE: &str = "From: Boss <ceo@victim.example>\r\nSubject: Q3 payroll\r\n\
        Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n\
        ..see https://evil.example/x, then (http://other.example/y).\r\n--b\r\n\
        Content-Type: application/vnd.ms-excel\r\nContent-Disposition: attachment; filename=\"pay.xlsx\"\r\n\
        Content-Transfer-Encoding: base64\r\n\r\nAAAA\r\n--b--\r\n.\r\n";

    #[tokio::test]
    async fn mail_for_a_token_is_one_hit_with_envelope_and_message() {
        let sink = sink("smtp");
        let mut c = Client::start(sink.clone()).await;
        let ehlo = c.say("EHLO laptop-7").await;
        assert!(ehlo.contains("250-SIZE 4096") && ehlo.ends_with("250 HELP\r\n") && !ehlo.contains("STARTTLS"));
        assert!(c.say("MAIL FROM:<ceo@victim.example> SIZE=900").await.starts_with("250"));
        assert!(c.say("RCPT TO:<someone@elsewhere.example>").await.starts_with("550 5.7.1"), "never a relay");
        assert!(c.say("RCPT TO:<zzzzzzzzzzzzzzzzzzzzzzzzz@t.test>").await.starts_with("550 5.1.1"), "no such token");
        assert!(c.say("RCPT TO:<postmaster@t.test>").await.starts_with("550 5.1.1"));
        assert!(c.say(&format!("RCPT TO:<{}@T.TEST>", TOKEN.to_uppercase())).await.starts_with("250"));
        assert!(c.say(&format!("RCPT TO:<{TOKEN}@t.test>")).await.starts_with("250"), "the same token twice");
        assert!(c.say("DATA").await.starts_with("354"));
        c.io.write_all(MESSAGE.as_bytes()).await.unwrap();
        assert!(c.read().await.starts_with("250 2.0.0"));
        c.quit().await;

        let hits = sink.hits();
        assert_eq!(hits.len(), 1, "one hit per token recipient and message");
        let h = &hits[0];
        assert_eq!((&h.token, h.channel), (&TokenRef::Id(TOKEN.into()), Channel::Smtp));
        let group = format!(r#"["ceo@victim.example","{TOKEN}@t.test"]"#);
        assert_eq!(h.group.as_deref(), Some(group.as_str()), "grouped by sender and token address");
        assert_eq!(
            (h.src_ip.as_str(), h.src_port, h.dst_ip.as_str(), h.dst_port),
            ("192.0.2.7", 4000, "198.51.100.1", 25)
        );
        assert_eq!(h.data["helo"], "laptop-7");
        assert_eq!(h.data["mail_from"], "ceo@victim.example");
        assert_eq!(h.data["rcpt_to"], format!("{}@T.TEST", TOKEN.to_uppercase()));
        assert_eq!(h.data["tls"], false);
        let m = &h.data["message"];
        assert_eq!(m["subject"], "Q3 payroll");
        assert_eq!(m["from"], json!(["Boss <ceo@victim.example>"]));
        assert_eq!(m["links"], json!(["https://evil.example/x", "http://other.example/y"]));
        assert_eq!(
            m["attachments"],
            json!([{ "filename": "pay.xlsx", "content_type": "application/vnd.ms-excel", "size": 3 }])
        );
    }

    #[tokio::test]
    async fn tokens_of_kinds_without_a_mailbox_are_refused() {
        let sink = sink("http");
        let mut c = Client::start(sink.clone()).await;
        c.say("HELO x").await;
        c.say("MAIL FROM:<>").await;
        assert!(c.say(&format!("RCPT TO:<{TOKEN}@t.test>")).await.starts_with("550 5.1.1"));
        assert!(c.say("DATA").await.starts_with("554"), "no valid recipients");
        c.quit().await;
        assert!(sink.hits().is_empty());
    }

    #[tokio::test]
    async fn an_accepted_recipient_without_a_message_is_still_a_hit() {
        let sink = sink("smtp");
        let mut c = Client::start(sink.clone()).await;
        c.say("EHLO probe").await;
        c.say("MAIL FROM:<a@b.example>").await;
        c.say(&format!("RCPT TO:<{TOKEN}@t.test>")).await;
        assert!(c.say("RSET").await.starts_with("250"));
        assert_eq!(sink.hits().len(), 1, "recorded at RSET");
        c.say("MAIL FROM:<a@b.example>").await;
        c.say(&format!("RCPT TO:<{TOKEN}@t.test>")).await;
        drop(c.io); // the connection drops
        c.session.await.unwrap();
        let hits = sink.hits();
        assert_eq!(hits.len(), 2);
        assert!(hits.iter().all(|h| h.data.get("message").is_none() && h.data["helo"] == "probe"));
    }

    #[tokio::test]
    async fn hits_group_by_envelope_sender_and_token_address() {
        let sink = sink("smtp");
        let mut c = Client::start(sink.clone()).await;
        c.say("EHLO probe").await;
        for from in ["a@b.example", "A@B.EXAMPLE", "other@b.example", ""] {
            c.say(&format!("MAIL FROM:<{from}>")).await;
            c.say(&format!("RCPT TO:<{TOKEN}@t.test>")).await;
            c.say("RSET").await;
        }
        c.quit().await;
        let keys: Vec<String> = sink.hits().iter().map(crate::noise::group_key).collect();
        assert_eq!(keys.len(), 4);
        assert!(keys.iter().all(|k| k.len() == 32), "{keys:?}");
        assert_eq!(keys[0], keys[1], "the same sender, however spelt, is the same trigger again");
        assert_ne!(keys[0], keys[2], "another sender is another trigger");
        assert_ne!(keys[2], keys[3], "the null sender too");
    }

    #[tokio::test]
    async fn a_session_closed_early_says_so_and_records_its_envelope() {
        let sink = sink("smtp");
        let (io, server) = tokio::io::duplex(64 * 1024);
        let (close, closed) = tokio::sync::oneshot::channel::<()>();
        let ends = Ends { peer: "192.0.2.7:4000".parse().unwrap(), local: "198.51.100.1:25".parse().unwrap() };
        let closing: Closing<'static> = Box::pin(async move {
            let _ = closed.await;
        });
        let session = tokio::spawn(serve_connection(Box::new(server), ends, config(), sink.clone(), closing));
        let mut c = Client { io, session };
        c.read().await;
        c.say("EHLO x").await;
        c.say("MAIL FROM:<a@b.example>").await;
        assert!(c.say(&format!("RCPT TO:<{TOKEN}@t.test>")).await.starts_with("250"));
        close.send(()).unwrap();
        assert!(c.read().await.starts_with("421 4.3.2"), "the server stops, or the slot is taken");
        c.session.await.unwrap();
        let hits = sink.hits();
        assert_eq!(hits.len(), 1, "the accepted address is still a hit");
        assert!(hits[0].data.get("message").is_none());
    }

    #[tokio::test]
    async fn a_message_over_the_limit_is_refused_but_its_address_was_used() {
        let sink = sink("smtp");
        let mut c = Client::start(sink.clone()).await;
        c.say("EHLO x").await;
        assert!(c.say("MAIL FROM:<a@b.example> SIZE=5000").await.starts_with("552"), "declared too big");
        c.say("MAIL FROM:<a@b.example>").await;
        c.say(&format!("RCPT TO:<{TOKEN}@t.test>")).await;
        c.say("DATA").await;
        let big = format!("Subject: big\r\n\r\n{}.\r\n", format!("{}\r\n", "x".repeat(98)).repeat(50));
        c.io.write_all(big.as_bytes()).await.unwrap();
        assert!(c.read().await.starts_with("552 5.3.4"));
        c.say("MAIL FROM:<a@b.example>").await;
        c.say(&format!("RCPT TO:<{TOKEN}@t.test>")).await;
        c.say("DATA").await;
        c.io.write_all(format!("Subject: long\r\n\r\n{}\r\n.\r\n", "y".repeat(MAX_TEXT_LINE)).as_bytes())
            .await
            .unwrap();
        assert!(c.read().await.starts_with("500 5.5.2"), "an overlong text line");
        c.quit().await;
        let hits = sink.hits();
        assert_eq!(hits.len(), 2);
        assert!(hits.iter().all(|h| h.data.get("message").is_none()));
    }

    #[tokio::test]
    async fn storage_trouble_is_a_temporary_failure() {
        let sink = sink("smtp");
        let mut c = Client::start(sink.clone()).await;
        c.say("EHLO x").await;
        c.say("MAIL FROM:<a@b.example>").await;
        c.say(&format!("RCPT TO:<{TOKEN}@t.test>")).await;
        sink.set_answer(Answer::Fail(RecordError::Overloaded));
        c.say("DATA").await;
        c.io.write_all(b"Subject: s\r\n\r\nbody\r\n.\r\n").await.unwrap();
        assert!(c.read().await.starts_with("451 4.3.0"), "the sender keeps the message and tries again");
        assert!(c.say(&format!("RCPT TO:<{TOKEN}@t.test>")).await.starts_with("503"), "the envelope is gone");
        c.say("MAIL FROM:<a@b.example>").await;
        assert!(c.say(&format!("RCPT TO:<{TOKEN}@t.test>")).await.starts_with("451"), "the lookup fails too");
        c.quit().await;
    }

    #[tokio::test]
    async fn commands_out_of_order_and_garbage_are_answered_then_cut_off() {
        let sink = sink("smtp");
        let mut c = Client::start(sink.clone()).await;
        assert!(c.say("MAIL FROM:<a@b.example>").await.starts_with("503"));
        assert!(c.say("EHLO").await.starts_with("501"));
        assert!(c.say("HELO x").await.starts_with("250 t.test"));
        assert!(c.say("RCPT TO:<a@t.test>").await.starts_with("503"));
        assert!(c.say("MAIL FROM:a@b.example").await.starts_with("501"));
        assert!(c.say("STARTTLS").await.starts_with("502"), "no certificate configured");
        assert!(c.say("VRFY root").await.starts_with("252"));
        assert!(c.say("NOOP").await.starts_with("250"));
        assert!(c.say(&"X".repeat(MAX_COMMAND_LINE + 10)).await.starts_with("500 5.5.2 line too long"));
        for _ in 0..MAX_ERRORS - 2 {
            assert!(c.say("BOGUS").await.starts_with("500"));
        }
        assert!(c.say("BOGUS").await.starts_with("500"));
        assert!(c.read().await.starts_with("421 4.7.0"), "then the session is closed");
        c.session.await.unwrap();
        assert!(sink.hits().is_empty());
    }

    #[tokio::test]
    async fn harvesting_addresses_ends_the_session() {
        let mut c = Client::start(sink("smtp")).await;
        c.say("HELO x").await;
        c.say("MAIL FROM:<a@b.example>").await;
        for i in 0..MAX_REFUSED - 1 {
            assert!(c.say(&format!("RCPT TO:<user{i}@t.test>")).await.starts_with("550"));
        }
        assert!(c.say("RCPT TO:<last@t.test>").await.starts_with("550"));
        assert!(c.read().await.starts_with("421 4.7.0"));
        c.session.await.unwrap();
    }

    #[tokio::test]
    async fn dot_stuffing_is_undone_and_the_lone_dot_ends_the_text() {
        let mut r = BufReader::new(&b"a\r\n..b\r\n.c\r\n.\r\nQUIT\r\n"[..]);
        let Message::Done(raw) = read_message(&mut r, 100).await.unwrap() else { panic!("a message") };
        assert_eq!(raw, b"a\r\n.b\r\nc\r\n");
        let mut rest = String::new();
        r.read_to_string(&mut rest).await.unwrap();
        assert_eq!(rest, "QUIT\r\n");
        let mut cut_off = BufReader::new(&b"a\r\nb"[..]);
        assert!(matches!(read_message(&mut cut_off, 100).await.unwrap(), Message::Closed));
    }

    #[tokio::test]
    async fn lines_are_bounded_without_buffering_them_whole() {
        let long = format!("{}\r\nnext\r\n", "z".repeat(5000));
        let mut r = BufReader::with_capacity(16, long.as_bytes());
        assert_eq!(read_line(&mut r, 1024).await.unwrap(), Line::TooLong);
        assert_eq!(read_line(&mut r, 1024).await.unwrap(), Line::Text(b"next".to_vec()));
        assert_eq!(read_line(&mut r, 1024).await.unwrap(), Line::Closed);
        let mut bare_lf = BufReader::new(&b"HELO x\n"[..]);
        assert_eq!(read_line(&mut bare_lf, 1024).await.unwrap(), Line::Text(b"HELO x".to_vec()));
    }

    #[test]
    fn paths_and_recipients_parse_strictly() {
        assert_eq!(parse_path("FROM:<a@b.example> SIZE=10", "FROM:"), Some(("a@b.example", "SIZE=10")));
        assert_eq!(parse_path("from: <>", "FROM:"), Some(("", "")));
        assert_eq!(parse_path("TO:<@relay.example:u@t.test>", "TO:"), Some(("u@t.test", "")));
        for bad in ["FROM:a@b", "TO:<a@b", "", "FR"] {
            assert_eq!(parse_path(bad, "FROM:"), None, "{bad}");
        }
        assert_eq!(token_recipient(&format!("{TOKEN}@t.test."), "t.test"), Ok(TOKEN.to_string()));
        assert_eq!(token_recipient(&format!("{TOKEN}@t.test.evil.example"), "t.test"), Err(Refusal::NotOurs));
        assert_eq!(token_recipient("user@t.test", "t.test"), Err(Refusal::NoSuchUser));
        assert_eq!(token_recipient("no-at-sign", "t.test"), Err(Refusal::NotOurs));
    }

    #[test]
    fn links_are_found_once_each_without_trailing_punctuation() {
        let mut found = Vec::new();
        links(
            "Go to HTTPS://A.example/x?y=1. Or <http://b.example/>, or HTTPS://A.example/x?y=1 again; https://",
            &mut found,
        );
        assert_eq!(found, ["HTTPS://A.example/x?y=1", "http://b.example/"]);
        let many: String = (0..100).map(|i| format!("http://h{i}.example/ ")).collect();
        let mut found = Vec::new();
        links(&many, &mut found);
        assert_eq!(found.len(), MAX_LINKS);
    }

    #[test]
    fn an_unparseable_message_still_says_its_size() {
        let v = summarize(b"");
        assert_eq!(v["size"], 0);
    }
}

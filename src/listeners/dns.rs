//! Authoritative DNS listener (UDP and TCP) for the token zone and the NX zone.
//!
//! A query whose name holds a token label (the right-most label of exactly 25 `[0-9a-z]`
//! characters left of the zone, matched case-insensitively since resolvers randomise case) is
//! recorded as a hit before the answer goes out; labels left of the token are decoded by the
//! kinds' DNS encodings. Answers: A/AAAA → the public address (short TTL), SOA and NS at the
//! apex, NODATA (with the SOA) for other types, NXDOMAIN for every name under the NX zone, and
//! REFUSED for names outside both zones. NS answers name `ns1.<zone>`, never a name under a
//! token, since that would make resolvers query the token again and raise false hits.
//!
//! Only well-formed queries are recorded ([`crate::listeners::dns_wire`] says what that means):
//! malformed packets get FORMERR, a bare header no bigger than the packet, when they have a
//! readable header and are dropped otherwise, as are responses. A QUERY must ask exactly one
//! question and carry no answer or authority records (else FORMERR). A TSIG-signed query gets
//! NOTAUTH with an unsigned TSIG saying BADKEY (RFC 8945 5.2.1): Trapline holds no keys, and a
//! query it cannot authenticate is not a lookup it answers. Nothing a client sends can stop the
//! listener.
//!
//! Over TCP, connections are capped in all and per source, and shared fairly at the cap (see
//! [`crate::listeners::slots`]); each message must arrive whole within a few seconds, so a
//! client that sends nothing, or drips its bytes, cannot keep a connection for long. Over
//! UDP, a bounded number of queries is answered at once; past that, packets are dropped.
//!
//! At stop, no new query is taken; queries being answered finish (within
//! [`crate::listeners::GRACE`]) and TCP connections close after their current answer.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, MX, NS, SOA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use serde_json::{json, Map, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::ids::is_token_id;
use crate::kinds::{self, DnsData};
use crate::listeners::dns_wire;
use crate::listeners::slots::{Caps, Slot, Slots};
use crate::listeners::{at_least_one, stopped, Bound, Common, Listener, ListenerContext, GRACE};
use crate::model::{now_us, Channel, NewHit, TokenRef};
use crate::recorder::HitSink;

/// TTL of A/AAAA answers: short, so repeated use reaches us again.
const ANSWER_TTL: u32 = 10;
/// Negative-caching TTL (SOA minimum).
const NEGATIVE_TTL: u32 = 10;
/// UDP payload we offer with EDNS.
const EDNS_PAYLOAD: u16 = 1232;
/// Queries being answered at once over UDP; past this, packets are dropped (clients retry).
const UDP_IN_FLIGHT: usize = 4096;
/// A TCP connection idle (or not reading its answer) this long is closed. Under pressure idle
/// connections give way sooner: their slots go to newcomers (see [`crate::listeners::slots`]).
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Time a TCP client has to send a whole message: the first from the accept, later ones from
/// their first byte. Queries are small and sent at once (RFC 7766 asks for idle timeouts "on
/// the order of seconds"); a client that drips its bytes loses the connection after this.
const TCP_MESSAGE: Duration = Duration::from_secs(3);
/// No TCP connection lives longer than this, busy or not.
const TCP_LIFETIME: Duration = Duration::from_secs(120);
/// Where the listener listens unless told otherwise.
const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 5354);

/// The DNS listener's settings: flags `--dns-*`, `TRAPLINE_DNS_*`, TOML `[listeners.dns]`.
#[derive(Debug, Clone, Default, PartialEq, clap::Args, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DnsSettings {
    /// Authoritative DNS listener, UDP and TCP on the same port (host:port; port 0 picks a
    /// free one).
    #[arg(id = "dns_listen", long = "dns-listen", value_name = "HOST:PORT", env = "TRAPLINE_DNS_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Connections the DNS listener serves at once over TCP (default 256).
    #[arg(id = "dns_tcp_max_conns", long = "dns-tcp-max-conns", value_name = "N", env = "TRAPLINE_DNS_TCP_MAX_CONNS")]
    pub tcp_max_conns: Option<usize>,
    /// DNS/TCP connections one source (address, or IPv6 /64) holds at once (default 16).
    #[arg(
        id = "dns_tcp_max_conns_per_source",
        long = "dns-tcp-max-conns-per-source",
        value_name = "N",
        env = "TRAPLINE_DNS_TCP_MAX_CONNS_PER_SOURCE"
    )]
    pub tcp_max_conns_per_source: Option<usize>,
}

impl DnsSettings {
    /// The address to listen on, the default filled in.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen.unwrap_or(DEFAULT_LISTEN)
    }
}

/// The DNS listener, configured.
pub struct Dns {
    listen: SocketAddr,
    caps: Caps,
    domain: String,
    nx_domain: String,
    public_ip: IpAddr,
}

impl Dns {
    /// Checks `s` (and that the zones are names a server can be made for); always on.
    pub fn build(s: &DnsSettings, common: &Common) -> anyhow::Result<Option<Box<dyn Listener>>> {
        let caps = Caps {
            total: at_least_one("dns_tcp_max_conns", s.tcp_max_conns, 256)?,
            per_source: at_least_one("dns_tcp_max_conns_per_source", s.tcp_max_conns_per_source, 16)?,
        };
        zone_name(&common.domain)?;
        zone_name(&common.nx_domain)?;
        Ok(Some(Box::new(Dns {
            listen: s.listen_addr(),
            caps,
            domain: common.domain.clone(),
            nx_domain: common.nx_domain.clone(),
            public_ip: common.public_ip,
        })))
    }
}

#[async_trait]
impl Listener for Dns {
    fn name(&self) -> &'static str {
        "dns"
    }

    async fn bind(self: Box<Self>) -> anyhow::Result<Box<dyn Bound>> {
        let (udp, tcp) = bind_udp_and_tcp(self.listen).await?;
        let addr = udp.local_addr()?;
        Ok(Box::new(BoundDns { udp, tcp, addr, dns: *self }))
    }
}

/// Binds UDP and TCP on the same port. With port 0, retries until both get the same free port.
async fn bind_udp_and_tcp(addr: SocketAddr) -> anyhow::Result<(UdpSocket, TcpListener)> {
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

struct BoundDns {
    udp: UdpSocket,
    tcp: TcpListener,
    addr: SocketAddr,
    dns: Dns,
}

#[async_trait]
impl Bound for BoundDns {
    fn local_addr(&self) -> Option<SocketAddr> {
        Some(self.addr)
    }

    fn describe(&self) -> Vec<String> {
        let d = &self.dns;
        vec![format!(
            "DNS (UDP+TCP):    {}  zone {}, NX zone {}, answers {}",
            self.addr, d.domain, d.nx_domain, d.public_ip
        )]
    }

    async fn run(self: Box<Self>, cx: ListenerContext) -> anyhow::Result<()> {
        let BoundDns { udp, tcp, addr, dns } = *self;
        let server =
            Arc::new(DnsServer::new(&dns.domain, &dns.nx_domain, dns.public_ip, cx.hits)?.with_local_addr(addr));
        tokio::join!(serve_udp(server.clone(), udp, cx.stop.clone()), serve_tcp(server, tcp, dns.caps, cx.stop));
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ZoneKind {
    Main,
    Nx,
}

struct Zone {
    kind: ZoneKind,
    /// Lowercase labels, left to right.
    labels: Vec<String>,
    soa: Record,
    ns: Record,
}

pub struct DnsServer {
    zones: Vec<Zone>,
    public_ip: IpAddr,
    hits: Arc<dyn HitSink>,
    /// What hits record as their destination (see [`DnsServer::with_local_addr`]).
    dst: SocketAddr,
}

fn lower_labels(name: &Name) -> Vec<String> {
    name.iter().map(|l| String::from_utf8_lossy(l).to_ascii_lowercase()).collect()
}

fn zone_name(domain: &str) -> anyhow::Result<Name> {
    Ok(Name::from_ascii(domain.trim_end_matches('.'))
        .map_err(|e| anyhow::anyhow!("invalid zone name {domain:?}: {e}"))?
        .append_domain(&Name::root())?)
}

/// `ns_name` is `ns1.<main zone>` for both zones: a name under the NX zone would itself be
/// answered NXDOMAIN, and the main zone answers it with the public address.
fn make_zone(kind: ZoneKind, domain: &str, ns_name: &Name, serial: u32) -> anyhow::Result<Zone> {
    let name = zone_name(domain)?;
    let ns_name = ns_name.clone();
    let soa = SOA::new(
        ns_name.clone(),
        Name::from_ascii("hostmaster")?.append_domain(&name)?,
        serial,
        3600,
        600,
        604_800,
        NEGATIVE_TTL,
    );
    Ok(Zone {
        kind,
        labels: lower_labels(&name),
        soa: Record::from_rdata(name.clone(), 3600, RData::SOA(soa)),
        ns: Record::from_rdata(name, 3600, RData::NS(NS(ns_name))),
    })
}

impl DnsServer {
    pub fn new(domain: &str, nx_domain: &str, public_ip: IpAddr, hits: Arc<dyn HitSink>) -> anyhow::Result<DnsServer> {
        let serial = (now_us() / 1_000_000 / 60) as u32;
        let ns_name = Name::from_ascii("ns1")?.append_domain(&zone_name(domain)?)?;
        let mut zones = vec![
            make_zone(ZoneKind::Main, domain, &ns_name, serial)?,
            make_zone(ZoneKind::Nx, nx_domain, &ns_name, serial)?,
        ];
        // Most specific first, so an NX zone inside the main zone wins.
        zones.sort_by_key(|z| std::cmp::Reverse(z.labels.len()));
        Ok(DnsServer { zones, public_ip, hits, dst: SocketAddr::new(public_ip, 53) })
    }

    /// Sets the address hits name as their destination: the listener's own, with the public
    /// address standing in for an unspecified one (a socket bound to all interfaces cannot
    /// tell which address a datagram was sent to).
    pub fn with_local_addr(mut self, addr: SocketAddr) -> DnsServer {
        let ip = if addr.ip().is_unspecified() { self.public_ip } else { addr.ip() };
        self.dst = SocketAddr::new(ip, addr.port());
        self
    }

    /// The zone `labels` fall in, and how many labels stand left of it.
    fn zone_of(&self, labels: &[String]) -> Option<(&Zone, usize)> {
        self.zones.iter().find(|z| labels.ends_with(&z.labels)).map(|z| (z, labels.len() - z.labels.len()))
    }

    /// Answers one DNS message. None means: send nothing.
    pub async fn answer(&self, packet: &[u8], peer: SocketAddr, transport: Transport) -> Option<Vec<u8>> {
        if packet.len() < 12 || packet[2] & 0x80 != 0 {
            return None; // no header, or a response: never answer those
        }
        // Only a well-formed message may become a hit: see `dns_wire` for what that means.
        let checked = match dns_wire::check(packet) {
            Ok(c) => c,
            Err(why) => {
                tracing::debug!(%peer, why, "malformed DNS message");
                return Some(header_only(packet, ResponseCode::FormErr));
            }
        };
        let request = match Message::from_vec(packet) {
            Ok(m) => m,
            Err(_) => return Some(header_only(packet, ResponseCode::FormErr)),
        };
        let mut resp = Message::new();
        resp.set_id(request.id())
            .set_message_type(MessageType::Response)
            .set_op_code(request.op_code())
            .set_recursion_desired(request.recursion_desired());
        if request.extensions().is_some() {
            let mut edns = Edns::new();
            edns.set_max_payload(EDNS_PAYLOAD);
            resp.set_edns(edns);
        }
        if request.op_code() != OpCode::Query {
            resp.set_response_code(ResponseCode::NotImp);
            return encode(resp, &request, transport);
        }
        let [query] = request.queries() else {
            resp.set_response_code(ResponseCode::FormErr);
            return encode(resp, &request, transport);
        };
        if checked.answers != 0 || checked.authorities != 0 {
            // RFC 1035 4.1 / RFC 9619: a query asks one question and carries no answer or
            // authority records.
            return Some(header_only(packet, ResponseCode::FormErr));
        }
        if let Some(tsig) = &checked.tsig {
            // RFC 8945 5.2.1: we know no keys, so every signed query is NOTAUTH/BADKEY.
            return Some(unsigned_badkey(packet, &request, &checked, tsig, transport));
        }
        resp.add_query(query.clone());
        if request.extensions().as_ref().is_some_and(|e| e.version() > 0) {
            // RFC 6891 6.1.3: we speak EDNS version 0 only.
            resp.set_response_code(ResponseCode::BADVERS);
            return encode(resp, &request, transport);
        }
        let labels = lower_labels(query.name());
        let Some((zone, left)) = self.zone_of(&labels) else {
            resp.set_response_code(ResponseCode::Refused);
            return encode(resp, &request, transport);
        };
        if !matches!(query.query_class(), DNSClass::IN | DNSClass::ANY) {
            resp.set_response_code(ResponseCode::Refused);
            return encode(resp, &request, transport);
        }
        resp.set_authoritative(true);

        if let Some(pos) = labels[..left].iter().rposition(|l| is_token_id(l)) {
            // Decoders get the labels as sent: some encodings (base64) are case-sensitive.
            let sent: Vec<String> =
                query.name().iter().take(pos).map(|l| String::from_utf8_lossy(l).into_owned()).collect();
            let hit = self.hit(query, &sent, &labels[pos], peer, transport);
            if let Err(e) = self.hits.record(hit).await {
                tracing::error!(error = %e, "DNS hit not recorded");
                resp.set_authoritative(false).set_response_code(ResponseCode::ServFail);
                return encode(resp, &request, transport);
            }
        }
        if matches!(query.query_type(), RecordType::AXFR | RecordType::IXFR) {
            // Recorded above if it named a token, but no zone leaves this server.
            resp.set_authoritative(false).set_response_code(ResponseCode::Refused);
            return encode(resp, &request, transport);
        }
        self.fill_answer(&mut resp, query, zone, left);
        encode(resp, &request, transport)
    }

    fn hit(&self, q: &Query, data_labels: &[String], token: &str, peer: SocketAddr, transport: Transport) -> NewHit {
        let decoded = match kinds::decode_dns_labels(data_labels) {
            DnsData::Decoded(fields) => fields,
            DnsData::Undecodable => Map::from_iter([(
                "decode_error".to_string(),
                json!("labels carry an encoding marker but do not decode"),
            )]),
            DnsData::NoMatch => Map::new(),
        };
        let group = group_of(&decoded);
        let mut data = Map::from_iter([
            ("query_name".to_string(), json!(q.name().to_ascii().trim_end_matches('.'))),
            ("query_type".to_string(), json!(q.query_type().to_string())),
            ("transport".to_string(), json!(transport.as_str())),
        ]);
        data.extend(decoded);
        NewHit {
            token: TokenRef::Id(token.to_string()),
            time_us: now_us(),
            channel: Channel::Dns,
            src_ip: peer.ip().to_canonical().to_string(),
            src_port: peer.port(),
            dst_ip: self.dst.ip().to_canonical().to_string(),
            dst_port: self.dst.port(),
            data: Value::Object(data),
            private: None,
            group,
        }
    }

    /// Owner names are the question's own spelling (resolvers that randomise case compare it).
    /// ANY gets one RRset (RFC 8482): the SOA at the apex, the address elsewhere.
    fn fill_answer(&self, resp: &mut Message, q: &Query, zone: &Zone, left: usize) {
        let qname = q.name().clone();
        let apex = left == 0;
        if zone.kind == ZoneKind::Nx && !apex {
            resp.set_response_code(ResponseCode::NXDomain);
            resp.add_name_server(zone.soa.clone());
            return;
        }
        let owned = |r: &Record| {
            let mut r = r.clone();
            r.set_name(qname.clone());
            r
        };
        let answer = match (q.query_type(), apex) {
            (RecordType::SOA, true) | (RecordType::ANY, true) => Some(owned(&zone.soa)),
            (RecordType::NS, true) => Some(owned(&zone.ns)),
            // Mail for `<token id>@<zone>` (the smtp kind) goes to the zone itself, whose
            // address record is this installation's: its SMTP listener takes it.
            (RecordType::MX, true) if zone.kind == ZoneKind::Main => {
                Some(Record::from_rdata(qname.clone(), ANSWER_TTL, RData::MX(MX::new(10, qname))))
            }
            (RecordType::A | RecordType::ANY, _) if zone.kind == ZoneKind::Main => match self.public_ip {
                IpAddr::V4(ip) => Some(Record::from_rdata(qname, ANSWER_TTL, RData::A(A(ip)))),
                IpAddr::V6(_) => None,
            },
            (RecordType::AAAA | RecordType::ANY, _) if zone.kind == ZoneKind::Main => match self.public_ip {
                IpAddr::V6(ip) => Some(Record::from_rdata(qname, ANSWER_TTL, RData::AAAA(AAAA(ip)))),
                IpAddr::V4(_) => None,
            },
            _ => None,
        };
        match answer {
            Some(r) => {
                resp.add_answer(r);
            }
            None => {
                resp.add_name_server(zone.soa.clone()); // NODATA
            }
        }
    }
}

/// A bare header answering `packet` with `rcode` (for packets whose body does not parse).
fn header_only(packet: &[u8], rcode: ResponseCode) -> Vec<u8> {
    let mut out = vec![0u8; 12];
    out[0] = packet[0];
    out[1] = packet[1];
    // QR=1, keep opcode and RD; AA/TC/RA clear.
    out[2] = 0x80 | (packet[2] & 0x79);
    out[3] = u16::from(rcode) as u8 & 0x0f;
    out
}

/// The answer to a TSIG-signed query (Trapline holds no TSIG keys): RCODE NOTAUTH and an
/// unsigned TSIG record with error BADKEY, MAC size 0 (RFC 8945 5.2.1 and 5.3.2), echoing the
/// key name, algorithm, time signed, fudge and original id so the client can match it. It
/// carries the question and, for an EDNS query, our OPT; it is never bigger than the query (nor
/// than the client's UDP limit): if it would be, a bare NOTAUTH header goes instead.
fn unsigned_badkey(
    packet: &[u8],
    request: &Message,
    checked: &dns_wire::Checked,
    tsig: &dns_wire::Tsig,
    transport: Transport,
) -> Vec<u8> {
    const TYPE_OPT: u16 = 41;
    const TYPE_TSIG: u16 = 250;
    const CLASS_ANY: u16 = 255;
    const BADKEY: u16 = 17;
    let edns = request.extensions().as_ref();
    let mut out = Vec::with_capacity(packet.len());
    out.extend_from_slice(&packet[..2]);
    out.push(0x80 | (packet[2] & 0x79)); // QR, opcode and RD kept; AA/TC clear
    out.push(u16::from(ResponseCode::NotAuth) as u8);
    for count in [1u16, 0, 0, if edns.is_some() { 2 } else { 1 }] {
        out.extend_from_slice(&count.to_be_bytes());
    }
    out.extend_from_slice(&packet[12..checked.questions_end]);
    if edns.is_some() {
        out.push(0); // root
        for field in [TYPE_OPT, EDNS_PAYLOAD, 0, 0, 0] {
            out.extend_from_slice(&field.to_be_bytes()); // type, payload, TTL (rcode/version/flags), RDLENGTH
        }
    }
    let mut rdata = tsig.algorithm.clone();
    rdata.extend_from_slice(&tsig.time_signed);
    rdata.extend_from_slice(&tsig.fudge.to_be_bytes());
    rdata.extend_from_slice(&0u16.to_be_bytes()); // MAC size: unsigned
    rdata.extend_from_slice(&tsig.original_id.to_be_bytes());
    rdata.extend_from_slice(&BADKEY.to_be_bytes());
    rdata.extend_from_slice(&0u16.to_be_bytes()); // other len
    out.extend_from_slice(&tsig.key_name);
    out.extend_from_slice(&TYPE_TSIG.to_be_bytes());
    out.extend_from_slice(&CLASS_ANY.to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    out.extend_from_slice(&rdata);
    let client_limit = match (transport, edns) {
        (Transport::Tcp, _) => usize::from(u16::MAX),
        (Transport::Udp, Some(e)) => usize::from(e.max_payload().clamp(512, EDNS_PAYLOAD)),
        (Transport::Udp, None) => 512,
    };
    if out.len() > packet.len().min(client_limit) {
        return header_only(packet, ResponseCode::NotAuth);
    }
    out
}

/// Encodes `resp`, truncating (TC) when it exceeds what the UDP client can take.
fn encode(mut resp: Message, request: &Message, transport: Transport) -> Option<Vec<u8>> {
    let bytes = match resp.to_vec() {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "could not encode DNS answer");
            let mut fail = Message::new();
            fail.set_id(request.id()).set_message_type(MessageType::Response).set_response_code(ResponseCode::ServFail);
            return fail.to_vec().ok();
        }
    };
    let limit = match (transport, request.extensions()) {
        (Transport::Tcp, _) => usize::from(u16::MAX),
        (Transport::Udp, Some(e)) => usize::from(e.max_payload().clamp(512, EDNS_PAYLOAD)),
        (Transport::Udp, None) => 512,
    };
    if bytes.len() <= limit {
        return Some(bytes);
    }
    resp.take_answers();
    resp.take_name_servers();
    resp.take_additionals();
    resp.set_truncated(true);
    resp.to_vec().ok()
}

/// Serves DNS over UDP until `stop`, then lets the queries being answered finish.
pub async fn serve_udp(server: Arc<DnsServer>, socket: UdpSocket, mut stop: watch::Receiver<bool>) {
    let socket = Arc::new(socket);
    let slots = Arc::new(Semaphore::new(UDP_IN_FLIGHT));
    let mut buf = vec![0u8; 4096];
    loop {
        let received = tokio::select! {
            r = socket.recv_from(&mut buf) => r,
            _ = stopped(&mut stop) => break,
        };
        let (n, peer) = match received {
            Ok(x) => x,
            Err(e) => {
                // ICMP errors from earlier sends surface here on some systems; keep serving,
                // but never spin on a persistent error.
                tracing::debug!(error = %e, "udp recv");
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue; // overloaded: drop, the client will retry
        };
        let packet = buf[..n].to_vec();
        let (server, socket) = (server.clone(), socket.clone());
        tokio::spawn(async move {
            if let Some(out) = server.answer(&packet, peer, Transport::Udp).await {
                let _ = socket.send_to(&out, peer).await;
            }
            drop(slot);
        });
    }
    // Every slot back means every query taken has been answered.
    let _ = tokio::time::timeout(GRACE, slots.acquire_many(UDP_IN_FLIGHT as u32)).await;
}

/// Serves DNS over TCP (RFC 7766: length-prefixed messages, several per connection), with
/// `caps` shared fairly between sources (see [`crate::listeners::slots`]): a connection over the
/// caps is closed at once, unless it may take the slot of an idle connection of a heavier source.
/// At `stop`, no connection is taken, and open ones close after the answer in progress.
pub async fn serve_tcp(server: Arc<DnsServer>, listener: TcpListener, caps: Caps, mut stop: watch::Receiver<bool>) {
    let slots = Slots::new(caps, Vec::new());
    let mut conns = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stopped(&mut stop) => break,
        };
        while conns.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "DNS TCP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = slots.admit(peer.ip()) else {
            continue; // over the caps: dropping the stream closes it
        };
        let (server, mut stop) = (server.clone(), stop.clone());
        conns.spawn(async move {
            let conn = tokio::time::timeout(TCP_LIFETIME, tcp_connection(&server, stream, peer, &slot, &mut stop));
            let _ = conn.await;
            drop(slot);
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(GRACE, async { while conns.join_next().await.is_some() {} }).await;
}

/// Fills `buf` by `deadline`; false if the client is too slow, closed, lost its slot, or the
/// server stops.
async fn read_by<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut [u8],
    deadline: Instant,
    slot: &Slot,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    tokio::select! {
        biased;
        _ = slot.evicted() => false,
        _ = stopped(stop) => false,
        read = tokio::time::timeout_at(deadline, r.read_exact(buf)) => matches!(read, Ok(Ok(_))),
    }
}

/// One connection: the first message must be complete within [`TCP_MESSAGE`] of the accept,
/// each later one within [`TCP_MESSAGE`] of its first byte, which must come within [`TCP_IDLE`]
/// of the previous answer. A connection is busy (its slot cannot be taken) only while it is
/// being answered; a slot taken meanwhile closes the connection once the answer is out.
async fn tcp_connection(
    server: &DnsServer,
    mut stream: TcpStream,
    peer: SocketAddr,
    slot: &Slot,
    stop: &mut watch::Receiver<bool>,
) {
    let activity = slot.activity();
    let (reader, mut writer) = stream.split();
    let mut reader = tokio::io::BufReader::new(reader);
    let mut deadline = Instant::now() + TCP_MESSAGE;
    let mut prefix = [0u8; 2];
    // How much of the length prefix has been read already (the first byte of a later message
    // is read while waiting for it).
    let mut have = 0;
    loop {
        if !read_by(&mut reader, &mut prefix[have..], deadline, slot, stop).await {
            return;
        }
        let mut packet = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
        if !read_by(&mut reader, &mut packet, deadline, slot, stop).await {
            return;
        }
        let busy = activity.busy();
        let Some(out) = server.answer(&packet, peer, Transport::Tcp).await else {
            return; // nothing sensible to say: close
        };
        let mut framed = Vec::with_capacity(out.len() + 2);
        framed.extend_from_slice(&(out.len() as u16).to_be_bytes());
        framed.extend_from_slice(&out);
        match tokio::time::timeout(TCP_IDLE, writer.write_all(&framed)).await {
            Ok(Ok(())) => {}
            _ => return, // failed, or a client that does not read its answers
        }
        drop(busy);
        if !read_by(&mut reader, &mut prefix[..1], Instant::now() + TCP_IDLE, slot, stop).await {
            return;
        }
        deadline = Instant::now() + TCP_MESSAGE;
        have = 1;
    }
}

/// The group of a DNS hit ([`NewHit::group`]): what the kind decoded from the labels (or the
/// decoding error), not the query type, transport or spelling, which differ between a
/// resolver's A and AAAA lookups of one name. None when nothing was decoded. The text is the
/// decoded fields as a JSON list of `[name, value]` pairs in name order, exactly what grouping
/// hashed before listeners named their groups, so open incidents keep their keys.
fn group_of(decoded: &Map<String, Value>) -> Option<String> {
    let fields: Vec<(&String, &Value)> = decoded.iter().filter(|(k, _)| !k.starts_with('_')).collect();
    (!fields.is_empty()).then(|| serde_json::to_string(&fields).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::testing::token;
    use crate::recorder::testing::{Answer, FakeSink};
    use crate::recorder::RecordError;

    const ZONE: &str = "t.test";
    /// The id of [`token`]'s tokens.
    const TOKEN: &str = "abcdefghijklmnopqrstuvwxy";
    const PEER: &str = "192.0.2.9:5353";

    struct Fixture {
        server: DnsServer,
        sink: Arc<FakeSink>,
        token: String,
    }

    async fn fixture() -> Fixture {
        fixture_answering([127, 0, 0, 1].into()).await
    }

    /// A server over a fake sink that finds the token, answering with `public_ip`.
    async fn fixture_answering(public_ip: IpAddr) -> Fixture {
        let sink = Arc::new(FakeSink::new(Answer::Record(token("dns", json!({})))));
        let server = DnsServer::new(ZONE, "nx.t.test", public_ip, sink.clone())
            .unwrap()
            .with_local_addr("0.0.0.0:5354".parse().unwrap());
        Fixture { server, sink, token: TOKEN.into() }
    }

    impl Fixture {
        /// An A query for the token, with room for extra records: `counts` are ANCOUNT,
        /// NSCOUNT, ARCOUNT.
        fn query(&self, counts: [u16; 3]) -> Vec<u8> {
            let mut p = vec![0xab, 0xcd, 0x01, 0x00, 0, 1];
            for c in counts {
                p.extend_from_slice(&c.to_be_bytes());
            }
            for label in [self.token.as_str(), "t", "test"] {
                p.push(label.len() as u8);
                p.extend_from_slice(label.as_bytes());
            }
            p.extend_from_slice(&[0, 0, 1, 0, 1]);
            p
        }

        async fn ask(&self, packet: &[u8]) -> Vec<u8> {
            self.server.answer(packet, PEER.parse().unwrap(), Transport::Udp).await.expect("an answer")
        }

        /// Asks `name` `rtype` over `transport` and parses the answer.
        async fn lookup(&self, name: &str, rtype: RecordType, transport: Transport) -> Message {
            let mut q = Message::new();
            q.set_id(7).set_recursion_desired(true).add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
            let answer = self.server.answer(&q.to_vec().unwrap(), PEER.parse().unwrap(), transport).await;
            Message::from_vec(&answer.expect("an answer")).unwrap()
        }

        async fn hits(&self) -> usize {
            self.sink.hits().len()
        }
    }

    fn addresses(m: &Message) -> Vec<String> {
        m.answers()
            .iter()
            .filter_map(|r| match r.data() {
                RData::A(a) => Some(a.0.to_string()),
                RData::AAAA(a) => Some(a.0.to_string()),
                _ => None,
            })
            .collect()
    }

    /// NODATA: no error, no answer, the zone's SOA in the authority section.
    fn is_nodata(m: &Message) -> bool {
        m.response_code() == ResponseCode::NoError
            && m.answers().is_empty()
            && m.name_servers().iter().any(|r| r.record_type() == RecordType::SOA)
    }

    #[tokio::test]
    async fn the_token_zone_answers_a_with_the_public_address_and_other_types_with_nodata() {
        let f = fixture().await;
        let name = format!("{TOKEN}.t.test.");
        let a = f.lookup(&name, RecordType::A, Transport::Udp).await;
        assert_eq!((a.response_code(), a.authoritative()), (ResponseCode::NoError, true));
        assert_eq!(addresses(&a), ["127.0.0.1"]);
        assert_eq!(a.answers()[0].ttl(), ANSWER_TTL);
        assert_eq!(a.id(), 7);
        for rtype in [RecordType::AAAA, RecordType::TXT, RecordType::MX] {
            assert!(is_nodata(&f.lookup(&name, rtype, Transport::Udp).await), "{rtype}");
        }
        assert_eq!(f.hits().await, 4, "every lookup of the token is a hit, whatever its type");

        let v6 = fixture_answering("2001:db8::5".parse().unwrap()).await;
        assert_eq!(addresses(&v6.lookup(&name, RecordType::AAAA, Transport::Udp).await), ["2001:db8::5"]);
        assert!(is_nodata(&v6.lookup(&name, RecordType::A, Transport::Udp).await));
    }

    #[tokio::test]
    async fn the_apex_names_itself_as_mail_exchanger_without_a_hit() {
        let f = fixture().await;
        let mx = f.lookup("t.test.", RecordType::MX, Transport::Udp).await;
        assert_eq!((mx.response_code(), mx.authoritative()), (ResponseCode::NoError, true));
        match mx.answers()[0].data() {
            RData::MX(m) => assert_eq!((m.preference(), m.exchange().to_ascii()), (10, "t.test.".to_string())),
            other => panic!("not an MX: {other:?}"),
        }
        assert!(is_nodata(&f.lookup("nx.t.test.", RecordType::MX, Transport::Udp).await), "the NX zone takes no mail");
        assert_eq!(f.hits().await, 0);
    }

    #[tokio::test]
    async fn the_apex_answers_soa_and_ns_without_a_hit() {
        let f = fixture().await;
        let soa = f.lookup("t.test.", RecordType::SOA, Transport::Udp).await;
        assert_eq!(soa.answers()[0].record_type(), RecordType::SOA);
        let ns = f.lookup("T.Test.", RecordType::NS, Transport::Tcp).await;
        match ns.answers()[0].data() {
            RData::NS(n) => assert_eq!(n.0.to_ascii(), "ns1.t.test."),
            other => panic!("not NS: {other:?}"),
        }
        assert_eq!(ns.answers()[0].name().to_ascii(), "T.Test.", "owner names keep the question's case");
        assert_eq!(f.hits().await, 0);
    }

    #[tokio::test]
    async fn the_nx_zone_answers_nxdomain_after_recording() {
        let f = fixture().await;
        let m = f.lookup(&format!("x.{TOKEN}.nx.t.test."), RecordType::A, Transport::Udp).await;
        assert_eq!((m.response_code(), m.authoritative()), (ResponseCode::NXDomain, true));
        assert!(m.answers().is_empty());
        let hits = f.sink.hits();
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].data["query_name"], format!("x.{TOKEN}.nx.t.test"));
        let plain = f.lookup("other.nx.t.test.", RecordType::A, Transport::Udp).await;
        assert_eq!(plain.response_code(), ResponseCode::NXDomain);
        assert_eq!(f.hits().await, 1, "no token, no hit");
    }

    #[tokio::test]
    async fn names_outside_both_zones_are_refused_without_a_hit() {
        let f = fixture().await;
        let m = f.lookup(&format!("{TOKEN}.elsewhere.test."), RecordType::A, Transport::Udp).await;
        assert_eq!(m.response_code(), ResponseCode::Refused);
        let near = f.lookup(&format!("{TOKEN}.xt.test."), RecordType::A, Transport::Udp).await;
        assert_eq!(near.response_code(), ResponseCode::Refused, "a zone is matched by whole labels");
        assert_eq!(f.hits().await, 0);
    }

    #[tokio::test]
    async fn the_hit_handed_to_the_sink_says_who_asked_what() {
        let f = fixture().await;
        // Resolvers randomise case: the token is found anyway, the name is kept as sent.
        let name = format!("{}.T.test.", TOKEN.to_ascii_uppercase());
        f.lookup(&name, RecordType::TXT, Transport::Tcp).await;
        let hits = f.sink.hits();
        let [hit] = hits.as_slice() else { panic!("one hit: {hits:?}") };
        assert_eq!(hit.token, TokenRef::Id(TOKEN.into()));
        assert_eq!(hit.channel, Channel::Dns);
        assert_eq!((hit.src_ip.as_str(), hit.src_port), ("192.0.2.9", 5353));
        assert_eq!((hit.dst_ip.as_str(), hit.dst_port), ("127.0.0.1", 5354), "the public address for 0.0.0.0");
        assert_eq!(
            hit.data,
            json!({"query_name": name.trim_end_matches('.'), "query_type": "TXT", "transport": "tcp"})
        );
        assert!(hit.time_us > 0);
    }

    #[tokio::test]
    async fn labels_left_of_the_token_are_decoded_into_the_hit() {
        let f = fixture().await;
        let labels = crate::kinds::dns::encode_generic(b"hello from dns", 7);
        f.lookup(&format!("{labels}.{TOKEN}.t.test."), RecordType::A, Transport::Udp).await;
        f.lookup(&format!("11111111.G01.{TOKEN}.t.test."), RecordType::A, Transport::Udp).await;
        f.lookup(&format!("www.{TOKEN}.t.test."), RecordType::A, Transport::Udp).await;
        let hits = f.sink.hits();
        assert_eq!(hits[0].data["generic_data"], "hello from dns");
        assert_eq!(hits[0].data["transport"], "udp");
        assert!(hits[1].data["decode_error"].is_string(), "{:?}", hits[1].data);
        assert!(hits[2].data.get("generic_data").is_none() && hits[2].data.get("decode_error").is_none());
        // The right-most token label counts: a token-looking label further left is data.
        f.lookup(&format!("{}.{TOKEN}.t.test.", "z".repeat(25)), RecordType::A, Transport::Udp).await;
        assert_eq!(f.sink.hits()[3].token, TokenRef::Id(TOKEN.into()));
    }

    /// How grouping keyed DNS hits before listeners named their groups (release 605748e's
    /// `noise::group_key`, over the hit's data): stored incidents carry these keys.
    fn key_of_release_605748e(data: &Value) -> String {
        use sha2::Digest;
        const NOT_DATA: &[&str] = &["query_name", "query_type", "transport"];
        let Value::Object(m) = data else { return String::new() };
        let mut fields: Vec<(&String, &Value)> =
            m.iter().filter(|(k, _)| !k.starts_with('_') && !NOT_DATA.contains(&k.as_str())).collect();
        if fields.is_empty() {
            return String::new();
        }
        fields.sort_by(|a, b| a.0.cmp(b.0));
        let text = serde_json::to_string(&fields).unwrap_or_default();
        hex::encode(&sha2::Sha256::digest(text.as_bytes())[..16])
    }

    #[tokio::test]
    async fn dns_hits_group_by_their_decoded_data_with_the_keys_they_had() {
        let f = fixture().await;
        let generic = crate::kinds::dns::encode_generic(b"hello from dns", 7);
        let other = crate::kinds::dns::encode_generic(b"another payload", 7);
        for (name, rtype, transport) in [
            (format!("{generic}.{TOKEN}.t.test."), RecordType::A, Transport::Udp),
            (format!("{generic}.{}.T.test.", TOKEN.to_ascii_uppercase()), RecordType::AAAA, Transport::Tcp),
            (format!("{other}.{TOKEN}.t.test."), RecordType::A, Transport::Udp),
            (format!("11111111.G01.{TOKEN}.t.test."), RecordType::A, Transport::Udp),
            (format!("www.{TOKEN}.t.test."), RecordType::A, Transport::Udp),
            (format!("{TOKEN}.t.test."), RecordType::TXT, Transport::Udp),
        ] {
            f.lookup(&name, rtype, transport).await;
        }
        let hits = f.sink.hits();
        let keys: Vec<String> = hits.iter().map(crate::noise::group_key).collect();
        for (h, key) in hits.iter().zip(&keys) {
            assert_eq!(key, &key_of_release_605748e(&h.data), "{:?}", h.data);
        }
        assert_eq!(keys[0].len(), 32);
        assert_eq!(keys[0], keys[1], "A and AAAA of one payload, however spelt, are one trigger");
        assert_ne!(keys[0], keys[2], "two payloads through one resolver are two");
        assert_eq!(keys[3].len(), 32, "an undecodable payload groups by its error");
        assert_eq!((hits[4].group.as_deref(), hits[5].group.as_deref()), (None, None), "nothing decoded: no group");
    }

    #[tokio::test]
    async fn a_hit_the_sink_cannot_take_gets_servfail() {
        let f = fixture().await;
        let name = format!("{TOKEN}.t.test.");
        for e in [RecordError::Overloaded, RecordError::Storage("disk full".into()), RecordError::Closed] {
            f.sink.set_answer(Answer::Fail(e.clone()));
            let m = f.lookup(&name, RecordType::A, Transport::Udp).await;
            assert_eq!((m.response_code(), m.authoritative()), (ResponseCode::ServFail, false), "{e}");
            assert!(m.answers().is_empty(), "no address for a hit that is not stored");
        }
        // Unknown and dropped tokens are answered like live ones: a client cannot tell them apart.
        for answer in [Answer::Unknown, Answer::Drop(token("dns", json!({})))] {
            f.sink.set_answer(answer);
            assert_eq!(addresses(&f.lookup(&name, RecordType::A, Transport::Udp).await), ["127.0.0.1"]);
        }
    }

    #[tokio::test]
    async fn malformed_packets_and_responses_are_never_hits() {
        let f = fixture().await;
        let peer: SocketAddr = PEER.parse().unwrap();
        assert!(f.server.answer(&[0xab, 0xcd, 0x01], peer, Transport::Udp).await.is_none(), "no header");
        let mut response = f.query([0, 0, 0]);
        response[2] |= 0x80;
        assert!(f.server.answer(&response, peer, Transport::Udp).await.is_none(), "a response");
        let mut cut = f.query([0, 0, 0]);
        cut.truncate(20);
        assert_eq!(rcode(&f.ask(&cut).await), 1, "a cut question: FORMERR");
        let mut two = f.query([0, 0, 0]);
        two[5] = 2;
        assert_eq!(rcode(&f.ask(&two).await), 1, "QDCOUNT 2 without a second question: FORMERR");
        let mut notify = f.query([0, 0, 0]);
        notify[2] = 0x20; // opcode NOTIFY
        assert_eq!(rcode(&f.ask(&notify).await), 4, "NOTIMP");
        let axfr = f.lookup(&format!("{TOKEN}.t.test."), RecordType::AXFR, Transport::Tcp).await;
        assert_eq!(axfr.response_code(), ResponseCode::Refused, "no zone transfer");
        assert_eq!(f.hits().await, 1, "only the AXFR, which named the token, is a hit");
    }

    #[tokio::test]
    async fn the_listener_answers_over_udp_and_tcp_until_stopped() {
        let sink = Arc::new(FakeSink::new(Answer::Record(token("dns", json!({})))));
        let settings = DnsSettings { listen: Some("127.0.0.1:0".parse().unwrap()), ..Default::default() };
        let common = Common {
            domain: ZONE.into(),
            nx_domain: "nx.t.test".into(),
            public_ip: [127, 0, 0, 1].into(),
            trusted_proxies: Default::default(),
            aws: None,
            aws_last_used: (300, 1800),
        };
        let bound = Dns::build(&settings, &common).unwrap().unwrap().bind().await.unwrap();
        let addr = bound.local_addr().unwrap();
        assert_ne!(addr.port(), 0, "the real port");
        assert!(bound.describe()[0].contains(&format!("{addr}  zone t.test, NX zone nx.t.test")));
        let (stop_tx, stop) = watch::channel(false);
        let site = crate::kinds::testing::site();
        let run = tokio::spawn(bound.run(ListenerContext { hits: sink.clone(), site, stop, node: "test-node".into() }));

        let f = Fixture {
            server: DnsServer::new(ZONE, "nx.t.test", [127, 0, 0, 1].into(), sink.clone()).unwrap(),
            sink: sink.clone(),
            token: TOKEN.into(),
        };
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        udp.send_to(&f.query([0, 0, 0]), addr).await.unwrap();
        let mut buf = [0u8; 512];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), udp.recv_from(&mut buf)).await.unwrap().unwrap();
        assert_eq!(rcode(&buf[..n]), 0);
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let q = f.query([0, 0, 0]);
        tcp.write_all(&(q.len() as u16).to_be_bytes()).await.unwrap();
        tcp.write_all(&q).await.unwrap();
        let mut len = [0u8; 2];
        tcp.read_exact(&mut len).await.unwrap();
        let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
        tcp.read_exact(&mut answer).await.unwrap();
        assert_eq!(rcode(&answer), 0);
        assert_eq!(sink.hits().len(), 2);

        // Stop: the listener ends, closing the idle TCP connection, well within its grace.
        stop_tx.send(true).unwrap();
        tokio::time::timeout(GRACE, run).await.expect("ends on stop").unwrap().unwrap();
        assert_eq!(tcp.read(&mut len).await.unwrap(), 0, "the connection is closed");
    }

    fn rcode(answer: &[u8]) -> u8 {
        answer[3] & 0x0f
    }

    const OPT: [u8; 11] = [0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0];

    /// A TSIG record (key `k1.`, hmac-sha256, a 32-byte MAC).
    fn tsig(rdata_tail: &[u8]) -> Vec<u8> {
        let mut rdata = b"\x0bhmac-sha256\x00".to_vec();
        rdata.extend_from_slice(&[0, 0, 0x6b, 0x11, 0x33, 0xc6, 0x01, 0x2c, 0, 32]);
        rdata.extend_from_slice(&[0x5a; 32]);
        rdata.extend_from_slice(rdata_tail);
        let mut r = b"\x02k1\x00\x00\xfa\x00\xff\x00\x00\x00\x00".to_vec();
        r.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        r.extend_from_slice(&rdata);
        r
    }

    #[tokio::test]
    async fn a_well_formed_query_is_answered_and_recorded() {
        let f = fixture().await;
        let answer = f.ask(&f.query([0, 0, 0])).await;
        assert_eq!(rcode(&answer), 0);
        let mut edns = f.query([0, 0, 1]);
        edns.extend_from_slice(&OPT);
        assert_eq!(rcode(&f.ask(&edns).await), 0);
        assert_eq!(f.hits().await, 2);
    }

    #[tokio::test]
    async fn the_audits_three_get_formerr_and_no_hit() {
        let f = fixture().await;
        let mut junk = f.query([0, 0, 0]);
        junk.extend_from_slice(&[0x17; 200]);
        let mut opt_in_answer = f.query([1, 0, 0]);
        opt_in_answer.extend_from_slice(&OPT);
        let mut garbage_tsig = f.query([0, 0, 1]);
        garbage_tsig.extend_from_slice(b"\x02k1\x00\x00\xfa\x00\xff\x00\x00\x00\x00\x00\x14\x3f");
        garbage_tsig.extend_from_slice(&[0xff; 19]);
        let mut answer_in_query = f.query([0, 1, 0]);
        answer_in_query.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
        for bad in [junk, opt_in_answer, garbage_tsig, answer_in_query] {
            let answer = f.ask(&bad).await;
            assert_eq!(rcode(&answer), 1, "FORMERR");
            assert_eq!(answer.len(), 12, "a bare header: never bigger than the query");
            assert_eq!(answer[..2], bad[..2]);
        }
        assert_eq!(f.hits().await, 0);
    }

    #[tokio::test]
    async fn a_signed_query_gets_an_unsigned_badkey_and_no_hit() {
        let f = fixture().await;
        let original_id = [0xab, 0xcd];
        for edns in [false, true] {
            let mut signed = f.query([0, 0, if edns { 2 } else { 1 }]);
            if edns {
                signed.extend_from_slice(&OPT);
            }
            signed.extend(tsig(&[original_id[0], original_id[1], 0, 0, 0, 0]));
            let answer = f.ask(&signed).await;
            assert_eq!(rcode(&answer), 9, "NOTAUTH");
            assert!(answer.len() <= signed.len());
            let checked = dns_wire::check(&answer).expect("a well-formed answer");
            let t = checked.tsig.expect("with a TSIG record");
            assert_eq!(
                (t.key_name.as_slice(), t.algorithm.as_slice()),
                (&b"\x02k1\x00"[..], &b"\x0bhmac-sha256\x00"[..])
            );
            assert_eq!(t.original_id, 0xabcd);
            // ... MAC size 0, then original id, error BADKEY (17), no other data.
            assert_eq!(answer[answer.len() - 8..], [0, 0, 0xab, 0xcd, 0, 17, 0, 0]);
            assert_eq!(u16::from_be_bytes([answer[10], answer[11]]), if edns { 2 } else { 1 });
            let m = Message::from_vec(&answer).unwrap();
            assert_eq!(m.queries().len(), 1);
            assert_eq!(m.extensions().is_some(), edns);
        }
        assert_eq!(f.hits().await, 0);
    }

    #[tokio::test]
    async fn a_badkey_answer_that_would_amplify_is_a_bare_header() {
        let f = fixture().await;
        // The key name compressed to a pointer at the question's "test" label: the answer,
        // which spells it out, would be bigger than the query with an empty MAC.
        let mut signed = f.query([0, 0, 1]);
        let mut rdata = b"\x0bhmac-sha256\x00".to_vec();
        rdata.extend_from_slice(&[0, 0, 0x6b, 0x11, 0x33, 0xc6, 0x01, 0x2c, 0, 0, 0xab, 0xcd, 0, 0, 0, 0]);
        let test_label = 12 + 1 + f.token.len() + 2;
        signed.extend_from_slice(&[0xc0, test_label as u8, 0, 0xfa, 0, 0xff, 0, 0, 0, 0]);
        signed.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        signed.extend_from_slice(&rdata);
        let answer = f.ask(&signed).await;
        assert_eq!((rcode(&answer), answer.len()), (9, 12));
        assert_eq!(f.hits().await, 0);
    }
}

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
//! client that sends nothing, or drips its bytes, cannot keep a connection for long.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, NS, SOA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::ids::is_token_id;
use crate::kinds::{self, DnsData};
use crate::listeners::dns_wire;
use crate::listeners::slots::{Caps, Slot, Slots};
use crate::model::{now_us, Channel, NewHit};
use crate::recorder::Recorder;

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
    recorder: Recorder,
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
    pub fn new(domain: &str, nx_domain: &str, public_ip: IpAddr, recorder: Recorder) -> anyhow::Result<DnsServer> {
        let serial = (now_us() / 1_000_000 / 60) as u32;
        let ns_name = Name::from_ascii("ns1")?.append_domain(&zone_name(domain)?)?;
        let mut zones = vec![
            make_zone(ZoneKind::Main, domain, &ns_name, serial)?,
            make_zone(ZoneKind::Nx, nx_domain, &ns_name, serial)?,
        ];
        // Most specific first, so an NX zone inside the main zone wins.
        zones.sort_by_key(|z| std::cmp::Reverse(z.labels.len()));
        Ok(DnsServer { zones, public_ip, recorder, dst: SocketAddr::new(public_ip, 53) })
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
            if let Err(e) = self.recorder.record(hit).await {
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
        let mut data = json!({
            "query_name": q.name().to_ascii().trim_end_matches('.'),
            "query_type": q.query_type().to_string(),
            "transport": transport.as_str(),
        });
        match kinds::decode_dns_labels(data_labels) {
            DnsData::Decoded(fields) => {
                if let Value::Object(m) = &mut data {
                    m.extend(fields);
                }
            }
            DnsData::Undecodable => data["decode_error"] = json!("labels carry an encoding marker but do not decode"),
            DnsData::NoMatch => {}
        }
        NewHit {
            token_id: token.to_string(),
            time_us: now_us(),
            channel: Channel::Dns,
            src_ip: peer.ip().to_canonical().to_string(),
            src_port: peer.port(),
            dst_ip: self.dst.ip().to_canonical().to_string(),
            dst_port: self.dst.port(),
            data,
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

/// Serves DNS over UDP until the socket fails.
pub async fn serve_udp(server: Arc<DnsServer>, socket: UdpSocket) {
    let socket = Arc::new(socket);
    let slots = Arc::new(Semaphore::new(UDP_IN_FLIGHT));
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
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
}

/// Serves DNS over TCP (RFC 7766: length-prefixed messages, several per connection), with
/// `caps` shared fairly between sources (see [`crate::listeners::slots`]): a connection over the
/// caps is closed at once, unless it may take the slot of an idle connection of a heavier source.
pub async fn serve_tcp(server: Arc<DnsServer>, listener: TcpListener, caps: Caps) {
    let slots = Slots::new(caps, Vec::new());
    loop {
        let (stream, peer) = match listener.accept().await {
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
        let server = server.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(TCP_LIFETIME, tcp_connection(&server, stream, peer, &slot)).await;
            drop(slot);
        });
    }
}

/// Fills `buf` by `deadline`; false if the client is too slow, closed, or lost its slot.
async fn read_by<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8], deadline: Instant, slot: &Slot) -> bool {
    tokio::select! {
        biased;
        _ = slot.evicted() => false,
        read = tokio::time::timeout_at(deadline, r.read_exact(buf)) => matches!(read, Ok(Ok(_))),
    }
}

/// One connection: the first message must be complete within [`TCP_MESSAGE`] of the accept,
/// each later one within [`TCP_MESSAGE`] of its first byte, which must come within [`TCP_IDLE`]
/// of the previous answer. A connection is busy (its slot cannot be taken) only while it is
/// being answered; a slot taken meanwhile closes the connection once the answer is out.
async fn tcp_connection(server: &DnsServer, mut stream: TcpStream, peer: SocketAddr, slot: &Slot) {
    let activity = slot.activity();
    let (reader, mut writer) = stream.split();
    let mut reader = tokio::io::BufReader::new(reader);
    let mut deadline = Instant::now() + TCP_MESSAGE;
    let mut prefix = [0u8; 2];
    // How much of the length prefix has been read already (the first byte of a later message
    // is read while waiting for it).
    let mut have = 0;
    loop {
        if !read_by(&mut reader, &mut prefix[have..], deadline, slot).await {
            return;
        }
        let mut packet = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
        if !read_by(&mut reader, &mut packet, deadline, slot).await {
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
        if !read_by(&mut reader, &mut prefix[..1], Instant::now() + TCP_IDLE, slot).await {
            return;
        }
        deadline = Instant::now() + TCP_MESSAGE;
        have = 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AlertOutput, Judgement, Token};
    use crate::store::{HitRules, Store};

    const ZONE: &str = "t.test";

    struct Fixture {
        server: DnsServer,
        store: Arc<dyn Store>,
        token: String,
        _dir: tempfile::TempDir,
    }

    async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::open(dir.path().join("d.db").to_str().unwrap()).await.unwrap();
        let site =
            crate::kinds::Site { domain: ZONE.into(), nx_domain: "nx.t.test".into(), public_url: "http://h".into() };
        let core = crate::core::Core::new(store.clone(), site);
        let new = crate::core::NewToken { kind: "dns".into(), memo: "m".into(), ..Default::default() };
        let token = core.create_token(&crate::auth::Actor::local(), new).await.unwrap().id;
        let rules = HitRules::new(
            |_: &Token, _: &NewHit| Judgement::alert(),
            |_: &Token, _: &NewHit, _: &[AlertOutput]| Vec::new(),
        );
        let (recorder, _writer) = Recorder::start(store.clone(), Arc::new(rules), Arc::new(tokio::sync::Notify::new()));
        let server = DnsServer::new(ZONE, "nx.t.test", [127, 0, 0, 1].into(), recorder).unwrap();
        Fixture { server, store, token, _dir: dir }
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
            let peer = "192.0.2.9:5353".parse().unwrap();
            self.server.answer(packet, peer, Transport::Udp).await.expect("an answer")
        }

        async fn hits(&self) -> usize {
            self.store.token_hits(&self.token, 100, None).await.unwrap().len()
        }
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

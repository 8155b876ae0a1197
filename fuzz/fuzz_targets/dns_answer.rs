//! Fuzz target `dns_answer`: one DNS message, as a client sends it over UDP or TCP, through
//! the listener's whole answer path ([`trapline::listeners::dns::DnsServer::answer`]): header
//! checks, message parsing, zone matching, token and label decoding (the would-be hit is built
//! and handed to a real recorder over a SQLite store that holds no tokens), the answer and its
//! truncation.
//!
//! Invariants: no panic; a message with a header that is not a response always gets an
//! answer, anything shorter or a response gets none; the answer is a DNS response that parses,
//! with the query's id and opcode, its one question echoed, and no larger than the client can
//! take over UDP (512 bytes, or the EDNS size up to 1232); no record data names a token (NS
//! and SOA names would make resolvers query the token again). The low bit of the message id
//! picks UDP or TCP and the next bit an IPv4 or IPv6 public address, so every transport and
//! answer shape is reached without a second input format.
#![no_main]

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};

use hickory_proto::op::{Message, MessageType};
use hickory_proto::rr::{Name, RData};
use libfuzzer_sys::fuzz_target;
use trapline::ids::is_token_id;
use trapline::listeners::dns::{DnsServer, Transport};
use trapline::model::{AlertOutput, NewAlert, NewHit, Token};
use trapline::recorder::{HitSink, Recorder};
use trapline::store::{HitRules, SqlStore, Store};

struct Servers {
    v4: DnsServer,
    v6: DnsServer,
}

fn servers() -> &'static Servers {
    static S: OnceLock<Servers> = OnceLock::new();
    S.get_or_init(|| {
        // TMPDIR is scripts/fuzz's scratch directory, removed after the run.
        let db = std::env::temp_dir().join(format!("trapline-fuzz-dns-{}.sqlite", std::process::id()));
        trapline_fuzz::block_on(async {
            let store: Arc<dyn Store> =
                Arc::new(SqlStore::open(db.to_str().expect("a UTF-8 path")).await.expect("store"));
            let rules = HitRules::new(trapline::kinds::judge, |_: &Token, _: &NewHit, _: &[AlertOutput]| {
                Vec::<NewAlert>::new()
            });
            let (recorder, _writer) = Recorder::start(store, Arc::new(rules), Arc::new(tokio::sync::Notify::new()));
            let recorder: Arc<dyn HitSink> = Arc::new(recorder);
            let v4 =
                DnsServer::new("trapline.test", "nx.trapline.test", "192.0.2.53".parse().unwrap(), recorder.clone())
                    .expect("zone");
            let v6 = DnsServer::new("Trapline.Test.", "nx.trapline.test", "2001:db8::53".parse().unwrap(), recorder)
                .expect("zone");
            Servers { v4, v6 }
        })
    })
}

fn names_a_token(name: &Name) -> bool {
    name.iter().any(|l| is_token_id(&String::from_utf8_lossy(l).to_ascii_lowercase()))
}

fuzz_target!(|packet: &[u8]| {
    let s = servers();
    let (transport, server) = match packet.get(1).copied().unwrap_or(0) {
        id if id & 1 == 0 => (Transport::Udp, if id & 2 == 0 { &s.v4 } else { &s.v6 }),
        id => (Transport::Tcp, if id & 2 == 0 { &s.v4 } else { &s.v6 }),
    };
    let peer = SocketAddr::new(IpAddr::from([198, 51, 100, 7]), 40_000);
    let answer = trapline_fuzz::block_on(server.answer(packet, peer, transport));

    if packet.len() < 12 || packet[2] & 0x80 != 0 {
        assert!(answer.is_none(), "answered a response or a headerless packet");
        return;
    }
    let answer = answer.expect("a query with a header always gets an answer");
    assert!(answer.len() >= 12);
    assert_eq!(answer[..2], packet[..2], "the answer carries the query's id");
    assert!(answer[2] & 0x80 != 0, "QR is set");
    assert_eq!(answer[2] & 0x78, packet[2] & 0x78, "the opcode is echoed");
    let resp = Message::from_vec(&answer).expect("our own answer parses");
    assert_eq!(resp.message_type(), MessageType::Response);

    let request = Message::from_vec(packet).ok();
    if transport == Transport::Udp {
        let limit = match request.as_ref().and_then(|r| r.extensions().as_ref()) {
            Some(e) => usize::from(e.max_payload().clamp(512, 1232)),
            None => 512,
        };
        assert!(answer.len() <= limit, "UDP answer of {} bytes over the client's {limit}", answer.len());
    }
    match &request {
        None => assert_eq!(answer.len(), 12, "an unparseable body gets a bare header"),
        Some(req) => {
            assert!(resp.queries().len() <= 1);
            if let [q] = req.queries() {
                if let [a] = resp.queries() {
                    assert_eq!(a, q, "the question is echoed as asked");
                }
            }
        }
    }
    for r in resp.answers().iter().chain(resp.name_servers()).chain(resp.additionals()) {
        match r.data() {
            RData::NS(ns) => assert!(!names_a_token(&ns.0), "NS names a token: {ns}"),
            RData::SOA(soa) => {
                assert!(!names_a_token(soa.mname()) && !names_a_token(soa.rname()), "SOA names a token: {soa}")
            }
            _ => {}
        }
    }
});

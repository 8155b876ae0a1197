"""The authoritative DNS listener (UDP and TCP): answers, hits, encodings, robustness."""

import os
import random
import shutil
import socket
import struct
import subprocess

import dns.edns
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from conftest import DOMAIN, NX_DOMAIN, b32_labels, random_token_id, unique

DIG = shutil.which("dig")
needs_dig = pytest.mark.skipif(DIG is None, reason="dig (dnsutils / bind9-dnsutils) is not installed; "
                                                   "CI installs it")


def query(server, name, rdtype="A", tcp=False, timeout=3.0):
    q = dns.message.make_query(name, rdtype)
    if tcp:
        return dns.query.tcp(q, server.dns_host, port=server.dns_port, timeout=timeout)
    return dns.query.udp(q, server.dns_host, port=server.dns_port, timeout=timeout)


def dig(server, *args):
    cmd = [DIG, f"@{server.dns_host}", "-p", str(server.dns_port), "+time=3", "+tries=1", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def a_addresses(resp):
    return [rd.address for rr in resp.answer if rr.rdtype == dns.rdatatype.A for rd in rr]


# --- dig (what an operator would type) ------------------------------------------

@needs_dig
def test_dig_udp_a_record(server, api):
    tid = api.create_token("dns")["canarytoken"]
    out = dig(server, "+short", f"{tid}.{DOMAIN}", "A")
    assert out.split() == ["127.0.0.1"]
    ev = api.wait_events(tid)[0]
    assert ev["type"] == "dns"
    assert ev["transport"] == "udp"
    assert ev["query_type"] == "A"
    assert ev["query_name"].rstrip(".").lower() == f"{tid}.{DOMAIN}"
    assert ev["src_host"] == "127.0.0.1"


@needs_dig
def test_dig_tcp_a_record(server, api):
    tid = api.create_token("dns")["canarytoken"]
    out = dig(server, "+tcp", "+short", f"{tid}.{DOMAIN}", "A")
    assert out.split() == ["127.0.0.1"]
    ev = api.wait_events(tid)[0]
    assert ev["transport"] == "tcp"
    assert ev["query_type"] == "A"


@needs_dig
def test_dig_status_nxdomain_and_refused(server, api):
    tid = api.create_token("dns")["canarytoken"]
    out = dig(server, f"{tid}.{NX_DOMAIN}", "A")
    assert "status: NXDOMAIN" in out
    api.wait_events(tid)
    out = dig(server, "www.example.com", "A")
    assert "status: REFUSED" in out


@needs_dig
def test_dig_txt_query(server, api):
    tid = api.create_token("dns")["canarytoken"]
    out = dig(server, "+tcp", f"{tid}.{DOMAIN}", "TXT")
    assert "status: NOERROR" in out
    ev = api.wait_events(tid)[0]
    assert ev["query_type"] == "TXT"
    assert ev["transport"] == "tcp"


# --- dnspython (precise assertions) ----------------------------------------------

@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_a_answer_is_public_ip_and_hit_recorded(server, api, tcp):
    tok = api.create_token("dns")
    tid = tok["canarytoken"]
    name = f"{tid}.{DOMAIN}"
    resp = query(server, name, "A", tcp=tcp)
    assert resp.rcode() == dns.rcode.NOERROR
    assert resp.flags & dns.flags.AA, "answer must be authoritative"
    assert a_addresses(resp) == ["127.0.0.1"]
    rrset = resp.answer[0]
    assert rrset.name.to_text().rstrip(".").lower() == name
    assert 0 < rrset.ttl <= 300, rrset.ttl

    ev = api.wait_events(tid)[0]
    assert ev["canarytoken"] == tid
    assert ev["type"] == "dns"
    assert ev["query_type"] == "A"
    assert ev["transport"] == ("tcp" if tcp else "udp")
    assert ev["src_host"] == "127.0.0.1"
    assert 0 < int(ev["src_port"]) < 65536
    assert ev["timestamp_std"]
    inc = api.incidents_for(tid)[0]
    assert inc["logtype"] == "16000"
    assert inc["kind"] == "dns"
    assert inc["memo"] == tok["memo"]
    assert inc["summary"] == "Canarytoken triggered"
    assert api.fetch_token(tid)["triggered_count"] == 1


def test_src_port_is_the_querying_port(server, api):
    tid = api.create_token("dns")["canarytoken"]
    q = dns.message.make_query(f"{tid}.{DOMAIN}", "A")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        resp = dns.query.udp(q, server.dns_host, port=server.dns_port, timeout=3, sock=s)
    assert resp.rcode() == dns.rcode.NOERROR
    ev = api.wait_events(tid)[0]
    assert int(ev["src_port"]) == port


def test_aaaa_is_empty_noerror_and_hit(server, api):
    tid = api.create_token("dns")["canarytoken"]
    resp = query(server, f"{tid}.{DOMAIN}", "AAAA")
    assert resp.rcode() == dns.rcode.NOERROR
    assert [rr for rr in resp.answer if rr.rdtype == dns.rdatatype.AAAA] == []
    assert resp.answer == []
    ev = api.wait_events(tid)[0]
    assert ev["query_type"] == "AAAA"


def test_subdomain_of_token_name_is_a_hit(server, api):
    tid = api.create_token("dns")["canarytoken"]
    resp = query(server, f"anything.else.{tid}.{DOMAIN}", "A")
    assert resp.rcode() == dns.rcode.NOERROR
    assert a_addresses(resp) == ["127.0.0.1"]
    ev = api.wait_events(tid)[0]
    assert ev["query_name"].rstrip(".").lower() == f"anything.else.{tid}.{DOMAIN}"


def test_http_token_fires_over_dns(server, api):
    tid = api.create_token("http")["canarytoken"]
    assert a_addresses(query(server, f"{tid}.{DOMAIN}")) == ["127.0.0.1"]
    ev = api.wait_events(tid)[0]
    # The event's type is the token's kind; its channel says it came in over DNS. The logtype
    # follows the kind (spec: "16xxx for DNS-triggered, 17xxx for HTTP-triggered kinds").
    assert (ev["type"], ev["channel"]) == ("http", "dns")
    assert api.incidents_for(tid)[0]["logtype"] == "17000"


def test_soa_and_ns_at_apex(server, api):
    for tcp in (False, True):
        resp = query(server, DOMAIN, "SOA", tcp=tcp)
        assert resp.rcode() == dns.rcode.NOERROR
        soa = [rr for rr in resp.answer if rr.rdtype == dns.rdatatype.SOA]
        assert len(soa) == 1 and soa[0].name.to_text().rstrip(".").lower() == DOMAIN
        assert resp.flags & dns.flags.AA

        resp = query(server, DOMAIN, "NS", tcp=tcp)
        assert resp.rcode() == dns.rcode.NOERROR
        ns = [rr for rr in resp.answer if rr.rdtype == dns.rdatatype.NS]
        assert len(ns) == 1 and len(ns[0]) >= 1
        for rd in ns[0]:
            target = rd.target.to_text().rstrip(".").lower()
            assert target, rd
            # never an NS name that itself contains a token-shaped label
            assert not any(len(l) == 25 and l.isalnum() for l in target.split("."))


def test_token_in_nx_domain_is_nxdomain_with_hit(server, api):
    tid = api.create_token("dns")["canarytoken"]
    for tcp, name in ((False, f"{tid}.{NX_DOMAIN}"), (True, f"x1.{tid}.{NX_DOMAIN}")):
        resp = query(server, name, "A", tcp=tcp)
        assert resp.rcode() == dns.rcode.NXDOMAIN, name
        assert resp.answer == []
    evs = api.wait_events(tid, count=2)
    assert {e["transport"] for e in evs} == {"udp", "tcp"}
    assert all(e["type"] == "dns" for e in evs)


def test_nx_domain_without_token_is_nxdomain(server):
    resp = query(server, f"www.{NX_DOMAIN}", "A")
    assert resp.rcode() == dns.rcode.NXDOMAIN


@pytest.mark.parametrize("name", ["www.example.com", f"evil{DOMAIN}", f"{DOMAIN}.example.org", "com"])
def test_outside_zones_is_refused(server, name):
    resp = query(server, name, "A")
    assert resp.rcode() == dns.rcode.REFUSED
    assert resp.answer == []


def test_refused_for_token_label_outside_zone(server, api):
    tid = api.create_token("dns")["canarytoken"]
    resp = query(server, f"{tid}.example.net", "A")
    assert resp.rcode() == dns.rcode.REFUSED
    control = api.create_token("dns")["canarytoken"]
    query(server, f"{control}.{DOMAIN}")
    api.wait_events(control)
    assert api.incidents_for(tid) == []


def test_random_case_query_name_matches(server, api):
    tid = api.create_token("dns")["canarytoken"]
    rng = random.Random(7)
    name = "".join(c.upper() if rng.random() < 0.5 else c for c in f"{tid}.{DOMAIN}")
    if name == name.lower():
        name = name.upper()
    resp = query(server, name, "A")
    assert resp.rcode() == dns.rcode.NOERROR
    assert a_addresses(resp) == ["127.0.0.1"]
    # the answer echoes the question name (0x20 resolvers compare it)
    assert resp.question[0].name.to_text().rstrip(".") == name
    ev = api.wait_events(tid)[0]
    assert ev["query_name"].rstrip(".").lower() == f"{tid}.{DOMAIN}".lower()


def test_generic_data_is_decoded(server, api):
    tid = api.create_token("dns")["canarytoken"]
    text = "hello from the e2e suite: user=alice host=WS-042 ✓"
    labels = b32_labels(text.encode("utf-8"))
    assert len(labels) >= 2  # spans more than one label
    name = ".".join(labels) + f".G42.{tid}.{DOMAIN}"
    resp = query(server, name, "A")
    assert resp.rcode() == dns.rcode.NOERROR
    ev = api.wait_events(tid)[0]
    assert ev["generic_data"] == text


def test_generic_data_is_case_insensitive_with_padding(server, api):
    tid = api.create_token("dns")["canarytoken"]
    text = "abcd"  # base32 "MFRGGZA=" -> padding written as "-"
    labels = b32_labels(text.encode(), lower=True)
    assert labels == ["mfrggza-"]
    resp = query(server, f"{labels[0]}.G07.{tid}.{DOMAIN}", "TXT", tcp=True)
    assert resp.rcode() == dns.rcode.NOERROR
    ev = api.wait_events(tid)[0]
    assert ev["generic_data"] == text
    assert ev["query_type"] == "TXT"


def test_generic_binary_data_falls_back_to_hex(server, api):
    tid = api.create_token("dns")["canarytoken"]
    data = b"\xff\x00\xfe\x80"
    name = ".".join(b32_labels(data)) + f".G01.{tid}.{DOMAIN}"
    query(server, name, "A")
    ev = api.wait_events(tid)[0]
    assert ev["generic_data"] == data.hex()


def test_txt_query_records_type(server, api):
    tid = api.create_token("dns")["canarytoken"]
    resp = query(server, f"{tid}.{DOMAIN}", "TXT")
    assert resp.rcode() == dns.rcode.NOERROR
    ev = api.wait_events(tid)[0]
    assert ev["query_type"] == "TXT"
    assert ev["transport"] == "udp"


def test_disabled_token_no_hit_but_same_answer(server, api):
    tid = api.create_token("dns")["canarytoken"]
    api.ok_post("canarytoken/disable", canarytoken=tid)
    resp = query(server, f"{tid}.{DOMAIN}", "A")
    assert resp.rcode() == dns.rcode.NOERROR
    assert a_addresses(resp) == ["127.0.0.1"]
    unknown = query(server, f"{random_token_id()}.{DOMAIN}", "A")
    assert unknown.rcode() == dns.rcode.NOERROR and a_addresses(unknown) == ["127.0.0.1"]
    control = api.create_token("dns")["canarytoken"]
    query(server, f"{control}.{DOMAIN}")
    api.wait_events(control)
    assert api.incidents_for(tid) == []


# --- malformed input -------------------------------------------------------------

MALFORMED_UDP = [
    os.urandom(5),
    struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0),          # header: 1 question, none present
    struct.pack(">HHHHHH", 0x1235, 0x0100, 1, 0, 0, 0) + b"\x3f" + b"a" * 10,  # label runs past end
    struct.pack(">HHHHHH", 0x1236, 0x0100, 1, 0, 0, 0) + b"\xc0\x0c\x00\x01\x00\x01",  # pointer loop
    struct.pack(">HHHHHH", 0x1237, 0x0100, 65535, 65535, 65535, 65535),
    b"",
    os.urandom(3000),
    struct.pack(">HHHHHH", 0x1238, 0x8180, 0, 0, 0, 0),          # a response, not a query
]


def assert_still_answers(server, api):
    tid = api.create_token("dns")["canarytoken"]
    for tcp in (False, True):
        resp = query(server, f"{tid}.{DOMAIN}", "A", tcp=tcp)
        assert a_addresses(resp) == ["127.0.0.1"]
    api.wait_events(tid, count=2)


def test_malformed_udp_packets_do_not_crash(server, api):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.3)
        for pkt in MALFORMED_UDP:
            s.sendto(pkt, (server.dns_host, server.dns_port))
            try:
                s.recvfrom(4096)  # a FORMERR (or silence) are both fine
            except socket.timeout:
                pass
    assert server.alive, server.output()
    assert_still_answers(server, api)


def test_malformed_tcp_streams_do_not_crash(server, api):
    addr = (server.dns_host, server.dns_port)
    payloads = [
        struct.pack(">H", 5) + os.urandom(5),
        struct.pack(">H", 12) + struct.pack(">HHHHHH", 0x4321, 0x0100, 1, 0, 0, 0),
        struct.pack(">H", 65535) + b"\x00" * 10,   # promises more than it sends, then closes
        b"\x00",                                   # half a length prefix
        b"",                                       # connect and close
        struct.pack(">H", 0),                      # zero-length message
        struct.pack(">H", 3000) + os.urandom(3000),
    ]
    for p in payloads:
        with socket.create_connection(addr, timeout=2) as s:
            s.settimeout(0.3)
            try:
                if p:
                    s.sendall(p)
                s.shutdown(socket.SHUT_WR)
                s.recv(4096)
            except OSError:
                pass
    # A slow client holding a connection open must not block others.
    idle = socket.create_connection(addr, timeout=2)
    try:
        idle.sendall(b"\x00")
        assert server.alive, server.output()
        assert_still_answers(server, api)
    finally:
        idle.close()


def test_two_queries_on_one_tcp_connection(server, api):
    """Resolvers reuse TCP connections (RFC 7766): a second query on the same
    connection must be answered too."""
    t1 = api.create_token("dns")["canarytoken"]
    t2 = api.create_token("dns")["canarytoken"]
    with socket.create_connection((server.dns_host, server.dns_port), timeout=3) as s:
        for tid in (t1, t2):
            q = dns.message.make_query(f"{tid}.{DOMAIN}", "A")
            dns.query.send_tcp(s, q)
            resp, _ = dns.query.receive_tcp(s, expiration=None)
            assert resp.id == q.id
            assert a_addresses(resp) == ["127.0.0.1"]
    api.wait_events(t1)
    api.wait_events(t2)


@needs_dig
def test_cli_encoder_output_fires_and_decodes(server, api):
    """`trapline dns encode` makes a name whose lookup carries the data to the token."""
    from conftest import BIN
    tok = api.create_token("dns", memo=unique("cli encode"))
    secret = "C:\\Users\\alice\\payroll 2026.xlsx ✓"
    out = subprocess.run([BIN, "dns", "encode", tok["hostname"], secret], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    name = out.stdout.strip()
    assert name.endswith("." + tok["hostname"])
    assert all(len(label) <= 63 for label in name.split("."))
    assert "status: NOERROR" in dig(server, name, "A")
    ev = api.wait_events(tok["canarytoken"], pred=lambda e: "generic_data" in e)[0]
    assert ev["generic_data"] == secret


def test_cli_encoder_rejects_data_too_long_for_a_name():
    from conftest import BIN
    out = subprocess.run([BIN, "dns", "encode", "x" * 25 + ".canary.test", "y" * 400],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode != 0
    assert "too much data" in out.stderr


# --- protocol details ------------------------------------------------------------

def test_edns_version_above_zero_gets_badvers(server, api):
    tid = api.create_token("dns")["canarytoken"]
    q = dns.message.make_query(f"{tid}.{DOMAIN}", "A", use_edns=1)
    resp = dns.query.udp(q, server.dns_host, port=server.dns_port, timeout=3)
    assert resp.rcode() == dns.rcode.BADVERS
    assert resp.edns == 0, "the answer says which version we speak"
    assert resp.answer == []
    ok = dns.query.udp(dns.message.make_query(f"{tid}.{DOMAIN}", "A", use_edns=0), server.dns_host,
                       port=server.dns_port, timeout=3)
    assert ok.rcode() == dns.rcode.NOERROR and ok.edns == 0


@pytest.mark.parametrize("rdtype", ["AXFR", "IXFR"])
def test_zone_transfers_are_refused(server, rdtype):
    q = dns.message.make_query(DOMAIN, rdtype)
    resp = dns.query.tcp(q, server.dns_host, port=server.dns_port, timeout=3)
    assert resp.rcode() == dns.rcode.REFUSED
    assert resp.answer == []


def test_any_gets_a_single_rrset(server, api):
    apex = query(server, DOMAIN, "ANY")
    assert [rr.rdtype for rr in apex.answer] == [dns.rdatatype.SOA]
    tid = api.create_token("dns")["canarytoken"]
    resp = query(server, f"{tid}.{DOMAIN}", "ANY")
    assert [rr.rdtype for rr in resp.answer] == [dns.rdatatype.A]
    assert api.wait_events(tid)[0]["query_type"] == "ANY"


def test_apex_answers_keep_the_question_spelling(server):
    mixed = "".join(c.upper() if i % 2 else c for i, c in enumerate(DOMAIN))
    for rdtype in ("SOA", "NS"):
        resp = query(server, mixed, rdtype)
        assert resp.answer[0].name.to_text().rstrip(".") == mixed, resp.answer[0].name


def test_nx_zone_nameserver_resolves(server):
    resp = query(server, NX_DOMAIN, "NS")
    assert resp.rcode() == dns.rcode.NOERROR
    target = resp.answer[0][0].target.to_text().rstrip(".")
    assert target == f"ns1.{DOMAIN}", target
    a = query(server, target, "A")
    assert a.rcode() == dns.rcode.NOERROR and a_addresses(a) == ["127.0.0.1"]
    soa = query(server, NX_DOMAIN, "SOA").answer[0][0]
    assert soa.mname.to_text().rstrip(".") == f"ns1.{DOMAIN}"


def test_tcp_client_that_never_reads_does_not_block_others(server, api):
    """Pipelined queries from a client that never reads its answers tie up nothing others need."""
    tid = api.create_token("dns")["canarytoken"]
    wire = dns.message.make_query(f"{tid}.{DOMAIN}", "A").to_wire()
    hog = socket.create_connection((server.dns_host, server.dns_port), timeout=5)
    hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    for _ in range(200):
        try:
            hog.sendall(struct.pack("!H", len(wire)) + wire)
        except OSError:
            break
    for tcp in (False, True):
        assert query(server, f"{tid}.{DOMAIN}", "A", tcp=tcp).rcode() == dns.rcode.NOERROR
    hog.close()


# --- strictness (audit F13): only well-formed queries are recorded ----------------------------
#
# A packet whose header promises sections it does not hold (or holds more than it promises), an
# OPT outside the additional section, or an additional record whose RDATA does not parse, gets
# FORMERR (a bare header, never bigger than the packet) and records nothing. A well-formed
# TSIG-signed query gets NOTAUTH with an unsigned TSIG saying BADKEY (RFC 8945 5.2.1: the server
# knows no keys), and records nothing either.

FORMERR, NOTAUTH = 1, 9
HOST = shutil.which("host")


def raw_exchange(server, wire, tcp=False, timeout=3.0):
    addr = (server.dns_host, server.dns_port)
    if tcp:
        with socket.create_connection(addr, timeout=timeout) as s:
            s.sendall(struct.pack("!H", len(wire)) + wire)
            head = b""
            while len(head) < 2:
                chunk = s.recv(2 - len(head))
                assert chunk, "closed without an answer"
                head += chunk
            (n,) = struct.unpack("!H", head)
            body = b""
            while len(body) < n:
                chunk = s.recv(n - len(body))
                assert chunk, "closed in the middle of an answer"
                body += chunk
            return body
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(wire, addr)
        return s.recvfrom(65535)[0]


def counts(wire, an=None, ns=None, ar=None):
    """`wire` with its header's answer/authority/additional counts replaced."""
    qd, an0, ns0, ar0 = struct.unpack("!HHHH", wire[4:12])
    return wire[:4] + struct.pack("!HHHH", qd, an0 if an is None else an, ns0 if ns is None else ns,
                                  ar0 if ar is None else ar) + wire[12:]


def opt_rr(owner=b"\x00", payload=1232):
    return owner + struct.pack("!HHIH", 41, payload, 0, 0)


def tsig_rr(rdata, owner=b"\x02k1\x00"):
    return owner + struct.pack("!HHIH", 250, 255, 0, len(rdata)) + rdata


def a_rr(name_ptr=b"\xc0\x0c"):
    return name_ptr + struct.pack("!HHIH", 1, 1, 60, 4) + bytes([192, 0, 2, 1])


ALG = b"\x0bhmac-sha256\x00"
TSIG_FIELDS = b"\x00\x00\x65\x00\x00\x00" + b"\x01\x2c" + b"\x00\x00" + b"\x12\x34\x00\x00\x00\x00"

MALFORMED_QUERIES = {
    # The audit's three:
    "trailing junk": lambda w: w + bytes((i * 37) & 0xff for i in range(200)),
    "OPT in the answer section": lambda w: counts(w, an=1) + opt_rr(),
    "TSIG with garbage RDATA": lambda w: counts(w, ar=1) + tsig_rr(b"\x3f" + b"\xff" * 19),
    # Neighbours of theirs:
    "one junk byte": lambda w: w + b"\x00",
    "OPT in the authority section": lambda w: counts(w, ns=1) + opt_rr(),
    "an answer in a query": lambda w: counts(w, an=1) + a_rr(),
    "an authority record in a query": lambda w: counts(w, ns=1) + a_rr(),
    "two OPT records": lambda w: counts(w, ar=2) + opt_rr() + opt_rr(),
    "OPT owner not the root": lambda w: counts(w, ar=1) + opt_rr(owner=b"\x01x\x00"),
    "OPT options longer than the RDATA": lambda w: counts(w, ar=1) + b"\x00" + struct.pack(
        "!HHIH", 41, 1232, 0, 4) + struct.pack("!HH", 10, 8),
    "TSIG RDATA cut short": lambda w: counts(w, ar=1) + tsig_rr(ALG + b"\x00" * 5),
    "TSIG RDATA with bytes left over": lambda w: counts(w, ar=1) + tsig_rr(ALG + TSIG_FIELDS + b"\x00"),
    "TSIG not the last record": lambda w: counts(w, ar=2) + tsig_rr(ALG + TSIG_FIELDS) + opt_rr(),
    "additional count beyond the packet": lambda w: counts(w, ar=1),
}


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
@pytest.mark.parametrize("case", list(MALFORMED_QUERIES), ids=list(MALFORMED_QUERIES))
def test_malformed_query_gets_formerr_and_no_hit(server, api, case, tcp):
    tid = api.create_token("dns")["canarytoken"]
    wire = dns.message.make_query(f"{tid}.{DOMAIN}", "A").to_wire()
    bad = MALFORMED_QUERIES[case](wire)
    resp = raw_exchange(server, bad, tcp=tcp)
    assert resp[:2] == bad[:2], "answers the query's id"
    assert resp[2] & 0x80, "a response"
    assert resp[3] & 0x0F == FORMERR, resp.hex()
    assert len(resp) <= len(bad), "FORMERR must not amplify"
    control = api.create_token("dns")["canarytoken"]
    assert query(server, f"{control}.{DOMAIN}", tcp=tcp).rcode() == dns.rcode.NOERROR
    api.wait_events(control)
    assert api.incidents_for(tid) == [], f"{case}: a malformed packet was recorded as a hit"


def tsig_query(tid):
    import dns.tsigkeyring
    q = dns.message.make_query(f"{tid}.{DOMAIN}", "A", use_edns=0)
    q.use_tsig(dns.tsigkeyring.from_text({"k1.": "c2VjcmV0c2VjcmV0c2VjcmV0"}), keyname="k1.")
    return q


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_tsig_signed_query_gets_notauth_badkey_and_no_hit(server, api, tcp):
    import dns.tsig
    tid = api.create_token("dns")["canarytoken"]
    q = tsig_query(tid)
    send = dns.query.tcp if tcp else dns.query.udp
    with pytest.raises(dns.tsig.PeerBadKey):  # dnspython reads the unsigned BADKEY answer
        send(q, server.dns_host, port=server.dns_port, timeout=3)
    q = tsig_query(tid)
    wire = q.to_wire()
    resp = raw_exchange(server, wire, tcp=tcp)
    assert resp[:2] == wire[:2] and resp[2] & 0x80
    assert resp[3] & 0x0F == NOTAUTH, resp.hex()
    assert len(resp) <= len(wire), "the error answer must not amplify"
    with pytest.raises(dns.tsig.PeerBadKey):
        dns.message.from_wire(resp, keyring=q.keyring, request_mac=q.mac)
    control = api.create_token("dns")["canarytoken"]
    query(server, f"{control}.{DOMAIN}")
    api.wait_events(control)
    assert api.incidents_for(tid) == []


# Everyday clients are still answered and recorded, whatever EDNS options they send.

@needs_dig
@pytest.mark.parametrize("opts", [[], ["+nocookie"], ["+noedns"], ["+tcp"], ["+tcp", "+nocookie"], ["+dnssec"],
                                  ["+nsid"], ["+subnet=192.0.2.0/24"], ["+bufsize=4096"]],
                         ids=lambda o: " ".join(o) or "defaults")
def test_dig_options_are_answered_and_recorded(server, api, opts):
    tid = api.create_token("dns")["canarytoken"]
    out = dig(server, *opts, f"{tid}.{DOMAIN}", "A")
    assert "status: NOERROR" in out, out
    assert "127.0.0.1" in out, out
    api.wait_events(tid)


@pytest.mark.skipif(HOST is None, reason="host (bind9-host) is not installed")
@pytest.mark.parametrize("flags", [[], ["-T"]], ids=["udp", "tcp"])
def test_host_command_is_answered_and_recorded(server, api, flags):
    tid = api.create_token("dns")["canarytoken"]
    out = subprocess.run([HOST, *flags, "-W", "3", "-p", str(server.dns_port), "-t", "A", f"{tid}.{DOMAIN}",
                          server.dns_host], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "has address 127.0.0.1" in out.stdout, out.stdout
    api.wait_events(tid)


@pytest.mark.parametrize("edns", [
    {"use_edns": False},
    {"use_edns": 0},
    {"use_edns": 0, "want_dnssec": True, "payload": 4096},
    {"use_edns": 0, "options": [dns.edns.GenericOption(10, b"\x01\x02\x03\x04\x05\x06\x07\x08")]},  # cookie
], ids=["plain", "edns", "dnssec ok", "cookie"])
def test_dnspython_variants_are_answered_and_recorded(server, api, edns):
    tid = api.create_token("dns")["canarytoken"]
    q = dns.message.make_query(f"{tid}.{DOMAIN}", "A", **edns)
    resp = dns.query.udp(q, server.dns_host, port=server.dns_port, timeout=3)
    assert resp.rcode() == dns.rcode.NOERROR and a_addresses(resp) == ["127.0.0.1"]
    api.wait_events(tid)

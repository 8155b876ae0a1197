"""Per-source connection caps and fair shares of the trigger HTTP and DNS/TCP listeners.

One client must not be able to take every connection slot (audit F8): slow sockets from one
address (slowloris on HTTP, one byte on DNS/TCP) hold slots, and a visitor from another address
(127.0.0.2, a distinct source on loopback) must still get its answer promptly and have its hit
stored. A source's own connections beyond its cap are closed, a trusted proxy is exempt from the
per-source cap, and DNS/TCP connections that dribble get closed after a short deadline.

The caps are set small (`--http-max-conns`, `--http-max-conns-per-source`, `--dns-tcp-max-conns`,
`--dns-tcp-max-conns-per-source`) so a few dozen sockets reach them. The time bounds are
functional, far under the listeners' 10 s deadlines, not benchmarks.
"""

import shutil
import socket
import subprocess
import time

import dns.message
import dns.query
import dns.rcode
import pytest

from conftest import DOMAIN, Server, unique

CURL = shutil.which("curl")
DIG = shutil.which("dig")
VISITOR = "127.0.0.2"
PROMPT = 2.0  # seconds a visitor may wait for its answer while others hold slots
SLOWLORIS = b"GET /slow HTTP/1.1\r\nHost: x\r\nX-a: "  # never finished


@pytest.fixture
def servers():
    started = []

    def make(*args, env=None):
        srv = Server(args=list(args), env=env).start()
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.close()


@pytest.fixture
def sockets():
    """Every socket a test opens, closed at its end."""
    held = []
    yield held
    for s in held:
        s.close()


def http_addr(server):
    host, port = server.http_base().split("//")[1].split(":")
    return host, int(port)


def hold(held, addr, src, n, first_bytes):
    """Opens `n` connections from address `src` that each send `first_bytes` and then nothing."""
    mine = []
    for _ in range(n):
        s = socket.socket()
        s.bind((src, 0))
        s.settimeout(2)
        s.connect(addr)
        try:
            s.sendall(first_bytes)
        except OSError:
            pass  # already closed by the server: counted below
        held.append(s)
        mine.append(s)
        time.sleep(0.005)  # in order, so "oldest" means something
    return mine


def still_open(socks, settle=0.5):
    """The sockets the server has not closed (a closed one reads EOF or a reset)."""
    time.sleep(settle)
    alive = []
    for s in socks:
        s.setblocking(False)
        try:
            if s.recv(1) == b"":
                continue
        except BlockingIOError:
            alive.append(s)
            continue
        except OSError:
            continue
    return alive


def fire_http(server, interface=VISITOR):
    """A visitor fires a new http token with curl from `interface`; -> (token id, seconds)."""
    assert CURL, "curl is required"
    api = server.api()
    tok = api.create_token("http", memo=unique("fair"), browser_scanner_enabled="false")
    start = time.monotonic()
    r = subprocess.run([CURL, "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "8",
                        "--interface", interface, tok["url"]], capture_output=True, text=True, timeout=20)
    elapsed = time.monotonic() - start
    assert r.returncode == 0 and r.stdout == "200", (r.returncode, r.stdout, r.stderr, elapsed)
    return tok["canarytoken"], elapsed


def assert_hit_from(server, tid, src):
    ev = server.api().wait_events(tid)[0]
    assert ev["src_host"] == src, ev


# --- trigger HTTP -------------------------------------------------------------------------------

def test_http_visitor_gets_a_slot_when_one_source_holds_them_all(servers, sockets):
    srv = servers("--http-max-conns", "32")
    hog = hold(sockets, http_addr(srv), "127.0.0.1", 32, SLOWLORIS)
    assert len(still_open(hog)) == 32, "under the default per-source cap, 32 slow sockets are all held"
    tid, elapsed = fire_http(srv)
    assert elapsed < PROMPT, f"the visitor waited {elapsed:.1f}s for a slot"
    assert_hit_from(srv, tid, VISITOR)
    assert len(still_open(hog, settle=0.2)) == 31, "one slow socket gave up its slot to the visitor"


def test_http_the_heaviest_source_gives_way_first(servers, sockets):
    srv = servers("--http-max-conns", "32")
    addr = http_addr(srv)
    heavy = hold(sockets, addr, "127.0.0.1", 24, SLOWLORIS)
    light = hold(sockets, addr, "127.0.0.3", 8, SLOWLORIS)
    assert len(still_open(heavy + light)) == 32
    tid, elapsed = fire_http(srv)
    assert elapsed < PROMPT, f"the visitor waited {elapsed:.1f}s for a slot"
    assert_hit_from(srv, tid, VISITOR)
    assert len(still_open(light, settle=0.2)) == 8, "the lighter source keeps its connections"
    assert len(still_open(heavy, settle=0)) == 23


def test_http_default_per_source_cap_is_64(servers, sockets):
    srv = servers("--http-max-conns", "200")
    socks = hold(sockets, http_addr(srv), "127.0.0.1", 80, SLOWLORIS)
    assert len(still_open(socks)) == 64
    tid, _ = fire_http(srv, interface="127.0.0.1")  # the source itself still gets served
    assert_hit_from(srv, tid, "127.0.0.1")


def test_http_per_source_cap_setting_and_trusted_proxy_exemption(servers, sockets):
    srv = servers("--http-max-conns", "32", "--http-max-conns-per-source", "8",
                  "--trusted-proxies", "127.0.0.1")
    addr = http_addr(srv)
    direct = hold(sockets, addr, "127.0.0.3", 12, SLOWLORIS)
    assert len(still_open(direct)) == 8, "a source's connections beyond its cap are closed"
    proxy = hold(sockets, addr, "127.0.0.1", 20, SLOWLORIS)
    assert len(still_open(proxy)) == 20, "a trusted proxy carries many clients: no per-source cap"
    tid, elapsed = fire_http(srv)
    assert elapsed < PROMPT
    assert_hit_from(srv, tid, VISITOR)


# --- DNS over TCP -------------------------------------------------------------------------------

def dns_addr(server):
    return server.dns_host, server.dns_port


def dig_tcp_from(server, src, name):
    assert DIG, "dig is required"
    start = time.monotonic()
    out = subprocess.run([DIG, "-b", src, f"@{server.dns_host}", "-p", str(server.dns_port), "+tcp",
                          "+time=5", "+tries=1", "+short", name, "A"], capture_output=True, text=True, timeout=20)
    return out, time.monotonic() - start


def test_dns_tcp_visitor_gets_a_slot_when_others_hold_them_all(servers, sockets):
    srv = servers("--dns-tcp-max-conns", "32")
    hog = hold(sockets, dns_addr(srv), "127.0.0.1", 16, b"\x00") + \
        hold(sockets, dns_addr(srv), "127.0.0.3", 16, b"\x00")
    assert len(still_open(hog, settle=0.3)) == 32, "two sources at the default per-source cap fill 32 slots"
    tid = srv.api().create_token("dns")["canarytoken"]
    out, elapsed = dig_tcp_from(srv, VISITOR, f"{tid}.{DOMAIN}")
    assert out.returncode == 0 and out.stdout.split() == ["127.0.0.1"], (out.stdout, out.stderr)
    assert elapsed < PROMPT, f"the visitor waited {elapsed:.1f}s"
    assert_hit_from(srv, tid, VISITOR)
    # dnspython from the same visitor, on a second connection
    tid2 = srv.api().create_token("dns")["canarytoken"]
    q = dns.message.make_query(f"{tid2}.{DOMAIN}", "A")
    resp = dns.query.tcp(q, srv.dns_host, port=srv.dns_port, source=VISITOR, timeout=PROMPT)
    assert resp.rcode() == dns.rcode.NOERROR
    assert_hit_from(srv, tid2, VISITOR)


def test_dns_tcp_default_per_source_cap_is_16(servers, sockets):
    srv = servers("--dns-tcp-max-conns", "64")
    socks = hold(sockets, dns_addr(srv), "127.0.0.1", 30, b"\x00")
    assert len(still_open(socks, settle=0.3)) == 16


def test_dns_tcp_per_source_cap_setting_by_env(servers, sockets):
    srv = servers(env={"TRAPLINE_DNS_TCP_MAX_CONNS_PER_SOURCE": "4"})
    socks = hold(sockets, dns_addr(srv), "127.0.0.1", 10, b"\x00")
    assert len(still_open(socks, settle=0.3)) == 4
    tid = srv.api().create_token("dns")["canarytoken"]
    out, elapsed = dig_tcp_from(srv, VISITOR, f"{tid}.{DOMAIN}")
    assert out.stdout.split() == ["127.0.0.1"], (out.stdout, out.stderr)


def closed_within(s, seconds):
    """Seconds until the server closed `s`, or None if it is still open after `seconds`."""
    start = time.monotonic()
    s.settimeout(0.1)
    while time.monotonic() - start < seconds:
        try:
            if s.recv(1) == b"":
                return time.monotonic() - start
        except socket.timeout:
            continue
        except OSError:
            return time.monotonic() - start
    return None


def test_dns_tcp_silent_connection_is_closed_after_a_few_seconds(server, sockets):
    s = socket.create_connection(dns_addr(server), timeout=2)
    sockets.append(s)
    took = closed_within(s, 6)
    assert took is not None, "a connection that sends nothing holds its slot for over 6 s"


def test_dns_tcp_drip_cannot_hold_a_slot(server, sockets):
    """One byte every 0.4 s: each read is quick, but the message never completes in time."""
    s = socket.create_connection(dns_addr(server), timeout=2)
    sockets.append(s)
    wire = b"\x00\x28" + bytes(40)
    start = time.monotonic()
    closed = None
    for b in wire:
        try:
            s.sendall(bytes([b]))
        except OSError:
            closed = time.monotonic() - start
            break
        took = closed_within(s, 0.4)
        if took is not None:
            closed = time.monotonic() - start
            break
        if time.monotonic() - start > 6:
            break
    assert closed is not None and closed < 6, "a dripping client held its slot for over 6 s"
    assert closed > 1, "closed early: the deadline is for the whole message, not each byte"

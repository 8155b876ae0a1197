"""`serve --trusted-proxies` (env TRAPLINE_TRUSTED_PROXIES): whose `X-Forwarded-For` is believed.

By default the client address is always the socket peer, so the header is ignored both by the
Conjur host-factory CIDR check and by the recorded `src_host` of a token hit (the header itself is
still recorded). With trusted proxies, a request from a trusted peer is attributed to the
right-most X-Forwarded-For address that is not itself a trusted proxy; a request from an untrusted
peer (`curl --interface 127.0.0.2`) keeps its own address. A bad value stops `serve`.

The Conjur helpers (curl, login, token minting, enrolment) come from test_conjur.py.
"""

import subprocess

import pytest

from conftest import Server, unique
from test_conjur import assert_healthy, curl, enrol, login, new_hf_token

XFF = "X-Forwarded-For"


# --- helpers -----------------------------------------------------------------------------------

def start(args=None, env=None):
    return Server(args=args, env=env).start()


@pytest.fixture
def servers():
    """Servers started by one test, closed at its end."""
    started = []

    def make(args=None, env=None):
        srv = start(args, env)
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.close()


def hit_src(server, xff, interface=None):
    """Trigger a fresh http token with curl (optionally from another source address) and an
    X-Forwarded-For header; -> (incident, event) once recorded."""
    api = server.api()
    tok = api.create_token("http", memo=unique("xff"), browser_scanner_enabled="false")
    code, _, text = curl("GET", tok["url"], {XFF: xff} if xff is not None else None, interface=interface)
    assert code == 200, (code, text[:300])
    evs = api.wait_events(tok["canarytoken"])
    assert len(evs) == 1, evs
    incs = api.incidents_for(tok["canarytoken"])
    assert len(incs) == 1, incs
    return incs[0], evs[0]


def assert_src(server, xff, expected, interface=None):
    inc, ev = hit_src(server, xff, interface)
    assert ev["src_host"] == expected, (xff, interface, ev)
    assert inc["src_host"] == expected, (xff, interface, inc)
    headers = {k.lower(): v for k, v in ev.get("headers", {}).items()}
    if xff is not None:
        assert headers.get("x-forwarded-for") == xff, ev.get("headers")
    return ev


def enrol_status(server, token, xff=None, interface=None):
    code, _, text = enrol(server, token, unique("h"), interface=interface,
                          headers={XFF: xff} if xff is not None else None)
    return code, text


def check_trusting_loopback(srv):
    """What a server trusting 127.0.0.1 (only, among the peers used here) must do."""
    auth = login(srv, srv.admin_key)
    tok = new_hf_token(srv, auth, cidr=["10.9.9.9"])
    assert enrol_status(srv, tok, "10.9.9.9")[0] == 201
    assert enrol_status(srv, tok, "10.9.9.8")[0] == 401
    assert enrol_status(srv, tok)[0] == 401
    assert enrol_status(srv, tok, "10.9.9.9, 10.9.9.8")[0] == 401     # right-most untrusted wins
    assert enrol_status(srv, tok, "10.9.9.8, 10.9.9.9")[0] == 201
    # an untrusted peer's header is ignored: 127.0.0.2 stays 127.0.0.2
    assert enrol_status(srv, tok, "10.9.9.9", interface="127.0.0.2")[0] == 401
    own = new_hf_token(srv, auth, cidr=["127.0.0.2"])
    assert enrol_status(srv, own, "10.9.9.9", interface="127.0.0.2")[0] == 201
    assert enrol_status(srv, own, "127.0.0.2")[0] == 201               # via the trusted 127.0.0.1
    # recorded hits
    assert_src(srv, "198.51.100.4, 203.0.113.7", "203.0.113.7")
    assert_src(srv, "203.0.113.7", "203.0.113.7")
    assert_src(srv, None, "127.0.0.1")
    assert_src(srv, "10.9.9.9", "127.0.0.2", interface="127.0.0.2")
    assert_healthy(srv)


# --- tests -----------------------------------------------------------------------------------------

def test_default_ignores_x_forwarded_for(server):
    auth = login(server, server.admin_key)
    tok = new_hf_token(server, auth, cidr=["10.9.9.9"])
    for xff in ("10.9.9.9", "10.9.9.9, 10.9.9.9", "127.0.0.1, 10.9.9.9"):
        code, text = enrol_status(server, tok, xff)
        assert code == 401, (xff, code, text)
    local = new_hf_token(server, auth, cidr=["127.0.0.1"])
    code, text = enrol_status(server, local, "10.9.9.9")
    assert code == 201, (code, text)
    assert_src(server, "203.0.113.7", "127.0.0.1")
    assert_src(server, "198.51.100.4, 203.0.113.7", "127.0.0.1")
    assert_healthy(server)


def test_trusted_loopback_flag(servers):
    check_trusting_loopback(servers(["--trusted-proxies", "127.0.0.1"]))


def test_trusted_proxy_chain(servers):
    srv = servers(["--trusted-proxies", "127.0.0.1,203.0.113.0/24"])
    assert_src(srv, "198.51.100.4, 203.0.113.7", "198.51.100.4")
    assert_src(srv, "198.51.100.4, 203.0.113.7, 203.0.113.9", "198.51.100.4")
    assert_src(srv, "10.1.1.1, 198.51.100.4, 203.0.113.7", "198.51.100.4")
    assert_src(srv, "10.9.9.9", "127.0.0.2", interface="127.0.0.2")
    assert_healthy(srv)


def test_env_var_works_like_the_flag(servers):
    check_trusting_loopback(servers(env={"TRAPLINE_TRUSTED_PROXIES": "127.0.0.1"}))
    srv = servers(env={"TRAPLINE_TRUSTED_PROXIES": "127.0.0.1,203.0.113.0/24"})
    assert_src(srv, "198.51.100.4, 203.0.113.7", "198.51.100.4")


def run_to_exit(args=None, env=None):
    """Run `serve` expecting it to refuse to start; -> CompletedProcess (fails if it keeps running)."""
    srv = Server(args=args, env=env)
    try:
        try:
            return subprocess.run(srv.command(), capture_output=True, text=True, timeout=15, env=srv.env,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            pytest.fail(f"serve with {args or env} kept running: {e.stdout!r} {e.stderr!r}")
    finally:
        srv.close()


@pytest.mark.parametrize("how", ["flag", "env"])
def test_invalid_value_stops_serve(how):
    for bad in ("banana", "127.0.0.1,banana", "300.1.1.1"):
        if how == "flag":
            r = run_to_exit(args=["--trusted-proxies", bad])
        else:
            r = run_to_exit(env={"TRAPLINE_TRUSTED_PROXIES": bad})
        out = r.stdout + r.stderr
        assert r.returncode != 0, (bad, r.returncode, out)
        assert "trusted proxy" in out.lower(), (bad, out)
        assert "Ready." not in r.stdout, (bad, out)

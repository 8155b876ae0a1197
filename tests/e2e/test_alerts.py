"""Alerts: every alerting hit is POSTed as JSON to the global webhooks (`--alert-webhooks`) and
to the token's own `alert_webhook_url`, through a durable outbox (retries with backoff, give-up
age, survives kill -9), with an `Idempotency-Key` per delivery; SSRF rules for webhook targets;
test alerts from the Console (`alert/test`) and SpaceSiren (`/test-alert`) dialects.

The receiving end is `Receiver` below: a threaded `http.server` on 127.0.0.1 that records every
POST and can answer 503, answer slowly, or be stopped and started again on the same port.
"""

import json
import re
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from conftest import DOMAIN, Server, b32_labels, http_hit, random_token_id, unique, wait_for
from kindtools import assert_error, lookup

ALLOW = "--allow-private-alert-targets"
# Every hit its own incident and alert (the default groups repeats from one source).
NO_GROUPING = "--incident-window-secs=0"
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
PAYLOAD_FIELDS = {
    "trapline_alert", "test", "summary", "kind", "kind_name", "memo", "token_id", "flock_id", "time",
    "channel", "src_ip", "src_port", "useragent", "data", "token_url", "incident_id", "hit_id",
    "idempotency_key",
}
BAD_TARGETS = [
    "http://127.0.0.1:9/x",
    "http://localhost/x",
    "http://169.254.169.254/latest/meta-data",
    "http://10.0.0.1/",
    "http://[::1]/",
    "ftp://example.com/",
]


# --- the webhook receiver ----------------------------------------------------------------

class Receiver:
    """Records every POST: {path, headers (lower-case names), raw, body (JSON or None), status
    (what it answered), at (monotonic receipt time)}. `status` and `delay` set how it answers."""

    def __init__(self):
        self.lock = threading.Lock()
        self.posts = []
        self.status = 200
        self.delay = 0.0
        self.port = 0
        self.httpd = None
        self.thread = None

    # --- lifecycle
    def start(self):
        rec = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # one request per connection: nothing stale when stopped

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b""
                with rec.lock:
                    status, delay = rec.status, rec.delay
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                entry = {
                    "path": self.path,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "raw": raw,
                    "body": body,
                    "status": status,
                    "at": time.monotonic(),
                }
                with rec.lock:
                    rec.posts.append(entry)
                if delay:
                    time.sleep(delay)
                payload = b'{"ok": true}' if status < 300 else b'{"error": "unavailable"}'
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()
        return self

    def stop(self):
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None

    def url(self, path="/hook"):
        assert self.port, "receiver never started"
        return f"http://127.0.0.1:{self.port}{path}"

    # --- what arrived
    def all(self):
        with self.lock:
            return list(self.posts)

    def for_token(self, tid, ok_only=False):
        return [p for p in self.all() if isinstance(p["body"], dict) and p["body"].get("token_id") == tid
                and (not ok_only or p["status"] < 300)]

    def tests(self):
        return [p for p in self.all() if isinstance(p["body"], dict) and p["body"].get("test") is True]

    def wait_token(self, tid, count=1, timeout=5.0, ok_only=False):
        def check():
            got = self.for_token(tid, ok_only=ok_only)
            return got if len(got) >= count else None
        return wait_for(check, timeout=timeout, interval=0.05,
                        desc=f"{count} webhook POST(s) for token {tid} on port {self.port}")


def delivered_keys(posts):
    """Idempotency keys of the POSTs answered 2xx, with how often each came."""
    counts = {}
    for p in posts:
        if p["status"] < 300:
            k = p["headers"].get("idempotency-key")
            counts[k] = counts.get(k, 0) + 1
    return counts


# --- helpers ------------------------------------------------------------------------------

def outbox(api, all_=False):
    params = {"all": "true"} if all_ else {}
    return api.ok_get("alerts/outbox", **params)["alerts"]


def outbox_for(api, tid, all_=False, url=None):
    return [a for a in outbox(api, all_) if a.get("canarytoken") == tid
            and (url is None or (a.get("output") or {}).get("url") == url)]


def fire_http(server, tid, n=0, ua=None):
    r = http_hit(server, tid, params={"n": str(n)}, headers={"User-Agent": ua or f"alert-e2e/{n}"})
    assert r.status_code == 200, (r.status_code, r.text[:200])
    return r


def root(server):
    base = server.api_url
    assert base.endswith("/api/v1/"), base
    return base[: -len("api/v1/")]


def start_failing(args, timeout=15):
    """Run `serve` with `args` expecting it to refuse to start; -> (rc, stdout, stderr)."""
    srv = Server(args=args)
    proc = subprocess.Popen(srv.command(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, env=srv.env, text=True, errors="replace")
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"serve {args} kept running\n{out}\n{err}")
    finally:
        srv.close()
    return proc.returncode, out, err


# --- fixtures -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def hook():
    """The main server's global webhook receiver."""
    rec = Receiver().start()
    yield rec
    rec.stop()


@pytest.fixture(scope="module")
def server(hook):
    """Overrides conftest's shared server: one global webhook, private targets allowed, and
    grouping off, so that every hit is an alert of its own (this module tests delivery;
    test_noise.py tests grouping)."""
    srv = Server(args=["--alert-webhooks", hook.url(), ALLOW, NO_GROUPING]).start()
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def plain():
    """A server without outputs and without the private-target allowance."""
    srv = Server().start()
    yield srv
    srv.close()


@pytest.fixture
def receiver():
    """A receiver of the test's own (stopped at the end)."""
    rec = Receiver().start()
    yield rec
    rec.stop()


# --- startup ---------------------------------------------------------------------------------

def test_startup_line_names_the_outputs(server, plain):
    line = [l for l in server.stdout_lines if "alert outputs:" in l]
    assert len(line) == 1 and "1 webhook(s)" in line[0], server.output()
    line = [l for l in plain.stdout_lines if "alert outputs:" in l]
    assert len(line) == 1 and "none" in line[0].split("alert outputs:", 1)[1], plain.output()


def test_internal_global_webhook_refused_at_startup():
    rc, out, err = start_failing(["--alert-webhooks", "http://127.0.0.1:9/hook"])
    assert rc != 0, (rc, out, err)
    assert "internal address" in out + err, (out, err)
    assert not any(l.strip() == "Ready." for l in out.splitlines()), out


# --- the alert body ------------------------------------------------------------------------------

def check_common(server, post, tok, channel):
    tid = tok["canarytoken"]
    assert post["path"] == "/hook"
    assert post["headers"].get("content-type", "").split(";")[0].strip() == "application/json", post["headers"]
    b = post["body"]
    assert isinstance(b, dict), post["raw"][:300]
    missing = PAYLOAD_FIELDS - set(b)
    assert not missing, (missing, b)
    assert b["trapline_alert"] == 1 and b["test"] is False, b
    assert b["summary"] == "Canarytoken triggered"
    assert b["kind"] == tok["kind"]
    assert b["memo"] == tok["memo"]
    assert b["token_id"] == tid
    assert b["flock_id"] == tok["flock_id"], (b["flock_id"], tok.get("flock_id"))
    assert TIME_RE.match(b["time"]), b["time"]
    assert abs(time.mktime(time.strptime(b["time"], "%Y-%m-%dT%H:%M:%SZ")) - time.mktime(time.gmtime())) < 300, \
        b["time"]
    assert b["channel"] == channel
    assert b["src_ip"] == "127.0.0.1", b["src_ip"]
    assert isinstance(b["src_port"], int) and not isinstance(b["src_port"], bool) and 0 < b["src_port"] < 65536, b
    assert isinstance(b["data"], dict), b
    assert b["token_url"] == f"{server.api_url}canarytoken/fetch?canarytoken={tid}", (b["token_url"], server.api_url)
    assert b["idempotency_key"] and b["idempotency_key"] == post["headers"].get("idempotency-key"), \
        (b["idempotency_key"], post["headers"])
    assert b["incident_id"] not in (None, "", 0) and b["hit_id"] not in (None, "", 0), b
    return b


def same_incident(api_inc_id, alert_inc_id):
    return api_inc_id == alert_inc_id or str(api_inc_id).endswith(f":{alert_inc_id}")


def test_dns_alert_body(server, api, hook):
    tok = api.create_token("dns", memo=unique("dns alert"))
    tid = tok["canarytoken"]
    t0 = time.monotonic()
    name = f"{tid}.{DOMAIN}"
    lookup(server, name)
    post = hook.wait_token(tid, timeout=5)[0]
    assert post["at"] - t0 < 2.0, f"delivered {post['at'] - t0:.2f}s after the hit"
    b = check_common(server, post, tok, "dns")
    assert b["kind_name"] == "DNS"
    assert b["useragent"] is None
    assert b["data"]["query_name"].rstrip(".").lower() == name.lower(), b["data"]
    assert b["data"]["query_type"] == "A", b["data"]
    # it matches the recorded incident, and the outbox row
    inc = api.wait_incidents(tid)[0]
    assert same_incident(inc["id"], b["incident_id"]), (inc["id"], b["incident_id"])
    rows = outbox_for(api, tid, all_=True)
    assert len(rows) == 1, rows
    assert rows[0]["idempotency_key"] == b["idempotency_key"]
    assert rows[0]["incident_id"] == b["incident_id"]
    assert rows[0]["delivered"], rows[0]
    assert rows[0]["output"].get("url") == hook.url(), rows[0]
    # delivered and not pending any more
    assert not outbox_for(api, tid)
    time.sleep(0.5)
    assert len(hook.for_token(tid)) == 1, hook.for_token(tid)


def test_dns_generic_data_decoded_in_alert(server, api, hook):
    tok = api.create_token("dns", memo=unique("generic"))
    tid = tok["canarytoken"]
    text = "secret-report.docx"
    lookup(server, ".".join(b32_labels(text.encode())) + f".G17.{tid}.{DOMAIN}")
    b = hook.wait_token(tid)[0]["body"]
    assert b["data"].get("generic_data") == text, b["data"]


def test_http_alert_body(server, api, hook):
    tok = api.create_token("http", memo=unique("http alert"))
    tid = tok["canarytoken"]
    ua = f"Mozilla/5.0 alert-e2e/{unique('ua')}"
    t0 = time.monotonic()
    r = http_hit(server, tid, headers={"User-Agent": ua, "X-Probe": "probe-value"})
    assert r.status_code == 200
    post = hook.wait_token(tid, timeout=5)[0]
    assert post["at"] - t0 < 2.0, f"delivered {post['at'] - t0:.2f}s after the hit"
    b = check_common(server, post, tok, "http")
    assert b["kind_name"], b
    assert b["useragent"] == ua
    d = b["data"]
    assert d.get("method") == "GET", d
    assert tid in d.get("path", ""), d
    headers = {k.lower(): v for k, v in (d.get("headers") or {}).items()}
    assert headers.get("x-probe") == "probe-value", d
    assert headers.get("user-agent") == ua, d
    time.sleep(0.5)
    assert len(hook.for_token(tid)) == 1


def test_each_hit_is_its_own_alert_with_its_own_key(server, api, hook):
    tid = api.create_token("http", memo=unique("three"))["canarytoken"]
    for i in range(3):
        fire_http(server, tid, i)
    posts = hook.wait_token(tid, count=3)
    time.sleep(0.5)
    posts = hook.for_token(tid)
    assert len(posts) == 3, [p["body"] for p in posts]
    assert len({p["headers"]["idempotency-key"] for p in posts}) == 3
    assert len({p["body"]["hit_id"] for p in posts}) == 3


# --- what is not an alert --------------------------------------------------------------------------

def test_hits_that_are_not_alerts_send_nothing(server, api, hook):
    unknown = random_token_id()
    http_hit(server, unknown)
    lookup(server, f"{unknown}.{DOMAIN}")

    disabled = api.create_token("http", memo=unique("disabled"))["canarytoken"]
    api.ok_post("canarytoken/disable", canarytoken=disabled)
    http_hit(server, disabled)

    l4j = api.create_token("log4shell", memo=unique("l4j bare"))
    lookup(server, l4j["hostname"])

    css = api.create_token("cloned-css", memo=unique("css"), expected_referrer="shop.example.com")
    m = re.search(r"""url\(\s*['"]?([^'")]*%s[^'")]*)['"]?\s*\)""" % css["canarytoken"], css["renders"]["cloned-css"])
    assert m, css["renders"]["cloned-css"]
    r = requests.get(m.group(1), headers={"Referer": "https://shop.example.com/page"}, timeout=10)
    assert r.status_code == 200

    # positive control: a real hit after them is delivered, then nothing else came
    control = api.create_token("http", memo=unique("control"))["canarytoken"]
    fire_http(server, control)
    hook.wait_token(control)
    time.sleep(1.0)
    for tid in (disabled, l4j["canarytoken"], css["canarytoken"]):
        assert hook.for_token(tid) == [], tid
        assert outbox_for(api, tid, all_=True) == [], tid
    assert not any(unknown.encode() in p["raw"] for p in hook.all())


# --- per-token webhook -------------------------------------------------------------------------------

def test_token_webhook_set_changed_and_cleared(server, api, hook, receiver):
    first, second = receiver.url("/tok-a"), receiver.url("/tok-b")
    tok = api.create_token("http", memo=unique("own hook"), alert_webhook_url=first)
    tid = tok["canarytoken"]
    assert tok.get("alert_webhook_url") == first, tok
    assert api.fetch_token(tid).get("alert_webhook_url") == first

    fire_http(server, tid, 1)
    own = receiver.wait_token(tid)[0]
    glob = hook.wait_token(tid)[0]
    assert own["path"] == "/tok-a"
    assert own["body"]["incident_id"] == glob["body"]["incident_id"]
    assert own["body"]["hit_id"] == glob["body"]["hit_id"]
    assert own["headers"]["idempotency-key"] == own["body"]["idempotency_key"]
    assert own["headers"]["idempotency-key"] != glob["headers"]["idempotency-key"]
    same = {k: v for k, v in own["body"].items() if k != "idempotency_key"}
    assert same == {k: v for k, v in glob["body"].items() if k != "idempotency_key"}

    # change it (no memo in the request: the memo stays)
    r = api.post("canarytoken/update", canarytoken=tid, alert_webhook_url=second)
    body = api.ok(r)
    assert body["token"].get("alert_webhook_url") == second, body
    t = api.fetch_token(tid)
    assert t.get("alert_webhook_url") == second and t["memo"] == tok["memo"], t
    fire_http(server, tid, 2)
    got = receiver.wait_token(tid, count=2)
    assert [p["path"] for p in got] == ["/tok-a", "/tok-b"]
    hook.wait_token(tid, count=2)

    # clear it: alerts go to the global output only
    body = api.ok(api.post("canarytoken/update", canarytoken=tid, alert_webhook_url=""))
    assert not body["token"].get("alert_webhook_url"), body
    t = api.fetch_token(tid)
    assert not t.get("alert_webhook_url") and t["memo"] == tok["memo"], t
    fire_http(server, tid, 3)
    hook.wait_token(tid, count=3)
    time.sleep(1.0)
    assert len(receiver.for_token(tid)) == 2, [p["path"] for p in receiver.for_token(tid)]
    assert len(hook.for_token(tid)) == 3


def test_token_webhook_equal_to_global_is_delivered_once(server, api, hook):
    tok = api.create_token("http", memo=unique("dup hook"), alert_webhook_url=hook.url())
    tid = tok["canarytoken"]
    fire_http(server, tid)
    hook.wait_token(tid)
    time.sleep(1.0)
    assert len(hook.for_token(tid)) == 1, [p["body"] for p in hook.for_token(tid)]
    assert len(outbox_for(api, tid, all_=True)) == 1, outbox_for(api, tid, all_=True)


# --- SSRF --------------------------------------------------------------------------------------------

def alert_url_error(resp):
    b = assert_error(resp, 400)
    assert "alert_webhook_url" in (b.get("detail") or ""), b
    return b


@pytest.mark.parametrize("target", BAD_TARGETS)
def test_internal_token_webhook_refused(plain, target):
    api = plain.api()
    memo = unique("ssrf")
    alert_url_error(api.post("canarytoken/create", kind="http", memo=memo, alert_webhook_url=target))
    memos = [t.get("memo") for t in api.ok_get("canarytokens/fetch")["tokens"]]
    assert memo not in memos, "a refused create must not make the token"
    # nor can an existing token be pointed there
    tok = api.create_token("http", memo=unique("ssrf upd"))
    alert_url_error(api.post("canarytoken/update", canarytoken=tok["canarytoken"], alert_webhook_url=target))
    assert not api.fetch_token(tok["canarytoken"]).get("alert_webhook_url")


# --- retries, outages, durability, give-up ------------------------------------------------------------

def test_503_is_retried_until_delivered(server, api, hook, receiver):
    receiver.status = 503
    url = receiver.url("/flaky")
    tid = api.create_token("http", memo=unique("flaky"), alert_webhook_url=url)["canarytoken"]
    fire_http(server, tid)
    # the global output is not held up by the failing one
    hook.wait_token(tid, timeout=3)

    def failed_row():
        rows = outbox_for(api, tid, url=url)
        return rows if rows and rows[0]["attempts"] >= 1 and rows[0]["last_error"] else None
    row = wait_for(failed_row, timeout=5, desc="a failed attempt in the outbox")[0]
    assert "503" in row["last_error"], row
    assert not row["delivered"] and not row["gave_up"], row
    assert row["output"].get("url") == url, row
    assert set(row) >= {"id", "idempotency_key", "output", "canarytoken", "incident_id", "created", "attempts",
                        "last_error", "next_attempt", "delivered", "gave_up"}, row
    assert all(p["status"] == 503 for p in receiver.for_token(tid))

    receiver.status = 200
    ok = receiver.wait_token(tid, ok_only=True, timeout=12)
    assert len(ok) == 1
    wait_for(lambda: not outbox_for(api, tid, url=url), timeout=3, desc="the row leaving the pending list")
    done = [a for a in outbox_for(api, tid, all_=True, url=url)]
    assert len(done) == 1 and done[0]["id"] == row["id"], done
    assert done[0]["delivered"], done[0]
    assert done[0]["attempts"] >= 2, done[0]
    # every attempt carried the row's key; it was accepted exactly once
    posts = receiver.for_token(tid)
    assert {p["headers"].get("idempotency-key") for p in posts} == {row["idempotency_key"]}, posts
    time.sleep(0.5)
    assert delivered_keys(receiver.for_token(tid)) == {row["idempotency_key"]: 1}


def test_receiver_down_then_back_on_same_port(server, api, receiver):
    url = receiver.url("/outage")
    port = receiver.port
    receiver.stop()
    http_tok = api.create_token("http", memo=unique("outage http"), alert_webhook_url=url)["canarytoken"]
    dns_tok = api.create_token("dns", memo=unique("outage dns"), alert_webhook_url=url)["canarytoken"]
    for i in range(3):
        fire_http(server, http_tok, i)
    lookup(server, f"{dns_tok}.{DOMAIN}")
    lookup(server, f"again.{dns_tok}.{DOMAIN}")

    def all_failed():
        rows = outbox_for(api, http_tok, url=url) + outbox_for(api, dns_tok, url=url)
        return rows if len(rows) == 5 and all(r["attempts"] >= 1 and r["last_error"] for r in rows) else None
    rows = wait_for(all_failed, timeout=6, desc="5 failed deliveries while the receiver is down")
    keys = {r["idempotency_key"] for r in rows}
    assert len(keys) == 5

    receiver.start()
    assert receiver.port == port
    wait_for(lambda: len(receiver.for_token(http_tok, True)) >= 3 and len(receiver.for_token(dns_tok, True)) >= 2,
             timeout=15, desc="every queued alert after the receiver came back")
    wait_for(lambda: not (outbox_for(api, http_tok, url=url) + outbox_for(api, dns_tok, url=url)), timeout=3,
             desc="no pending rows")
    time.sleep(1.0)
    posts = receiver.for_token(http_tok) + receiver.for_token(dns_tok)
    assert delivered_keys(posts) == {k: 1 for k in keys}, delivered_keys(posts)
    assert all(p["path"] == "/outage" for p in posts)


def test_queued_alerts_survive_kill9(receiver):
    srv = Server(args=["--alert-webhooks", receiver.url(), ALLOW, NO_GROUPING]).start()
    try:
        api = srv.api()
        http_tok = api.create_token("http", memo=unique("durable"))["canarytoken"]
        dns_tok = api.create_token("dns", memo=unique("durable dns"))["canarytoken"]
        receiver.stop()
        for i in range(4):
            fire_http(srv, http_tok, i)
        for i in range(2):
            lookup(srv, f"k{i}.{dns_tok}.{DOMAIN}")

        def failed():
            rows = outbox(api)
            return rows if len(rows) == 6 and all(r["attempts"] >= 1 for r in rows) else None
        # kill -9 while each row waits for its retry (not while one is in flight)
        keys = {r["idempotency_key"] for r in wait_for(failed, timeout=6, desc="6 failed deliveries")}
        srv.kill9()

        receiver.start()
        srv.start()
        wait_for(lambda: len(receiver.for_token(http_tok, True)) >= 4 and len(receiver.for_token(dns_tok, True)) >= 2,
                 timeout=15, desc="the queued alerts after the restart")
        time.sleep(1.0)
        posts = receiver.for_token(http_tok) + receiver.for_token(dns_tok)
        assert delivered_keys(posts) == {k: 1 for k in keys}, delivered_keys(posts)
        assert outbox(srv.api()) == []
    finally:
        srv.close()


def test_give_up_after_the_configured_age(receiver):
    receiver.status = 503
    srv = Server(args=["--alert-webhooks", receiver.url(), ALLOW, "--alert-give-up-secs", "3"]).start()
    try:
        api = srv.api()
        tid = api.create_token("http", memo=unique("give up"))["canarytoken"]
        fire_http(srv, tid)

        def given_up():
            rows = outbox_for(api, tid, all_=True)
            return rows if rows and rows[0]["gave_up"] else None
        row = wait_for(given_up, timeout=12, interval=0.2, desc="gave_up in the outbox")[0]
        assert not row["delivered"], row
        assert "503" in (row["last_error"] or ""), row
        assert row["attempts"] >= 2, row
        n = len(receiver.for_token(tid))
        assert n == row["attempts"], (n, row)
        # the next backoff step would have been 8 s: wait past it
        time.sleep(9)
        assert len(receiver.for_token(tid)) == n, "a given-up alert was retried"
        assert outbox_for(api, tid, all_=True)[0]["attempts"] == row["attempts"]
    finally:
        srv.close()


# --- a slow receiver does not slow recording ----------------------------------------------------------

def test_slow_receiver_does_not_slow_recording(receiver):
    receiver.delay = 5.0
    srv = Server(args=["--alert-webhooks", receiver.url(), ALLOW]).start()
    try:
        api = srv.api()
        first = api.create_token("http", memo=unique("slow first"))["canarytoken"]
        others = [api.create_token("http", memo=unique("slow other"))["canarytoken"] for _ in range(3)]
        fire_http(srv, first)
        busy_since = receiver.wait_token(first, timeout=3)[0]["at"]

        timings = []
        for i, tid in enumerate(others * 2):
            t0 = time.monotonic()
            fire_http(srv, tid, i)
            timings.append(time.monotonic() - t0)
        assert max(timings) < 1.0, timings
        for tid in others:
            assert len(api.wait_events(tid, count=2, timeout=3)) == 2
        assert time.monotonic() - busy_since < 5.0, "the checks must run while the receiver is still busy"
    finally:
        srv.close()


# --- test alerts ----------------------------------------------------------------------------------------

def check_test_alert(post):
    b = post["body"]
    assert post["path"] == "/hook"
    assert post["headers"].get("content-type", "").split(";")[0].strip() == "application/json"
    assert b["test"] is True and b.get("trapline_alert") == 1, b
    assert "test" in b["summary"].lower(), b
    assert post["headers"].get("idempotency-key"), post["headers"]


def test_console_test_alert(server, api, hook, keys):
    before = len(hook.tests())
    body = api.ok_post("alert/test")
    assert body["outputs"] == 1, body
    got = wait_for(lambda: hook.tests()[before:] or None, timeout=5, desc="the test alert")
    check_test_alert(got[0])

    body = server.api(keys["analyst"]["auth_token"]).ok_post("alert/test")
    assert body["outputs"] == 1, body
    wait_for(lambda: len(hook.tests()) >= before + 2 or None, timeout=5, desc="the analyst's test alert")

    r = server.api(keys["read-only"]["auth_token"]).post("alert/test")
    assert r.status_code == 403, (r.status_code, r.text[:300])
    time.sleep(0.5)
    assert len(hook.tests()) == before + 2


def test_console_test_alert_without_outputs(plain):
    r = plain.api().post("alert/test")
    assert_error(r, 400)


def test_spacesiren_test_alert(server, hook):
    url = root(server) + "test-alert"
    key = server.admin_key
    before = len(hook.tests())
    r = requests.post(url, headers={"X-Key-ID": key["key_id"], "X-Secret-ID": key["secret_id"]}, timeout=10)
    assert r.status_code == 200, (r.status_code, r.text[:300])
    assert isinstance(r.json().get("message"), str) and r.json()["message"], r.text
    got = wait_for(lambda: hook.tests()[before:] or None, timeout=5, desc="the SpaceSiren test alert")
    check_test_alert(got[0])

    for h in ({"X-Key-ID": key["key_id"], "X-Secret-ID": key["secret_id"][:-1] + ("x" if key["secret_id"][-1] != "x" else "y")},
              {"X-Key-ID": "00000000-0000-4000-8000-000000000000", "X-Secret-ID": key["secret_id"]},
              {}):
        r = requests.post(url, headers=h, timeout=10)
        assert r.status_code == 401, (h, r.status_code, r.text[:300])
        assert r.json() == {"error": "Authentication failed."}, r.text
    time.sleep(0.5)
    assert len(hook.tests()) == before + 1


def test_a_slow_output_does_not_hold_back_the_others(server, api, hook, receiver):
    """Deliveries run side by side: while a token's own webhook takes 5 s to answer, the
    alerts of other tokens still reach the healthy global output at once."""
    receiver.delay = 5.0
    slow_tok = api.ok_post("canarytoken/create", kind="http", memo=unique("slow output"),
                           alert_webhook_url=receiver.url())["canarytoken"]["canarytoken"]
    fire_http(server, slow_tok)
    receiver.wait_token(slow_tok, timeout=5)  # the slow delivery is under way
    fast_tok = api.create_token("http", memo=unique("fast output"))["canarytoken"]
    started = time.monotonic()
    fire_http(server, fast_tok)
    got = hook.wait_token(fast_tok, timeout=4)
    assert got[0]["at"] - started < 2.0, got[0]["at"] - started

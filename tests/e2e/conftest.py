"""Shared helpers and fixtures for the Trapline end-to-end tests.

The suite drives the real binary (env ``TRAPLINE_BIN``, default
``<repo>/target/debug/trapline``) over its network interfaces only:
the Canary Console API (raw ``requests`` and the unmodified ``canarytools``
client), the trigger HTTP listener and the DNS listener (UDP and TCP).
Everything listens on 127.0.0.1 with port 0 so tests never collide.

The AWS tests share one moto server per session (fixture `moto`, see awstools.py) and start
Trapline against it with `aws_server` (the same `Server`, with the environment of
`awstools.trapline_aws_env`).
"""

import base64
import json
import os
import random
import re
import shutil
import signal
import socket
import string
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
BIN = os.environ.get("TRAPLINE_BIN") or str(REPO / "target" / "debug" / "trapline")

DOMAIN = "canary.test"
NX_DOMAIN = "nx.canary.test"
READY_TIMEOUT = 30.0

TOKEN_RE = re.compile(r"^[0-9a-z]{25}$")
API_RE = re.compile(r"management API:\s+(http://\S+)")
HTTP_RE = re.compile(r"trigger HTTP:\s+(http://\S+)")
DNS_RE = re.compile(r"DNS \(UDP\+TCP\):\s+(\S+):(\d+)")
SMTP_RE = re.compile(r"SMTP \(inbound\):\s+(\S+):(\d+)")
CLOUDTRAIL_RE = re.compile(r"ingest CloudTrail:\s+(.+)$", re.M)
CREATED_PRINTABLE_RE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \(UTC\)$")
CREATED_STD_RE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\+0000$")

# Every server started by this suite, so a crashed test cannot leak processes.
_ALL_SERVERS = []


def clean_env(extra=None):
    """The current environment without any TRAPLINE_* or AWS_* variable (so a developer's
    shell settings and AWS credentials cannot leak into the server under test), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRAPLINE_", "AWS_"))}
    env.setdefault("RUST_BACKTRACE", "1")
    # The inbound SMTP listener is on by default (127.0.0.1:2525): test servers take a free
    # port instead, so several can run at once. A flag still overrides this.
    env["TRAPLINE_SMTP_LISTEN"] = "127.0.0.1:0"
    if extra:
        env.update(extra)
    return env


def random_token_id():
    return "".join(random.choice(string.ascii_lowercase + string.digits) for _ in range(25))


def unique(prefix="t"):
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def wait_for(fn, timeout=5.0, interval=0.05, desc="condition"):
    """Poll fn() until it returns a truthy value; return that value or fail."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {desc}; last value: {last!r}")
        time.sleep(interval)


class Api:
    """Thin raw client for the Canary Console dialect (auth_token in the query
    string, form-encoded bodies), returning `requests.Response` objects."""

    def __init__(self, base_url, auth_token):
        self.base = base_url if base_url.endswith("/") else base_url + "/"
        self.auth_token = auth_token
        self.s = requests.Session()

    def url(self, endpoint):
        return self.base + endpoint.lstrip("/")

    def _params(self, params, auth):
        p = {}
        tok = self.auth_token if auth is True else auth
        if tok is not None and tok is not False:
            p["auth_token"] = tok
        if params:
            p.update({k: v for k, v in params.items() if v is not None})
        return p

    def get(self, endpoint, auth=True, headers=None, **params):
        return self.s.get(self.url(endpoint), params=self._params(params, auth),
                          headers=headers, timeout=15)

    def post(self, endpoint, auth=True, headers=None, **data):
        return self.s.post(self.url(endpoint), params=self._params(None, auth),
                           data={k: v for k, v in data.items() if v is not None},
                           headers=headers, timeout=15)

    def delete(self, endpoint, auth=True, headers=None, **data):
        return self.s.delete(self.url(endpoint), params=self._params(None, auth),
                             data={k: v for k, v in data.items() if v is not None},
                             headers=headers, timeout=15)

    # --- success helpers -------------------------------------------------
    @staticmethod
    def ok(resp):
        assert resp.status_code == 200, f"{resp.request.method} {resp.url}: {resp.status_code} {resp.text[:500]}"
        body = resp.json()
        assert body.get("result") == "success", body
        return body

    def ok_get(self, endpoint, **params):
        return self.ok(self.get(endpoint, **params))

    def ok_post(self, endpoint, **data):
        return self.ok(self.post(endpoint, **data))

    def ok_delete(self, endpoint, **data):
        return self.ok(self.delete(endpoint, **data))

    # --- domain helpers ---------------------------------------------------
    def create_token(self, kind="http", memo=None, **extra):
        body = self.ok_post("canarytoken/create", kind=kind, memo=memo or unique("memo"), **extra)
        tok = body["canarytoken"]
        assert TOKEN_RE.match(tok["canarytoken"]), tok
        return tok

    def fetch_token(self, token_id):
        return self.ok_get("canarytoken/fetch", canarytoken=token_id)["token"]

    def create_flock(self, name=None):
        body = self.ok_post("flock/create", name=name or unique("flock"))
        return body["flock_id"]

    def incidents(self, which="all"):
        return self.ok_get(f"incidents/{which}")["incidents"]

    def incidents_for(self, token_id, which="all"):
        return [i for i in self.incidents(which) if i.get("canarytoken") == token_id]

    def events_for(self, token_id, which="all"):
        return [ev for inc in self.incidents_for(token_id, which) for ev in inc.get("events", [])
                if ev.get("canarytoken") == token_id]

    def wait_events(self, token_id, count=1, pred=None, timeout=5.0):
        """Wait until at least `count` events of token_id (matching pred) exist."""
        def check():
            evs = [e for e in self.events_for(token_id) if pred is None or pred(e)]
            return evs if len(evs) >= count else None
        return wait_for(check, timeout=timeout, desc=f"{count} event(s) for token {token_id}")

    def wait_incidents(self, token_id, count=1, timeout=5.0):
        def check():
            incs = self.incidents_for(token_id)
            return incs if len(incs) >= count else None
        return wait_for(check, timeout=timeout, desc=f"{count} incident(s) for token {token_id}")


class Server:
    """One `trapline serve` process (restartable on the same data dir)."""

    def __init__(self, data_dir=None, args=None, env=None, cwd=None, default_flags=True,
                 domain=DOMAIN, nx_domain=NX_DOMAIN):
        self._own_tmp = None
        if data_dir is None and default_flags:
            self._own_tmp = tempfile.mkdtemp(prefix="trapline-e2e-")
            data_dir = os.path.join(self._own_tmp, "data")
        self.data_dir = data_dir
        self.extra_args = list(args or [])
        self.env = clean_env(env)
        self.cwd = cwd
        self.default_flags = default_flags
        self.domain = domain
        self.nx_domain = nx_domain
        self.proc = None
        self.stdout_lines = []
        self.stderr_lines = []
        self.admin_key = None          # from the first start of this data dir
        self.key_lines_this_run = []   # admin-key JSON lines printed by the current run
        self.api_url = self.http_url = None
        self.dns_host = None
        self.dns_port = None
        self.smtp_host = self.smtp_port = None   # None when the SMTP listener is off
        self.cloudtrail_line = None   # what follows "ingest CloudTrail:" (None: the listener is off)
        self.starts = 0
        _ALL_SERVERS.append(self)

    # --- process control ---------------------------------------------------
    def command(self):
        cmd = [BIN, "serve"]
        if self.default_flags:
            cmd += [
                "--data-dir", self.data_dir,
                "--api-listen", "127.0.0.1:0",
                "--http-listen", "127.0.0.1:0",
                "--dns-listen", "127.0.0.1:0",
                "--domain", self.domain,
                "--nx-domain", self.nx_domain,
            ]
        return cmd + self.extra_args

    def start(self):
        if not os.path.exists(BIN):
            pytest.fail(f"trapline binary not found at {BIN} (set TRAPLINE_BIN or build it)")
        self.stdout_lines = []
        self.stderr_lines = []
        self.key_lines_this_run = []
        self.api_url = self.http_url = self.dns_host = self.dns_port = None
        ready = threading.Event()
        self.proc = subprocess.Popen(
            self.command(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            env=self.env, cwd=self.cwd, text=True, encoding="utf-8", errors="replace", bufsize=1,
        )
        self.starts += 1
        proc = self.proc
        out, err = self.stdout_lines, self.stderr_lines

        def read_stdout():
            for line in proc.stdout:
                line = line.rstrip("\r\n")
                out.append(line)
                if line.strip() == "Ready.":
                    ready.set()
            ready.set()  # EOF: wake the waiter, it checks the reason

        def read_stderr():
            for line in proc.stderr:
                err.append(line.rstrip("\r\n"))

        readers = [threading.Thread(target=read_stdout, daemon=True),
                   threading.Thread(target=read_stderr, daemon=True)]
        for r in readers:
            r.start()

        if not ready.wait(READY_TIMEOUT) or not any(l.strip() == "Ready." for l in out):
            self._kill_quietly()
            for r in readers:  # the process is gone: take in all it wrote before failing
                r.join(5)
            pytest.fail(f"trapline did not print 'Ready.' within {READY_TIMEOUT}s "
                        f"(exit code {proc.poll()})\n{self.output()}")
        self._parse_startup()
        return self

    def _parse_startup(self):
        text = "\n".join(self.stdout_lines)
        m = API_RE.search(text)
        h = HTTP_RE.search(text)
        d = DNS_RE.search(text)
        if not (m and h and d):
            self._kill_quietly()
            pytest.fail(f"startup output lacks the listener lines\n{self.output()}")
        self.api_url = m.group(1)
        self.http_url = h.group(1)
        self.dns_host, self.dns_port = d.group(1), int(d.group(2))
        smtp = SMTP_RE.search(text)
        self.smtp_host, self.smtp_port = (smtp.group(1), int(smtp.group(2))) if smtp else (None, None)
        ct = CLOUDTRAIL_RE.search(text)
        self.cloudtrail_line = ct.group(1).strip() if ct else None
        for line in self.stdout_lines:
            if line.startswith('{"key_id"'):
                self.key_lines_this_run.append(line)
        if self.key_lines_this_run and self.admin_key is None:
            self.admin_key = json.loads(self.key_lines_this_run[0])

    def output(self):
        return ("---- stdout ----\n" + "\n".join(self.stdout_lines[-200:]) +
                "\n---- stderr ----\n" + "\n".join(self.stderr_lines[-200:]))

    def _kill_quietly(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass

    def stop(self, timeout=10):
        """Graceful stop (SIGTERM), SIGKILL if it does not exit in time."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def kill9(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def restart(self, graceful=True):
        if graceful:
            self.stop()
        else:
            self.kill9()
        return self.start()

    def close(self):
        self.stop()
        if self._own_tmp:
            shutil.rmtree(self._own_tmp, ignore_errors=True)

    @property
    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    # --- convenience -----------------------------------------------------
    @property
    def admin_token(self):
        assert self.admin_key is not None, "no admin key seen for this data dir"
        return self.admin_key["auth_token"]

    def api(self, token=None):
        return Api(self.api_url, token if token is not None else self.admin_token)

    def http_base(self):
        return self.http_url.rstrip("/")

    def create_key(self, role, flock=None):
        return create_key(self.data_dir, role, flock=flock, env=self.env, cwd=self.cwd)


def run_key_create(data_dir, role, flock=None, env=None, cwd=None, extra=None):
    cmd = [BIN, "key", "create", "--role", role]
    if flock:
        cmd += ["--flock", flock]
    if data_dir:
        cmd += ["--data-dir", data_dir]
    cmd += list(extra or [])
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30,
                          env=env or clean_env(), cwd=cwd)


def create_key(data_dir, role, flock=None, env=None, cwd=None):
    """Run `trapline key create` and return the parsed JSON key object."""
    r = run_key_create(data_dir, role, flock=flock, env=env, cwd=cwd)
    assert r.returncode == 0, f"key create failed ({r.returncode}): {r.stdout}\n{r.stderr}"
    objs = [l for l in r.stdout.splitlines() if l.strip()]
    assert len(objs) == 1, f"key create must print exactly one JSON object, got: {r.stdout!r}"
    key = json.loads(objs[0])
    assert key["role"] == role, key
    return key


# --- trigger helpers ---------------------------------------------------------

def trigger_path(token_id, page="index.html"):
    return f"/static/assets/{token_id}/{page}"


def http_hit(server, token_id, method="GET", path=None, **kw):
    url = server.http_base() + (path or trigger_path(token_id))
    return requests.request(method, url, timeout=10, **kw)


def is_gif(body):
    return body[:6] in (b"GIF89a", b"GIF87a")


def gif_dimensions(body):
    return int.from_bytes(body[6:8], "little"), int.from_bytes(body[8:10], "little")


def b32_labels(data: bytes, lower=False):
    enc = base64.b32encode(data).decode().replace("=", "-")
    if lower:
        enc = enc.lower()
    return [enc[i:i + 63] for i in range(0, len(enc), 63)]


def url_path_parts(url):
    return [p for p in urlsplit(url).path.split("/") if p]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# --- fixtures ------------------------------------------------------------------

@pytest.fixture(scope="module")
def server():
    """A server shared by the tests of one module (tests must only rely on the
    tokens, flocks and incidents they created themselves)."""
    srv = Server().start()
    yield srv
    srv.close()


@pytest.fixture
def fresh_server():
    """A brand-new server with its own data dir, for tests that need global state."""
    srv = Server().start()
    yield srv
    srv.close()


@pytest.fixture
def api(server):
    return server.api()


@pytest.fixture
def console(server):
    """The unmodified canarytools client pointed at the shared server."""
    return make_console(server)


def make_console(server, api_key=None):
    import canarytools
    import canarytools.console
    canarytools.console.ROOT = server.api_url
    return canarytools.Console(domain="x", api_key=api_key or server.admin_token)


@pytest.fixture(scope="module")
def keys(server):
    """Keys of each role on the shared server, made with `trapline key create`."""
    return {role: server.create_key(role) for role in ("admin", "analyst", "read-only")}


# --- AWS (moto) ------------------------------------------------------------------------

_MOTOS = []


@pytest.fixture(scope="session")
def moto():
    """One moto server for the session (`moto_server` in its own process group). Tests keep
    apart by unique user, bucket and queue names; `moto.reset()` wipes everything."""
    from awstools import Moto
    m = Moto()
    _MOTOS.append(m)
    m.start()
    yield m
    m.stop()


def aws_server(moto, bucket=None, sqs_url=None, args=None, env=None, data_dir=None, start=True, **settings):
    """A `Server` pointed at moto (see awstools.trapline_aws_env for the environment; `settings`
    are more TRAPLINE_* variables by suffix, `env` anything else), started unless `start` is false."""
    from awstools import trapline_aws_env
    full = trapline_aws_env(moto, bucket=bucket, sqs_url=sqs_url, **settings)
    full.update(env or {})
    srv = Server(data_dir=data_dir, args=args, env=full)
    return srv.start() if start else srv


def pytest_sessionfinish(session, exitstatus):
    for srv in _ALL_SERVERS:
        try:
            srv._kill_quietly()
        except Exception:
            pass
    for m in _MOTOS:
        try:
            m.stop()
        except Exception:
            pass

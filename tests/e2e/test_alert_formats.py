"""Alert outputs in each chat/paging format: Slack (Block Kit), Microsoft Teams (Adaptive
Card), Discord (embed), Google Chat (card v2) and PagerDuty Events v2 — one real hit, and the
exact message shape each receiver gets."""

import re

import pytest

from conftest import Server, unique, wait_for
from kindtools import lookup
from test_alerts import ALLOW, Receiver, start_failing


@pytest.fixture(scope="module")
def sink():
    rec = Receiver().start()
    yield rec
    rec.stop()


@pytest.fixture(scope="module")
def server(sink):
    outputs = ",".join([
        f"slack={sink.url('/slack')}",
        f"teams={sink.url('/teams')}",
        f"discord={sink.url('/discord')}",
        f"gchat={sink.url('/gchat')}",
        f"pagerduty=R0UTINGKEY42@{sink.url('/pd')}",
    ])
    srv = Server(args=["--alert-outputs", outputs, ALLOW]).start()
    yield srv
    srv.close()


def _by_path(sink, memo, expect=5, timeout=5.0):
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = {p["path"]: p for p in sink.all() if memo in p["raw"].decode(errors="replace")}
        if len(got) >= expect:
            return got
        time.sleep(0.05)
    raise AssertionError(f"only {sorted(got)} arrived")


def test_startup_names_the_outputs(server):
    assert "slack, teams, discord, gchat, pagerduty" in server.output()


def test_each_format_gets_the_alert(server, api, sink):
    memo = unique("formats")
    tok = api.create_token("dns", memo=memo)
    lookup(server, tok["hostname"], "A")
    got = _by_path(sink, memo)
    assert set(got) == {"/slack", "/teams", "/discord", "/gchat", "/pd"}
    keys = {p["headers"].get("idempotency-key") for p in got.values()}
    assert len(keys) == 5 and None not in keys, "each output has its own key"

    slack = got["/slack"]["body"]
    assert memo in slack["text"]
    assert slack["blocks"][0] == {"type": "header", "text": {"type": "plain_text", "text": "Canarytoken triggered: DNS"}}
    fields = [f["text"] for b in slack["blocks"] if "fields" in b for f in b["fields"]]
    assert f"*Memo*\n{memo}" in fields
    assert any(f.startswith("*Source*\n127.0.0.1:") for f in fields)

    teams = got["/teams"]["body"]
    assert teams["type"] == "message"
    att = teams["attachments"][0]
    assert att["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = att["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    facts = {f["title"]: f["value"] for b in card["body"] if b["type"] == "FactSet" for f in b["facts"]}
    assert facts["Memo"] == memo and facts["Token"].startswith(tok["canarytoken"])
    assert card["actions"][0]["type"] == "Action.OpenUrl"
    assert card["actions"][0]["url"].endswith(f"canarytoken={tok['canarytoken']}")

    discord = got["/discord"]["body"]
    embed = discord["embeds"][0]
    assert embed["title"] == "Canarytoken triggered: DNS"
    assert {"name": "Memo", "value": memo} == {k: embed["fields"][0][k] for k in ("name", "value")}
    assert isinstance(embed["color"], int) and embed["timestamp"].endswith("Z")

    gchat = got["/gchat"]["body"]
    assert memo in gchat["text"]
    gcard = gchat["cardsV2"][0]["card"]
    assert gcard["header"]["title"] == "Canarytoken triggered: DNS"
    labels = {w["decoratedText"]["topLabel"]: w["decoratedText"]["text"]
              for w in gcard["sections"][0]["widgets"] if "decoratedText" in w}
    assert labels["Memo"] == memo

    pd = got["/pd"]["body"]
    assert pd["routing_key"] == "R0UTINGKEY42" and pd["event_action"] == "trigger"
    assert pd["dedup_key"] == got["/pd"]["headers"]["idempotency-key"]
    assert pd["payload"]["severity"] == "critical"
    assert memo in pd["payload"]["summary"]
    assert pd["payload"]["source"] == "127.0.0.1"
    assert pd["payload"]["class"] == "dns" and pd["payload"]["component"] == tok["canarytoken"]


def test_test_alert_goes_through_every_format(server, api, sink):
    r = api.ok_post("alert/test")
    assert r["outputs"] == 5
    import time
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        posts = [p for p in sink.all() if "test alert" in p["raw"].decode(errors="replace").lower()]
        if len({p["path"] for p in posts}) >= 5:
            break
        time.sleep(0.05)
    paths = {p["path"]: p["body"] for p in posts}
    assert set(paths) == {"/slack", "/teams", "/discord", "/gchat", "/pd"}
    assert paths["/pd"]["payload"]["severity"] == "info"
    assert paths["/slack"]["blocks"][0]["text"]["text"] == "Trapline test alert"


@pytest.mark.parametrize("spec, message", [
    ("irc=https://example.com/x", "unknown output type"),
    ("slack=http://127.0.0.1:9/x", "internal address"),
    ("pagerduty=bad key!", "routing key"),
])
def test_bad_output_specs_refuse_to_start(spec, message):
    rc, out, err = start_failing(["--alert-outputs", spec])
    assert rc != 0
    assert message in err, err
    assert "Ready." not in out


# --- syslog (RFC 5424 over UDP, and over TCP with octet counting) -----------------------------

class SyslogSink:
    """A UDP socket and a TCP listener on 127.0.0.1 that collect syslog messages."""

    def __init__(self):
        import socket
        import threading
        self.messages = []
        self.lock = threading.Lock()
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind(("127.0.0.1", 0))
        self.tcp.listen(8)
        threading.Thread(target=self._udp_loop, daemon=True).start()
        threading.Thread(target=self._tcp_loop, daemon=True).start()

    def _udp_loop(self):
        while True:
            data, _ = self.udp.recvfrom(65535)
            with self.lock:
                self.messages.append(("udp", data.decode()))

    def _tcp_loop(self):
        while True:
            conn, _ = self.tcp.accept()
            buf = b""
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                buf += chunk
            conn.close()
            # RFC 6587 octet counting: "<length> <message>"
            length, _, rest = buf.partition(b" ")
            assert int(length) == len(rest), (length, len(rest))
            with self.lock:
                self.messages.append(("tcp", rest.decode()))

    def wait(self, needle, transports=("udp", "tcp"), timeout=5.0):
        import time
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                got = {t: m for t, m in self.messages if needle in m}
            if set(transports) <= set(got):
                return got
            time.sleep(0.05)
        raise AssertionError(f"syslog messages with {needle!r}: {got}")


def test_syslog_over_udp_and_tcp(api):
    import re
    sink = SyslogSink()
    spec = f"syslog=udp://127.0.0.1:{sink.udp.getsockname()[1]},syslog=tcp://127.0.0.1:{sink.tcp.getsockname()[1]}"
    srv = Server(args=["--alert-outputs", spec]).start()
    try:
        assert "syslog, syslog" in srv.output()
        a = srv.api()
        memo = unique("syslog")
        tok = a.create_token("dns", memo=memo)
        lookup(srv, tok["hostname"], "A")
        got = sink.wait(memo)
        for transport, msg in got.items():
            m = re.match(r"^<(\d+)>1 (\S+) trapline trapline (\d+) hit (\[trapline@32473 [^\]]*\]) (.*)$", msg)
            assert m, (transport, msg)
            assert m.group(1) == "129", "local0.alert"
            assert m.group(2).endswith("Z")
            sd = m.group(4)
            assert f'token="{tok["canarytoken"]}"' in sd and 'kind="dns"' in sd and 'src="127.0.0.1"' in sd
            assert re.search(r'key="[0-9a-f]{12}-hit-\d+-\d+"', sd), sd
            assert m.group(5).startswith("Canarytoken triggered: DNS") and f"Memo: {memo}" in m.group(5)
        # Test alerts arrive as notices.
        a.ok_post("alert/test")
        tests = sink.wait("Trapline test alert")
        assert all(msg.startswith("<133>1 ") and " test [" in msg for msg in tests.values()), tests
    finally:
        srv.close()


def test_bad_syslog_targets_refuse_to_start():
    for spec in ["syslog=udp://127.0.0.1", "syslog=http://127.0.0.1:514"]:
        rc, out, err = start_failing(["--alert-outputs", spec])
        assert rc != 0 and "syslog" in err, err


# --- e-mail (SMTP) ---------------------------------------------------------------------------

class _Collect:
    """aiosmtpd handler keeping (recipients, raw message) of every mail."""

    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


@pytest.fixture
def smtp_sink():
    """A real SMTP receiver on 127.0.0.1; yields (port, handler)."""
    from aiosmtpd.controller import Controller

    from conftest import free_port

    handler = _Collect()
    port = free_port()
    smtpd = Controller(handler, hostname="127.0.0.1", port=port)
    smtpd.start()
    yield port, handler
    smtpd.stop()


def _mails(handler, text, n, timeout=5.0):
    """Mails containing `text`, waiting until there are `n` (or the time is up)."""
    import time
    deadline = time.monotonic() + timeout
    while True:
        got = [(r, m) for r, m in handler.messages if text.encode() in m]
        if len(got) >= n or time.monotonic() >= deadline:
            return got
        time.sleep(0.05)


def test_email_alerts_reach_every_recipient(smtp_sink):
    import email
    from email import policy

    port, handler = smtp_sink
    srv = Server(args=["--smtp-url", f"smtp://127.0.0.1:{port}", "--smtp-from", "Trapline <trapline@example.com>",
                       "--alert-outputs", "email=sec@example.com;ops@example.com"]).start()
    try:
        memo = unique("e-mail")
        tok = srv.api().create_token("dns", memo=memo)
        lookup(srv, tok["hostname"], "A")
        got = _mails(handler, memo, 1)
        assert len(got) == 1, handler.messages
        rcpts, raw = got[0]
        assert sorted(rcpts) == ["ops@example.com", "sec@example.com"]
        msg = email.message_from_bytes(raw, policy=policy.default)
        assert msg["Subject"] == "[Trapline] Canarytoken triggered: DNS"
        assert "trapline@example.com" in msg["From"]
        assert re.match(r"<[0-9a-f]{12}-hit-\d+-0@trapline>", msg["Message-ID"]), msg["Message-ID"]
        text = msg.get_body(("plain",)).get_content()
        html = msg.get_body(("html",)).get_content()
        assert f"Memo: {memo}" in text and tok["canarytoken"] in text
        assert memo in html and "<table>" in html
    finally:
        srv.close()


class _Auth:
    """aiosmtpd authenticator accepting one user."""

    def __init__(self):
        self.logins = []

    def __call__(self, server, session, envelope, mechanism, auth_data):
        from aiosmtpd.smtp import AuthResult
        ok = auth_data.login == b"alerts" and auth_data.password == b"s3cret pass"
        self.logins.append((mechanism, auth_data.login, ok))
        return AuthResult(success=ok)


@pytest.mark.parametrize("mode", ["starttls", "tls"])
def test_email_over_starttls_and_tls_with_a_private_ca(mode, tmp_path):
    """`smtp+starttls://` and `smtps://` verify the server's certificate: a private CA given
    with --smtp-ca-file is trusted, and the password travels only inside TLS."""
    import ssl

    import trustme
    from aiosmtpd.controller import Controller

    from conftest import free_port

    ca = trustme.CA()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))

    handler, auth = _Collect(), _Auth()
    port = free_port()
    if mode == "starttls":
        smtpd = Controller(handler, hostname="127.0.0.1", port=port, tls_context=ctx, require_starttls=True,
                           authenticator=auth, auth_required=True)
        url = f"smtp+starttls://alerts:s3cret%20pass@127.0.0.1:{port}"
    else:
        # aiosmtpd does not count implicit TLS as TLS for AUTH; the socket is TLS all the same.
        smtpd = Controller(handler, hostname="127.0.0.1", port=port, ssl_context=ctx,
                           authenticator=auth, auth_required=True, auth_require_tls=False)
        url = f"smtps://alerts:s3cret%20pass@127.0.0.1:{port}"
    smtpd.start()
    trusting = Server(args=["--smtp-url", url, "--smtp-ca-file", str(ca_file),
                            "--alert-outputs", "email=sec@example.com"]).start()
    untrusting = Server(args=["--smtp-url", url, "--alert-outputs", "email=sec@example.com"]).start()
    try:
        memo = unique(f"mail over {mode}")
        tok = trusting.api().create_token("dns", memo=memo)
        lookup(trusting, tok["hostname"], "A")
        got = _mails(handler, memo, 1)
        assert [r for r, _ in got] == [["sec@example.com"]], trusting.api().ok_get("alerts/outbox")["alerts"]
        assert (b"alerts", True) in [(login, ok) for _, login, ok in auth.logins], auth.logins

        # Without the CA the certificate is not trusted: nothing is sent, the outbox says why.
        memo2 = unique(f"untrusted {mode}")
        api2 = untrusting.api()
        tok2 = api2.create_token("dns", memo=memo2)
        lookup(untrusting, tok2["hostname"], "A")

        def failed():
            rows = api2.ok_get("alerts/outbox")["alerts"]
            return rows if rows and rows[0]["attempts"] >= 1 and rows[0]["last_error"] else None
        rows = wait_for(failed, timeout=8, desc="a failed delivery to the untrusted server")
        assert "cert" in rows[0]["last_error"].lower() or "tls" in rows[0]["last_error"].lower(), rows[0]
        assert _mails(handler, memo2, 1, timeout=0.2) == []
    finally:
        trusting.close()
        untrusting.close()
        smtpd.stop()


def test_unreadable_smtp_ca_file_refuses_to_start(tmp_path):
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    rc, out, err = start_failing(["--smtp-url", "smtps://127.0.0.1:465", "--smtp-ca-file", str(bad)])
    assert rc != 0 and "ca" in err.lower(), err
    rc, out, err = start_failing(["--smtp-url", "smtps://127.0.0.1:465", "--smtp-ca-file", str(tmp_path / "missing.pem")])
    assert rc != 0 and "cannot read smtp ca file" in err.lower(), err


def test_email_outputs_need_an_smtp_server():
    rc, out, err = start_failing(["--alert-outputs", "email=sec@example.com"])
    assert rc != 0 and "--smtp-url" in err, err
    rc, out, err = start_failing(["--alert-outputs", "email=not-an-address"])
    assert rc != 0 and "recipient" in err, err
    rc, out, err = start_failing(["--smtp-url", "http://mail.example.com"])
    assert rc != 0 and "smtp" in err.lower(), err


def test_per_token_alert_email(smtp_sink):
    """`alert_email` on create (and update; empty clears) mails that token's alerts too."""
    import email
    import time
    from email import policy

    from kindtools import assert_error

    port, handler = smtp_sink
    # Grouping off: the three lookups below come from one source and are three alerts.
    srv = Server(args=["--smtp-url", f"smtp://127.0.0.1:{port}", "--incident-window-secs=0"]).start()
    try:
        a = srv.api()
        memo = unique("token mail")
        tok = a.ok_post("canarytoken/create", kind="dns", memo=memo, alert_email="owner@example.com")["canarytoken"]
        assert tok["alert_email"] == "owner@example.com"
        lookup(srv, tok["hostname"], "A")
        got = _mails(handler, memo, 1)
        assert [r for r, _ in got] == [["owner@example.com"]]
        msg = email.message_from_bytes(got[0][1], policy=policy.default)
        assert f"Memo: {memo}" in msg.get_body(("plain",)).get_content()

        # Changed, then cleared, with canarytoken/update (memo untouched).
        t = a.ok_post("canarytoken/update", canarytoken=tok["canarytoken"], alert_email="a@example.com;b@example.com")["token"]
        assert t["alert_email"] == "a@example.com;b@example.com" and t["memo"] == memo
        lookup(srv, "x." + tok["hostname"], "A")
        got = _mails(handler, memo, 2)
        assert sorted(got[1][0]) == ["a@example.com", "b@example.com"]
        t = a.ok_post("canarytoken/update", canarytoken=tok["canarytoken"], alert_email="")["token"]
        assert "alert_email" not in t
        lookup(srv, "y." + tok["hostname"], "A")
        time.sleep(1.0)
        assert len(_mails(handler, memo, 3, timeout=0.5)) == 2, "no mail once cleared"
        assert_error(a.post("canarytoken/create", kind="dns", memo="m", alert_email="not an address"), 400,
                     prefix="Could not process the parameters")
    finally:
        srv.close()


def test_alert_email_needs_an_smtp_server(api):
    from kindtools import assert_error
    body = assert_error(api.post("canarytoken/create", kind="dns", memo="m", alert_email="owner@example.com"), 400,
                        prefix="Could not process the parameters")
    assert "smtp" in body["detail"].lower()

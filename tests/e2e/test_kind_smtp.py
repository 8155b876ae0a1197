"""smtp ("Email Address"): an address `<id>@<zone>`; mail to it, sent the way an intruder's
machine sends it (swaks, Python's smtplib), is one hit with the envelope and what the message
shows of itself. Never a relay: other recipients are refused and nothing is recorded for them."""

import json
import os
import shutil
import smtplib
import ssl
import subprocess
import time

import dns.rcode
import pytest

from conftest import Server, random_token_id, unique
from kindtools import assert_one_incident, dns_query, new_token

KIND = "smtp"
SWAKS = shutil.which("swaks")


def need_swaks():
    if SWAKS is None:
        if os.environ.get("CI"):
            pytest.fail("swaks is required in CI")
        pytest.skip("swaks is not installed (Debian: apt-get install swaks)")


def make_token(api):
    return new_token(api, KIND, "smtp")


def address(tok):
    return tok["renders"][KIND]


def smtp(server, **kw):
    assert server.smtp_port, f"no SMTP listener in the banner\n{server.output()}"
    return smtplib.SMTP(server.smtp_host, server.smtp_port, timeout=10, **kw)


def test_listed_and_rendered_as_an_address(server, api):
    assert api.ok_get("canarytokens/list")["canarytokens"][KIND] == "Email Address"
    tok = make_token(api)
    assert address(tok) == f"{tok['canarytoken']}@{server.domain}"
    assert tok["email"] == address(tok)
    assert api.fetch_token(tok["canarytoken"])["renders"][KIND] == address(tok)


def test_the_zone_names_itself_as_mail_exchanger(server):
    resp = dns_query(server, server.domain, "MX")
    assert resp.rcode() == dns.rcode.NOERROR
    mx = [r for rrset in resp.answer for r in rrset]
    assert [(r.preference, r.exchange.to_text().rstrip(".")) for r in mx] == [(10, server.domain)]
    a = dns_query(server, server.domain, "A")
    assert [r.address for rrset in a.answer for r in rrset] == ["127.0.0.1"], "the exchange has our address"


def test_swaks_with_an_attachment_is_one_incident(server, api, tmp_path):
    need_swaks()
    tok = make_token(api)
    attachment = tmp_path / "passwords.xlsx"
    secret = "TOPSECRETBYTES-" + unique("x")
    attachment.write_text(secret)
    out = subprocess.run(
        [SWAKS, "--server", f"{server.smtp_host}:{server.smtp_port}", "--to", address(tok),
         "--from", "ceo@victim.example", "--helo", "laptop-7.victim.example",
         "--header", "Subject: Q3 payroll", "--body", "see https://evil.example/x and http://b.example/y",
         "--attach", str(attachment)],
        capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "<-  250 2.0.0" in out.stdout, out.stdout

    inc, ev = assert_one_incident(api, tok, KIND, "smtp")
    assert ev["src_host"] == "127.0.0.1"
    assert ev["helo"] == "laptop-7.victim.example"
    assert ev["mail_from"] == "ceo@victim.example"
    assert ev["rcpt_to"] == address(tok)
    assert ev["tls"] is False
    msg = ev["message"]
    assert msg["subject"] == "Q3 payroll"
    assert msg["links"] == ["https://evil.example/x", "http://b.example/y"]
    assert msg["attachments"] == [
        {"filename": "passwords.xlsx", "content_type": "application/octet-stream", "size": len(secret)}]
    hits = api.ok_get("canarytoken/hits", canarytoken=tok["canarytoken"])["hits"]
    assert len(hits) == 1
    assert secret not in json.dumps(hits) and secret not in json.dumps(inc), "never the attachment's bytes"


def test_smtplib_is_never_a_relay(server, api):
    tok = make_token(api)
    http_tok = api.create_token("http", memo=unique("not-a-mailbox"))
    with smtp(server) as s:
        s.ehlo("mailer.example")
        unknown = f"{random_token_id()}@{server.domain}"
        not_mailbox = f"{http_tok['canarytoken']}@{server.domain}"
        refused = s.sendmail("a@b.example", [address(tok), "victim@gmail.com", unknown, not_mailbox],
                             b"Subject: hello\r\n\r\nhi\r\n")
        assert refused == {
            "victim@gmail.com": (550, b"5.7.1 relaying denied"),
            unknown: (550, b"5.1.1 no such user"),
            not_mailbox: (550, b"5.1.1 no such user"),
        }, refused
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            s.sendmail("a@b.example", ["victim@gmail.com"], b"Subject: relay?\r\n\r\nx\r\n")
    inc, ev = assert_one_incident(api, tok, KIND, "smtp")
    assert ev["message"]["subject"] == "hello"
    assert ev["helo"] == "mailer.example"
    assert api.incidents_for(http_tok["canarytoken"]) == [], "a web bug's id is no mailbox"


def test_a_disabled_token_takes_no_mail(server, api):
    tok = make_token(api)
    api.ok_post("canarytoken/disable", canarytoken=tok["canarytoken"])
    with smtp(server) as s:
        s.ehlo("x.example")
        s.mail("a@b.example")
        code, text = s.rcpt(address(tok))
        assert (code, text) == (550, b"5.1.1 no such user")


def test_an_address_probed_without_a_message_is_a_hit(server, api):
    tok = make_token(api)
    with smtp(server) as s:
        s.helo("prober.example")
        s.mail("")
        assert s.rcpt(address(tok))[0] == 250
        s.rset()
    inc, ev = assert_one_incident(api, tok, KIND, "smtp")
    assert ev["helo"] == "prober.example"
    assert "message" not in ev


def test_limits_message_size_and_starttls(tmp_path, request):
    if shutil.which("openssl") is None:
        if os.environ.get("CI"):
            pytest.fail("openssl is required in CI")
        pytest.skip("openssl is not installed")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=trapline.localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    srv = Server(args=["--smtp-max-message-bytes", "4000", "--smtp-tls-cert", str(cert),
                       "--smtp-tls-key", str(key)])
    request.addfinalizer(srv.close)
    srv.start()
    assert any("SMTP (inbound)" in l and "STARTTLS" in l for l in srv.stdout_lines), srv.output()
    api = srv.api()
    tok = make_token(api)
    with smtp(srv) as s:
        code, features = s.ehlo("big.example")
        assert b"SIZE 4000" in features and b"STARTTLS" in features
        with pytest.raises(smtplib.SMTPSenderRefused) as e:
            s.sendmail("a@b.example", [address(tok)], b"Subject: big\r\n\r\n" + b"x" * 5000 + b"\r\n")
        assert e.value.smtp_code == 552
        ctx = ssl.create_default_context(cafile=str(cert))
        ctx.check_hostname = False
        s.starttls(context=ctx)
        code, features = s.ehlo("tls.example")
        assert b"STARTTLS" not in features, "not offered twice"
        assert s.sendmail("a@b.example", [address(tok)], b"Subject: over tls\r\n\r\nhi\r\n") == {}
    inc, ev = assert_one_incident(api, tok, KIND, "smtp")
    assert ev["tls"] is True and ev["helo"] == "tls.example"
    assert ev["message"]["subject"] == "over tls"


def test_the_listener_can_be_turned_off(request):
    srv = Server(args=["--smtp-enabled", "false"])
    request.addfinalizer(srv.close)
    srv.start()
    assert srv.smtp_port is None
    assert not any("SMTP (inbound)" in l for l in srv.stdout_lines)


def test_a_slow_or_silent_client_does_not_hold_the_listener(server, api):
    """Clients that connect and say nothing do not stop others from delivering."""
    import socket
    idle = [socket.create_connection((server.smtp_host, server.smtp_port), timeout=5) for _ in range(5)]
    try:
        tok = make_token(api)
        start = time.monotonic()
        with smtp(server) as s:
            s.ehlo("x.example")
            assert s.sendmail("a@b.example", [address(tok)], b"Subject: s\r\n\r\nb\r\n") == {}
        assert time.monotonic() - start < 5
        assert_one_incident(api, tok, KIND, "smtp")
    finally:
        for c in idle:
            c.close()

"""The audit's alert findings, end to end (see ../shared/spec/audit.md):

- F1: a token fired with curl by an attacker who controls its User-Agent, path and query. What
  reaches Slack, Discord, Teams and Google Chat must not ping anyone, must not render the
  attacker's links, must keep Trapline's own link working, and must stay within each service's
  size limits.
- F4: `alerts/outbox` shows read-only and analyst keys the outputs redacted (type and host, no
  webhook path, no routing key, no URL in `last_error`); admin keys see everything.
- F10: failed deliveries never write a webhook's path, query or userinfo to the server's log.
- F12: the Console API refuses, at configuration time, the internal spellings the old check
  let through (`localhost.`, NAT64, 6to4, IPv4-compatible, site-local, 198.18/15, 240/4).
"""

import json
import socket
import subprocess

import pytest

from conftest import Server, unique, wait_for
from kindtools import assert_error, lookup
from test_alerts import ALLOW, Receiver

# --- F4 and F10: secrets in the outbox and in the log -------------------------------------------------

SLACK_URL = "https://hooks.slack.com/services/T000/B000/SECRETslackPATH"
DISCORD_URL = "https://discord.com/api/webhooks/123/SECRETdiscordTOKEN"
ROUTING_KEY = "R0UTINGKEYSECRET"
TOKEN_HOOK = "https://hooks.example.com/hook/SECRETtokenPATH?sig=SECRETtokenQUERY"


@pytest.fixture(scope="module")
def failing():
    rec = Receiver().start()
    rec.status = 503
    yield rec
    rec.stop()


@pytest.fixture(scope="module")
def secret_server(failing):
    local = f"http://alerts:SECRETuserinfo@127.0.0.1:{failing.port}/SECRETlocalPATH?token=SECRETlocalQUERY"
    outputs = f"slack={SLACK_URL},discord={DISCORD_URL},pagerduty={ROUTING_KEY},webhook={local}"
    srv = Server(args=["--alert-outputs", outputs, ALLOW]).start()
    srv.failing_port = failing.port
    api = srv.api()
    tok = api.create_token("dns", memo=unique("secrets"), alert_webhook_url=TOKEN_HOOK)
    lookup(srv, tok["hostname"], "A")

    def all_failed():
        rows = [r for r in api.ok_get("alerts/outbox", all="1")["alerts"] if r["canarytoken"] == tok["canarytoken"]]
        return rows if len(rows) == 5 and all(r["attempts"] >= 1 and r["last_error"] for r in rows) else None
    srv.rows = wait_for(all_failed, timeout=15, desc="every delivery to have failed once")
    wait_for(lambda: "SECRET" in failing.all()[0]["path"] if failing.all() else None, timeout=5,
             desc="the local receiver to have been reached")
    yield srv
    srv.close()


def test_outbox_is_redacted_for_read_only_and_analyst_keys(secret_server):
    for role in ("read-only", "analyst"):
        key = secret_server.create_key(role)
        r = secret_server.api(key["auth_token"]).get("alerts/outbox", all="1")
        assert r.status_code == 200, r.text[:300]
        assert "SECRET" not in r.text, (role, r.text)
        local = f"http://127.0.0.1:{secret_server.failing_port}/…"
        rows = {(a["output"]["type"], a["output"].get("url")): a for a in r.json()["alerts"]}
        assert set(rows) == {("slack", "https://hooks.slack.com/…"), ("discord", "https://discord.com/…"),
                             ("pagerduty", "https://events.pagerduty.com/…"), ("webhook", local),
                             ("webhook", "https://hooks.example.com/…")}, sorted(rows)
        assert rows[("pagerduty", "https://events.pagerduty.com/…")]["output"]["routing_key"] == "…"
        assert all(a["last_error"] for a in rows.values()), rows
        assert rows[("webhook", local)]["last_error"] == f"POST {local}: HTTP 503", rows[("webhook", local)]


def test_outbox_is_whole_for_admins(secret_server):
    r = secret_server.api().get("alerts/outbox", all="1")
    assert r.status_code == 200
    outputs = [a["output"] for a in r.json()["alerts"]]
    assert {"type": "slack", "url": SLACK_URL} in outputs
    assert {"type": "discord", "url": DISCORD_URL} in outputs
    assert any(o.get("routing_key") == ROUTING_KEY for o in outputs)
    assert {"type": "webhook", "url": TOKEN_HOOK} in outputs


def test_failed_deliveries_keep_secrets_out_of_the_log(secret_server):
    log = secret_server.output()
    assert "alert delivery failed" in log, log
    assert "SECRET" not in log, [l for l in log.splitlines() if "SECRET" in l]
    # The host stays, so an operator can tell which output fails.
    for host in ("hooks.slack.com", "discord.com", "hooks.example.com", "127.0.0.1"):
        assert host in log, host


# --- F12: internal targets refused at configuration -----------------------------------------------------

REFUSED = [
    "http://localhost./x",
    "http://LOCALHOST./x",
    "http://[64:ff9b::7f00:1]/x",
    "http://[64:ff9b::a00:1]/x",
    "http://[::127.0.0.1]/x",
    "http://[2002:7f00:1::]/x",
    "http://[fec0::1]/x",
    "http://198.18.0.1/x",
    "http://240.0.0.1/x",
]


@pytest.fixture(scope="module")
def plain():
    srv = Server().start()
    yield srv
    srv.close()


@pytest.mark.parametrize("target", REFUSED)
def test_internal_spellings_refused_at_configuration(plain, target):
    api = plain.api()
    b = assert_error(api.post("alerts/outputs/add", output=f"webhook={target}"), 400)
    assert "internal" in json.dumps(b), b
    b = assert_error(api.post("canarytoken/create", kind="http", memo=unique("f12"), alert_webhook_url=target), 400)
    assert "alert_webhook_url" in (b.get("detail") or "") and "internal" in json.dumps(b), b
    tok = api.create_token("http", memo=unique("f12 upd"))
    b = assert_error(api.post("canarytoken/update", canarytoken=tok["canarytoken"], alert_webhook_url=target), 400)
    assert "alert_webhook_url" in (b.get("detail") or ""), b
    assert api.ok_get("alerts/outputs")["outputs"] == []


def test_names_the_hosts_file_maps_to_loopback_are_refused(plain):
    try:
        names = [n for n in ("vm", "runsc") if socket.gethostbyname(n).startswith("127.")]
    except OSError:
        names = []
    if not names:
        pytest.skip("no /etc/hosts name other than localhost maps to loopback here")
    b = assert_error(plain.api().post("alerts/outputs/add", output=f"webhook=http://{names[0]}:8080/x"), 400)
    assert "internal" in json.dumps(b), b


def test_an_unresolvable_public_name_is_still_accepted(plain):
    # Machines without outside DNS (CI, this sandbox) configure hooks.slack.com; delivery checks again.
    api = plain.api()
    added = api.ok_post("alerts/outputs/add", output="slack=https://hooks.slack.com/services/T1/B1/X1")["output"]
    api.ok_post("alerts/outputs/delete", output_id=added["id"])

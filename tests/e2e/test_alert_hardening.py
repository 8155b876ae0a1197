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

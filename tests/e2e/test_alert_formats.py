"""Alert outputs in each chat/paging format: Slack (Block Kit), Microsoft Teams (Adaptive
Card), Discord (embed), Google Chat (card v2) and PagerDuty Events v2 — one real hit, and the
exact message shape each receiver gets."""

import pytest

from conftest import Server, unique
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

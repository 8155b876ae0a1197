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

HOSTILE_UA = ("<!channel> <https://evil.example/login|Trapline: session expired, log in again> "
              "@everyone @here [click](https://evil.example) <a href=\"https://evil.example/a\">x</a> "
              "**bold** <@123456> ||spoiler|| ` &amp;")
HOSTILE_PATH = "/static/[login](https://evil.example/p)/@everyone/{tid}/index.html"
HOSTILE_QUERY = "q=@here%20*x*&next=[here](https://evil.example/q)&u=https://evil.example/raw"
CHATS = ("/slack", "/teams", "/discord", "/gchat")
ZWSP = "\u200b"


def strings(v):
    """Every string inside a JSON value."""
    if isinstance(v, str):
        yield v
    elif isinstance(v, dict):
        for x in v.values():
            yield from strings(x)
    elif isinstance(v, list):
        for x in v:
            yield from strings(x)


def curl(url, ua):
    r = subprocess.run(["curl", "-sS", "-g", "-o", "/dev/null", "-w", "%{http_code}", "-A", ua, url],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 0 and r.stdout == "200", (r.returncode, r.stdout, r.stderr)


@pytest.fixture(scope="module")
def sink():
    rec = Receiver().start()
    yield rec
    rec.stop()


@pytest.fixture(scope="module")
def chat_server(sink):
    outputs = ",".join(f"{p[1:]}={sink.url(p)}" for p in CHATS)
    srv = Server(args=["--alert-outputs", outputs, ALLOW, "--incident-window-secs=0"]).start()
    yield srv
    srv.close()


def fire(server, sink, ua, path=HOSTILE_PATH, query=HOSTILE_QUERY):
    """Fires a new http token the way an attacker would; -> (token, {path: body}) of the chats."""
    api = server.api()
    # The memo too: factory and deploy credentials choose it.
    tok = api.create_token("http", memo=unique("hostile") + " <users/all> <https://evil.example|x> @here")
    tid = tok["canarytoken"]
    curl(f"{server.http_base()}{path.format(tid=tid)}?{query}", ua)

    def arrived():
        got = {p["path"]: p["body"] for p in sink.all() if tid in p["raw"].decode(errors="replace")}
        return got if set(CHATS) <= set(got) else None
    return tok, wait_for(arrived, timeout=8, desc="the four chat alerts")


def link_of(server, tid):
    return f"{server.api_url}canarytoken/fetch?canarytoken={tid}"


# --- F1: markup injection ------------------------------------------------------------------------

def test_hostile_hit_is_inert_in_every_chat(chat_server, sink):
    tok, got = fire(chat_server, sink, HOSTILE_UA)
    link = link_of(chat_server, tok["canarytoken"])
    for path in CHATS:
        body = got[path]
        for s in strings(body):
            if s == link:
                continue  # Trapline's own link, as a button or an embed URL
            assert "https://evil" not in s, (path, s)       # no raw link to click
            assert "](" not in s, (path, s)                  # no masked link
            assert "@everyone" not in s and "@here" not in s, (path, s)
        # Nothing is lost: the attacker's text is still there, shown as text.
        assert any("evil.example" in s for s in strings(body)), path

    slack = got["/slack"]
    texts = [slack["text"]] + [f["text"] for b in slack["blocks"] for f in b.get("fields", [])] + \
        [b["text"]["text"] for b in slack["blocks"] if b["type"] == "section" and "text" in b] + \
        [e["text"] for b in slack["blocks"] if b["type"] == "context" for e in b["elements"]]
    for t in texts:
        if t == f"<{link}|Token in Trapline>":
            continue
        assert "<" not in t and ">" not in t, t  # no <!channel>, <url|text>, <@user>
    ua = next(f["text"] for b in slack["blocks"] for f in b.get("fields", []) if f["text"].startswith("*User-Agent*"))
    assert "&lt;!channel&gt;" in ua and "&amp;amp;" in ua, ua
    assert any(e["text"] == f"<{link}|Token in Trapline>"
               for b in slack["blocks"] if b["type"] == "context" for e in b["elements"]), slack["blocks"]

    discord = got["/discord"]
    assert discord["allowed_mentions"] == {"parse": []}, discord.keys()
    embed = discord["embeds"][0]
    assert embed["url"] == link
    ua = next(f["value"] for f in embed["fields"] if f["name"] == "User-Agent")
    for raw in ("<@123456>", "||spoiler||", "**bold**", "[click]"):
        assert raw not in ua, (raw, ua)
    assert "\\<@" in ua and "\\*\\*bold\\*\\*" in ua and "\\|\\|spoiler" in ua, ua

    teams = got["/teams"]["attachments"][0]["content"]
    assert teams["actions"] == [{"type": "Action.OpenUrl", "title": "Token in Trapline", "url": link}]
    facts = {f["title"]: f["value"] for b in teams["body"] if b["type"] == "FactSet" for f in b["facts"]}
    assert "**bold**" not in facts["User-Agent"] and "[click]" not in facts["User-Agent"], facts

    gchat = got["/gchat"]["cardsV2"][0]["card"]
    widgets = gchat["sections"][0]["widgets"]
    labels = {w["decoratedText"]["topLabel"]: w["decoratedText"]["text"] for w in widgets if "decoratedText" in w}
    assert "<a " not in labels["User-Agent"] and "&lt;a href=" in labels["User-Agent"], labels
    buttons = [b for w in widgets if "buttonList" in w for b in w["buttonList"]["buttons"]]
    assert buttons[0]["onClick"]["openLink"]["url"] == link
    text = got["/gchat"]["text"]
    assert "<users/all>" in text.replace(ZWSP, "") and "<users" not in text, text  # no mention of all, no <url|text>
    assert text.count("<") == text.count("<" + ZWSP), text


def test_long_hostile_values_are_cut_within_each_service_limits(chat_server, sink):
    # Ampersands and angle brackets grow the most when escaped; the UA is 8 KiB.
    ua = "&<>" * 2730 + "Z"
    tok, got = fire(chat_server, sink, ua, path="/{tid}/" + "p" * 3000, query="q=" + "[x](y)" * 500)

    slack = got["/slack"]
    fields = [f["text"] for b in slack["blocks"] for f in b.get("fields", [])]
    assert all(len(f) <= 2000 for f in fields), [len(f) for f in fields]
    ua_field = next(f for f in fields if f.startswith("*User-Agent*\n"))
    shown = ua_field.split("\n", 1)[1].replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    assert shown.endswith("…") and len(shown) <= 513 and "Z" not in shown, (len(shown), shown[-20:])
    assert len(slack["text"]) <= 3000 and len(slack["blocks"][0]["text"]["text"]) <= 150

    discord = got["/discord"]
    embed = discord["embeds"][0]
    assert len(discord["content"]) <= 2000 and len(embed["title"]) <= 256 and len(embed["description"]) <= 4096
    assert all(len(f["value"]) <= 1024 and len(f["name"]) <= 256 for f in embed["fields"]), embed["fields"]
    total = len(embed["title"]) + len(embed["description"]) + sum(len(f["name"]) + len(f["value"])
                                                                   for f in embed["fields"])
    assert total <= 6000, total
    assert next(f["value"] for f in embed["fields"] if f["name"] == "User-Agent").endswith("…")

    assert len(json.dumps(got["/teams"]).encode()) <= 28_000
    teams = got["/teams"]["attachments"][0]["content"]
    facts = {f["title"]: f["value"] for b in teams["body"] if b["type"] == "FactSet" for f in b["facts"]}
    assert facts["User-Agent"].endswith("…") and len(facts["User-Agent"].encode()) <= 1024, facts["User-Agent"]
    assert len(json.dumps(got["/gchat"]).encode()) <= 32_000
    widgets = got["/gchat"]["cardsV2"][0]["card"]["sections"][0]["widgets"]
    labels = {w["decoratedText"]["topLabel"]: w["decoratedText"]["text"] for w in widgets if "decoratedText" in w}
    assert labels["User-Agent"].endswith("…") and len(labels["User-Agent"].encode()) <= 1024, labels["User-Agent"]


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


def test_token_webhook_is_redacted_for_keys_that_cannot_change_tokens(secret_server):
    """The same secret on the token itself (canarytoken/fetch, canarytokens/fetch, paginate):
    whole for those who may set it (analysts, admins), its host for read-only keys."""
    admin = secret_server.api()
    tid = next(t["canarytoken"] for t in admin.ok_get("canarytokens/fetch")["tokens"]
               if t.get("alert_webhook_url") == TOKEN_HOOK)
    ro = secret_server.api(secret_server.create_key("read-only")["auth_token"])
    for body in (ro.ok_get("canarytoken/fetch", canarytoken=tid)["token"],
                 next(t for t in ro.ok_get("canarytokens/fetch")["tokens"] if t["canarytoken"] == tid),
                 next(t for t in ro.ok_get("canarytokens/paginate", limit="100")["canarytokens"]
                      if t["canarytoken"] == tid)):
        assert body["alert_webhook_url"] == "https://hooks.example.com/…", body
    analyst = secret_server.api(secret_server.create_key("analyst")["auth_token"])
    assert analyst.ok_get("canarytoken/fetch", canarytoken=tid)["token"]["alert_webhook_url"] == TOKEN_HOOK

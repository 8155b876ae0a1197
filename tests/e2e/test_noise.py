"""Alert noise control: incident grouping (same source within a sliding window), per-token and
server-wide cooldown / hourly rate limit (throttled incidents are stored but silent), per-token
ignore lists, the `canarytoken/hits` listing of every stored hit, and the alert outputs API
(global and per-flock webhooks added at run time).

Every hit comes from a real client: `curl --interface 127.0.0.N` for HTTP and `dig -b 127.0.0.N`
for DNS, so each test picks its source addresses on the loopback network.
"""

import re
import subprocess
import time

import pytest

from conftest import Server, unique, wait_for
from kindtools import assert_error
# `hook` (the main server's webhook receiver) and `receiver` (a test's own) are test_alerts' fixtures.
from test_alerts import ALLOW, NO_GROUPING, PAYLOAD_FIELDS, hook, receiver, same_incident, start_failing  # noqa: F401

# The main server ignores this source outright (`--ignore-sources`); no other test uses it.
SERVER_IGNORED = "127.0.0.9"
IDEMPOTENCY_RE = re.compile(r"^([0-9a-f]{12})-hit-(\d+)-(\d+)$")
INCIDENT_ID_RE = re.compile(r"^incident:canarytoken:(\d+)$")
HIT_FIELDS = {"id", "incident_id", "alert_status", "type", "src_host", "src_port", "timestamp"}
SETTLE = 0.6  # after the last expected alert: time for an unexpected one to arrive


# --- real clients ------------------------------------------------------------------------------

def curl(srv, tid, src="127.0.0.1"):
    """One GET of the token's trigger path from source address `src`."""
    url = f"{srv.http_base()}/x/{tid}/p.gif"
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5",
                          "--interface", src, url], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0 and out.stdout == "200", (src, out.returncode, out.stdout, out.stderr)


def dig(srv, name, rdtype="A", src="127.0.0.1"):
    """One UDP query from `src` to the server's DNS listener; -> the answer lines."""
    out = subprocess.run(["dig", "+short", "+tries=1", "+time=3", "-b", src, "-p", str(srv.dns_port),
                          f"@{srv.dns_host}", name, rdtype], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, (name, rdtype, out.stdout, out.stderr)
    return out.stdout.split()


def hits(api, tid, **params):
    return api.ok_get("canarytoken/hits", canarytoken=tid, **params)["hits"]


def wait_hits(api, tid, count, timeout=5.0):
    """Wait until exactly `count` hits of tid are stored (fails on more)."""
    def check():
        got = hits(api, tid)
        assert len(got) <= count, got
        return got if len(got) == count else None
    return wait_for(check, timeout=timeout, desc=f"{count} stored hit(s) of {tid}")


def hit_http(srv, api, tid, src, n):
    """curl from `src`, then wait for it to be the token's n-th stored hit (hits are processed
    one after the other, so grouping sees them in order)."""
    curl(srv, tid, src)
    return wait_hits(api, tid, n)[0]


def hit_dns(srv, api, name, tid, rdtype, src, n):
    dig(srv, name, rdtype, src)
    return wait_hits(api, tid, n)[0]


def incidents(api, tid):
    """The token's incidents, oldest first, each with its events oldest first."""
    incs = api.incidents_for(tid)
    return sorted(incs, key=lambda i: int(INCIDENT_ID_RE.match(i["id"]).group(1)))


def statuses(inc):
    return [e["alert_status"] for e in inc["events"]]


def settled_posts(rec, tid, count):
    """Wait for `count` webhook POSTs for tid, give stragglers time, and return exactly them."""
    if count:
        rec.wait_token(tid, count=count)
    time.sleep(SETTLE)
    posts = rec.for_token(tid)
    assert len(posts) == count, [p["body"] for p in posts]
    return posts


def check_alert_body(post, tid, src, hit):
    """A webhook alert for `hit` (as canarytoken/hits lists it), sent by a server for token tid."""
    b = post["body"]
    assert isinstance(b, dict), post["raw"][:300]
    assert not PAYLOAD_FIELDS - set(b), PAYLOAD_FIELDS - set(b)
    assert b["test"] is False
    assert b["token_id"] == tid
    assert b["src_ip"] == src
    assert b["hit_id"] == hit["id"], (b["hit_id"], hit)
    assert same_incident(hit["incident_id"], b["incident_id"]), (hit["incident_id"], b["incident_id"])
    m = IDEMPOTENCY_RE.match(b["idempotency_key"])
    assert m, b["idempotency_key"]
    assert m.group(2) == str(hit["id"]), (b["idempotency_key"], hit["id"])
    assert post["headers"].get("idempotency-key") == b["idempotency_key"]
    return b


def key_api(srv, key):
    return srv.api(key["auth_token"])


# --- fixtures --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(hook):
    """Default grouping (60 s window), no default cooldown or rate limit, one global webhook,
    and one ignored source."""
    srv = Server(args=["--alert-webhooks", hook.url(), ALLOW, "--ignore-sources", SERVER_IGNORED]).start()
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def api(server):
    return server.api()


@pytest.fixture(scope="module")
def keys(server):
    return {role: server.create_key(role) for role in ("analyst", "read-only")}


@pytest.fixture(scope="module")
def defaults_server(hook):
    """Server-wide defaults: alert once per token, and at most 2 alerts per token per hour."""
    srv = Server(args=["--alert-webhooks", hook.url(), ALLOW, "--alert-cooldown-secs=-1",
                       "--alert-max-per-hour", "2"]).start()
    yield srv
    srv.close()


# --- 1. grouping -----------------------------------------------------------------------------------

def test_dns_a_then_aaaa_is_one_incident_one_alert(server, api, hook):
    tok = api.create_token("dns", memo=unique("group dns"))
    tid, name = tok["canarytoken"], tok["hostname"]
    assert dig(server, name, "A") == ["127.0.0.1"]
    first = wait_hits(api, tid, 1)[0]
    dig(server, name, "AAAA")
    all_hits = wait_hits(api, tid, 2)
    incs = incidents(api, tid)
    assert len(incs) == 1, incs
    inc = incs[0]
    assert inc["alerted"] == "True", inc
    assert inc["events_count"] == "2", inc
    assert statuses(inc) == ["alerted", "grouped"], inc["events"]
    assert [e["query_type"] for e in inc["events"]] == ["A", "AAAA"], inc["events"]
    assert [h["alert_status"] for h in all_hits] == ["grouped", "alerted"], all_hits
    assert {h["incident_id"] for h in all_hits} == {inc["id"]}
    post = settled_posts(hook, tid, 1)[0]
    b = check_alert_body(post, tid, "127.0.0.1", first)
    assert b["data"]["query_type"] == "A", b["data"]


def test_http_same_source_groups_other_source_opens_new_incident(server, api, hook):
    tid = api.create_token("http", memo=unique("group http"))["canarytoken"]
    h1 = hit_http(server, api, tid, "127.0.0.1", 1)
    h2 = hit_http(server, api, tid, "127.0.0.1", 2)
    h3 = hit_http(server, api, tid, "127.0.0.2", 3)
    h4 = hit_http(server, api, tid, "127.0.0.1", 4)
    incs = incidents(api, tid)
    assert [(i["src_host"], len(i["events"]), i["alerted"]) for i in incs] == \
        [("127.0.0.1", 3, "True"), ("127.0.0.2", 1, "True")], incs
    assert statuses(incs[0]) == ["alerted", "grouped", "grouped"]
    assert statuses(incs[1]) == ["alerted"]
    assert [h["alert_status"] for h in (h1, h2, h3, h4)] == ["alerted", "grouped", "alerted", "grouped"]
    assert h1["incident_id"] == h2["incident_id"] == h4["incident_id"] == incs[0]["id"]
    assert h3["incident_id"] == incs[1]["id"]
    posts = settled_posts(hook, tid, 2)
    by_src = {p["body"]["src_ip"]: p for p in posts}
    assert set(by_src) == {"127.0.0.1", "127.0.0.2"}, [p["body"] for p in posts]
    check_alert_body(by_src["127.0.0.1"], tid, "127.0.0.1", h1)
    check_alert_body(by_src["127.0.0.2"], tid, "127.0.0.2", h3)
    assert posts[0]["body"]["idempotency_key"] != posts[1]["body"]["idempotency_key"]


def test_acknowledged_incident_is_not_joined(server, api, hook):
    tid = api.create_token("http", memo=unique("ack"))["canarytoken"]
    hit_http(server, api, tid, "127.0.0.3", 1)
    hit_http(server, api, tid, "127.0.0.3", 2)
    first = incidents(api, tid)
    assert len(first) == 1 and len(first[0]["events"]) == 2, first
    hook.wait_token(tid, count=1)
    assert api.ok_post("incident/acknowledge", incident=first[0]["id"])["result"] == "success"
    h3 = hit_http(server, api, tid, "127.0.0.3", 3)
    incs = incidents(api, tid)
    assert len(incs) == 2, incs
    assert incs[0]["id"] == first[0]["id"] and incs[0]["acknowledged"] == "True"
    assert len(incs[0]["events"]) == 2, "the acknowledged incident got no more events"
    assert incs[1]["acknowledged"] == "False" and incs[1]["alerted"] == "True"
    assert statuses(incs[1]) == ["alerted"]
    assert h3["incident_id"] == incs[1]["id"] and h3["alert_status"] == "alerted"
    posts = settled_posts(hook, tid, 2)
    check_alert_body(posts[1], tid, "127.0.0.3", h3)


def test_window_zero_every_hit_is_its_own_incident(hook):
    srv = Server(args=["--alert-webhooks", hook.url(), ALLOW, NO_GROUPING]).start()
    try:
        api = srv.api()
        tid = api.create_token("http", memo=unique("no grouping"))["canarytoken"]
        got = [hit_http(srv, api, tid, "127.0.0.1", n) for n in (1, 2, 3)]
        incs = incidents(api, tid)
        assert [len(i["events"]) for i in incs] == [1, 1, 1], incs
        assert all(i["alerted"] == "True" and statuses(i) == ["alerted"] for i in incs), incs
        assert len({h["incident_id"] for h in got}) == 3, got
        posts = settled_posts(hook, tid, 3)
        assert sorted(p["body"]["hit_id"] for p in posts) == sorted(h["id"] for h in got)
    finally:
        srv.close()


def test_window_slides_from_the_sources_last_hit(hook):
    """Window 1 s: hits 0.6 s apart keep joining (past 1 s after the first); a 1.6 s pause opens
    a new incident."""
    srv = Server(args=["--alert-webhooks", hook.url(), ALLOW, "--incident-window-secs", "1"]).start()
    try:
        api = srv.api()
        tid = api.create_token("http", memo=unique("sliding"))["canarytoken"]
        for n in (1, 2, 3):
            if n > 1:
                time.sleep(0.6)
            hit_http(srv, api, tid, "127.0.0.1", n)
        time.sleep(1.6)
        hit_http(srv, api, tid, "127.0.0.1", 4)
        incs = incidents(api, tid)
        assert [statuses(i) for i in incs] == [["alerted", "grouped", "grouped"], ["alerted"]], incs
        settled_posts(hook, tid, 2)
    finally:
        srv.close()


# --- 2. per-token settings ------------------------------------------------------------------------

def test_token_settings_create_fetch_update_clear(api):
    plain = api.create_token("http", memo=unique("no settings"))
    assert not {"alert_cooldown", "alert_max_per_hour", "ignore_sources"} & set(plain), plain

    tok = api.create_token("http", memo=unique("settings"), alert_cooldown="300", alert_max_per_hour="5",
                           ignore_sources="127.0.0.2/32,10.0.0.0/8")
    tid = tok["canarytoken"]
    want = {"alert_cooldown": 300, "alert_max_per_hour": 5, "ignore_sources": "127.0.0.2/32,10.0.0.0/8"}
    assert {k: tok.get(k) for k in want} == want, tok
    fetched = api.fetch_token(tid)
    assert {k: fetched.get(k) for k in want} == want, fetched
    assert type(fetched["alert_cooldown"]) is int and type(fetched["alert_max_per_hour"]) is int

    # change one, the others stay; the memo stays
    body = api.ok_post("canarytoken/update", canarytoken=tid, alert_cooldown="-1")
    assert body["token"].get("alert_cooldown") == -1, body
    fetched = api.fetch_token(tid)
    assert (fetched.get("alert_cooldown"), fetched.get("alert_max_per_hour"), fetched.get("ignore_sources"),
            fetched["memo"]) == (-1, 5, "127.0.0.2/32,10.0.0.0/8", tok["memo"]), fetched

    # boundaries are accepted
    api.ok_post("canarytoken/update", canarytoken=tid, alert_cooldown="2592000", alert_max_per_hour="100000")
    fetched = api.fetch_token(tid)
    assert (fetched.get("alert_cooldown"), fetched.get("alert_max_per_hour")) == (2592000, 100000), fetched
    api.ok_post("canarytoken/update", canarytoken=tid, alert_cooldown="0", alert_max_per_hour="0")
    fetched = api.fetch_token(tid)
    assert (fetched.get("alert_cooldown"), fetched.get("alert_max_per_hour")) == (0, 0), fetched

    # empty values clear back to the server default
    body = api.ok_post("canarytoken/update", canarytoken=tid, alert_cooldown="", alert_max_per_hour="",
                       ignore_sources="")
    assert not {"alert_cooldown", "alert_max_per_hour", "ignore_sources"} & set(body["token"]), body
    fetched = api.fetch_token(tid)
    assert not {"alert_cooldown", "alert_max_per_hour", "ignore_sources"} & set(fetched), fetched
    assert fetched["memo"] == tok["memo"]

    # 100 ignore entries are accepted
    many = ",".join(f"10.1.{i}.0/24" for i in range(100))
    api.ok_post("canarytoken/update", canarytoken=tid, ignore_sources=many)
    assert api.fetch_token(tid).get("ignore_sources") == many


BAD_SETTINGS = [
    ("alert_cooldown", "-5"),
    ("alert_cooldown", "-2"),
    ("alert_cooldown", "abc"),
    ("alert_cooldown", "2592001"),
    ("alert_max_per_hour", "-1"),
    ("alert_max_per_hour", "100001"),
    ("alert_max_per_hour", "many"),
    ("ignore_sources", "banana"),
    ("ignore_sources", "10.0.0.1/8"),
    ("ignore_sources", ",".join(f"10.2.{i}.0/24" for i in range(101))),
]


@pytest.mark.parametrize("param,value", BAD_SETTINGS, ids=[f"{p}={v[:12]}" for p, v in BAD_SETTINGS])
def test_bad_token_settings_refused(api, param, value):
    memo = unique("bad setting")
    assert_error(api.post("canarytoken/create", kind="http", memo=memo, **{param: value}), 400)
    memos = [t.get("memo") for t in api.ok_get("canarytokens/fetch")["tokens"]]
    assert memo not in memos, "a refused create must not make the token"

    tok = api.create_token("http", memo=unique("bad update"), alert_cooldown="60", alert_max_per_hour="3",
                           ignore_sources="192.0.2.0/24")
    assert_error(api.post("canarytoken/update", canarytoken=tok["canarytoken"], **{param: value}), 400)
    fetched = api.fetch_token(tok["canarytoken"])
    assert (fetched.get("alert_cooldown"), fetched.get("alert_max_per_hour"), fetched.get("ignore_sources")) == \
        (60, 3, "192.0.2.0/24"), fetched


# --- 3. throttling ----------------------------------------------------------------------------------

def test_cooldown_minus_one_alerts_only_on_the_first_incident(server, api, hook):
    tid = api.create_token("http", memo=unique("once"), alert_cooldown="-1")["canarytoken"]
    h1 = hit_http(server, api, tid, "127.0.0.1", 1)
    h2 = hit_http(server, api, tid, "127.0.0.2", 2)
    h3 = hit_http(server, api, tid, "127.0.0.2", 3)   # joins the throttled incident
    h4 = hit_http(server, api, tid, "127.0.0.3", 4)
    incs = incidents(api, tid)
    assert [(i["src_host"], i["alerted"], statuses(i)) for i in incs] == [
        ("127.0.0.1", "True", ["alerted"]),
        ("127.0.0.2", "False", ["throttled", "grouped"]),
        ("127.0.0.3", "False", ["throttled"]),
    ], incs
    for inc in incs[1:]:
        reason = inc["events"][0].get("throttled")
        assert isinstance(reason, str) and "cooldown" in reason, inc["events"][0]
    assert "throttled" not in incs[0]["events"][0]
    assert [h["alert_status"] for h in (h1, h2, h3, h4)] == ["alerted", "throttled", "grouped", "throttled"]
    assert "cooldown" in h2.get("throttled", "") and "cooldown" in h4.get("throttled", ""), (h2, h4)
    post = settled_posts(hook, tid, 1)[0]
    check_alert_body(post, tid, "127.0.0.1", h1)


def test_cooldown_counts_from_the_last_alert(server, api, hook):
    """Cooldown 2 s: the second incident (1.2 s after the alert) is throttled; the third, 2.3 s
    after the alert but only 1.1 s after the throttled one, alerts; a fourth at once is throttled."""
    tid = api.create_token("http", memo=unique("cooldown"), alert_cooldown="2")["canarytoken"]
    h1 = hit_http(server, api, tid, "127.0.0.1", 1)
    t0 = time.monotonic()
    time.sleep(1.2)
    h2 = hit_http(server, api, tid, "127.0.0.2", 2)
    time.sleep(max(0.0, 2.3 - (time.monotonic() - t0)))
    h3 = hit_http(server, api, tid, "127.0.0.3", 3)
    h4 = hit_http(server, api, tid, "127.0.0.4", 4)
    assert [h["alert_status"] for h in (h1, h2, h3, h4)] == ["alerted", "throttled", "alerted", "throttled"], \
        [(h["src_host"], h["alert_status"], h.get("throttled")) for h in (h1, h2, h3, h4)]
    assert "cooldown" in h2["throttled"] and "cooldown" in h4["throttled"], (h2, h4)
    incs = incidents(api, tid)
    assert [i["alerted"] for i in incs] == ["True", "False", "True", "False"], incs
    posts = settled_posts(hook, tid, 2)
    assert [p["body"]["src_ip"] for p in posts] == ["127.0.0.1", "127.0.0.3"]
    check_alert_body(posts[1], tid, "127.0.0.3", h3)


def test_token_rate_limit_throttles_the_third_incident(server, api, hook):
    tid = api.create_token("http", memo=unique("rate"), alert_max_per_hour="2")["canarytoken"]
    got = [hit_http(server, api, tid, f"127.0.0.{n}", n) for n in (1, 2, 3)]
    assert [h["alert_status"] for h in got] == ["alerted", "alerted", "throttled"], got
    assert "rate limit" in got[2].get("throttled", ""), got[2]
    incs = incidents(api, tid)
    assert [i["alerted"] for i in incs] == ["True", "True", "False"], incs
    assert "rate limit" in incs[2]["events"][0].get("throttled", ""), incs[2]["events"][0]
    posts = settled_posts(hook, tid, 2)
    assert sorted(p["body"]["src_ip"] for p in posts) == ["127.0.0.1", "127.0.0.2"]


# --- 4. ignored sources --------------------------------------------------------------------------------

def test_token_ignore_list_stores_hits_silently(server, api, hook):
    tok = api.create_token("http", memo=unique("token ignore"), ignore_sources="127.0.0.2/32,127.0.0.4/31")
    tid = tok["canarytoken"]
    assert tok.get("ignore_sources") == "127.0.0.2/32,127.0.0.4/31", tok
    ign = [hit_http(server, api, tid, src, n) for n, src in enumerate(["127.0.0.2", "127.0.0.5", "127.0.0.4"], 1)]
    ok = hit_http(server, api, tid, "127.0.0.1", 4)
    for h in ign:
        assert h["alert_status"] == "ignored" and h["incident_id"] is None, h
        assert h.get("ignored") == "source is on the token's ignore list", h
    assert ok["alert_status"] == "alerted" and "ignored" not in ok, ok
    incs = incidents(api, tid)
    assert [(i["src_host"], statuses(i)) for i in incs] == [("127.0.0.1", ["alerted"])], incs
    assert api.fetch_token(tid)["triggered_count"] == 1
    post = settled_posts(hook, tid, 1)[0]
    check_alert_body(post, tid, "127.0.0.1", ok)

    # clearing the list: the source alerts again
    api.ok_post("canarytoken/update", canarytoken=tid, ignore_sources="")
    again = hit_http(server, api, tid, "127.0.0.2", 5)
    assert again["alert_status"] == "alerted" and again["incident_id"] is not None, again
    posts = settled_posts(hook, tid, 2)
    check_alert_body(posts[1], tid, "127.0.0.2", again)


def test_server_ignore_list_hit_is_stored_without_incident(server, api, hook):
    tok = api.create_token("dns", memo=unique("server ignore"))
    tid = tok["canarytoken"]
    ign = hit_dns(server, api, tok["hostname"], tid, "A", SERVER_IGNORED, 1)
    assert ign["alert_status"] == "ignored" and ign["incident_id"] is None, ign
    assert ign["src_host"] == SERVER_IGNORED and ign["type"] == "dns", ign
    assert "ignore list" in ign.get("ignored", ""), ign
    ok = hit_dns(server, api, tok["hostname"], tid, "A", "127.0.0.1", 2)
    assert ok["alert_status"] == "alerted", ok
    incs = incidents(api, tid)
    assert [(i["src_host"], statuses(i)) for i in incs] == [("127.0.0.1", ["alerted"])], incs
    settled_posts(hook, tid, 1)


# --- 5. canarytoken/hits ---------------------------------------------------------------------------------

def test_hits_lists_every_hit_newest_first(server, api, keys):
    tid = api.create_token("http", memo=unique("hits"), alert_cooldown="-1",
                           ignore_sources="127.0.0.6/32")["canarytoken"]
    for n, src in enumerate(["127.0.0.1", "127.0.0.1", "127.0.0.6", "127.0.0.2"], 1):
        hit_http(server, api, tid, src, n)
    got = hits(api, tid)
    assert [(h["src_host"], h["alert_status"]) for h in got] == [
        ("127.0.0.2", "throttled"), ("127.0.0.6", "ignored"), ("127.0.0.1", "grouped"), ("127.0.0.1", "alerted"),
    ], got
    for h in got:
        assert not HIT_FIELDS - set(h), (HIT_FIELDS - set(h), h)
        assert h["type"] == "http"
        assert type(h["id"]) is int and type(h["src_port"]) is int and 0 < h["src_port"] < 65536, h
        assert isinstance(h["timestamp"], str) and h["timestamp"], h
        assert tid in h.get("path", ""), h
    ids = [h["id"] for h in got]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 4, ids
    assert [float(h["timestamp"]) for h in got] == sorted((float(h["timestamp"]) for h in got), reverse=True)
    incs = incidents(api, tid)
    assert len(incs) == 2, incs
    assert got[3]["incident_id"] == got[2]["incident_id"] == incs[0]["id"]
    assert got[1]["incident_id"] is None and got[0]["incident_id"] == incs[1]["id"]
    assert "cooldown" in got[0]["throttled"], got[0]
    assert "ignored" in got[1] and "throttled" not in got[1], got[1]

    # limit, POST, a read-only key, an unknown token
    assert hits(api, tid, limit="2") == got[:2]
    assert api.ok_post("canarytoken/hits", canarytoken=tid)["hits"] == got
    ro = key_api(server, keys["read-only"])
    assert ro.ok_get("canarytoken/hits", canarytoken=tid)["hits"] == got
    assert_error(api.get("canarytoken/hits", canarytoken="0" * 25), 404)


# --- 6. server-wide defaults -------------------------------------------------------------------------------

def test_server_default_cooldown_alerts_once_unless_token_overrides(defaults_server, hook):
    api = defaults_server.api()
    default_tok = api.create_token("http", memo=unique("default once"))
    assert "alert_cooldown" not in default_tok and "alert_max_per_hour" not in default_tok, default_tok
    d = default_tok["canarytoken"]
    got = [hit_http(defaults_server, api, d, src, n) for n, src in enumerate(["127.0.0.1", "127.0.0.2"], 1)]
    assert [h["alert_status"] for h in got] == ["alerted", "throttled"], got
    assert "cooldown" in got[1]["throttled"], got[1]

    over = api.create_token("http", memo=unique("override"), alert_cooldown="0", alert_max_per_hour="0")["canarytoken"]
    got2 = [hit_http(defaults_server, api, over, f"127.0.0.{n}", n) for n in (1, 2, 3)]
    assert [h["alert_status"] for h in got2] == ["alerted"] * 3, got2
    assert [i["alerted"] for i in incidents(api, over)] == ["True"] * 3
    settled_posts(hook, d, 1)
    settled_posts(hook, over, 3)


def test_server_default_rate_limit(defaults_server, hook):
    api = defaults_server.api()
    tid = api.create_token("http", memo=unique("default rate"), alert_cooldown="0")["canarytoken"]
    got = [hit_http(defaults_server, api, tid, f"127.0.0.{n}", n) for n in (1, 2, 3)]
    assert [h["alert_status"] for h in got] == ["alerted", "alerted", "throttled"], got
    assert "rate limit" in got[2]["throttled"], got[2]
    assert [i["alerted"] for i in incidents(api, tid)] == ["True", "True", "False"]
    posts = settled_posts(hook, tid, 2)
    assert sorted(p["body"]["src_ip"] for p in posts) == ["127.0.0.1", "127.0.0.2"]


# --- 7. alert outputs API -----------------------------------------------------------------------------------

def outputs(api):
    return api.ok_get("alerts/outputs")


def test_outputs_api_add_list_deliver_delete(server, api, hook, receiver):
    listing = outputs(api)
    assert listing["configured"] == [{"type": "webhook", "url": hook.url()}], listing
    before = {o["id"] for o in listing["outputs"]}

    url = receiver.url("/api-global")
    added = api.ok_post("alerts/outputs/add", output=f"webhook={url}")["output"]
    assert added["id"].startswith("out_") and added["flock_id"] is None, added
    assert added["output"] == {"type": "webhook", "url": url}, added
    mine = [o for o in outputs(api)["outputs"] if o["id"] == added["id"]]
    assert len(mine) == 1, outputs(api)
    o = mine[0]
    assert set(o) == {"id", "flock_id", "output", "created", "created_by"}, o
    assert o["flock_id"] is None and o["output"] == {"type": "webhook", "url": url}, o
    assert o["created_by"] == server.admin_key["key_id"], o
    assert isinstance(o["created"], str) and o["created"], o

    # the same output again, an unknown type, an unknown flock
    assert_error(api.post("alerts/outputs/add", output=f"webhook={url}"), 400)
    assert_error(api.post("alerts/outputs/add", output="carrier-pigeon=https://example.com/x"), 400)
    assert_error(api.post("alerts/outputs/add", output=f"webhook={receiver.url('/nf')}",
                          flock_id="flock:doesnotexist"), 404)
    assert {o["id"] for o in outputs(api)["outputs"]} == before | {added["id"]}

    # it receives every alerting hit, next to the configured webhook
    tid = api.create_token("http", memo=unique("api output"))["canarytoken"]
    h1 = hit_http(server, api, tid, "127.0.0.1", 1)
    hit_http(server, api, tid, "127.0.0.1", 2)  # grouped: no alert anywhere
    got = settled_posts(receiver, tid, 1)
    assert got[0]["path"] == "/api-global"
    check_alert_body(got[0], tid, "127.0.0.1", h1)
    settled_posts(hook, tid, 1)

    # delete it: no more deliveries; deleting again is 404
    assert api.ok_post("alerts/outputs/delete", output_id=added["id"]) == {"result": "success"}
    assert added["id"] not in {o["id"] for o in outputs(api)["outputs"]}
    assert_error(api.post("alerts/outputs/delete", output_id=added["id"]), 404)
    hit_http(server, api, tid, "127.0.0.2", 3)
    settled_posts(hook, tid, 2)
    assert len(receiver.for_token(tid)) == 1


def test_flock_output_gets_only_its_flocks_alerts(server, api, hook, receiver):
    fid = api.create_flock()
    url = receiver.url("/flock")
    added = api.ok_post("alerts/outputs/add", output=f"webhook={url}", flock_id=fid)["output"]
    assert added["flock_id"] == fid and added["output"] == {"type": "webhook", "url": url}, added
    inside = api.create_token("http", memo=unique("in flock"), flock_id=fid)["canarytoken"]
    outside = api.create_token("http", memo=unique("not in flock"))["canarytoken"]
    h_in = hit_http(server, api, inside, "127.0.0.1", 1)
    hit_http(server, api, outside, "127.0.0.1", 1)
    got = settled_posts(receiver, inside, 1)
    check_alert_body(got[0], inside, "127.0.0.1", h_in)
    assert got[0]["body"]["flock_id"] == fid
    assert receiver.for_token(outside) == []
    assert receiver.tests() == []
    settled_posts(hook, inside, 1)
    settled_posts(hook, outside, 1)

    # deleting the (emptied) flock deletes its output
    api.ok_post("canarytoken/delete", canarytoken=inside, clear_incidents="true")
    api.ok_post("flock/delete", flock_id=fid)
    assert added["id"] not in {o["id"] for o in outputs(api)["outputs"]}, outputs(api)


def test_test_alert_reaches_configured_and_added_outputs(server, api, hook, receiver):
    added = api.ok_post("alerts/outputs/add", output=f"webhook={receiver.url('/t')}")["output"]
    try:
        listing = outputs(api)
        assert len(listing["configured"]) == 1 and added["id"] in {o["id"] for o in listing["outputs"]}, listing
        before = len(hook.tests())
        body = api.ok_post("alert/test")
        assert body["outputs"] == 1 + len(listing["outputs"]), (body, listing)
        got = wait_for(lambda: receiver.tests() or None, timeout=5, desc="the test alert on the API output")
        wait_for(lambda: len(hook.tests()) > before or None, timeout=5, desc="the test alert on the flag output")
        time.sleep(SETTLE)
        assert len(receiver.tests()) == 1 and len(hook.tests()) == before + 1
        assert got[0]["body"]["test"] is True and got[0]["path"] == "/t", got[0]
    finally:
        api.ok_post("alerts/outputs/delete", output_id=added["id"])


def test_outputs_api_is_admin_only(server, api, keys, receiver):
    added = api.ok_post("alerts/outputs/add", output=f"webhook={receiver.url('/roles')}")["output"]
    try:
        for role in ("analyst", "read-only"):
            other = key_api(server, keys[role])
            assert_error(other.get("alerts/outputs"), 403)
            assert_error(other.post("alerts/outputs/add", output=f"webhook={receiver.url('/' + role)}"), 403)
            assert_error(other.post("alerts/outputs/delete", output_id=added["id"]), 403)
        assert [o["id"] for o in outputs(api)["outputs"]] == [added["id"]], outputs(api)
    finally:
        api.ok_post("alerts/outputs/delete", output_id=added["id"])


def test_outputs_api_refuses_internal_targets_without_the_allowance():
    srv = Server().start()
    try:
        api = srv.api()
        assert outputs(api) == {"result": "success", "configured": [], "outputs": []}
        for target in ("webhook=http://127.0.0.1:9/x", "webhook=http://10.0.0.1/x"):
            assert_error(api.post("alerts/outputs/add", output=target), 400)
        assert outputs(api)["outputs"] == []
        slack = "https://hooks.slack.com/services/T000/B000/XXXXXXXX"
        added = api.ok_post("alerts/outputs/add", output=f"slack={slack}")["output"]
        assert added["output"].get("type") == "slack", added
        assert [o["id"] for o in outputs(api)["outputs"]] == [added["id"]]
        assert_error(api.post("alerts/outputs/add", output=f"slack={slack}"), 400)
        assert api.ok_post("alerts/outputs/delete", output_id=added["id"]) == {"result": "success"}
        assert_error(api.post("alerts/outputs/delete", output_id="out_doesnotexist"), 404)
        assert outputs(api)["outputs"] == []
    finally:
        srv.close()


@pytest.mark.parametrize("args, message", [
    (["--incident-window-secs=-1"], "incident_window_secs"),
    (["--alert-cooldown-secs=-2"], "alert_cooldown_secs"),
    (["--alert-max-per-hour=-1"], "alert_max_per_hour"),
    (["--alert-cooldown-secs=soon"], "alert-cooldown-secs"),
])
def test_bad_noise_settings_refuse_to_start(args, message):
    rc, out, err = start_failing(args)
    assert rc != 0 and message in err, err

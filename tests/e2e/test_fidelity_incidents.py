"""Incident fidelity with the Canary Console documentation (issue 9): the feeds
`incidents/{all,unacknowledged,acknowledged}` (envelope, item and `description` shape, events with
`type` = kind / `channel` / `url` / `hostname`, logtype per kind, `notified`, incremental polling with
`incidents_since` and `updated_id`, `newer_than` / `older_than`, `limit` + cursor paging, unknown flock,
`tz`), `incident/fetch` by `hash_id`, single and bulk actions (`action` + `key` / `keys`, the filters
`filter_str`, `filter_logtypes`, `include_unacknowledged`, `older_than`, node_id+src_host),
`incidents/search`, canarytools 1.2.3 on the new shapes, and alerts claimed by a run that was
killed with -9 being delivered at once when the node restarts (not after the 60 s lease).

Separate incidents come from separate loopback sources (`curl --interface 127.0.0.N`, DNS queries
sent from 127.0.0.N); a repeat from the same source within the 60 s window joins the open incident
as a new event.
"""

import re
import subprocess
import time
from datetime import datetime, timezone
from email.utils import formatdate
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import dns.message
import dns.query
import requests

from conftest import DOMAIN, Server, make_console, unique, wait_for
from kindtools import assert_error
from test_alerts import ALLOW, Receiver, outbox_for

HASH_RE = re.compile(r"^[0-9a-f]{32}$")
INCIDENT_ID_RE = re.compile(r"^incident:canarytoken:(\d+)$")
RFC1123_RE = re.compile(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
                        r"\d{4} \d\d:\d\d:\d\d GMT$")
LOCAL_TIME_RE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
DESCRIPTION_FIELDS = {"acknowledged", "created", "created_std", "description", "dst_host", "dst_port", "events",
                      "events_count", "local_time", "logtype", "memo", "name", "node_id", "notified", "src_host",
                      "src_port", "flock_id"}
# Fields of `description` that the item also carries flat (canarytools reads them there).
FLAT_FIELDS = DESCRIPTION_FIELDS - {"description", "events"}
FEED_NAMES = {"all": "All Incidents", "unacknowledged": "Unacknowledged Incidents",
              "acknowledged": "Acknowledged Incidents"}
REDIRECT = "https://example.com/landing"


# --- helpers -----------------------------------------------------------------------------------

def std(ts, tz="UTC"):
    """A `_std` timestamp as the Console writes it: `%Y-%m-%d %H:%M:%S %Z%z` in zone tz."""
    return datetime.fromtimestamp(int(ts), ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M:%S %Z%z")


def stamp(ts):
    """The `yyyy-mm-dd-hh:mm:ss` (UTC) form of newer_than / older_than."""
    return time.strftime("%Y-%m-%d-%H:%M:%S", time.gmtime(ts))


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def num(inc_id):
    m = INCIDENT_ID_RE.match(inc_id)
    assert m, inc_id
    return int(m.group(1))


def need(d, key):
    """d[key], failing with the whole object when it is missing."""
    assert isinstance(d, dict) and key in d, (key, d)
    return d[key]


def curl(srv, tid, src="127.0.0.1", path=None):
    """One GET of a trigger path of tid from source address src (a real client, like test_noise)."""
    url = srv.http_base() + (path or f"/x/{tid}/p.gif")
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5",
                          "--interface", src, url], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0 and out.stdout in ("200", "302"), (src, url, out.returncode, out.stdout, out.stderr)


def dns_from(srv, name, src="127.0.0.1"):
    """One UDP A query for name, sent from source address src."""
    q = dns.message.make_query(name, "A")
    return dns.query.udp(q, srv.dns_host, port=srv.dns_port, timeout=3, source=src)


def feed(api, which="all", **params):
    body = api.ok_get(f"incidents/{which}", **params)
    assert body["feed"] == FEED_NAMES[which], body.get("feed")
    return body


def incs_of(api, tid, which="all", **params):
    return feed(api, which, node_id=tid, **params)["incidents"]


def wait_feed(api, tid, count, which="all", pred=None, timeout=5.0, **params):
    """Wait until the feed (node_id=tid) holds exactly `count` incidents (matching pred)."""
    def check():
        got = [i for i in incs_of(api, tid, which, **params) if pred is None or pred(i)]
        return got if len(got) == count else None
    return wait_for(check, timeout=timeout, desc=f"{count} incident(s) of {tid} in {which} {params}")


def ids(incs):
    return sorted(i["id"] for i in incs)


def bulk(api, action, method="post", **params):
    """A bulk incidents/<action> call; -> (action, keys) of its answer."""
    body = api.ok(getattr(api, method)(f"incidents/{action}", **params))
    assert "keys" in body, body
    assert isinstance(body["keys"], list), body
    assert len(body["keys"]) == len(set(body["keys"])), body
    return body.get("action"), sorted(body["keys"])


def check_envelope_times(body):
    ts = need(body, "updated_timestamp")
    assert is_int(ts), body
    assert need(body, "updated") == formatdate(ts, usegmt=True), body
    assert RFC1123_RE.match(body["updated"]), body["updated"]
    assert need(body, "updated_std") == std(ts), body
    return ts


def check_item(item, tok, src="127.0.0.1"):
    """The documented shape of one feed item (top level and description)."""
    assert INCIDENT_ID_RE.match(item["id"]), item["id"]
    assert item["summary"] == "Canarytoken triggered"
    assert HASH_RE.match(str(need(item, "hash_id"))), item["hash_id"]
    assert is_int(need(item, "updated_id")) and item["updated_id"] > 0, item["updated_id"]
    ut = need(item, "updated_time")
    assert isinstance(ut, str) and ut.isdigit(), ut
    assert abs(int(ut) - time.time()) < 120, ut
    assert need(item, "updated") == formatdate(int(ut), usegmt=True), (item["updated"], ut)
    assert RFC1123_RE.match(item["updated"]), item["updated"]
    assert item["updated_std"] == std(ut), (item["updated_std"], ut)

    d = item["description"]
    assert isinstance(d, dict), d
    assert not DESCRIPTION_FIELDS - set(d), sorted(DESCRIPTION_FIELDS - set(d))
    assert d["acknowledged"] in ("True", "False"), d["acknowledged"]
    assert isinstance(d["created"], str) and d["created"].isdigit(), d["created"]
    assert abs(int(d["created"]) - time.time()) < 120, d["created"]
    assert d["created_std"] == std(d["created"]), (d["created_std"], d["created"])
    assert d["description"] == "Canarytoken triggered"
    assert isinstance(d["dst_host"], str), d["dst_host"]
    assert isinstance(d["dst_port"], str) and d["dst_port"].isdigit(), d["dst_port"]
    assert isinstance(d["src_port"], str) and d["src_port"].isdigit(), d["src_port"]
    assert isinstance(d["local_time"], str) and LOCAL_TIME_RE.match(d["local_time"]), d["local_time"]
    assert d["name"] == "N/A"
    assert d["notified"] in ("True", "False"), d["notified"]
    assert d["memo"] == tok["memo"]
    assert d["node_id"] == tok["canarytoken"]
    assert d["src_host"] == src
    assert d["flock_id"] == tok["flock_id"]
    assert isinstance(d["logtype"], str) and d["logtype"].isdigit(), d["logtype"]

    # the same events in the description and at the top level
    assert isinstance(item["events"], list) and item["events"], item["events"]
    assert d["events"] == item["events"], (d["events"], item["events"])
    assert d["events_count"] == str(len(item["events"])), (d["events_count"], len(item["events"]))
    first = item["events"][0]
    assert d["src_port"] == str(first["src_port"]), (d["src_port"], first["src_port"])
    assert d["dst_port"] == str(first["dst_port"]), (d["dst_port"], first["dst_port"])
    for ev in item["events"]:
        assert ev["canarytoken"] == tok["canarytoken"]
        # A string, not the documentation's number: canarytools' Event.__str__ measures every
        # event value with len(), and where the two disagree the client wins.
        assert isinstance(ev["dst_port"], str) and 0 < int(ev["dst_port"]) < 65536, ev
        assert is_int(ev["timestamp"]), ev
        assert ev["timestamp_std"] == std(ev["timestamp"]), ev
        assert ev["src_host"] == src, ev
    # the flat copies
    for k in FLAT_FIELDS:
        assert item.get(k) == d[k], (k, item.get(k), d[k])
    return d


# --- feeds: shape --------------------------------------------------------------------------------

def test_feed_envelope_and_item_shape(server, api):
    tok = api.create_token("http", memo=unique("shape"), browser_scanner_enabled="false")
    tid = tok["canarytoken"]

    # no incident yet: the envelope times are "now", no max_updated_id, no cursor without limit
    empty = feed(api, node_id=tid)
    assert empty["incidents"] == []
    assert "max_updated_id" not in empty, empty
    assert "cursor" not in empty, empty
    assert abs(check_envelope_times(empty) - time.time()) < 60

    curl(server, tid)
    wait_feed(api, tid, 1)
    body = feed(api, node_id=tid)
    assert body["result"] == "success"
    assert "cursor" not in body, body
    (item,) = body["incidents"]
    d = check_item(item, tok)
    assert d["acknowledged"] == "False"
    assert d["notified"] == "False", "no alert output is configured, so nothing was delivered"
    assert d["logtype"] == "17000"
    assert d["events_count"] == "1"
    assert need(body, "max_updated_id") == item["updated_id"], body
    assert check_envelope_times(body) == int(item["updated_time"])

    # a second incident of the token: max_updated_id and updated_timestamp are the greatest
    curl(server, tid, "127.0.0.2")
    wait_feed(api, tid, 2)
    body = feed(api, node_id=tid)
    assert len({i["hash_id"] for i in body["incidents"]}) == 2, body["incidents"]
    assert body["max_updated_id"] == max(i["updated_id"] for i in body["incidents"])
    assert check_envelope_times(body) == max(int(i["updated_time"]) for i in body["incidents"])
    for i in body["incidents"]:
        check_item(i, tok, src=i["description"]["src_host"])

    # the other two feeds have the same item shape
    (un,) = [i for i in feed(api, "unacknowledged", node_id=tid)["incidents"] if i["id"] == item["id"]]
    check_item(un, tok)
    api.ok_post("incident/acknowledge", incident=item["id"])
    (ack,) = feed(api, "acknowledged", node_id=tid)["incidents"]
    assert check_item(ack, tok)["acknowledged"] == "True"


def test_events_type_is_the_kind_channel_url_and_hostname(server, api):
    fr = api.create_token("fast-redirect", memo=unique("ev fr"), browser_redirect_url=REDIRECT)
    fid = fr["canarytoken"]
    r = requests.get(f"{server.http_base()}/x/{fid}/y.gif", params={"q": "1"}, allow_redirects=False, timeout=10,
                     headers={"User-Agent": "events-e2e/1"})
    assert r.status_code == 302 and r.headers["Location"] == REDIRECT, (r.status_code, r.headers)
    (inc,) = wait_feed(api, fid, 1)
    check_item(inc, fr)
    (ev,) = inc["events"]
    assert ev["type"] == "fast-redirect", ev
    assert ev["channel"] == "http", ev
    url = need(ev, "url")
    assert fid in url, url
    parts = urlsplit(url)
    assert (parts.path, parts.query) == (f"/x/{fid}/y.gif", "q=1"), url
    assert ev["headers"]["User-Agent"] == "events-e2e/1", ev["headers"]

    dt = api.create_token("dns", memo=unique("ev dns"))
    did = dt["canarytoken"]
    name = f"{did}.{DOMAIN}"
    dns_from(server, name)
    (dinc,) = wait_feed(api, did, 1)
    check_item(dinc, dt)
    (dev,) = dinc["events"]
    assert dev["type"] == "dns", dev
    assert dev["channel"] == "dns", dev
    assert need(dev, "hostname").rstrip(".").lower() == name.lower(), dev
    assert dinc["description"]["logtype"] == "16000"


def test_logtype_per_kind(server, api):
    specs = [
        ("http", "17000", {"browser_scanner_enabled": "false"}),
        ("fast-redirect", "17016", {"browser_redirect_url": REDIRECT}),
        ("slow-redirect", "17017", {"browser_redirect_url": REDIRECT}),
        ("qr-code", "17009", {}),
        ("cloned-web", "17003", {"cloned_web": "intranet.example.com"}),
    ]
    toks = []
    for kind, logtype, extra in specs:
        tok = api.create_token(kind, memo=unique(f"lt {kind}"), **extra)
        r = requests.get(tok["url"], allow_redirects=False, timeout=10,
                         headers={"Referer": "https://evil-clone.example/login"})
        assert r.status_code in (200, 302), (kind, r.status_code)
        toks.append((tok, kind, logtype, "http"))
    dtok = api.create_token("dns", memo=unique("lt dns"))
    dns_from(server, dtok["hostname"])
    toks.append((dtok, "dns", "16000", "dns"))

    got = {}
    for tok, kind, logtype, channel in toks:
        (inc,) = wait_feed(api, tok["canarytoken"], 1)
        ev = inc["events"][0]
        got[kind] = (inc["description"]["logtype"], inc["logtype"], ev["type"], ev.get("channel"))
    assert got == {kind: (lt, lt, kind, ch) for _, kind, lt, ch in toks}, got


def test_logtype_follows_the_kind_not_the_listener(server, api):
    """An http token fired over DNS is still 17000, its event type "http" and channel "dns"; a dns
    token fired over HTTP is 16000, type "dns", channel "http"."""
    htok = api.create_token("http", memo=unique("http via dns"))
    dns_from(server, htok["hostname"])
    dtok = api.create_token("dns", memo=unique("dns via http"))
    did = dtok["canarytoken"]
    curl(server, did, path=f"/x/{did}/y.gif")
    (hi,) = wait_feed(api, htok["canarytoken"], 1)
    (di,) = wait_feed(api, did, 1)
    hev, dev = hi["events"][0], di["events"][0]
    assert (hi["description"]["logtype"], hev["type"], hev.get("channel")) == ("17000", "http", "dns"), hev
    assert need(hev, "hostname").rstrip(".").lower() == htok["hostname"].lower(), hev
    assert (di["description"]["logtype"], dev["type"], dev.get("channel")) == ("16000", "dns", "http"), dev
    assert urlsplit(need(dev, "url")).path == f"/x/{did}/y.gif", dev


def test_notified_true_once_a_webhook_alert_was_delivered():
    rec = Receiver().start()
    srv = Server(args=["--alert-webhooks", rec.url(), ALLOW]).start()
    try:
        api = srv.api()
        tok = api.create_token("http", memo=unique("notified"))
        tid = tok["canarytoken"]
        curl(srv, tid)
        rec.wait_token(tid, ok_only=True)
        wait_for(lambda: outbox_for(api, tid, all_=True) and all(r["delivered"] for r in outbox_for(api, tid, all_=True)),
                 timeout=5, desc="the alert marked delivered in the outbox")
        wait_feed(api, tid, 1)
        inc = wait_for(lambda: [i for i in incs_of(api, tid) if i["description"].get("notified") == "True"],
                       timeout=5, desc='description.notified "True" after the delivery')[0]
        check_item(inc, tok)
        assert inc["notified"] == "True"
    finally:
        srv.close()
        rec.stop()


# --- feeds: incremental polling --------------------------------------------------------------------

def test_incidents_since_sees_each_change_exactly_once(fresh_server):
    srv = fresh_server
    api = srv.api()
    tok = api.create_token("http", memo=unique("since"))
    tid = tok["canarytoken"]

    def since(n):
        body = feed(api, incidents_since=str(n))
        incs = body["incidents"]
        ups = [need(i, "updated_id") for i in incs]
        assert ups == sorted(ups) and len(set(ups)) == len(ups), f"not oldest update first: {ups}"
        if incs:
            assert body.get("max_updated_id") == max(ups), body
        else:
            assert "max_updated_id" not in body, body
        return body

    curl(srv, tid, "127.0.0.1")
    wait_feed(api, tid, 1)
    first = since(0)
    (a,) = first["incidents"]
    m0 = need(first, "max_updated_id")
    assert m0 == a["updated_id"]
    assert since(m0)["incidents"] == []

    # a new incident
    curl(srv, tid, "127.0.0.2")
    wait_feed(api, tid, 2)
    (b,) = since(m0)["incidents"]
    assert b["id"] != a["id"] and b["description"]["src_host"] == "127.0.0.2"
    assert b["updated_id"] > m0
    m1 = b["updated_id"]
    assert since(m1)["incidents"] == []

    # a repeat from the first source joins incident a as a new event
    curl(srv, tid, "127.0.0.1")
    wait_feed(api, tid, 1, pred=lambda i: i["id"] == a["id"] and len(i["events"]) == 2)
    (a2,) = since(m1)["incidents"]
    assert a2["id"] == a["id"] and a2["hash_id"] == a["hash_id"]
    assert a2["updated_id"] > m1
    assert (len(a2["events"]), a2["description"]["events_count"]) == (2, "2")
    m2 = a2["updated_id"]
    assert since(m2)["incidents"] == []
    assert len(feed(api)["incidents"]) == 2, "the repeat made no new incident"

    # acknowledge and unacknowledge: each brings it back once
    api.ok_post("incident/acknowledge", incident=a["id"])
    (a3,) = since(m2)["incidents"]
    assert (a3["id"], a3["description"]["acknowledged"]) == (a["id"], "True")
    assert a3["updated_id"] > m2
    m3 = a3["updated_id"]
    assert since(m3)["incidents"] == []
    api.ok_post("incident/unacknowledge", incident=a["id"])
    (a4,) = since(m3)["incidents"]
    assert (a4["id"], a4["description"]["acknowledged"]) == (a["id"], "False")
    assert a4["updated_id"] > m3
    m4 = a4["updated_id"]
    assert since(m4)["incidents"] == []

    # everything, oldest update first: b (m1) then a (m4)
    everything = since(0)
    assert [i["id"] for i in everything["incidents"]] == [b["id"], a["id"]]
    assert [i["updated_id"] for i in everything["incidents"]] == [m1, m4]
    assert everything["max_updated_id"] == m4
    # the other feeds filter the same way
    assert [i["id"] for i in feed(api, "unacknowledged", incidents_since=str(m1))["incidents"]] == [a["id"]]
    assert feed(api, "acknowledged", incidents_since="0")["incidents"] == []

    for bad in ("abc", "-1", "1.5"):
        assert_error(api.get("incidents/all", incidents_since=bad), 400)


def test_newer_than_and_older_than_on_feeds(server, api):
    tok = api.create_token("dns", memo=unique("times"))
    tid = tok["canarytoken"]
    dns_from(server, tok["hostname"])
    (inc,) = wait_feed(api, tid, 1)
    created = inc["description"]["created"]
    assert isinstance(created, str) and created.isdigit(), created
    c = int(created)
    before, after = stamp(c - 30), stamp(c + 30)

    assert ids(incs_of(api, tid, newer_than=before)) == [inc["id"]]
    assert incs_of(api, tid, newer_than=after) == []
    assert ids(incs_of(api, tid, older_than=after)) == [inc["id"]]
    assert incs_of(api, tid, older_than=before) == []
    assert incs_of(api, tid, older_than="2020-01-01-00:00:00") == []
    assert ids(incs_of(api, tid, newer_than=before, older_than=after)) == [inc["id"]]
    assert ids(incs_of(api, tid, "unacknowledged", older_than=after)) == [inc["id"]]
    # epoch seconds work too
    assert ids(incs_of(api, tid, newer_than=str(c - 30))) == [inc["id"]]
    assert incs_of(api, tid, older_than=str(c - 30)) == []

    for param in ("newer_than", "older_than"):
        for bad in ("yesterday", "2020-13-45-00:00:00", "2020-01-01 00:00"):
            assert_error(api.get("incidents/all", node_id=tid, **{param: bad}), 400)


# --- feeds: paging ----------------------------------------------------------------------------------

def follow(api, which, first):
    """Page through a feed: the first request with `first`, then only the cursor. -> the answers."""
    body = feed(api, which, **first)
    pages = [body]
    while True:
        cur = need(body, "cursor")
        assert isinstance(cur, dict) and {"next", "next_link", "prev", "prev_link"} <= set(cur), cur
        if cur["next"] is None:
            assert cur["next_link"] is None, cur
            break
        assert len(pages) < 10, "paging never ended"
        body = feed(api, which, cursor=cur["next"])
        pages.append(body)
    return pages


def test_limit_and_cursor_paging(server, api):
    tok = api.create_token("http", memo=unique("paging"))
    tid = tok["canarytoken"]
    decoy = api.create_token("http", memo=unique("decoy"))["canarytoken"]
    curl(server, decoy)
    for n in range(1, 8):
        curl(server, tid, f"127.0.0.{n}")
    wait_feed(api, tid, 7)
    wait_feed(api, decoy, 1)
    mine = {i["id"]: i for i in incs_of(api, tid)}
    assert len({need(i, "hash_id") for i in mine.values()}) == 7

    pages = follow(api, "all", {"node_id": tid, "limit": "3"})
    sizes = [len(p["incidents"]) for p in pages]
    assert sizes == [3, 3, 1], sizes
    seen = [i["id"] for p in pages for i in p["incidents"]]
    assert len(seen) == len(set(seen)), f"an incident came twice: {seen}"
    assert set(seen) == set(mine), "the cursor must keep the node_id filter and reach every incident"
    assert [num(i) for i in seen] == sorted((num(i) for i in seen), reverse=True), "newest first"
    assert pages[0]["cursor"]["prev"] is None
    # max_updated_id covers the whole listing, on every page: canary_api2csv.sh keeps the first
    # page's as its next incidents_since and then walks the cursor.
    for p in pages:
        assert p["max_updated_id"] == max(i["updated_id"] for i in mine.values())

    # next_link works fetched as it is, and gives the same second page
    link = pages[0]["cursor"]["next_link"]
    parts = urlsplit(link)
    assert parts.netloc == urlsplit(server.api_url).netloc and parts.path == "/api/v1/incidents/all", link
    r = requests.get(link, timeout=10)
    assert r.status_code == 200, (r.status_code, r.text[:300])
    assert [i["id"] for i in r.json()["incidents"]] == [i["id"] for i in pages[1]["incidents"]]

    # combined with incidents_since: the five after the second-oldest update, oldest update first
    by_update = sorted(mine.values(), key=lambda i: i["updated_id"])
    pages = follow(api, "all", {"node_id": tid, "limit": "2", "incidents_since": str(by_update[1]["updated_id"])})
    assert [len(p["incidents"]) for p in pages] == [2, 2, 1]
    assert [i["id"] for p in pages for i in p["incidents"]] == [i["id"] for i in by_update[2:]]

    # the unacknowledged feed pages the same
    pages = follow(api, "unacknowledged", {"node_id": tid, "limit": "4"})
    assert [len(p["incidents"]) for p in pages] == [4, 3]
    assert {i["id"] for p in pages for i in p["incidents"]} == set(mine)

    for bad in ("0", "10001", "abc"):
        assert_error(api.get("incidents/all", node_id=tid, limit=bad), 400)


def test_unknown_flock_in_feeds_is_404(api):
    for which in FEED_NAMES:
        assert_error(api.get(f"incidents/{which}", flock_id="flock:doesnotexist0000"), 404, "Flock does not exist.")
    fid = api.create_flock(unique("empty feed"))
    assert feed(api, flock_id=fid)["incidents"] == []


def test_tz_changes_std_fields(server, api):
    tok = api.create_token("http", memo=unique("tz"))
    tid = tok["canarytoken"]
    curl(server, tid)
    wait_feed(api, tid, 1)
    london = ZoneInfo("Europe/London")
    suffix = "BST+0100" if datetime.now(london).utcoffset().total_seconds() == 3600 else "GMT+0000"

    body = feed(api, node_id=tid, tz="Europe/London")
    (inc,) = body["incidents"]
    d = inc["description"]
    assert isinstance(d["created"], str) and d["created"].isdigit(), d["created"]
    c = int(d["created"])
    assert d["created_std"].endswith(" " + suffix), d["created_std"]
    assert d["created_std"] == std(c, "Europe/London"), (d["created_std"], c)
    assert inc["created_std"] == d["created_std"]
    assert inc["updated_std"] == std(inc["updated_time"], "Europe/London")
    ev = inc["events"][0]
    assert ev["timestamp_std"] == std(ev["timestamp"], "Europe/London")
    assert body["updated_std"].endswith(" " + suffix), body["updated_std"]

    for tz in (None, "UTC"):
        (u,) = feed(api, node_id=tid, tz=tz)["incidents"]
        assert u["description"]["created_std"] == std(c, "UTC"), (tz, u["description"]["created_std"])
        assert u["description"]["created_std"].endswith(" UTC+0000")

    for which in FEED_NAMES:
        assert_error(api.get(f"incidents/{which}", node_id=tid, tz="Nowhere/Bogus"), 400)


# --- single incident: fetch and actions ---------------------------------------------------------------

def test_incident_fetch_by_hash_id(server, api):
    tok = api.create_token("http", memo=unique("hash"))
    tid = tok["canarytoken"]
    curl(server, tid)
    (inc,) = wait_feed(api, tid, 1)
    h = need(inc, "hash_id")

    got = api.ok_get("incident/fetch", hash_id=h)["incident"]
    assert got["id"] == inc["id"]
    assert got.get("hash_id") == h, got
    assert got.get("updated_id") == inc["updated_id"], got
    assert got["description"] == "Canarytoken triggered"
    by_id = api.ok_get("incident/fetch", incident=inc["id"])["incident"]
    assert (by_id.get("hash_id"), by_id.get("updated_id")) == (h, inc["updated_id"]), by_id

    assert_error(api.get("incident/fetch", hash_id="0" * 32), 404, "Incident not found")
    assert_error(api.get("incident/fetch"), 400)


def test_single_actions_answer_action_and_key(server, api):
    tid = api.create_token("http", memo=unique("single"))["canarytoken"]
    curl(server, tid)
    (inc,) = wait_feed(api, tid, 1)
    key = inc["id"]
    assert api.ok_post("incident/acknowledge", incident=key) == \
        {"action": "acknowledged", "key": key, "result": "success"}
    assert api.ok_post("incident/unacknowledge", incident=key) == \
        {"action": "unacknowledged", "key": key, "result": "success"}
    api.ok_post("incident/acknowledge", incident=key)
    assert api.ok_delete("incident/delete", incident=key) == {"action": "deleted", "key": key, "result": "success"}
    assert_error(api.get("incident/fetch", incident=key), 404, "Incident not found")


# --- bulk actions -------------------------------------------------------------------------------------

def four_incidents(srv, api):
    """Tokens A (http, two incidents: 127.0.0.1 and 127.0.0.2), B (fast-redirect, 127.0.0.3) and
    C (dns, over DNS from 127.0.0.4). -> (tokens, incidents) by name: ha, hb, fr, dn."""
    toks = {
        "A": api.create_token("http", memo=unique("alpha")),
        "B": api.create_token("fast-redirect", memo=unique("bravo"), browser_redirect_url=REDIRECT),
        "C": api.create_token("dns", memo=unique("charlie")),
    }
    a, b, c = (toks[k]["canarytoken"] for k in "ABC")
    curl(srv, a, "127.0.0.1")
    curl(srv, a, "127.0.0.2")
    curl(srv, b, "127.0.0.3")
    dns_from(srv, toks["C"]["hostname"], "127.0.0.4")
    wait_feed(api, a, 2)
    wait_feed(api, b, 1)
    wait_feed(api, c, 1)
    by_src = {i["src_host"]: i["id"] for i in api.incidents()}
    assert len(by_src) == 4, by_src
    incs = {"ha": by_src["127.0.0.1"], "hb": by_src["127.0.0.2"], "fr": by_src["127.0.0.3"],
            "dn": by_src["127.0.0.4"]}
    return toks, incs


def acked(api):
    return ids(api.incidents("acknowledged"))


def test_bulk_filter_str(fresh_server):
    srv = fresh_server
    api = srv.api()
    toks, incs = four_incidents(srv, api)
    every = sorted(incs.values())
    cases = [
        (toks["B"]["memo"].upper(), ["fr"]),        # memo, case-insensitive
        (toks["A"]["memo"], ["ha", "hb"]),
        ("127.0.0.2", ["hb"]),                      # source address
        (toks["C"]["canarytoken"], ["dn"]),         # token id
        ("fast-redirect", ["fr"]),                  # kind
        ("Fast Redirect", ["fr"]),                  # kind's human name
        ("dns", ["dn"]),
    ]
    others = toks["A"]["canarytoken"] + toks["B"]["canarytoken"]
    for f, names in cases:
        if f == "dns" and "dns" in others:
            continue  # a random token id happens to contain "dns"
        want = sorted(incs[n] for n in names)
        assert bulk(api, "acknowledge", filter_str=f) == ("acknowledged", want), f
        assert acked(api) == want, f
        assert bulk(api, "unacknowledge", filter_str=f) == ("unacknowledged", want), f
        assert acked(api) == [], f

    assert bulk(api, "acknowledge", filter_str="nomatch") == ("acknowledged", [])
    assert acked(api) == []
    # no filter at all: every incident
    assert bulk(api, "acknowledge") == ("acknowledged", every)
    assert acked(api) == every

    # the fidelity.md reproduction: a filtered delete that matches nothing deletes nothing
    r = requests.delete(api.url("incidents/delete"), params={"auth_token": api.auth_token, "filter_str": "nomatch"},
                        timeout=10)
    body = api.ok(r)
    assert (body.get("action"), body.get("keys")) == ("deleted", []), body
    assert ids(api.incidents()) == every
    # and a filtered delete that matches deletes just that
    assert bulk(api, "delete", method="delete", filter_str=toks["B"]["memo"]) == ("deleted", [incs["fr"]])
    assert ids(api.incidents()) == sorted(incs[n] for n in ("ha", "hb", "dn"))


def test_bulk_filter_logtypes_and_include_unacknowledged(fresh_server):
    srv = fresh_server
    api = srv.api()
    toks, incs = four_incidents(srv, api)

    assert bulk(api, "acknowledge", filter_logtypes="17016") == ("acknowledged", [incs["fr"]])
    assert acked(api) == [incs["fr"]]
    assert bulk(api, "unacknowledge", filter_logtypes="17016") == ("unacknowledged", [incs["fr"]])
    assert acked(api) == []
    assert bulk(api, "acknowledge", filter_logtypes="17000") == ("acknowledged", sorted([incs["ha"], incs["hb"]]))
    assert bulk(api, "acknowledge", filter_logtypes="17016") == ("acknowledged", [incs["fr"]])
    assert bulk(api, "unacknowledge", filter_logtypes="17000,17016") == \
        ("unacknowledged", sorted([incs["ha"], incs["hb"], incs["fr"]]))
    assert acked(api) == []
    two = sorted([incs["fr"], incs["dn"]])
    assert bulk(api, "acknowledge", filter_logtypes="17016,16000") == ("acknowledged", two)
    assert acked(api) == two

    for action in ("acknowledge", "unacknowledge", "delete"):
        for bad in ("abc", "17016,x"):
            assert_error(api.post(f"incidents/{action}", filter_logtypes=bad), 400)
    assert acked(api) == two and len(api.incidents()) == 4, "a refused call changed nothing"

    # delete takes acknowledged incidents only, unless include_unacknowledged=true
    assert bulk(api, "delete") == ("deleted", two)
    assert ids(api.incidents()) == sorted([incs["ha"], incs["hb"]])
    assert bulk(api, "delete", node_id=toks["A"]["canarytoken"]) == ("deleted", [])
    assert len(api.incidents()) == 2
    assert bulk(api, "delete", method="delete", node_id=toks["A"]["canarytoken"], include_unacknowledged="true") == \
        ("deleted", sorted([incs["ha"], incs["hb"]]))
    assert api.incidents() == []


def test_bulk_older_than_and_parameter_errors(fresh_server):
    srv = fresh_server
    api = srv.api()
    h = api.create_token("http", memo=unique("old h"))["canarytoken"]
    d = api.create_token("dns", memo=unique("old d"))
    curl(srv, h)
    dns_from(srv, d["hostname"])
    wait_feed(api, h, 1)
    wait_feed(api, d["canarytoken"], 1)
    every = ids(api.incidents())
    h_inc = [i["id"] for i in api.incidents_for(h)]

    # nothing here is an hour old
    assert bulk(api, "acknowledge", older_than="1h") == ("acknowledged", [])
    assert acked(api) == []
    assert bulk(api, "delete", older_than="1d", include_unacknowledged="true") == ("deleted", [])
    assert ids(api.incidents()) == every
    assert bulk(api, "acknowledge", node_id=h) == ("acknowledged", h_inc)
    assert bulk(api, "unacknowledge", older_than="1w") == ("unacknowledged", [])
    assert len(acked(api)) == 1

    for action in ("acknowledge", "unacknowledge", "delete"):
        assert_error(api.post(f"incidents/{action}", node_id=h, src_host="127.0.0.1"), 400,
                     "Cannot use src_host and node_id together")
        assert_error(api.post(f"incidents/{action}", older_than="soon"), 400, "Parameter older_than was invalid.")
    assert ids(api.incidents()) == every and len(acked(api)) == 1


# --- incidents/search ---------------------------------------------------------------------------------

def test_incidents_search(server, api):
    fid = api.create_flock(unique("search"))
    s1 = api.create_token("http", memo=unique("srch web"), flock_id=fid)
    s2 = api.create_token("fast-redirect", memo=unique("srch fast"), flock_id=fid, browser_redirect_url=REDIRECT)
    t1, t2 = s1["canarytoken"], s2["canarytoken"]
    # a: s1 from .5, acknowledged; b: s1 again from .5 (a new incident, a is acknowledged); c: s2 from .6
    curl(server, t1, "127.0.0.5")
    (a,) = wait_feed(api, t1, 1)
    api.ok_post("incident/acknowledge", incident=a["id"])
    curl(server, t1, "127.0.0.5")
    curl(server, t2, "127.0.0.6")
    wait_feed(api, t1, 2)
    (c,) = wait_feed(api, t2, 1)
    (b,) = [i for i in incs_of(api, t1) if i["id"] != a["id"]]

    def search(**params):
        body = api.ok_get("incidents/search", flock_id=fid, **params)
        for k in ("incidents", "cursor", "page_number", "total_pages", "total_results", "incident_source_counts"):
            assert k in body, (k, body)
        for i in body["incidents"]:
            assert HASH_RE.match(str(i.get("hash_id"))) and is_int(i.get("updated_id")), i
            assert i["events"], i
        return body

    body = search()  # default: unacknowledged
    assert ids(body["incidents"]) == sorted([b["id"], c["id"]])
    assert (body["page_number"], body["total_pages"], body["total_results"]) == (1, 1, 2), body
    assert body["cursor"]["next"] is None, body["cursor"]
    assert body["incident_source_counts"] == {"127.0.0.5": 1, "127.0.0.6": 1}
    assert ids(search(filter_incident_state="unacknowledged")["incidents"]) == sorted([b["id"], c["id"]])
    assert ids(search(filter_incident_state="acknowledged")["incidents"]) == [a["id"]]
    body = search(filter_incident_state="all")
    assert ids(body["incidents"]) == sorted([a["id"], b["id"], c["id"]])
    assert body["total_results"] == 3
    assert body["incident_source_counts"] == {"127.0.0.5": 2, "127.0.0.6": 1}
    assert_error(api.get("incidents/search", flock_id=fid, filter_incident_state="open"), 400)

    assert ids(search(filter_incident_state="all", filter_str=s2["memo"].upper())["incidents"]) == [c["id"]]
    assert ids(search(filter_incident_state="all", filter_str="127.0.0.5")["incidents"]) == sorted([a["id"], b["id"]])
    assert search(filter_incident_state="all", filter_str="nomatch")["incidents"] == []
    assert ids(search(filter_incident_state="all", filter_logtypes="17016")["incidents"]) == [c["id"]]
    assert ids(search(filter_incident_state="all", filter_logtypes="17000")["incidents"]) == sorted([a["id"], b["id"]])
    assert ids(search(filter_incident_state="all", filter_logtypes="17000,17016")["incidents"]) == \
        sorted([a["id"], b["id"], c["id"]])
    assert_error(api.get("incidents/search", flock_id=fid, filter_logtypes="web"), 400)
    assert ids(search(node_id=t1, filter_incident_state="all")["incidents"]) == sorted([a["id"], b["id"]])

    # paging: limit 1 over the three, following only the cursor (it keeps flock, state and limit)
    body = search(filter_incident_state="all", limit="1")
    pages = [body]
    while body["cursor"]["next"]:
        assert len(pages) < 6, "paging never ended"
        body = api.ok_get("incidents/search", cursor=body["cursor"]["next"])
        pages.append(body)
    assert [(p["page_number"], p["total_pages"], p["total_results"]) for p in pages] == [(1, 3, 3), (2, 3, 3), (3, 3, 3)]
    assert [len(p["incidents"]) for p in pages] == [1, 1, 1]
    assert sorted(i["id"] for p in pages for i in p["incidents"]) == sorted([a["id"], b["id"], c["id"]])
    assert all(p["incident_source_counts"] == {"127.0.0.5": 2, "127.0.0.6": 1} for p in pages), pages


# --- canarytools 1.2.3 on the new shapes ------------------------------------------------------------------

def test_canarytools_reads_the_new_shapes(server, api):
    from canarytools.models.incidents import IncidentCanarytokenTriggered
    console = make_console(server)
    tok = api.create_token("fast-redirect", memo=unique("ct shapes"), browser_redirect_url=REDIRECT)
    tid = tok["canarytoken"]
    curl(server, tid)
    wait_feed(api, tid, 1)

    incs = console.incidents.unacknowledged(node_id=tid)
    assert len(incs) == 1, incs
    inc = incs[0]
    assert isinstance(inc, IncidentCanarytokenTriggered)
    assert inc.acknowledged is False
    assert inc.logtype == "17016"
    assert inc.node_id == tid
    assert isinstance(inc.created_std, datetime) and inc.created_std.tzinfo is not None, inc.created_std
    assert len(inc.events) == 1
    ev = inc.events[0]
    assert (ev.canarytoken, ev.type, ev.channel) == (tid, "fast-redirect", "http")
    assert isinstance(ev.timestamp, datetime)

    got = console.incidents.get_incident(inc.id)
    assert isinstance(got, IncidentCanarytokenTriggered)
    assert got.id == inc.id and got.acknowledged is False
    assert got.events[0].type == "fast-redirect"
    got.acknowledge()
    assert got.acknowledged is True
    assert [i.id for i in console.incidents.acknowledged(node_id=tid)] == [inc.id]
    assert console.incidents.unacknowledged(node_id=tid) == []


# --- alerts after a crash ------------------------------------------------------------------------------------

def test_alert_claimed_by_a_killed_run_is_delivered_at_once_after_restart():
    rec = Receiver().start()
    rec.delay = 60.0  # takes the POST and never answers while the test runs
    srv = Server(args=["--alert-webhooks", rec.url(), ALLOW]).start()
    try:
        api = srv.api()
        tid = api.create_token("http", memo=unique("crash"))["canarytoken"]
        curl(srv, tid)
        first = rec.wait_token(tid, timeout=5)[0]  # the delivery is under way: claimed, not finished

        def claimed():
            rows = outbox_for(api, tid)
            return rows if len(rows) == 1 and not rows[0]["delivered"] and not rows[0]["gave_up"] else None
        (row,) = wait_for(claimed, timeout=3, desc="the claimed alert pending in the outbox")
        assert row["idempotency_key"] == first["headers"].get("idempotency-key"), (row, first["headers"])
        srv.kill9()

        rec.delay = 0.0
        restarted = time.monotonic()
        srv.start()
        again = wait_for(lambda: [p for p in rec.for_token(tid) if p["at"] > restarted],
                         timeout=10, desc="the claimed alert delivered after the restart (not after the lease)")
        assert again[0]["headers"].get("idempotency-key") == row["idempotency_key"], again[0]["headers"]
        api = srv.api()
        wait_for(lambda: not outbox_for(api, tid), timeout=5, desc="the alert leaving the pending list")
        (done,) = outbox_for(api, tid, all_=True)
        assert done["id"] == row["id"] and done["delivered"], done
        time.sleep(0.5)
        assert len([p for p in rec.for_token(tid) if p["at"] > restarted]) == 1, "delivered once after the restart"
    finally:
        srv.close()
        rec.stop()


# --- audit F2: one incident that grows without bound stays a small answer ---------------------

def test_events_are_capped_per_incident_by_default_and_paged_through_hits(server, api):
    """150 repeats from one source join one incident. Feeds and incident/fetch carry its first
    100 events unless event_limit says otherwise, events_count says 150, and every hit is
    reachable, page by page, through canarytoken/hits."""
    import concurrent.futures
    from conftest import http_hit
    tid = api.create_token("http", memo=unique("flood"))["canarytoken"]
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        assert all(c == 200 for c in ex.map(lambda n: http_hit(server, tid, path=f"/{tid}/x?n={n}").status_code,
                                            range(150)))
    [inc] = wait_feed(api, tid, 1, pred=lambda i: i["description"]["events_count"] == "150", timeout=10)
    d = inc["description"]
    assert len(d["events"]) == 100, len(d["events"])
    times = [e["timestamp"] for e in d["events"]]
    assert times == sorted(times), "the first events, oldest first"
    for limit, n in (("0", 0), ("7", 7), ("500", 150)):
        [i] = incs_of(api, tid, event_limit=limit)
        assert (len(i["description"]["events"]), i["description"]["events_count"]) == (n, "150"), limit
    fetched = api.ok_get("incident/fetch", incident=inc["id"])["incident"]
    assert len(fetched["events"]) == 100
    # every hit, once, newest first, in pages
    seen, before, pages = [], None, 0
    while True:
        params = {"canarytoken": tid, "limit": "60"}
        if before is not None:
            params["before"] = str(before)
        body = api.ok_get("canarytoken/hits", **params)
        seen += [h["id"] for h in body["hits"]]
        pages += 1
        before = body["next_before"]
        if before is None:
            break
    assert pages == 3 and len(seen) == 150 and len(set(seen)) == 150 and seen == sorted(seen, reverse=True)
    assert sorted(h["query"] for h in api.ok_get("canarytoken/hits", canarytoken=tid, limit="1000")["hits"]) == \
        sorted(f"n={n}" for n in range(150))

"""Raw shapes of the Console dialect's endpoints (what scripts using plain HTTP,
not canarytools, rely on)."""

import subprocess

import requests

from conftest import (
    CREATED_PRINTABLE_RE,
    CREATED_STD_RE,
    DOMAIN,
    TOKEN_RE,
    http_hit,
    unique,
    url_path_parts,
)

TOKEN_FIELDS = {"canarytoken", "kind", "memo", "flock_id", "enabled", "created", "created_printable",
                "triggered_count", "updated_id", "url", "hostname", "key"}


def check_token(tok, kind=None):
    assert TOKEN_FIELDS <= set(tok), TOKEN_FIELDS - set(tok)
    tid = tok["canarytoken"]
    assert TOKEN_RE.match(tid)
    if kind:
        assert tok["kind"] == kind
    assert isinstance(tok["enabled"], bool)
    assert isinstance(tok["created"], str) and float(tok["created"]) > 1.5e9
    assert CREATED_PRINTABLE_RE.match(tok["created_printable"]), tok["created_printable"]
    assert isinstance(tok["triggered_count"], int) and not isinstance(tok["triggered_count"], bool)
    assert isinstance(tok["updated_id"], int) and not isinstance(tok["updated_id"], bool)
    assert tok["hostname"] == f"{tid}.{DOMAIN}"
    assert tok["key"] == f"canarydrop:{tid}"
    assert url_path_parts(tok["url"])[-2] == tid
    if tok["kind"] == "http":
        assert isinstance(tok["browser_scanner_enabled"], bool)


def test_ping(api):
    assert api.ok_get("ping")["result"] == "success"


def test_kinds_list_and_listed_kinds_are_valid(api):
    kinds = api.ok_get("canarytokens/list")["canarytokens"]
    assert isinstance(kinds, dict)
    assert kinds["http"] == "Web Bug"
    assert kinds["dns"] == "DNS"
    assert all(isinstance(k, str) and isinstance(v, str) and v for k, v in kinds.items())
    for kind in ("http", "dns"):
        check_token(api.create_token(kind), kind)
    # Other listed kinds may need kind-specific parameters, but are never "not valid".
    for kind in set(kinds) - {"http", "dns"}:
        r = api.post("canarytoken/create", kind=kind, memo="listed kind")
        if r.status_code != 200:
            assert r.json().get("message") != "Supplied kind is not valid.", kind


def test_create_response_shapes(api):
    memo = unique("shape")
    body = api.ok_post("canarytoken/create", kind="http", memo=memo, browser_scanner_enabled="false")
    tok = body["canarytoken"]
    check_token(tok, "http")
    assert tok["memo"] == memo
    assert tok["flock_id"] == "flock:default"
    assert tok["enabled"] is True
    assert tok["triggered_count"] == 0
    assert tok["browser_scanner_enabled"] is False
    true_tok = api.create_token("http", browser_scanner_enabled="true")
    assert true_tok["browser_scanner_enabled"] is True

    fetched = api.ok_get("canarytoken/fetch", canarytoken=tok["canarytoken"])["token"]
    check_token(fetched, "http")
    for k in TOKEN_FIELDS:
        assert fetched[k] == tok[k], k

    all_tokens = api.ok_get("canarytokens/fetch")["tokens"]
    assert tok["canarytoken"] in {t["canarytoken"] for t in all_tokens}


def test_ids_are_unique_and_random(api):
    ids = [api.create_token("dns")["canarytoken"] for _ in range(10)]
    assert len(set(ids)) == 10
    assert len({i[:6] for i in ids}) > 1


def test_paginate_follows_string_cursor(api):
    """With render_transients (canarytools sends it), the cursor is a string or null."""
    mine = {api.create_token("dns", memo=unique("page"))["canarytoken"] for _ in range(5)}
    seen = []
    cursor = None
    for _ in range(200):
        params = {"limit": 2, "render_transients": "True"}
        if cursor:
            params["cursor"] = cursor
        body = api.ok_get("canarytokens/paginate", **params)
        assert set(body) >= {"canarytokens", "cursor"}
        assert len(body["canarytokens"]) <= 2
        seen += [t["canarytoken"] for t in body["canarytokens"]]
        cursor = body["cursor"]
        assert cursor is None or isinstance(cursor, str), cursor
        if not cursor:
            break
    else:
        raise AssertionError("pagination never ended")
    assert len(seen) == len(set(seen)), "a token was returned twice"
    assert mine <= set(seen)
    total = {t["canarytoken"] for t in api.ok_get("canarytokens/fetch")["tokens"]}
    assert set(seen) == total


def test_search_filters(api):
    tag = unique("needle")
    fid = api.create_flock(unique("search"))
    h = api.create_token("http", memo=f"{tag} web", flock_id=fid)["canarytoken"]
    d = api.create_token("dns", memo=f"{tag} dns", flock_id=fid)["canarytoken"]
    d_off = api.create_token("dns", memo=f"{tag} off")["canarytoken"]
    api.ok_post("canarytoken/disable", canarytoken=d_off)

    def search(**params):
        body = api.ok_get("canarytokens/search", **params, limit=100)
        assert "canarytokens" in body and "cursor" in body
        assert set(body["cursor"]) == {"next", "next_link", "prev", "prev_link"}, body["cursor"]
        return body["canarytokens"]

    assert {t["canarytoken"] for t in search(memo=tag)} == {h, d, d_off}
    assert {t["canarytoken"] for t in search(memo=tag, kind="dns")} == {d, d_off}
    assert {t["canarytoken"] for t in search(flock_id=fid)} == {h, d}
    assert {t["canarytoken"] for t in search(memo=tag, enabled="false")} == {d_off}
    assert {t["canarytoken"] for t in search(memo=tag, enabled="true")} == {h, d}
    assert all(t["kind"] == "dns" for t in search(kind="dns"))

    got, cursor = [], None
    for _ in range(10):
        params = {"memo": tag, "limit": 1}
        if cursor:
            params["cursor"] = cursor
        body = api.ok_get("canarytokens/search", **params)
        assert len(body["canarytokens"]) <= 1
        got += [t["canarytoken"] for t in body["canarytokens"]]
        cursor = body["cursor"]["next"]
        if not cursor:
            break
    assert sorted(got) == sorted({h, d, d_off})


def test_update_enable_disable_delete(api):
    tok = api.create_token("dns", memo="before")
    tid = tok["canarytoken"]
    upd = api.ok_post("canarytoken/update", canarytoken=tid, memo="after")["token"]
    assert upd["memo"] == "after" and upd["canarytoken"] == tid
    assert api.fetch_token(tid)["memo"] == "after"

    api.ok_post("canarytoken/disable", canarytoken=tid)
    assert api.fetch_token(tid)["enabled"] is False
    api.ok_post("canarytoken/enable", canarytoken=tid)
    assert api.fetch_token(tid)["enabled"] is True

    api.ok_delete("canarytoken/delete", canarytoken=tid)
    assert api.get("canarytoken/fetch", canarytoken=tid).status_code == 404
    assert tid not in {t["canarytoken"] for t in api.ok_get("canarytokens/fetch")["tokens"]}


def test_delete_with_clear_incidents(server, api):
    tid = api.create_token("http")["canarytoken"]
    assert http_hit(server, tid).status_code == 200
    api.wait_incidents(tid)
    refused = api.post("canarytoken/delete", canarytoken=tid)
    assert (refused.status_code, refused.json()["message"]) == (400, "Could not delete Canarydrop")
    assert api.incidents_for(tid) != [] and api.fetch_token(tid)["canarytoken"] == tid
    api.ok_post("canarytoken/delete", canarytoken=tid, clear_incidents="true")
    assert api.incidents_for(tid) == []


def test_incident_shapes(server, api):
    tok = api.create_token("http", memo=unique("inc-shape"))
    tid = tok["canarytoken"]
    assert http_hit(server, tid, headers={"User-Agent": "shape/1"}).status_code == 200
    inc = api.wait_incidents(tid)[0]
    assert isinstance(inc["id"], str) and inc["id"]
    assert inc["summary"] == "Canarytoken triggered"
    assert isinstance(inc["description"], dict)
    assert inc["acknowledged"] == "False"
    assert CREATED_STD_RE.match(inc["created_std"]), inc["created_std"]
    assert inc["src_host"] == "127.0.0.1"
    assert inc["logtype"] == "17000"
    assert inc["memo"] == tok["memo"]
    assert inc["canarytoken"] == tid
    assert inc["kind"] == "http"
    assert inc["flock_id"] == "flock:default"
    ev = inc["events"][0]
    for k in ("canarytoken", "type", "src_host", "src_port", "timestamp", "timestamp_std",
              "headers", "useragent", "method", "path", "query"):
        assert k in ev, k
    assert ev["headers"]["User-Agent"] == "shape/1"

    one = api.ok_get("incident/fetch", incident=inc["id"])["incident"]
    assert one["id"] == inc["id"]
    assert one["description"] == "Canarytoken triggered"
    assert one["summary"] == "Canarytoken triggered"
    assert one["acknowledged"] == "False"
    assert one["events"][0]["canarytoken"] == tid

    api.ok_post("incident/acknowledge", incident=inc["id"])
    assert api.ok_get("incident/fetch", incident=inc["id"])["incident"]["acknowledged"] == "True"
    assert inc["id"] in {i["id"] for i in api.incidents("acknowledged")}
    assert inc["id"] not in {i["id"] for i in api.incidents("unacknowledged")}
    api.ok_post("incident/unacknowledge", incident=inc["id"])
    assert inc["id"] in {i["id"] for i in api.incidents("unacknowledged")}
    api.ok_post("incident/acknowledge", incident=inc["id"])
    api.ok_delete("incident/delete", incident=inc["id"])
    assert api.get("incident/fetch", incident=inc["id"]).status_code == 404


def test_flock_summary_counts(server, api):
    fid = api.create_flock(unique("summary"))
    a = api.create_token("http", flock_id=fid)["canarytoken"]
    b = api.create_token("dns", flock_id=fid)["canarytoken"]
    api.ok_post("canarytoken/disable", canarytoken=b)
    assert http_hit(server, a).status_code == 200
    inc = api.wait_incidents(a)[0]
    assert inc["flock_id"] == fid

    s = api.ok_get("flock/summary", flock_id=fid)
    assert s["flock_id"] == fid
    assert s["name"].startswith("summary")
    assert {k: s[k] for k in ("total_tokens", "disabled_tokens", "different_token_num", "triggered_tokens",
                              "incident_count", "unacknowledged_incident_count", "top_tokens")} == {
        "total_tokens": 2, "disabled_tokens": 1, "different_token_num": 2, "triggered_tokens": 1,
        "incident_count": 1, "unacknowledged_incident_count": 1,
        "top_tokens": [{"count": 1, "kind": "dns"}, {"count": 1, "kind": "http"}]}
    api.ok_post("incident/acknowledge", incident=inc["id"])
    s = api.ok_get("flock/summary", flock_id=fid)
    assert s["incident_count"] == 1 and s["unacknowledged_incident_count"] == 0


def test_flock_crud_shapes(api):
    name = unique("crud")
    body = api.ok_post("flock/create", name=name)
    fid = body["flock_id"]
    assert body["flock"] == {"flock_id": fid, "name": name}
    flocks = api.ok_get("flocks/list")["flocks"]
    assert flocks["flock:default"] == "Default Flock"
    assert flocks[fid] == name
    api.ok_post("flock/rename", flock_id=fid, name=name + " renamed")
    assert api.ok_get("flocks/list")["flocks"][fid] == name + " renamed"
    api.ok_post("flock/delete", flock_id=fid)
    assert fid not in api.ok_get("flocks/list")["flocks"]


def test_bulk_incident_operations(fresh_server):
    srv = fresh_server
    api = srv.api()
    a = api.create_token("http")["canarytoken"]
    b = api.create_token("http")["canarytoken"]
    c = api.create_token("dns")["canarytoken"]
    for t in (a, b, c):
        assert http_hit(srv, t).status_code == 200
    ia = api.wait_incidents(a)[0]
    ib = api.wait_incidents(b)[0]
    ic = api.wait_incidents(c)[0]

    # older_than only touches old incidents: nothing here is an hour old
    api.ok_post("incidents/acknowledge", older_than="1h")
    assert len(api.incidents("unacknowledged")) == 3

    api.ok_post("incidents/acknowledge", node_id=a)
    assert {i["id"] for i in api.incidents("acknowledged")} == {ia["id"]}

    api.ok_post("incident/acknowledge", incident=ib["id"])
    # delete only acknowledged ones; without filter it takes all acknowledged
    api.ok_post("incidents/delete")
    assert {i["id"] for i in api.incidents("all")} == {ic["id"]}

    api.ok_post("incidents/acknowledge", src_host="127.0.0.1")
    assert {i["id"] for i in api.incidents("acknowledged")} == {ic["id"]}
    assert api.incidents("unacknowledged") == []
    api.ok_post("incidents/delete", node_id=c, older_than="1w")
    assert {i["id"] for i in api.incidents("all")} == {ic["id"]}
    api.ok_post("incidents/delete", node_id=c)
    assert api.incidents("all") == []


def test_responses_are_json(api):
    r = api.get("canarytokens/fetch")
    assert r.headers["Content-Type"].split(";")[0] == "application/json"
    r = requests.get(api.url("ping"), params={"auth_token": api.auth_token}, timeout=10)
    assert r.json()["result"] == "success"


def test_logtype_follows_the_kind_not_the_listener(server, api):
    """An http token fired over DNS is still an HTTP-kind incident (17000), and vice versa."""
    import dns.message
    import dns.query
    from conftest import DOMAIN
    http_tok = api.create_token("http", memo=unique("http via dns"))
    dns.query.udp(dns.message.make_query(http_tok["hostname"], "A"), server.dns_host, port=server.dns_port, timeout=3)
    dns_tok = api.create_token("dns", memo=unique("dns via http"))
    requests.get(f"{server.http_base()}/x/{dns_tok['canarytoken']}/y.gif", timeout=10)
    inc_h = api.wait_incidents(http_tok["canarytoken"])[0]
    inc_d = api.wait_incidents(dns_tok["canarytoken"])[0]
    ev_h, ev_d = inc_h["events"][0], inc_d["events"][0]
    assert (inc_h["logtype"], ev_h["type"], ev_h["channel"]) == ("17000", "http", "dns")
    assert (inc_d["logtype"], ev_d["type"], ev_d["channel"]) == ("16000", "dns", "http")


def test_feed_sends_events_once_and_honours_limits(server, api):
    tok = api.create_token("http", memo=unique("feed shape"))
    for i in range(3):
        # Three sources, three incidents (repeats from one source would join one).
        subprocess.run(["curl", "-sf", "-o", "/dev/null", "--interface", f"127.0.0.{i + 1}",
                        f"{server.http_base()}/x/{tok['canarytoken']}/y.gif?i={i}"], check=True, timeout=10)
    api.wait_incidents(tok["canarytoken"], count=3)
    feed = api.ok_get("incidents/all", node_id=tok["canarytoken"])["incidents"]
    assert len(feed) == 3
    for item in feed:
        assert isinstance(item["description"], dict)
        assert item["description"]["events"] == item["events"], "the documented place, and canarytools' copy"
        assert len(item["events"]) == 1
    assert len(api.ok_get("incidents/all", node_id=tok["canarytoken"], limit="2")["incidents"]) == 2
    zero = api.ok_get("incidents/all", node_id=tok["canarytoken"], event_limit="0")["incidents"]
    assert len(zero) == 3 and all(i["events"] == [] for i in zero)

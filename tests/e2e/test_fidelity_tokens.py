"""Console dialect fidelity for tokens and flocks (issue 9): what the Canary Console documentation,
canarytools 1.2.3 and Thinkst's own scripts expect of `/api/v1/...`, checked over raw HTTP.

Covered here:
- formatting: every JSON answer, errors included, is pretty JSON as the Console sends it (2-space
  indent, `": "`, sorted keys, a trailing newline), and the two auth failure messages;
- token objects: `canarytokens/list` under `canarytokens`, `node_id` and `kind_description`,
  search's `unacked_alert_count`, qr-code's `qr_code` data URI and its optional redirect
  (create, update/redirect_url, remove/redirect_url), the `<script>`-wrapped cloned-web render,
  the 10,000-character memo, the refused `custom_domain`;
- `canarytokens/paginate` (default limit, flock filter, newest first, page counters, the documented
  cursor object and its links, the string cursor canarytools needs) and `canarytokens/search`
  (word-prefix search_string, active, kind, flock, paging);
- deleting: `canarytoken/delete` refusing a triggered token unless clear_incidents is true,
  `canarytokens/delete` by custom domain;
- `flock/summary` in the documented shape and `flock/list` (sensors);
- canarytools 1.2.3 (unmodified): `tokens.all()` over many pages, `delete()` of a triggered token.
"""

import base64
import json
import shutil
import subprocess
import threading
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from conftest import TOKEN_RE, http_hit, is_gif, make_console, unique, wait_for
from kindtools import BAD_PARAMS, assert_error

ZBARIMG = shutil.which("zbarimg")
needs_zbarimg = pytest.mark.skipif(ZBARIMG is None, reason="zbarimg (Debian: zbar-tools) is not installed")

CURSOR_KEYS = {"next", "next_link", "prev", "prev_link"}
FLOCK_MISSING = "Flock does not exist."


# --- helpers ---------------------------------------------------------------------------------

def assert_pretty(resp):
    """The body is exactly the pretty, key-sorted JSON the Console sends, newline-terminated."""
    assert resp.headers.get("Content-Type", "").split(";")[0].strip() == "application/json", resp.headers
    text = resp.content.decode("utf-8")
    body = json.loads(text)
    expected = json.dumps(body, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    assert text == expected, f"not Console-formatted JSON:\n{text[:600]!r}\nexpected:\n{expected[:600]!r}"
    return body


def word_tag():
    """A random memo word (letters and digits only, so it is one word to the search)."""
    return "zq" + uuid.uuid4().hex[:10]


def ids(tokens):
    return [t["canarytoken"] for t in tokens]


def hit_from(server, token_id, n):
    """One GET of the token from loopback source 127.0.0.n (separate sources, separate incidents)."""
    subprocess.run(["curl", "-sf", "-o", "/dev/null", "--interface", f"127.0.0.{n}",
                    f"{server.http_base()}/x/{token_id}/y.gif"], check=True, timeout=10)


def get_cursor_obj(body):
    cur = body.get("cursor")
    assert isinstance(cur, dict), f"cursor must be the documented object, got {cur!r}"
    assert set(cur) == CURSOR_KEYS, cur
    return cur


def ok_body(resp):
    """A raw `requests` answer that must be a Console success; -> the body."""
    assert resp.status_code == 200, (resp.url, resp.status_code, resp.text[:300])
    body = resp.json()
    assert body.get("result") == "success", body
    return body


def paginate(api, **params):
    return api.ok_get("canarytokens/paginate", **params)


def search(api, **params):
    return api.ok_get("canarytokens/search", **params)


def search_ids(api, **params):
    return set(ids(search(api, **params)["canarytokens"]))


# --- formatting and auth ---------------------------------------------------------------------

def test_success_answers_are_pretty_sorted_json(server, api):
    fid = api.create_flock(unique("fmt"))
    create = api.post("canarytoken/create", kind="http", memo=unique("fmt memo"), flock_id=fid)
    tok = assert_pretty(create)["canarytoken"]
    tid = tok["canarytoken"]
    text = create.content.decode()
    # What the shell scripts grep for: whole lines.
    assert '  "result": "success"' in text.splitlines(), text[-200:]
    assert f'    "canarytoken": "{tid}",' in text.splitlines(), text[:400]

    assert http_hit(server, tid).status_code == 200
    api.wait_incidents(tid)
    for r in (
        api.get("ping"),
        api.get("canarytokens/list"),
        api.get("canarytoken/fetch", canarytoken=tid),
        api.get("canarytokens/fetch", flock_id=fid),
        api.get("canarytokens/paginate", flock_id=fid),
        api.get("canarytokens/search", flock_id=fid),
        api.get("flock/summary", flock_id=fid),
        api.post("canarytoken/update", canarytoken=tid, memo="new fmt memo"),
        api.post("canarytoken/disable", canarytoken=tid),
        api.get("incidents/all", node_id=tid),
    ):
        assert r.status_code == 200, (r.url, r.status_code, r.text[:300])
        assert assert_pretty(r)["result"] == "success"
    assert api.get("ping").content == b'{\n  "result": "success"\n}\n'


def test_error_answers_are_pretty_too(api):
    r = api.get("ping", auth="not-a-key")
    assert r.status_code == 401
    assert r.content == b'{\n  "message": "Invalid auth_token",\n  "result": "error"\n}\n', r.content
    for r, status in (
        (api.get("canarytoken/fetch", canarytoken="0" * 25), 404),
        (api.post("canarytoken/create", kind="http", memo=""), 400),
        (api.post("canarytoken/create", kind="no-such-kind", memo="m"), 400),
        (api.get("no/such/endpoint"), 404),
        (api.get("canarytoken/create"), 405),
    ):
        assert r.status_code == status, (r.url, r.status_code, r.text[:300])
        body = assert_pretty(r)
        assert body["result"] == "error"
        assert '  "result": "error"' in r.content.decode().splitlines()


def test_header_auth_says_unauthorized_param_says_invalid(server, api):
    url = api.url("ping")
    good = {"X-Canary-Auth-Token": server.admin_token}
    bad = {"X-Canary-Auth-Token": "not-a-key"}
    assert requests.get(url, headers=good, timeout=10).status_code == 200
    assert requests.post(api.url("canarytoken/create"), headers=good, timeout=10,
                         data={"kind": "dns", "memo": unique("hdr")}).status_code == 200

    r = requests.get(url, headers=bad, timeout=10)
    assert_error(r, 401, "Unauthorized")
    assert r.content == b'{\n  "message": "Unauthorized",\n  "result": "error"\n}\n', r.content
    assert_error(requests.post(api.url("canarytoken/create"), headers=bad, timeout=10,
                               data={"kind": "dns", "memo": "x"}), 401, "Unauthorized")
    assert_error(requests.get(url, params={"auth_token": "not-a-key"}, timeout=10), 401, "Invalid auth_token")
    # A bad parameter is the parameter's failure, whatever the header says.
    assert_error(requests.get(url, params={"auth_token": "not-a-key"}, headers=good, timeout=10),
                 401, "Invalid auth_token")


# --- token objects ---------------------------------------------------------------------------

def test_kinds_list_is_under_canarytokens(api):
    body = api.ok_get("canarytokens/list")
    assert set(body) == {"canarytokens", "result"}, set(body)
    kinds = body["canarytokens"]
    assert kinds["http"] == "Web Bug"
    assert kinds["dns"] == "DNS"
    assert kinds["qr-code"] == "QR Code"
    assert kinds["fast-redirect"] == "Fast Redirect"
    assert kinds["slow-redirect"] == "Slow Redirect"
    assert kinds["cloned-web"] == "Cloned Website"


def test_token_objects_have_node_id_and_kind_description(api):
    fid = api.create_flock(unique("nodeid"))
    made = {
        "http": api.create_token("http", flock_id=fid),
        "dns": api.create_token("dns", flock_id=fid),
        "fast-redirect": api.create_token("fast-redirect", flock_id=fid,
                                          browser_redirect_url="https://intranet.example/a"),
        "qr-code": api.create_token("qr-code", flock_id=fid),
    }
    assert made["fast-redirect"].get("kind_description") == "Fast Redirect", made["fast-redirect"]
    assert made["http"].get("kind_description") == "Web Bug", made["http"]
    listing = api.ok_get("canarytokens/list")
    assert "canarytokens" in listing, listing
    human = listing["canarytokens"]

    def check(tok):
        assert tok.get("node_id") == tok["canarytoken"], tok
        assert tok.get("kind_description") == human[tok["kind"]], tok

    for tok in made.values():
        check(tok)
        check(api.fetch_token(tok["canarytoken"]))
    listed = api.ok_get("canarytokens/fetch", flock_id=fid)["tokens"]
    paged = paginate(api, flock_id=fid)["canarytokens"]
    found = search(api, flock_id=fid)["canarytokens"]
    for group in (listed, paged, found):
        assert sorted(ids(group)) == sorted(t["canarytoken"] for t in made.values())
        for tok in group:
            check(tok)
    check(api.ok_post("canarytoken/update", canarytoken=made["dns"]["canarytoken"], memo="renamed")["token"])
    check(api.ok_post("canarytoken/update/redirect_url", canarytoken=made["fast-redirect"]["canarytoken"],
                      redirect_url="https://intranet.example/b")["token"])


def test_search_counts_unacknowledged_incidents(server, api):
    tag = word_tag()
    hot = api.create_token("http", memo=f"{tag} hot")["canarytoken"]
    cold = api.create_token("http", memo=f"{tag} cold")["canarytoken"]
    hit_from(server, hot, 1)
    hit_from(server, hot, 2)
    incs = api.wait_incidents(hot, count=2)

    def counts():
        return {t["canarytoken"]: t.get("unacked_alert_count") for t in search(api, search_string=tag)["canarytokens"]}

    got = counts()
    assert got == {hot: 2, cold: 0}, got
    assert all(type(v) is int for v in got.values()), got
    api.ok_post("incident/acknowledge", incident=incs[0]["id"])
    assert counts() == {hot: 1, cold: 0}


@needs_zbarimg
def test_qr_code_field_is_a_png_of_the_token_url(api, tmp_path):
    tok = api.create_token("qr-code")
    assert tok.get("browser_redirect_url") == ""
    for t in (tok, api.fetch_token(tok["canarytoken"])):
        uri = t.get("qr_code")
        assert isinstance(uri, str), t
        prefix = "data:image/png;base64,"
        assert uri.startswith(prefix), uri[:60]
        png = base64.b64decode(uri[len(prefix):], validate=True)
        assert png[:8] == b"\x89PNG\r\n\x1a\n", png[:8]
        path = tmp_path / f"{t['canarytoken']}.png"
        path.write_bytes(png)
        out = subprocess.run([ZBARIMG, "--raw", "-q", str(path)], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, (out.returncode, out.stderr)
        assert out.stdout.strip() == tok["url"]


def test_qr_code_optional_redirect_lifecycle(server, api):
    target = "https://intranet.example/menu?table=4"
    tok = api.create_token("qr-code", browser_redirect_url=target)
    tid = tok["canarytoken"]
    assert tok.get("browser_redirect_url") == target
    r = requests.get(tok["url"], allow_redirects=False, timeout=10)
    assert r.status_code == 302, (r.status_code, r.content[:100])
    assert r.headers["Location"] == target
    api.wait_incidents(tid)

    new = "https://intranet.example/other"
    upd = api.ok_post("canarytoken/update/redirect_url", canarytoken=tid, redirect_url=new)["token"]
    assert upd.get("browser_redirect_url") == new
    r = requests.get(tok["url"], allow_redirects=False, timeout=10)
    assert (r.status_code, r.headers.get("Location")) == (302, new)

    body = api.ok_post("canarytoken/remove/redirect_url", canarytoken=tid)
    assert body["token"]["canarytoken"] == tid
    assert body["token"]["kind"] == "qr-code"
    assert body["token"].get("browser_redirect_url") == ""
    assert api.fetch_token(tid).get("browser_redirect_url") == ""
    r = requests.get(tok["url"], allow_redirects=False, timeout=10)
    assert r.status_code == 200, (r.status_code, r.headers)
    assert is_gif(r.content), r.content[:20]

    # A qr-code made without one can get one later.
    plain = api.create_token("qr-code")
    r = requests.get(plain["url"], allow_redirects=False, timeout=10)
    assert r.status_code == 200 and is_gif(r.content)
    api.ok_post("canarytoken/update/redirect_url", canarytoken=plain["canarytoken"], redirect_url=target)
    r = requests.get(plain["url"], allow_redirects=False, timeout=10)
    assert (r.status_code, r.headers.get("Location")) == (302, target)


@pytest.mark.parametrize("kind", ["fast-redirect", "slow-redirect"])
def test_remove_redirect_url_is_refused_for_redirect_kinds(api, kind):
    target = "https://intranet.example/stay"
    tok = api.create_token(kind, browser_redirect_url=target)
    assert_error(api.post("canarytoken/remove/redirect_url", canarytoken=tok["canarytoken"]), 400, BAD_PARAMS)
    assert api.fetch_token(tok["canarytoken"]).get("browser_redirect_url") == target
    assert_error(api.post("canarytoken/remove/redirect_url", canarytoken="0" * 25), 404,
                 "Could not find the Canarytoken")


def test_cloned_web_render_is_a_script_tag(api):
    tok = api.create_token("cloned-web", cloned_web="intranet.example.com")
    js = tok["renders"]["cloned-web"]
    assert js.startswith("<script>"), js[:80]
    assert js.endswith("</script>"), js[-80:]
    inner = js[len("<script>"):-len("</script>")]
    assert "<script" not in inner and "</script" not in inner
    assert "intranet.example.com" in inner
    assert tok["url"] in inner


def test_memo_up_to_ten_thousand_characters(server, api):
    ok = "m" * 10000
    assert api.create_token("dns", memo=ok)["memo"] == ok
    wide = "é" * 10000  # characters, not bytes
    assert api.create_token("dns", memo=wide)["memo"] == wide
    assert_error(api.post("canarytoken/create", kind="dns", memo="m" * 10001), 400, BAD_PARAMS)

    tid = api.create_token("dns")["canarytoken"]
    assert api.ok_post("canarytoken/update", canarytoken=tid, memo=ok)["token"]["memo"] == ok
    assert_error(api.post("canarytoken/update", canarytoken=tid, memo="u" * 10001), 400, BAD_PARAMS)
    assert api.fetch_token(tid)["memo"] == ok

    fac = api.ok_post("canarytoken/create_factory", memo=ok)["factory_auth"]
    assert_error(api.post("canarytoken/create_factory", memo="f" * 10001), 400, BAD_PARAMS)
    made = requests.post(api.url("canarytoken/factory/create"), timeout=10,
                         data={"factory_auth": fac, "kind": "dns", "memo": ok})
    assert made.status_code == 200, made.text[:300]
    assert made.json()["canarytoken"]["memo"] == ok
    assert_error(requests.post(api.url("canarytoken/factory/create"), timeout=10,
                               data={"factory_auth": fac, "kind": "dns", "memo": "f" * 10001}), 400, BAD_PARAMS)


def test_custom_domain_is_refused_and_nothing_is_made(api):
    fid = api.create_flock(unique("customdomain"))
    b = assert_error(api.post("canarytoken/create", kind="dns", memo=unique("cd"), flock_id=fid,
                              custom_domain="tokens.example.com"), 400, BAD_PARAMS)
    assert "custom_domain" in b.get("detail", ""), b
    assert api.ok_get("canarytokens/fetch", flock_id=fid)["tokens"] == []
    # An empty one is no custom domain at all.
    tok = api.create_token("dns", flock_id=fid, custom_domain="")
    assert ids(api.ok_get("canarytokens/fetch", flock_id=fid)["tokens"]) == [tok["canarytoken"]]


# --- canarytokens/paginate ---------------------------------------------------------------------

def test_paginate_defaults_to_ten_newest_first_with_documented_cursor(fresh_server):
    srv = fresh_server
    api = srv.api()
    made = [api.create_token("dns", memo=f"page {i}")["canarytoken"] for i in range(23)]
    newest = made[::-1]

    p1 = paginate(api)
    assert ids(p1["canarytokens"]) == newest[:10]
    assert (p1.get("page_num"), p1.get("page_total")) == (1, 3)
    c1 = get_cursor_obj(p1)
    assert c1["prev"] is None and c1["prev_link"] is None
    assert isinstance(c1["next"], str) and c1["next"]
    link = urlsplit(c1["next_link"])
    assert f"{link.scheme}://{link.netloc}{link.path}" == srv.api_url + "canarytokens/paginate"
    q = parse_qs(link.query)
    assert q == {"cursor": [c1["next"]], "auth_token": [srv.admin_token]}, q

    # The link works as it is; the bare cursor gives the same page.
    p2 = ok_body(requests.get(c1["next_link"], timeout=10))
    assert ids(p2["canarytokens"]) == newest[10:20]
    assert p2.get("page_num") == 2 and p2.get("page_total") == 3
    assert ids(paginate(api, cursor=c1["next"])["canarytokens"]) == newest[10:20]
    c2 = get_cursor_obj(p2)
    assert isinstance(c2["prev"], str) and isinstance(c2["prev_link"], str)

    p3 = paginate(api, cursor=c2["next"])
    assert ids(p3["canarytokens"]) == newest[20:]
    assert p3.get("page_num") == 3
    c3 = get_cursor_obj(p3)
    assert c3["next"] is None and c3["next_link"] is None
    # Back one page.
    assert ids(paginate(api, cursor=c3["prev"])["canarytokens"]) == newest[10:20]

    # With the header instead of a parameter, the link carries no auth_token.
    hdr = {"X-Canary-Auth-Token": srv.admin_token}
    r = requests.get(api.url("canarytokens/paginate"), headers=hdr, params={"limit": 20}, timeout=10)
    c = get_cursor_obj(ok_body(r))
    assert "auth_token" not in parse_qs(urlsplit(c["next_link"]).query), c["next_link"]
    last = ok_body(requests.get(c["next_link"], headers=hdr, timeout=10))
    assert ids(last["canarytokens"]) == newest[20:]
    assert (last.get("page_num"), last.get("page_total")) == (2, 2)


def test_paginate_flock_filter_and_cursor_alone_keeps_limit_and_flock(api):
    fid = api.create_flock(unique("pageflock"))
    mine = []
    for i in range(5):
        mine.append(api.create_token("dns", memo=f"in flock {i}", flock_id=fid)["canarytoken"])
        api.create_token("dns", memo=f"outside {i}")  # interleaved tokens of another flock
    newest = mine[::-1]
    p = paginate(api, flock_id=fid, limit=2)
    assert ids(p["canarytokens"]) == newest[:2]
    assert (p.get("page_num"), p.get("page_total")) == (1, 3)
    seen = ids(p["canarytokens"])
    cur = get_cursor_obj(p)["next"]
    pages = 1
    while cur:
        p = paginate(api, cursor=cur)
        pages += 1
        assert len(p["canarytokens"]) <= 2
        assert all(t["flock_id"] == fid for t in p["canarytokens"]), p["canarytokens"]
        assert p.get("page_num") == pages
        seen += ids(p["canarytokens"])
        cur = get_cursor_obj(p)["next"]
        assert pages < 10, "paging never ended"
    assert pages == 3
    assert seen == newest

    empty = paginate(api, flock_id=api.create_flock(unique("emptyflock")))
    assert empty["canarytokens"] == []
    assert (empty.get("page_num"), empty.get("page_total")) == (1, 1)
    assert get_cursor_obj(empty)["next"] is None
    assert_error(api.get("canarytokens/paginate", flock_id="flock:nosuchflock"), 404, FLOCK_MISSING)


def test_paginate_limit_bounds(api):
    for bad in ("0", "-1", "5001", "ten"):
        assert_error(api.get("canarytokens/paginate", limit=bad), 400)
    api.create_token("dns")
    assert len(paginate(api, limit=1)["canarytokens"]) == 1
    assert paginate(api, limit=5000).get("page_num") == 1


def test_paginate_with_render_transients_uses_a_string_cursor(fresh_server):
    api = fresh_server.api()
    made = [api.create_token("dns", memo=f"rt {i}")["canarytoken"] for i in range(7)]
    for flag in ("True", "False"):
        seen, cursor, pages = [], None, 0
        while True:
            params = {"limit": 3, "render_transients": flag}
            if cursor:
                params["cursor"] = cursor
            body = paginate(api, **params)
            pages += 1
            cursor = body["cursor"]
            assert cursor is None or isinstance(cursor, str), f"render_transients={flag}: cursor {cursor!r}"
            seen += ids(body["canarytokens"])
            if not cursor or pages > 10:
                break
        assert pages == 3, pages
        assert seen == made[::-1]


# --- canarytokens/search -----------------------------------------------------------------------

def test_search_string_is_a_word_prefix_search(api):
    tag = word_tag()
    fid = api.create_flock(unique("searchflock"))
    a = api.create_token("http", memo=f"{tag} Payroll share")["canarytoken"]
    b = api.create_token("http", memo=f"{tag} payday-notes")["canarytoken"]
    c = api.create_token("http", memo=f"{tag} Shared drive (HR)")["canarytoken"]
    d = api.create_token("http", memo=f"{tag} HR/roll-out plan", flock_id=fid)["canarytoken"]
    e = api.create_token("dns", memo=f"{tag} archive")["canarytoken"]
    everything = {a, b, c, d, e}

    def found(s, **kw):
        return search_ids(api, search_string=s, **kw)

    assert found(tag) == everything
    assert found(tag[:9]) == everything
    assert found(f"{tag} pay") == {a, b}
    assert found(f"{tag} sha") == {a, c}
    assert found(f"{tag} roll") == {d}        # "Payroll" holds "roll", but not at a word's start
    assert found(f"{tag} ayroll") == set()
    assert found(f"{tag} PAY SHA") == {a}      # every word must match
    assert found(f"{tag} Payroll share") == {a}
    assert found(f"{tag} hr") == {c, d}
    assert found(f"{tag} out") == {d}
    assert found(f"{tag} notes") == {b}

    # The token id: its start, not its middle.
    assert found(a[:7]) == {a}
    assert a not in found(a[3:11])
    assert found(a) == {a}
    assert found(f"{a[:7]} payroll") == {a}
    assert found(f"{b[:7]} payroll") == set()

    # The other filters, with it.
    api.ok_post("canarytoken/disable", canarytoken=c)
    assert found(tag, active="false") == {c}
    assert found(tag, active="true") == everything - {c}
    assert found(tag, kind="dns") == {e}
    assert found(tag, flock_id=fid) == {d}
    assert_error(api.get("canarytokens/search", search_string=tag, active="maybe"), 400)
    assert_error(api.get("canarytokens/search", kind="no-such-kind"), 400, "Supplied kind is not valid.")
    assert_error(api.get("canarytokens/search", flock_id="flock:nosuchflock"), 404, FLOCK_MISSING)

    # The old undocumented substring filters still work.
    assert search_ids(api, memo=tag) == everything
    assert search_ids(api, search="ayroll") >= {a}
    assert search_ids(api, memo=tag, enabled="false") == {c}


def test_search_pages_and_counts(api):
    tag = word_tag()
    made = []
    for i in range(12):
        kind = "dns" if i % 2 == 0 else "http"
        made.append((api.create_token(kind, memo=f"{tag} item{i}")["canarytoken"], kind))
    newest = [t for t, _ in made[::-1]]

    first = search(api, search_string=tag)
    assert ids(first["canarytokens"]) == newest[:10]
    assert (first.get("page_number"), first.get("total_pages"), first.get("total_results")) == (1, 2, 12)

    body = search(api, search_string=tag, limit=5)
    assert (body.get("page_number"), body.get("total_pages"), body.get("total_results")) == (1, 3, 12)
    cur = get_cursor_obj(body)
    assert cur["prev"] is None
    seen, pages = ids(body["canarytokens"]), 1
    while cur["next"]:
        body = search(api, cursor=cur["next"])
        pages += 1
        assert body.get("page_number") == pages
        assert (body.get("total_pages"), body.get("total_results")) == (3, 12)
        seen += ids(body["canarytokens"])
        cur = get_cursor_obj(body)
        assert pages < 10
    assert pages == 3
    assert seen == newest

    # The cursor keeps the kind filter too.
    dns_newest = [t for t, k in made[::-1] if k == "dns"]
    body = search(api, search_string=tag, kind="dns", limit=2)
    assert body.get("total_results") == 6
    seen = ids(body["canarytokens"])
    nxt = get_cursor_obj(body)["next"]
    while nxt:
        body = search(api, cursor=nxt)
        assert all(t["kind"] == "dns" for t in body["canarytokens"]), body["canarytokens"]
        seen += ids(body["canarytokens"])
        nxt = get_cursor_obj(body)["next"]
        assert len(seen) <= 12
    assert seen == dns_newest

    # Search always answers the object cursor, even to canarytools' render_transients.
    get_cursor_obj(search(api, search_string=tag, limit=5, render_transients="True"))


def test_canarytokens_fetch_unknown_flock_is_404(api):
    assert_error(api.get("canarytokens/fetch", flock_id="flock:nosuchflock"), 404, FLOCK_MISSING)
    fid = api.create_flock(unique("fetchflock"))
    assert api.ok_get("canarytokens/fetch", flock_id=fid)["tokens"] == []


# --- deleting --------------------------------------------------------------------------------

def test_delete_refuses_a_triggered_token_without_clear_incidents(server, api):
    tid = api.create_token("http", memo=unique("triggered"))["canarytoken"]
    assert http_hit(server, tid).status_code == 200
    api.wait_incidents(tid)
    assert_error(api.post("canarytoken/delete", canarytoken=tid), 400, "Could not delete Canarydrop")
    assert_error(api.post("canarytoken/delete", canarytoken=tid, clear_incidents="false"), 400,
                 "Could not delete Canarydrop")
    assert api.fetch_token(tid)["canarytoken"] == tid
    assert len(api.incidents_for(tid)) == 1

    api.ok_post("canarytoken/delete", canarytoken=tid, clear_incidents="true")
    assert_error(api.get("canarytoken/fetch", canarytoken=tid), 404, "Could not find the Canarytoken")
    assert api.incidents_for(tid) == []

    # Without incidents (never hit, or its incidents deleted) a token goes without clear_incidents.
    quiet = api.create_token("http")["canarytoken"]
    api.ok_post("canarytoken/delete", canarytoken=quiet)
    assert api.get("canarytoken/fetch", canarytoken=quiet).status_code == 404
    cleaned = api.create_token("http")["canarytoken"]
    assert http_hit(server, cleaned).status_code == 200
    inc = api.wait_incidents(cleaned)[0]
    api.ok_post("incident/acknowledge", incident=inc["id"])
    api.ok_delete("incident/delete", incident=inc["id"])
    api.ok_post("canarytoken/delete", canarytoken=cleaned)
    assert api.get("canarytoken/fetch", canarytoken=cleaned).status_code == 404


def test_bulk_delete_by_domain_deletes_nothing(fresh_server):
    srv = fresh_server
    api = srv.api()
    quiet = api.create_token("dns")["canarytoken"]
    hot = api.create_token("http")["canarytoken"]
    assert http_hit(srv, hot).status_code == 200
    api.wait_incidents(hot)

    assert_error(api.post("canarytokens/delete"), 400)
    assert_error(api.delete("canarytokens/delete"), 400)
    for call in (api.post, api.delete):
        for domains in ("tokens.example.com", f"{srv.domain},tokens.example.com", srv.domain):
            r = call("canarytokens/delete", domains=domains, clear_incidents="true")
            assert r.status_code == 200, r.text[:300]
            assert r.json() == {"deleted_count": 0, "result": "success"}
    assert sorted(ids(api.ok_get("canarytokens/fetch")["tokens"])) == sorted([quiet, hot])
    assert len(api.incidents_for(hot)) == 1


# --- flocks ------------------------------------------------------------------------------------

def test_flock_summary_documented_shape(server, api):
    name = unique("summary")
    fid = api.create_flock(name)
    made = {}
    for kind, n in (("dns", 3), ("http", 2), ("fast-redirect", 2), ("qr-code", 1)):
        extra = {"browser_redirect_url": "https://intranet.example/"} if kind == "fast-redirect" else {}
        made[kind] = [api.create_token(kind, flock_id=fid, **extra)["canarytoken"] for _ in range(n)]
    api.ok_post("canarytoken/disable", canarytoken=made["dns"][0])
    hot = made["http"][0]
    hit_from(server, hot, 1)
    hit_from(server, hot, 2)
    assert http_hit(server, made["qr-code"][0]).status_code == 200
    incs = api.wait_incidents(hot, count=2)
    api.wait_incidents(made["qr-code"][0])

    body = api.ok_get("flock/summary", flock_id=fid)
    assert body == {
        "flock_id": fid,
        "name": name,
        "total_tokens": 8,
        "disabled_tokens": 1,
        "different_token_num": 4,
        "triggered_tokens": 2,
        "incident_count": 3,
        "unacknowledged_incident_count": 3,
        "top_tokens": [{"count": 3, "kind": "dns"}, {"count": 2, "kind": "fast-redirect"},
                       {"count": 2, "kind": "http"}],
        "result": "success",
    }, body

    api.ok_post("incident/acknowledge", incident=incs[0]["id"])
    body = api.ok_get("flock/summary", flock_id=fid, num_top_tokens="1")
    assert (body["incident_count"], body["unacknowledged_incident_count"]) == (3, 2)
    assert body.get("top_tokens") == [{"count": 3, "kind": "dns"}]
    assert api.ok_get("flock/summary", flock_id=fid, num_top_tokens="0").get("top_tokens") == []
    assert len(api.ok_get("flock/summary", flock_id=fid, num_top_tokens="100").get("top_tokens")) == 4
    for bad in ("101", "-1", "three"):
        assert_error(api.get("flock/summary", flock_id=fid, num_top_tokens=bad), 400)
    assert_error(api.get("flock/summary", flock_id="flock:nosuchflock"), 404, FLOCK_MISSING)


def test_flock_list_names_its_sensors(api):
    fid = api.create_flock(unique("sensors"))
    mine = [api.create_token(k, flock_id=fid)["canarytoken"] for k in ("dns", "http", "dns")]
    api.create_token("dns")  # elsewhere
    body = api.ok_get("flock/list", flock_id=fid)
    assert set(body) == {"sensors", "result"}, body
    assert sorted(body.get("sensors")) == sorted(mine)
    api.ok_post("canarytoken/delete", canarytoken=mine[0])
    assert sorted(api.ok_get("flock/list", flock_id=fid).get("sensors")) == sorted(mine[1:])
    assert api.ok_get("flock/list", flock_id=api.create_flock(unique("nosensors"))).get("sensors") == []
    assert_error(api.get("flock/list", flock_id="flock:nosuchflock"), 404, FLOCK_MISSING)


# --- canarytools 1.2.3 -------------------------------------------------------------------------

def test_canarytools_tokens_all_over_many_pages(fresh_server, monkeypatch):
    """tokens.all() sends render_transients and follows the cursor until it is falsy; with a page
    size of 7 (the client's module constant, normally 2500) 30 tokens take five pages."""
    import canarytools.models.canarytokens as ct_tokens
    srv = fresh_server
    api = srv.api()
    made = [api.create_token("dns" if i % 3 else "http", memo=f"many {i}")["canarytoken"] for i in range(30)]
    monkeypatch.setattr(ct_tokens, "CANARYTOKENS_PAGE_SIZE_LIMIT", 7)
    console = make_console(srv)
    sent = []
    console.session.hooks["response"].append(lambda r, *a, **k: sent.append(r.request.url))
    result = {}

    def run():
        try:
            result["tokens"] = console.tokens.all()
        except Exception as e:  # reported below
            result["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(20)
    assert not t.is_alive(), f"tokens.all() did not terminate after {len(sent)} requests"
    assert "error" not in result, result.get("error")
    got = [tk.canarytoken for tk in result["tokens"]]
    assert got == made[::-1], "every token once, newest first"
    assert len(sent) == 5, sent
    assert all("render_transients=True" in u for u in sent), sent


def test_canarytools_delete_of_a_triggered_token_raises(server):
    from canarytools import CanaryTokenKinds
    from canarytools.exceptions import CanaryTokenError
    console = make_console(server)
    api = server.api()
    tok = console.tokens.create(memo=unique("ct triggered"), kind=CanaryTokenKinds.HTTP)
    assert TOKEN_RE.match(tok.canarytoken)
    assert http_hit(server, tok.canarytoken).status_code == 200
    api.wait_incidents(tok.canarytoken)
    with pytest.raises(CanaryTokenError) as ei:
        tok.delete()
    assert str(ei.value) == "Could not delete Canarydrop"
    assert console.tokens.get_token(canarytoken=tok.canarytoken).canarytoken == tok.canarytoken
    assert wait_for(lambda: len(api.incidents_for(tok.canarytoken)) == 1, timeout=2, desc="incident kept")

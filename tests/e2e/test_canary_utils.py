"""Thinkst's canary-utils scripts (github.com/thinkst/canary-utils) against Trapline's Console dialect.

Each test makes the requests one of those scripts makes, and reads the answers the way it reads
them (curl and jq for the shell scripts, `requests` for the Python ones, PowerShell's form
encoding of booleans), written here in our own words. The scripts hard-code
`https://<domain>.canary.tools/api/v1/...`; the tests send the same requests to the test server.

Tokens: API2CSV-All_Tokens.sh (paginate, following `.cursor.next` with only the cursor),
CanaryToken_Multi-Dropper.sh (create, the token id grepped from the raw body, download),
delete_tokens.py / delete_tokens_threaded.py / delete_canarytokens_from_flocks.py (fetch, then
delete each), find_and_delete_tokens.ps1 and Gmail_Token_Difference.py (search, then act).
Incidents: alert_management.sh (save, bulk acknowledge, bulk delete, reading `.keys[]`),
Alert_Deleter.py, Search_Alerts.py (incidents/search), canary_alert_extract.sh (incidents/all
newer_than to CSV), canary_api2csv.sh (incremental export with incidents_since, limit and the
cursor), Fetch_and_Acknowledge_Flock_Alerts.py and alert_management.py (flock feeds and cursor).
"""

import concurrent.futures
import csv
import io
import json
import shutil
import socket
import subprocess
import uuid
from urllib.parse import urlsplit

import pytest
import requests

from conftest import CREATED_STD_RE, http_hit, unique

JQ = shutil.which("jq")
CURL = shutil.which("curl")
ZBARIMG = shutil.which("zbarimg")
needs_tools = pytest.mark.skipif(JQ is None or CURL is None, reason="the shell scripts need curl and jq")

pytestmark = needs_tools

SUMMARY = "Canarytoken triggered"


# --- helpers ---------------------------------------------------------------------------------

def base(server):
    """What the scripts spell https://<domain>.canary.tools/api/v1."""
    return server.api_url.rstrip("/")


def curl(*args, cwd=None):
    """Run the real curl; -> its stdout."""
    out = subprocess.run([CURL, *args], capture_output=True, text=True, timeout=20, cwd=cwd)
    assert out.returncode == 0, f"curl {args} failed ({out.returncode}): {out.stderr}"
    return out.stdout


def jq(program, text, raw=False):
    """Run the real jq over `text`; -> its stdout (a jq error is a failure of the answer's shape)."""
    cmd = [JQ] + (["-r"] if raw else []) + [program]
    out = subprocess.run(cmd, input=text, capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, f"jq {program!r} failed: {out.stderr.strip()}\non: {text[:500]!r}"
    return out.stdout


def json_stream(text):
    """The JSON values jq printed one after another."""
    dec, pos, values = json.JSONDecoder(), 0, []
    text = text.strip()
    while pos < len(text):
        value, end = dec.raw_decode(text, pos)
        values.append(value)
        pos = end
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return values


def csv_rows(text):
    return list(csv.reader(io.StringIO(text)))


def hit_from(server, token_id, n=1):
    """One GET of the token from loopback source 127.0.0.n (each source is its own incident)."""
    subprocess.run([CURL, "-sf", "-o", "/dev/null", "--interface", f"127.0.0.{n}",
                    f"{server.http_base()}/x/{token_id}/y.gif"], check=True, timeout=10)


def word_tag():
    return "zq" + uuid.uuid4().hex[:10]


def all_incidents(api, **params):
    return api.ok_get("incidents/all", **params)["incidents"]


def incident_ids(items):
    return {i["id"] for i in items}


def trigger_port(server):
    return str(urlsplit(server.http_url).port)


# --- tokens ----------------------------------------------------------------------------------

def test_api2csv_all_tokens_follows_cursor_next(fresh_server):
    """API2CSV-All_Tokens.sh: paginate with a limit, then `-d cursor=$VARCURSOR` alone (unencoded,
    as the script sends it) while `jq -r '.cursor.next'` is not "null"; each page to CSV with jq."""
    srv = fresh_server
    api = srv.api()
    fid = api.create_flock(unique("csvflock"))
    made = []
    for i in range(12):
        memo = f'Memo {i}, with "quotes"' if i % 4 == 0 else f"memo {i}"
        extra = {"flock_id": fid} if i % 5 == 0 else {}
        made.append(api.create_token("dns" if i % 2 else "http", memo=memo, **extra))
    api.ok_post("canarytoken/disable", canarytoken=made[3]["canarytoken"])
    expected = [api.fetch_token(t["canarytoken"]) for t in made[::-1]]  # newest first

    to_csv = ('.canarytokens[] | [.flock_id, .canarytoken, .created_printable, .enabled, .kind, .memo'
              ' | tostring] | @csv')
    url = base(srv) + "/canarytokens/paginate"
    page = curl("-s", url, "-d", f"auth_token={srv.admin_token}", "-d", "limit=5", "-G")
    cursor = jq(".cursor.next", page, raw=True).strip()
    rows = csv_rows(jq(to_csv, page, raw=True))
    sizes = [len(rows)]
    pages = 1
    while cursor != "null":
        assert pages < 10, "paging never ended"
        pages += 1
        page = curl("-s", url, "-d", f"auth_token={srv.admin_token}", "-d", f"cursor={cursor}", "-G")
        cursor = jq(".cursor.next", page, raw=True).strip()
        new = csv_rows(jq(to_csv, page, raw=True))
        sizes.append(len(new))
        rows += new
    assert sizes == [5, 5, 2], sizes
    assert rows == [[t["flock_id"], t["canarytoken"], t["created_printable"], str(t["enabled"]).lower(),
                     t["kind"], t["memo"]] for t in expected]
    assert rows[len(made) - 1 - 3][3] == "false"


def test_multi_dropper_greps_the_token_id_and_downloads(server, tmp_path):
    """CanaryToken_Multi-Dropper.sh (its qr-code dropper): create with curl, test the raw body for
    `"result": "success"`, take the id with `grep -o '"canarytoken": ".*"'` and two seds, then
    `curl -G -J --create-dirs --output` the download."""
    key = server.admin_token
    host = socket.gethostname()
    out_name = "qr_directory/QR_Code_Token.png"
    body = curl("-L", "-s", "-X", "POST", base(server) + "/canarytoken/create", "-d", f"auth_token={key}",
                "-d", f"memo='{host} - {out_name}'", "-d", "kind=qr-code")
    assert '"result": "success"' in body, body[:300]
    grep = subprocess.run(["grep", "-o", '"canarytoken": ".*"'], input=body, capture_output=True,
                          text=True, timeout=10)
    assert grep.returncode == 0, f"grep found no id line in:\n{body[:500]}"
    lines = grep.stdout.splitlines()
    assert len(lines) == 1, lines
    token_id = lines[0].replace('"canarytoken": ', "", 1).replace('"', "")
    tok = json.loads(body)["canarytoken"]
    assert token_id == tok["canarytoken"]
    assert tok["memo"] == f"'{host} - {out_name}'"

    curl("-L", "-s", "-G", "--create-dirs", "--output", out_name, "-J", base(server) + "/canarytoken/download",
         "-d", f"auth_token={key}", "-d", f"canarytoken={token_id}", cwd=tmp_path)
    png = (tmp_path / out_name).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n", png[:40]
    if ZBARIMG:
        dec = subprocess.run([ZBARIMG, "--raw", "-q", str(tmp_path / out_name)], capture_output=True,
                             text=True, timeout=30)
        assert dec.stdout.strip() == tok["url"], dec

    # A kind this server does not make: the script's test of the raw body sees the failure.
    body = curl("-L", "-s", "-X", "POST", base(server) + "/canarytoken/create", "-d", f"auth_token={key}",
                "-d", "memo='x'", "-d", "kind=aws-id")
    assert '"result": "success"' not in body
    assert '  "result": "error"' in body.splitlines(), body


def test_delete_tokens_loop_then_threaded_clear(fresh_server):
    """delete_tokens.py: GET canarytokens/fetch, then POST canarytoken/delete for each token with no
    clear_incidents (a triggered token is refused and stays, with its incident).
    delete_tokens_threaded.py then deletes the rest with `clear_incidents: True` from a thread pool."""
    srv = fresh_server
    api = srv.api()
    quiet = [api.create_token("dns")["canarytoken"] for _ in range(2)]
    hot = api.create_token("http")["canarytoken"]
    assert http_hit(srv, hot).status_code == 200
    api.wait_incidents(hot)

    resp = requests.get(f"{base(srv)}/canarytokens/fetch?auth_token={srv.admin_token}", timeout=10)
    listed = [t["canarytoken"] for t in resp.json()["tokens"]]
    assert sorted(listed) == sorted(quiet + [hot])
    status = {}
    for tid in listed:
        r = requests.post(f"{base(srv)}/canarytoken/delete", data={"auth_token": srv.admin_token,
                                                                   "canarytoken": tid}, timeout=10)
        status[tid] = (r.status_code, r.json().get("message"))
    assert status == {quiet[0]: (200, None), quiet[1]: (200, None), hot: (400, "Could not delete Canarydrop")}
    left = [t["canarytoken"] for t in api.ok_get("canarytokens/fetch")["tokens"]]
    assert left == [hot]
    assert len(api.incidents_for(hot)) == 1

    def delete(token, session):
        r = session.post(f"{base(srv)}/canarytoken/delete", timeout=10,
                         data={"auth_token": srv.admin_token, "canarytoken": token, "clear_incidents": True})
        return r.status_code

    more = [api.create_token("http")["canarytoken"] for _ in range(3)]
    for tid in more:
        assert http_hit(srv, tid).status_code == 200
        api.wait_incidents(tid)
    with requests.Session() as session, concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        codes = list(pool.map(lambda t: delete(t, session), [hot] + more))
    assert codes == [200] * 4
    assert api.ok_get("canarytokens/fetch")["tokens"] == []
    assert all_incidents(api) == []


def test_delete_canarytokens_from_flocks(server, api):
    """delete_canarytokens_from_flocks.py: fetch every token, delete those of the given flocks with
    clear_incidents 'true' (each answer 200), leave the others."""
    given = {api.create_flock(unique("wipe1")), api.create_flock(unique("wipe2"))}
    keep_flock = api.create_flock(unique("keep"))
    f1, f2 = sorted(given)
    hot = api.create_token("http", flock_id=f1)["canarytoken"]
    doomed = {hot, api.create_token("dns", flock_id=f2)["canarytoken"]}
    kept = api.create_token("dns", flock_id=keep_flock)["canarytoken"]
    assert http_hit(server, hot).status_code == 200
    api.wait_incidents(hot)

    data = requests.get(f"{base(server)}/canarytokens/fetch", params={"auth_token": server.admin_token},
                        timeout=10).json()
    deleted = {}
    for tok in data["tokens"]:
        if tok["flock_id"] in given:
            r = requests.post(f"{base(server)}/canarytoken/delete", timeout=10, data={
                "auth_token": server.admin_token, "canarytoken": str(tok["canarytoken"]), "clear_incidents": "true"})
            deleted[tok["canarytoken"]] = r.status_code
    assert deleted == {t: 200 for t in doomed}
    assert api.incidents_for(hot) == []
    remaining = {t["canarytoken"] for t in api.ok_get("canarytokens/fetch")["tokens"]}
    assert kept in remaining and not (doomed & remaining)


def test_find_and_delete_tokens_ps1(server, api):
    """find_and_delete_tokens.ps1: search with limit 3000, flock_id and kind, then POST
    canarytoken/delete for each result with clear_incidents as PowerShell sends a Bool ("False",
    then on a second run "True"), counting a non-200 as a failed delete."""
    fid = api.create_flock(unique("ps1"))
    quiet = api.create_token("http", flock_id=fid)["canarytoken"]
    hot = api.create_token("http", flock_id=fid)["canarytoken"]
    other_kind = api.create_token("dns", flock_id=fid)["canarytoken"]
    hit_from(server, hot, 1)
    api.wait_incidents(hot)

    def run(clear):
        params = {"auth_token": server.admin_token, "limit": "3000", "flock_id": fid, "kind": "http"}
        body = requests.get(f"{base(server)}/canarytokens/search", params=params, timeout=10).json()
        assert body.get("result") == "success", body
        found = [(t["canarytoken"], t["flock_id"], t["kind"], t["memo"]) for t in body["canarytokens"]]
        codes = {}
        for tid, *_ in found:
            r = requests.post(f"{base(server)}/canarytoken/delete", timeout=10, data={
                "auth_token": server.admin_token, "canarytoken": tid, "clear_incidents": clear})
            codes[tid] = r.status_code
        return codes

    assert run("False") == {quiet: 200, hot: 400}
    assert api.fetch_token(hot)["canarytoken"] == hot
    assert run("True") == {hot: 200}
    assert run("True") == {}
    assert api.fetch_token(other_kind)["kind"] == "dns"


def test_gmail_token_difference_search_loop(fresh_server):
    """Gmail_Token_Difference.py's token fetch: GET canarytokens/search with kind, active 'True',
    limit and cursor (None on the first call, so not sent), reading `cursor.next` until None.
    (The script asks for kind gmail, which Trapline does not make; dns stands in.)"""
    srv = fresh_server
    api = srv.api()
    active = [api.create_token("dns", memo=f"user{i}@example.com")["memo"] for i in range(5)]
    off = api.create_token("dns", memo="gone@example.com")["canarytoken"]
    api.ok_post("canarytoken/disable", canarytoken=off)
    api.create_token("http", memo="web@example.com")

    def page(cursor=None):
        payload = {"auth_token": srv.admin_token, "kind": "dns", "active": "True", "limit": 2, "cursor": cursor}
        body = requests.get(f"{base(srv)}/canarytokens/search", params=payload, timeout=10).json()
        assert "canarytokens" in body, body
        cur = body.get("cursor")
        assert isinstance(cur, dict), f"cursor must be an object with next, got {cur!r}"
        return [t.get("memo", "") for t in body["canarytokens"]], cur.get("next")

    memos, nxt = page()
    calls = 1
    while nxt is not None:
        more, nxt = page(nxt)
        memos.extend(more)
        calls += 1
        assert calls < 10
    assert calls == 3
    assert memos == active[::-1]


# --- incidents -------------------------------------------------------------------------------

def test_alert_management_sh_saves_acknowledges_then_deletes(fresh_server):
    """alert_management.sh: ping (jq -r .result), save `incidents/unacknowledged | jq '.incidents | .[]'`,
    then `curl -X POST incidents/acknowledge?auth_token=` and `incidents/delete` with no filter,
    each printed with `jq '.keys[]'`."""
    srv = fresh_server
    api = srv.api()
    a = api.create_token("http")["canarytoken"]
    b = api.create_token("http")["canarytoken"]
    hit_from(srv, a, 1)
    hit_from(srv, a, 2)
    hit_from(srv, b, 1)
    api.wait_incidents(a, count=2)
    api.wait_incidents(b)
    everything = incident_ids(all_incidents(api))
    assert len(everything) == 3
    q = f"auth_token={srv.admin_token}"

    assert jq(".result", curl("-s", f"{base(srv)}/ping?{q}"), raw=True).strip() == "success"
    saved = json_stream(jq(".incidents | .[]", curl("-s", "-X", "GET", f"{base(srv)}/incidents/unacknowledged?{q}")))
    assert incident_ids(saved) == everything

    acked = curl("-s", "-X", "POST", f"{base(srv)}/incidents/acknowledge?{q}")
    assert json.loads(acked).get("action") == "acknowledged"
    assert set(json_stream(jq(".keys[]", acked))) == everything
    assert api.ok_get("incidents/unacknowledged")["incidents"] == []

    deleted = curl("-s", "-X", "POST", f"{base(srv)}/incidents/delete?{q}")
    assert json.loads(deleted).get("action") == "deleted"
    assert set(json_stream(jq(".keys[]", deleted))) == everything
    assert all_incidents(api) == []
    # Run again on an empty Console: nothing to print, and jq is happy.
    assert jq(".keys[]", curl("-s", "-X", "POST", f"{base(srv)}/incidents/acknowledge?{q}")) == ""


def test_alert_deleter_py(fresh_server, tmp_path):
    """Alert_Deleter.py: POST incidents/acknowledge (auth only, in the query), GET
    incidents/acknowledged to a file, then DELETE incidents/delete with older_than=1h and
    include_unacknowledged=False; nothing here is an hour old, so nothing goes."""
    srv = fresh_server
    api = srv.api()
    t1 = api.create_token("http")["canarytoken"]
    t2 = api.create_token("http")["canarytoken"]
    for t in (t1, t2):
        assert http_hit(srv, t).status_code == 200
        api.wait_incidents(t)
    both = incident_ids(all_incidents(api))
    auth = {"auth_token": srv.admin_token}

    ack = requests.post(f"{base(srv)}/incidents/acknowledge", params=auth, timeout=10)
    assert ack.status_code == 200
    body = ack.json()
    assert body.get("action") == "acknowledged" and set(body.get("keys")) == both, body

    fetched = requests.get(f"{base(srv)}/incidents/acknowledged", params=auth, timeout=10)
    out = tmp_path / "Canary_Alerts.json"
    with open(out, "a") as f:
        f.write("\n" + fetched.content.decode("UTF-8"))
    saved = json.loads(out.read_text())
    assert incident_ids(saved["incidents"]) == both
    assert all(i["description"]["acknowledged"] == "True" for i in saved["incidents"])

    gone = requests.delete(f"{base(srv)}/incidents/delete", timeout=10,
                           params={**auth, "older_than": "1h", "include_unacknowledged": "False"})
    assert gone.status_code == 200
    assert gone.json() == {"action": "deleted", "keys": [], "result": "success"}
    assert incident_ids(all_incidents(api)) == both

    # The same delete without the age limit takes the acknowledged ones and spares a new one.
    t3 = api.create_token("http")["canarytoken"]
    assert http_hit(srv, t3).status_code == 200
    fresh = incident_ids(api.wait_incidents(t3))
    gone = requests.delete(f"{base(srv)}/incidents/delete", timeout=10,
                           params={**auth, "include_unacknowledged": "False"})
    assert set(gone.json().get("keys")) == both
    assert incident_ids(all_incidents(api)) == fresh


def test_search_alerts_py(server, api, tmp_path):
    """Search_Alerts.py: GET incidents/search with filter_str and limit=1000, the body saved as is."""
    tag = word_tag()
    a = api.create_token("http", memo=f"Finance {tag} share")["canarytoken"]
    b = api.create_token("dns", memo=f"{tag.upper()} backup")["canarytoken"]
    c = api.create_token("http", memo=unique("unrelated"))["canarytoken"]
    hit_from(server, a, 1)
    hit_from(server, a, 2)
    hit_from(server, b, 1)
    hit_from(server, c, 1)
    tagged = incident_ids(api.wait_incidents(a, count=2)) | incident_ids(api.wait_incidents(b))
    api.wait_incidents(c)

    def run(term, **extra):
        r = requests.get(f"{base(server)}/incidents/search", timeout=10,
                         params={"auth_token": server.admin_token, "filter_str": term, "limit": 1000, **extra})
        out = tmp_path / "Search_Results.json"
        out.write_bytes(r.content)
        assert r.status_code == 200, r.text[:300]
        return json.loads(out.read_bytes())

    body = run(tag)
    assert body["result"] == "success"
    assert incident_ids(body["incidents"]) == tagged
    assert (body.get("page_number"), body.get("total_pages"), body.get("total_results")) == (1, 1, 3)
    assert body.get("incident_source_counts") == {"127.0.0.1": 2, "127.0.0.2": 1}
    assert isinstance(body["cursor"], dict) and body["cursor"]["next"] is None, body["cursor"]
    for item in body["incidents"]:
        assert item["summary"] == SUMMARY
        assert tag in item["description"]["memo"].lower()
    assert incident_ids(run(tag.upper())["incidents"]) == tagged

    first_a = sorted(incident_ids(api.incidents_for(a)))[0]
    api.ok_post("incident/acknowledge", incident=first_a)
    assert incident_ids(run(tag)["incidents"]) == tagged - {first_a}
    assert incident_ids(run(tag, filter_incident_state="all")["incidents"]) == tagged
    assert incident_ids(run(tag, filter_incident_state="acknowledged")["incidents"]) == {first_a}
    r = requests.get(f"{base(server)}/incidents/search", timeout=10,
                     params={"auth_token": server.admin_token, "filter_incident_state": "some"})
    assert r.status_code == 400 and r.json()["result"] == "error", r.text[:300]


def test_canary_alert_extract_sh(fresh_server):
    """canary_alert_extract.sh: `curl "$baseurl=$dateformat"` (incidents/all?...&shrink=true&newer_than=
    1990-01-01-00:00:00) into jq, which reads created_std, description, dst_host, dst_port and
    src_host from each item's `description` object and writes CSV."""
    srv = fresh_server
    api = srv.api()
    tid = api.create_token("http")["canarytoken"]
    hit_from(srv, tid, 1)
    api.wait_incidents(tid)
    hit_from(srv, tid, 2)
    incs = api.wait_incidents(tid, count=2)
    by_src = {i["src_host"]: i for i in incs}
    program = ('.incidents[] | [.description | .created_std, .description, .dst_host, .dst_port, .src_host,'
               ' .src_host_reverse | tostring] | @csv')
    baseurl = f"{base(srv)}/incidents/all?auth_token={srv.admin_token}&shrink=true&newer_than"

    rows = csv_rows(jq(program, curl("-s", f"{baseurl}=1990-01-01-00:00:00"), raw=True))
    assert [r[4] for r in rows] == ["127.0.0.2", "127.0.0.1"], rows  # newest first
    for created_std, description, dst_host, dst_port, src_host, _ in rows:
        inc = by_src[src_host]
        assert CREATED_STD_RE.match(created_std), created_std
        assert created_std == inc["description"]["created_std"]
        assert description == SUMMARY
        assert dst_port == trigger_port(srv), (dst_port, srv.http_url)
        assert dst_host == "127.0.0.1", rows  # the trigger listener's address, as the hit reached it
        assert dst_host == inc["events"][0].get("dst_host")
    assert jq(program, curl("-s", f"{baseurl}=2100-01-01-00:00:00"), raw=True) == ""


def test_canary_api2csv_sh_incremental_export(fresh_server):
    """canary_api2csv.sh: ping, then incidents/all with incidents_since=<state>, limit and shrink
    (`--get --write-out '%{http_code}'`, the code split off the body's last line), `.max_updated_id`
    saved as the next state, pages followed with only cursor and shrink while `.cursor | .next`
    is not "null"; a later run sees only what changed."""
    srv = fresh_server
    api = srv.api()
    key = srv.admin_token
    feed = f"{base(srv)}/incidents/all"
    tokens = [api.create_token("http")["canarytoken"] for _ in range(5)]
    for t in tokens:
        assert http_hit(srv, t).status_code == 200
        api.wait_incidents(t)

    def get(url, *data):
        out = curl(url, *[x for d in data for x in ("-d", d)], "--get", "--silent", "--show-error",
                   "--write-out", "%{http_code}")
        lines = out.split("\n")
        return lines[-1], "\n".join(lines[:-1])

    code, content = get(f"{base(srv)}/ping", f"auth_token={key}")
    assert code == "200", f"the status is not on a line of its own: {content[-80:]!r} / {code!r}"
    assert json.loads(content)["result"] == "success"

    rows_program = ('.incidents[] | [.updated_id, (.description | .created_std, .description, .dst_host,'
                    ' .dst_port, .src_host, .src_host_reverse)] | @csv')

    def export(since):
        code, content = get(feed, f"auth_token={key}", f"incidents_since={since}", "limit=2", "shrink=true")
        assert code == "200", content[:300]
        max_id = jq(".max_updated_id", content, raw=True).strip()
        if max_id == "null":
            return None, []
        cursor = jq(".cursor | .next", content, raw=True).strip()
        rows = csv_rows(jq(rows_program, content, raw=True))
        page_sizes[:] = [len(rows)]
        while cursor != "null":
            code, content = get(feed, f"auth_token={key}", f"cursor={cursor}", "shrink=true")
            assert code == "200", content[:300]
            cursor = jq(".cursor | .next", content, raw=True).strip()
            more = csv_rows(jq(rows_program, content, raw=True))
            page_sizes.append(len(more))
            rows += more
            assert len(page_sizes) < 10
        return int(max_id), rows

    page_sizes = []

    max1, rows = export(0)
    assert page_sizes == [2, 2, 1], "the cursor alone keeps limit and incidents_since"
    feed_items = all_incidents(api)
    ids = sorted(i.get("updated_id") for i in feed_items)
    assert [int(r[0]) for r in rows] == ids, "every incident once, oldest update first"
    assert max1 == ids[-1]
    for r in rows:
        assert CREATED_STD_RE.match(r[1]) and r[2] == SUMMARY and r[5] == "127.0.0.1", r
        assert r[4] == trigger_port(srv), r

    # Nothing new: no rows. The Console leaves max_updated_id out of an empty answer (the script
    # then says "No new events"); an answer that repeats the last value is as good to it.
    again, rows = export(max1)
    assert rows == [] and again in (None, max1), (again, rows)

    late = api.create_token("http")["canarytoken"]
    assert http_hit(srv, late).status_code == 200
    late_inc = api.wait_incidents(late)[0]
    max2, rows = export(max1)
    assert [int(r[0]) for r in rows] == [late_inc.get("updated_id")]
    assert max2 == late_inc.get("updated_id") > max1

    old = api.incidents_for(tokens[0])[0]["id"]
    api.ok_post("incident/acknowledge", incident=old)
    changed = api.ok_get("incident/fetch", incident=old)["incident"].get("updated_id")
    max3, rows = export(max2)
    assert [int(r[0]) for r in rows] == [changed]
    assert max3 == changed > max2


def test_fetch_and_acknowledge_flock_alerts_py(server, api):
    """Fetch_and_Acknowledge_Flock_Alerts.py: GET incidents/unacknowledged for 'flock:'+id, then POST
    incidents/acknowledge with the same flock_id (params in the query); other flocks are untouched."""
    fid = api.create_flock(unique("ackflock"))
    mine = api.create_token("http", flock_id=fid)["canarytoken"]
    other = api.create_token("http")["canarytoken"]
    hit_from(server, mine, 1)
    hit_from(server, mine, 2)
    hit_from(server, other, 1)
    flock_incs = incident_ids(api.wait_incidents(mine, count=2))
    other_inc = api.wait_incidents(other)[0]["id"]
    flock_arg = "flock:" + fid.split(":", 1)[1]
    auth = {"auth_token": server.admin_token}

    r = requests.get(f"{base(server)}/incidents/unacknowledged", params={**auth, "flock_id": flock_arg}, timeout=10)
    assert incident_ids(json.loads(r.content.decode("UTF-8"))["incidents"]) == flock_incs
    r = requests.post(f"{base(server)}/incidents/acknowledge", params={**auth, "flock_id": flock_arg}, timeout=10)
    body = r.json()
    assert r.status_code == 200 and body.get("action") == "acknowledged", body
    assert set(body.get("keys")) == flock_incs
    assert api.ok_get("incidents/unacknowledged", flock_id=fid)["incidents"] == []
    assert api.ok_get("incident/fetch", incident=other_inc)["incident"]["acknowledged"] == "False"


def test_alert_management_py_pages_with_the_cursor(server, api):
    """alert_management.py -a false -f <flock> -l 1: GET incidents/unacknowledged with flock_id and
    limit, then drop limit from the payload and follow `cursor.next` (sent with auth and flock_id)."""
    fid = api.create_flock(unique("pyflock"))
    tid = api.create_token("http", flock_id=fid)["canarytoken"]
    for n in (1, 2, 3):
        hit_from(server, tid, n)
    want = incident_ids(api.wait_incidents(tid, count=3))
    api.create_token("http")  # another flock's token, never hit

    url = f"{base(server)}/incidents/unacknowledged"
    payload = {"auth_token": server.admin_token, "flock_id": "flock:" + fid.split(":", 1)[1], "limit": 1}
    body = requests.get(url, params=payload, timeout=10).json()
    incidents = body.get("incidents")
    assert len(incidents) == 1, body
    del payload["limit"]
    cur = body.get("cursor")
    assert isinstance(cur, dict), f"cursor must be an object with next, got {cur!r}"
    next_cursor = cur.get("next")
    pages = 1
    while next_cursor:
        payload["cursor"] = next_cursor
        body = requests.get(url, params=payload, timeout=10).json()
        assert isinstance(body.get("cursor"), dict), body
        next_cursor = body["cursor"].get("next")
        incidents += body.get("incidents")
        pages += 1
        assert pages < 10
    assert len(incidents) == 3 and incident_ids(incidents) == want, incidents

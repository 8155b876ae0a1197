"""SpaceSiren dialect, `/key` (seed 002): the provision key Trapline writes into its data dir, the
first keys made with it (and how it stops working once it has made an admin key), key CRUD with an
admin key pair (`X-Key-ID` / `X-Secret-ID`), who is refused and how, bad input, and the same key
used as a Canary Console `auth_token`.

The seed's own flows (provisioning the first key) are driven with curl, as the seed shows them;
the rest uses requests. Parameters travel as JSON bodies even on GET and DELETE.
"""

import json
import os
import re
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest
import requests

from conftest import unique

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")
KEY_FIELDS = {"key_id", "create_time", "expire_time", "active", "admin", "description"}
AUTH_FAILED = "Authentication failed."
DENIED = "Access denied."
NOT_FOUND = "Key not found."
JSON_CT = {"Content-Type": "application/json"}


# --- helpers -------------------------------------------------------------------------------------

def root(server):
    """The listener's root: the Console lives under /api/v1/, SpaceSiren's /key at the root."""
    base = server.api_url
    assert base.endswith("/api/v1/"), base
    return base[: -len("api/v1/")]


def key_url(server):
    return root(server) + "key"


def provision_key(server):
    return (Path(server.data_dir) / "provision.key").read_text().strip()


def curl(method, url, headers=None, body=None):
    """Run curl like an operator would; -> (status, parsed JSON body or None, raw text)."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    cmd = ["curl", "-sS", "-X", method, "-w", "\n%{http_code}", url]
    for k, v in (headers or {}).items():
        cmd += ["-H", f"{k}: {v}"]
    if body is not None:
        cmd += ["-H", "Content-Type: application/json",
                "--data-binary", body if isinstance(body, str) else json.dumps(body)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=15)
    assert r.returncode == 0, (r.returncode, r.stderr)
    text, _, code = r.stdout.rpartition("\n")
    try:
        parsed = json.loads(text) if text else None
    except ValueError:
        parsed = None
    return int(code), parsed, text


def provision(server, body, key=None):
    """POST /key with X-Provision-Key via curl."""
    return curl("POST", key_url(server), {"X-Provision-Key": key if key is not None else provision_key(server)},
                body)


def creds(key):
    return {"X-Key-ID": key["key_id"], "X-Secret-ID": key["secret_id"]}


def call(server, method, key=None, body=None, raw=None, headers=None):
    """A /key request with requests; `key` gives the auth headers, `body` is JSON-encoded,
    `raw` is sent verbatim (with the JSON content type)."""
    h = dict(headers or {})
    if key is not None:
        h.update(creds(key))
    data = None
    if body is not None:
        data = json.dumps(body)
    elif raw is not None:
        data = raw
    if data is not None:
        h.update(JSON_CT)
    return requests.request(method, key_url(server), data=data, headers=h, timeout=10)


def assert_ss_error(resp_or_tuple, status, message=None):
    """A SpaceSiren error: the status and a JSON body {"error": "<text>"}; -> the text."""
    if isinstance(resp_or_tuple, tuple):
        code, body, text = resp_or_tuple
    else:
        code, text = resp_or_tuple.status_code, resp_or_tuple.text
        ct = resp_or_tuple.headers.get("Content-Type", "").split(";")[0].strip()
        assert ct == "application/json", (code, ct, text[:300])
        body = json.loads(text) if text else None
    assert code == status, (code, text[:300])
    assert isinstance(body, dict) and set(body) == {"error"}, text[:300]
    assert isinstance(body["error"], str) and body["error"], body
    if message is not None:
        assert body["error"] == message, body
    return body["error"]


def ok(resp, status=200):
    assert resp.status_code == status, (resp.request.method, resp.status_code, resp.text[:300])
    return resp.json()


def check_key(k, *, admin, description="", active=True, expire_time=0, secret=True):
    assert UUID_RE.match(k["key_id"]), k
    assert isinstance(k["create_time"], int) and not isinstance(k["create_time"], bool), k
    assert abs(k["create_time"] - time.time()) < 600, k
    assert k["expire_time"] == expire_time and not isinstance(k["expire_time"], bool), k
    assert k["active"] is active, k
    assert k["admin"] is admin, k
    assert k["description"] == description, k
    if secret:
        assert SECRET_RE.match(k["secret_id"]), k
    return k


def new_key(server, admin_key, **body):
    k = ok(call(server, "POST", admin_key, body))["key"]
    check_key(k, admin=body.get("admin", False), description=body.get("description", ""),
              active=body.get("active", True), expire_time=body.get("expire_time", 0))
    return k


def get_key(server, admin_key, key_id):
    return ok(call(server, "GET", admin_key, {"key_id": key_id}))["key"]


def works(server, key):
    """Does `key` authenticate (as an admin: 200 on GET /key)?"""
    return call(server, "GET", key).status_code == 200


# --- fixtures -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def admin(server):
    """The admin key pair provisioned on the module's server, as the seed does it (curl)."""
    code, body, text = provision(server, {"admin": True, "description": "module admin"})
    assert code == 200, (code, text)
    return check_key(body["key"], admin=True, description="module admin")


@pytest.fixture(scope="module")
def user(server, admin):
    """A non-admin key pair made by the admin."""
    return new_key(server, admin, admin=False, description="module user")


# --- the provision key ---------------------------------------------------------------------------

def test_provision_key_file(fresh_server):
    path = Path(fresh_server.data_dir) / "provision.key"
    assert path.is_file(), os.listdir(fresh_server.data_dir)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600, oct(path.stat().st_mode)
    content = path.read_text()
    lines = content.splitlines()
    assert len(lines) == 1, content
    assert len(lines[0].strip()) >= 32, content
    assert lines[0].strip() == lines[0]
    assert any("provision key:" in l for l in fresh_server.stdout_lines), fresh_server.output()


def test_provision_admin_first_then_nothing(fresh_server):
    srv = fresh_server
    pk = provision_key(srv)
    code, body, text = provision(srv, {"admin": True, "description": "first"})
    assert code == 200, (code, text)
    assert set(body) == {"key"}, body
    first = body["key"]
    assert set(first) >= KEY_FIELDS | {"secret_id"}, first
    check_key(first, admin=True, description="first")
    # it works
    listed = ok(call(srv, "GET", first))
    assert first["key_id"] in {k["key_id"] for k in listed["keys"]}
    # the provision key is spent: neither an admin nor a non-admin key now
    for req in ({"admin": False}, {"admin": True}, {}, {"admin": False, "description": "late"}):
        assert_ss_error(provision(srv, req, pk), 401, AUTH_FAILED)
    after = ok(call(srv, "GET", first))
    assert after["count"] == listed["count"]
    # the admin key itself still makes keys
    new_key(srv, first, admin=False)


def test_provision_non_admin_first_then_admin_then_nothing(fresh_server):
    srv = fresh_server
    code, body, text = provision(srv, {"admin": False, "description": "reader"})
    assert code == 200, (code, text)
    reader = check_key(body["key"], admin=False, description="reader")
    code, body, text = provision(srv, {})
    assert code == 200, (code, text)
    defaults = check_key(body["key"], admin=False, description="")
    assert defaults["key_id"] != reader["key_id"] and defaults["secret_id"] != reader["secret_id"]
    # non-admin keys made with it do not spend it
    code, body, text = provision(srv, {"admin": True, "description": "boss"})
    assert code == 200, (code, text)
    boss = check_key(body["key"], admin=True, description="boss")
    for req in ({"admin": False}, {"admin": True}):
        assert_ss_error(provision(srv, req), 401, AUTH_FAILED)
    ids = {k["key_id"] for k in ok(call(srv, "GET", boss))["keys"]}
    assert {reader["key_id"], defaults["key_id"], boss["key_id"]} <= ids
    # the non-admin keys authenticate (and are refused /key as non-admins)
    assert_ss_error(call(srv, "GET", reader), 403, DENIED)


def test_provision_key_stays_spent_after_its_admin_is_demoted_or_deleted(fresh_server):
    """Audit F6: once the provision key has made an admin key it is spent for good, even when
    that admin is demoted or deleted, and across restarts."""
    srv = fresh_server
    pk = provision_key(srv)
    code, body, text = provision(srv, {"admin": True, "description": "made by the provision key"})
    assert code == 200, (code, text)
    made = body["key"]
    boss = new_key(srv, made, admin=True, description="second admin")
    # demoted
    r = call(srv, "PATCH", boss, {"key_id": made["key_id"], "admin": False})
    assert r.status_code == 200, r.text
    assert_ss_error(provision(srv, {"admin": True}, pk), 401, AUTH_FAILED)
    assert_ss_error(provision(srv, {"admin": False}, pk), 401, AUTH_FAILED)
    # deleted
    r = call(srv, "DELETE", boss, {"key_id": made["key_id"]})
    assert r.status_code == 204, r.text
    assert_ss_error(provision(srv, {"admin": True}, pk), 401, AUTH_FAILED)
    srv.restart()
    assert_ss_error(provision(srv, {"admin": True}, pk), 401, AUTH_FAILED)
    assert works(srv, boss)


def test_wrong_provision_key_and_other_methods(fresh_server):
    srv = fresh_server
    pk = provision_key(srv)
    wrong = [pk[:-1] + ("A" if pk[-1] != "A" else "B"), pk[:-1], pk + "x", "", "x" * len(pk),
             srv.admin_token]
    for w in wrong:
        assert_ss_error(provision(srv, {"admin": True}, w), 401, AUTH_FAILED)
    # only POST takes it
    hdr = {"X-Provision-Key": pk}
    assert_ss_error(call(srv, "GET", headers=hdr), 401, AUTH_FAILED)
    assert_ss_error(call(srv, "GET", body={}, headers=hdr), 401, AUTH_FAILED)
    assert_ss_error(curl("GET", key_url(srv), hdr), 401, AUTH_FAILED)
    assert_ss_error(curl("PATCH", key_url(srv), hdr, {"key_id": srv.admin_key["key_id"], "description": "x"}),
                    401, AUTH_FAILED)
    assert_ss_error(curl("DELETE", key_url(srv), hdr, {"key_id": srv.admin_key["key_id"]}), 401, AUTH_FAILED)
    # nothing was spent or changed: the provision key still makes the first admin key
    code, body, text = provision(srv, {"admin": True, "description": "after the wrong ones"})
    assert code == 200, (code, text)
    check_key(body["key"], admin=True, description="after the wrong ones")


# --- CRUD with an admin key -------------------------------------------------------------------------

def test_admin_creates_keys(server, admin):
    k = new_key(server, admin, admin=False, description="worker")
    assert k["key_id"] != admin["key_id"]
    defaults = new_key(server, admin)
    assert defaults["admin"] is False and defaults["active"] is True and defaults["expire_time"] == 0
    full = new_key(server, admin, admin=True, active=True, expire_time=1999999999, description="full")
    assert full["expire_time"] == 1999999999
    assert works(server, full)
    idle = new_key(server, admin, admin=True, active=False, description="born inactive")
    assert_ss_error(call(server, "GET", idle), 401, AUTH_FAILED)


def test_list_keys(server, admin, user):
    for r in (call(server, "GET", admin), call(server, "GET", admin, body={}), call(server, "GET", admin, raw="")):
        body = ok(r)
        assert set(body) == {"count", "keys"}, body
        assert body["count"] == len(body["keys"])
        ids = {k["key_id"] for k in body["keys"]}
        assert {admin["key_id"], user["key_id"]} <= ids
        for k in body["keys"]:
            assert "secret_id" not in k, k
            assert set(k) >= KEY_FIELDS, k
        assert admin["secret_id"] not in r.text and user["secret_id"] not in r.text
        mine = next(k for k in body["keys"] if k["key_id"] == user["key_id"])
        check_key(mine, admin=False, description="module user", secret=False)


def test_get_one_key(server, admin, user):
    r = call(server, "GET", admin, {"key_id": user["key_id"]})
    body = ok(r)
    assert set(body) == {"key"}, body
    k = body["key"]
    assert set(k) >= KEY_FIELDS, k
    check_key(k, admin=False, description="module user", secret=False)
    assert k["create_time"] == user["create_time"]
    assert user["secret_id"] not in r.text
    assert_ss_error(call(server, "GET", admin, {"key_id": "00000000-0000-4000-8000-000000000000"}), 404, NOT_FOUND)
    assert_ss_error(call(server, "GET", admin, {"key_id": unique("nokey")}), 404, NOT_FOUND)


def test_patch_key(server, admin):
    k = new_key(server, admin, admin=False, description="before")
    r = call(server, "PATCH", admin, {"key_id": k["key_id"], "description": "x", "active": False,
                                      "expire_time": 1999999999, "admin": True})
    body = ok(r)
    assert set(body) == {"key"}, body
    p = body["key"]
    assert p["key_id"] == k["key_id"]
    assert p["description"] == "x" and p["active"] is False and p["expire_time"] == 1999999999
    assert p["admin"] is True
    assert p["create_time"] == k["create_time"]
    g = get_key(server, admin, k["key_id"])
    assert (g["description"], g["active"], g["expire_time"], g["admin"]) == ("x", False, 1999999999, True)
    # missing attributes are not modified
    p2 = ok(call(server, "PATCH", admin, {"key_id": k["key_id"], "description": "only this"}))["key"]
    assert (p2["description"], p2["active"], p2["expire_time"], p2["admin"]) == ("only this", False, 1999999999, True)
    p3 = ok(call(server, "PATCH", admin, {"key_id": k["key_id"], "active": True, "admin": False}))["key"]
    assert (p3["description"], p3["active"], p3["expire_time"], p3["admin"]) == ("only this", True, 1999999999, False)


def test_patch_needs_a_known_key_id(server, admin):
    assert_ss_error(call(server, "PATCH", admin, {"description": "x"}), 400)
    assert_ss_error(call(server, "PATCH", admin, {}), 400)
    assert_ss_error(call(server, "PATCH", admin), 400)
    assert_ss_error(call(server, "PATCH", admin, {"key_id": "00000000-0000-4000-8000-000000000000",
                                                   "description": "x"}), 404, NOT_FOUND)


def test_delete_key(server, admin):
    k = new_key(server, admin, admin=True, description="doomed")
    assert works(server, k)
    r = call(server, "DELETE", admin, {"key_id": k["key_id"]})
    assert r.status_code == 204, (r.status_code, r.text)
    assert r.content == b""
    assert_ss_error(call(server, "DELETE", admin, {"key_id": k["key_id"]}), 404, NOT_FOUND)
    assert_ss_error(call(server, "GET", admin, {"key_id": k["key_id"]}), 404, NOT_FOUND)
    assert_ss_error(call(server, "PATCH", admin, {"key_id": k["key_id"], "active": True}), 404, NOT_FOUND)
    assert k["key_id"] not in {x["key_id"] for x in ok(call(server, "GET", admin))["keys"]}
    assert_ss_error(call(server, "GET", k), 401, AUTH_FAILED)
    assert_ss_error(call(server, "DELETE", admin, {}), 400)


# --- who is refused ---------------------------------------------------------------------------------

def test_non_admin_is_denied(server, admin, user):
    victim = new_key(server, admin, admin=False, description="victim")
    count = ok(call(server, "GET", admin))["count"]
    for method, body in [("POST", {"admin": False}), ("POST", {"admin": True}), ("POST", {}),
                         ("GET", None), ("GET", {}), ("GET", {"key_id": user["key_id"]}),
                         ("PATCH", {"key_id": user["key_id"], "admin": True}),
                         ("PATCH", {"key_id": victim["key_id"], "active": False}),
                         ("DELETE", {"key_id": victim["key_id"]}),
                         ("DELETE", {"key_id": user["key_id"]})]:
        assert_ss_error(call(server, method, user, body), 403, DENIED)
    # nothing changed
    assert ok(call(server, "GET", admin))["count"] == count
    assert get_key(server, admin, user["key_id"])["admin"] is False
    assert get_key(server, admin, victim["key_id"])["active"] is True


def test_bad_credentials(server, admin, user):
    other = new_key(server, admin, admin=True, description="other admin")
    cases = [
        {},
        {"X-Key-ID": admin["key_id"]},
        {"X-Secret-ID": admin["secret_id"]},
        {"X-Key-ID": "garbage", "X-Secret-ID": "garbage"},
        {"X-Key-ID": admin["key_id"], "X-Secret-ID": ""},
        {"X-Key-ID": admin["key_id"], "X-Secret-ID": admin["secret_id"][:-1]},
        {"X-Key-ID": admin["key_id"], "X-Secret-ID": other["secret_id"]},     # id of A, secret of B
        {"X-Key-ID": other["key_id"], "X-Secret-ID": admin["secret_id"]},
        {"X-Key-ID": admin["key_id"], "X-Secret-ID": user["secret_id"]},
        {"X-Key-ID": "00000000-0000-4000-8000-000000000000", "X-Secret-ID": admin["secret_id"]},
        {"X-Secret-ID": admin["secret_id"], "X-Canary-Auth-Token": admin["secret_id"]},
    ]
    for h in cases:
        for method, body in [("GET", None), ("POST", {"admin": True}), ("PATCH", {"key_id": user["key_id"]}),
                             ("DELETE", {"key_id": user["key_id"]})]:
            r = call(server, method, body=body, headers=h)
            try:
                assert_ss_error(r, 401, AUTH_FAILED)
            except AssertionError as e:
                raise AssertionError(f"{method} with {sorted(h)}: {e}") from None
    assert get_key(server, admin, user["key_id"])["key_id"] == user["key_id"]


def test_inactive_key_is_refused_until_reactivated(server, admin):
    k = new_key(server, admin, admin=True, description="switchable")
    assert works(server, k)
    ok(call(server, "PATCH", admin, {"key_id": k["key_id"], "active": False}))
    for method, body in [("GET", None), ("POST", {}), ("PATCH", {"key_id": k["key_id"], "active": True})]:
        assert_ss_error(call(server, method, k, body), 401, AUTH_FAILED)
    assert get_key(server, admin, k["key_id"])["active"] is False
    ok(call(server, "PATCH", admin, {"key_id": k["key_id"], "active": True}))
    assert works(server, k)


def test_expired_key_is_refused_until_revived(server, admin):
    k = new_key(server, admin, admin=True, description="expiring")
    ok(call(server, "PATCH", admin, {"key_id": k["key_id"], "expire_time": int(time.time()) + 3600}))
    assert works(server, k)
    ok(call(server, "PATCH", admin, {"key_id": k["key_id"], "expire_time": 1}))
    assert_ss_error(call(server, "GET", k), 401, AUTH_FAILED)
    assert_ss_error(call(server, "POST", k, {}), 401, AUTH_FAILED)
    assert get_key(server, admin, k["key_id"])["expire_time"] == 1      # kept, not deleted
    ok(call(server, "PATCH", admin, {"key_id": k["key_id"], "expire_time": 0}))
    assert works(server, k)
    # born expired
    dead = new_key(server, admin, admin=True, expire_time=1)
    assert_ss_error(call(server, "GET", dead), 401, AUTH_FAILED)


# --- bad input ----------------------------------------------------------------------------------------

def test_bad_bodies(server, admin, user):
    count = ok(call(server, "GET", admin))["count"]
    kid = user["key_id"]
    raws = ["{", "not json", "{'admin': true}", "[]", '[{"admin": true}]', '"admin"', "5"]
    for raw in raws:
        assert_ss_error(call(server, "POST", admin, raw=raw), 400)
        assert_ss_error(call(server, "PATCH", admin, raw=raw), 400)
        assert_ss_error(call(server, "DELETE", admin, raw=raw), 400)
    wrong_types = [{"admin": "yes"}, {"admin": 1}, {"expire_time": "soon"}, {"expire_time": 1.5},
                   {"expire_time": True}, {"active": 1}, {"active": "true"}, {"description": 5},
                   {"description": ["a"]}, {"expire_time": -1}, {"expire_time": -1999999999}]
    for bad in wrong_types:
        r = call(server, "POST", admin, bad)
        try:
            assert_ss_error(r, 400)
        except AssertionError as e:
            raise AssertionError(f"POST {bad}: {e}") from None
        r = call(server, "PATCH", admin, {"key_id": kid, **bad})
        try:
            assert_ss_error(r, 400)
        except AssertionError as e:
            raise AssertionError(f"PATCH {bad}: {e}") from None
    for bad_id in (5, None, True, ["x"], {"a": 1}):
        if bad_id is not None:
            assert_ss_error(call(server, "GET", admin, {"key_id": bad_id}), 400)
        assert_ss_error(call(server, "DELETE", admin, {"key_id": bad_id}), 400)
        assert_ss_error(call(server, "PATCH", admin, {"key_id": bad_id, "description": "x"}), 400)
    # nothing was created or changed
    assert ok(call(server, "GET", admin))["count"] == count
    check_key(get_key(server, admin, kid), admin=False, description="module user", secret=False)


def test_errors_are_json(server, admin):
    for r in (call(server, "GET", headers={}),
              call(server, "POST", admin, raw="{"),
              call(server, "GET", admin, {"key_id": "00000000-0000-4000-8000-000000000000"})):
        assert_ss_error(r, r.status_code)
        assert r.status_code in (400, 401, 404)


# --- the same keys in the Console dialect ------------------------------------------------------------

def test_spacesiren_admin_key_is_a_console_admin(server, admin):
    con = server.api(admin["secret_id"])
    assert con.ok_get("ping")
    tok = con.create_token("dns", memo="made with a SpaceSiren key")
    assert server.api().fetch_token(tok["canarytoken"])["memo"] == "made with a SpaceSiren key"
    fid = con.create_flock(unique("ss-admin"))
    assert fid in server.api().ok_get("flocks/list")["flocks"]


def test_spacesiren_user_key_is_a_console_analyst(server, admin, user):
    con = server.api(user["secret_id"])
    tok = con.create_token("http", memo="analyst via SpaceSiren")
    assert tok["memo"] == "analyst via SpaceSiren"
    r = con.post("flock/create", name=unique("ss-user"))
    assert r.status_code == 403, (r.status_code, r.text)
    assert r.json()["result"] == "error"
    # an inactive SpaceSiren key is no Console key either
    k = new_key(server, admin, admin=False, description="soon inactive")
    assert server.api(k["secret_id"]).ok_get("ping")
    ok(call(server, "PATCH", admin, {"key_id": k["key_id"], "active": False}))
    r = server.api(k["secret_id"]).get("ping")
    assert r.status_code == 401, (r.status_code, r.text)


def test_credentials_are_checked_before_the_body(server):
    """An unauthenticated caller learns nothing about body validation: 401 comes first."""
    url = key_url(server)
    for method in ("GET", "POST", "PATCH", "DELETE"):
        r = requests.request(method, url, data="[not json", headers={"Content-Type": "application/json",
                                                                      "X-Key-ID": "x", "X-Secret-ID": "y"}, timeout=10)
        assert r.status_code == 401, (method, r.status_code, r.text)
        assert r.json() == {"error": "Authentication failed."}

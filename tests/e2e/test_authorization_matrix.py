"""Authorization matrix: every management endpoint of every dialect × every kind of credential.

One module-scoped server holds all the credentials (made once, in the `world` fixture):

| kind | what it is |
| --- | --- |
| `none` | no credential at all |
| `wrong_secret` | the matrix admin's key id with a random secret |
| `expired_key` | an admin key made with SpaceSiren `POST /key`, then `PATCH expire_time 1` |
| `inactive_key` | an admin key made with SpaceSiren `POST /key`, then `PATCH active false` |
| `read_only`, `analyst`, `admin` | keys from `trapline key create` |
| `deploy_b` | `trapline key create --role deploy --flock <flock B>`, used against the default flock |
| `factory` | a Console `create_factory` string for the default flock |
| `factory_revoked` | the same, revoked with Falcon `PATCH /installation-tokens/entities/tokens/v1` |
| `factory_expired` | a Conjur host-factory token whose expiration has passed |
| `factory_outside_cidr` | a Conjur host-factory token for `cidr[]=127.0.0.2`, used from 127.0.0.1 |

How a credential travels, per dialect:

* Console: `auth_token` in the query string. On the two factory endpoints the secret goes in
  `factory_auth` (API keys send it as `auth_token` too, so a valid admin `auth_token` is present
  and still does not open a factory endpoint).
* SpaceSiren: `X-Key-ID` / `X-Secret-ID`; factory tokens as `X-Secret-ID` with a random key id.
* Falcon: `POST /oauth2/token` first (201 only for usable keys, otherwise 401 in the envelope);
  after a refused login the call carries the secret itself as its bearer (`none`: no header).
* Conjur: `POST /authn/myorg/<key id>/authenticate` first (200 only for usable keys, else 401),
  then `Authorization: Token token="<base64 access token>"`; after a refused login the secret
  itself is sent as the token. Factory tokens log in with a random login on
  `/host_factory_tokens` and are sent as they are (`Token token="<value>"`) on
  `/host_factories/hosts`, where API keys send their access token.

Expectations (the table `GRID` below): `ok` (200; 201 for Falcon creates and Conjur enrolment),
`401`, `403` or `404`, each refusal in its dialect's error shape. Two cells follow the
established rules of test_deploy_keys.py rather than a bare 403: a deploy key of flock B asking
for `canarytoken/create` in the default flock gets 404 `Flock does not exist.`, and downloading a
default-flock token 404 `Could not find the Canarytoken` (other flocks are never revealed).
`ping` needs nothing beyond a valid key, so the deploy key gets 200 there.

After the matrix, the audit log (`<data dir>/trapline.db`, opened read-only) must hold one
`permission_denied` row per 403 cell (actor = the key id, the cell's dialect), one action row per
allowed change or download, and the failed authentications as coalesced `auth_failed` rows.
Those tests need the whole matrix and skip when only part of it ran (`-k`).
"""

import base64
import io
import json
import os
import re
import sqlite3
import time
import uuid
import zipfile
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests

from conftest import wait_for
from kindtools import assert_error, attachment_re
from test_conjur import DEFAULT_HF, authn_url, future, hf_header, root, token_header

HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
DEFAULT_FLOCK = "flock:default"
BAD_AUTH = "Invalid auth_token"
BAD_FACTORY = "Invalid factory_auth"
SS_AUTH_FAILED = "Authentication failed."
SS_DENIED = "Access denied."
DIALECTS = ("console", "spacesiren", "falcon", "conjur")
AUTH_FAILED_RE = re.compile(r"^(?P<why>.+?)(?: \((?P<n>\d+) attempts\))?$")

# --- the matrix ----------------------------------------------------------------------------------

KINDS = ("none", "wrong_secret", "expired_key", "inactive_key", "read_only", "analyst", "admin", "deploy_b",
         "factory", "factory_revoked", "factory_expired", "factory_outside_cidr")
USABLE = {"read_only", "analyst", "admin", "deploy_b"}
FACTORY_KINDS = {"factory", "factory_revoked", "factory_expired", "factory_outside_cidr"}

# columns:                           none wrong expir inact  ro  anal admin depB  fac  fRev fExp fCidr
GRID = [
    ("console-ping",                 "401  401  401  401     ok   ok   ok   ok    401  401  401  401"),
    ("console-canarytokens_fetch",   "401  401  401  401     ok   ok   ok   403   401  401  401  401"),
    ("console-canarytoken_create",   "401  401  401  401     403  ok   ok   404   401  401  401  401"),
    ("console-canarytoken_disable",  "401  401  401  401     403  ok   ok   403   401  401  401  401"),
    ("console-canarytoken_download", "401  401  401  401     ok   ok   ok   404   401  401  401  401"),
    ("console-flock_create",         "401  401  401  401     403  403  ok   403   401  401  401  401"),
    ("console-incidents_all",        "401  401  401  401     ok   ok   ok   403   401  401  401  401"),
    ("console-incidents_search",     "401  401  401  401     ok   ok   ok   403   401  401  401  401"),
    ("console-incidents_acknowledge", "401  401  401  401    403  ok   ok   403   401  401  401  401"),
    ("console-flock_list",           "401  401  401  401     ok   ok   ok   403   401  401  401  401"),
    ("console-canarytokens_delete",  "401  401  401  401     403  ok   ok   403   401  401  401  401"),
    ("console-create_factory",       "401  401  401  401     403  403  ok   403   401  401  401  401"),
    ("console-list_factories",       "401  401  401  401     403  403  ok   403   401  401  401  401"),
    ("console-factory_create",       "401  401  401  401     401  401  401  401   ok   401  401  401"),
    ("console-factory_download",     "401  401  401  401     401  401  401  401   ok   401  401  401"),
    ("spacesiren-key_get",           "401  401  401  401     403  403  ok   403   401  401  401  401"),
    ("spacesiren-key_post",          "401  401  401  401     403  403  ok   403   401  401  401  401"),
    ("falcon-tokens_query",          "401  401  401  401     403  403  ok   403   401  401  401  401"),
    ("falcon-tokens_create",         "401  401  401  401     403  403  ok   403   401  401  401  401"),
    ("falcon-customer_settings",     "401  401  401  401     ok   ok   ok   403   401  401  401  401"),
    ("conjur-host_factory_tokens",   "401  401  401  401     403  403  ok   403   401  401  401  401"),
    ("conjur-hosts_enrol",           "401  401  401  401     401  401  401  401   ok   401  401  401"),
]


def _cells():
    cells = []
    for endpoint, row in GRID:
        expected = row.split()
        assert len(expected) == len(KINDS), endpoint
        cells += [(endpoint, kind, exp) for kind, exp in zip(KINDS, expected)]
    return cells


CELLS = _cells()
CELL_IDS = [f"{endpoint}-{kind}" for endpoint, kind, _ in CELLS]

CONSOLE_FACTORY_ENDPOINTS = {"console-factory_create", "console-factory_download"}
SUCCESS_STATUS = {"falcon-tokens_create": 201, "conjur-hosts_enrol": 201}
NOT_FOUND_MESSAGE = {"console-canarytoken_create": "Flock does not exist.",
                     "console-canarytoken_download": "Could not find the Canarytoken"}
# The audit action an allowed cell writes (None: a read, not audited as an action).
ACTION = {
    "console-canarytoken_create": "token_create",
    "console-canarytoken_disable": "token_disable",
    "console-canarytoken_download": "token_download",
    "console-flock_create": "flock_create",
    "console-create_factory": "factory_create",
    "console-factory_create": "token_create",
    "console-factory_download": "token_download",
    "spacesiren-key_post": "key_create",
    "falcon-tokens_create": "factory_create",
    "conjur-host_factory_tokens": "factory_create",
    "conjur-hosts_enrol": "host_enrol",
}
TRACKED_ACTIONS = set(ACTION.values()) | {"permission_denied"}

# Cells run so far (the audit tests need all of them).
RAN = set()


def dialect_of(endpoint):
    return endpoint.split("-", 1)[0]


# --- credentials and the shared server ------------------------------------------------------------

@dataclass
class Cred:
    kind: str
    secret: str = None
    key_id: str = None
    factory_id: str = None

    @property
    def usable(self):
        return self.kind in USABLE

    @property
    def is_factory(self):
        return self.kind in FACTORY_KINDS

    def login_id(self):
        """Key id for logins; factory tokens have none, so a random one."""
        return self.key_id or str(uuid.uuid4())

    @property
    def actor(self):
        """The audit actor of this credential (None when it is nobody's)."""
        if self.kind in ("none", "wrong_secret"):
            return None
        if self.key_id:
            return self.key_id
        return f"factory:{self.factory_id}" if self.factory_id else None


def random_secret():
    return base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")


class FreshConnections:
    """requests without a shared Session: one connection per request. (The server closes a
    connection, without `Connection: close`, when it refuses a POST before its body has arrived;
    a reused keep-alive connection then fails at random with RemoteDisconnected. That is
    transport, not authorization, so the matrix does not depend on it.)"""

    @staticmethod
    def request(method, url, **kw):
        return requests.request(method, url, **kw)

    def post(self, url, **kw):
        return self.request("POST", url, **kw)

    def patch(self, url, **kw):
        return self.request("PATCH", url, **kw)


class World:
    def __init__(self, server):
        self.server = server
        self.s = FreshConnections()
        self.base = root(server)
        self.api_url = server.api_url
        self.admin_api = server.api()          # the bootstrap key: setup only, never a matrix actor
        self.creds = {}
        self.flock_b = None
        self.win_tid = None
        self.setup_factories = 0
        self.setup_keys = 0


def ss_request(w, method, key, body=None):
    h = {"X-Key-ID": key["key_id"], "X-Secret-ID": key["secret_id"]}
    if body is not None:
        h["Content-Type"] = "application/json"
    return w.s.request(method, w.base + "key", headers=h, data=None if body is None else json.dumps(body),
                       timeout=15)


def conjur_login_ok(w, key):
    r = w.s.post(authn_url(w.server, key["key_id"]), data=key["secret_id"], timeout=15)
    assert r.status_code == 200, (r.status_code, r.text[:300])
    return token_header(r.text)


def falcon_login_ok(w, key):
    r = w.s.post(w.base + "oauth2/token", data={"client_id": key["key_id"], "client_secret": key["secret_id"]},
                 timeout=15)
    assert r.status_code == 201, (r.status_code, r.text[:300])
    return {"Authorization": "Bearer " + r.json()["access_token"]}


def conjur_factory_token(w, auth, expiration, cidr=()):
    form = [("host_factory", DEFAULT_HF), ("expiration", expiration)] + [("cidr[]", c) for c in cidr]
    r = w.s.post(w.base + "host_factory_tokens", headers=auth, data=form, timeout=15)
    assert r.status_code == 200, (r.status_code, r.text[:300])
    toks = r.json()
    assert len(toks) == 1, toks
    return toks[0]


@pytest.fixture(scope="module")
def world(server):
    w = World(server)
    boot = server.admin_key

    # Conjur-made factory tokens first, so the expiring one runs out while the rest is set up.
    conj = conjur_login_ok(w, boot)
    expires_at = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=3)
    expiring = conjur_factory_token(w, conj, expires_at.strftime("%Y-%m-%dT%H:%M:%S+00:00"))
    fenced = conjur_factory_token(w, conj, future(), cidr=["127.0.0.2"])
    assert fenced["cidr"] == ["127.0.0.2/32"], fenced

    w.flock_b = w.admin_api.create_flock("matrix flock B")
    keys = {role: server.create_key(role) for role in ("admin", "analyst", "read-only")}
    deploy = server.create_key("deploy", flock=w.flock_b)
    assert deploy["flock_id"] == w.flock_b

    # Admin keys made unusable through SpaceSiren: if expiry or deactivation were ignored, they
    # would be allowed everything.
    made = {}
    for name, change in (("expired_key", {"expire_time": 1}), ("inactive_key", {"active": False})):
        r = ss_request(w, "POST", boot, {"admin": True, "description": f"matrix {name}"})
        assert r.status_code == 200, (r.status_code, r.text[:300])
        made[name] = r.json()["key"]
        r = ss_request(w, "PATCH", boot, {"key_id": made[name]["key_id"], **change})
        assert r.status_code == 200, (r.status_code, r.text[:300])
        for k, v in change.items():
            assert r.json()["key"][k] == v, r.text

    # Console factory strings: one to use, one to revoke through Falcon.
    fac = w.admin_api.ok_post("canarytoken/create_factory", memo="matrix factory")
    rev = w.admin_api.ok_post("canarytoken/create_factory", memo="matrix revoked factory")
    r = w.s.patch(w.base + "installation-tokens/entities/tokens/v1", params={"ids": rev["factory_id"]},
                  json={"revoked": True}, headers=falcon_login_ok(w, boot), timeout=15)
    assert r.status_code == 200, (r.status_code, r.text[:300])
    assert r.json()["resources"][0]["status"] == "revoked", r.text

    w.win_tid = w.admin_api.create_token("windows-dir", memo="matrix download target")["canarytoken"]
    assert w.admin_api.fetch_token(w.win_tid)["flock_id"] == DEFAULT_FLOCK

    def statuses():
        return {f["factory_id"]: f["status"] for f in w.admin_api.ok_get("canarytoken/list_factories")["factories"]}

    # Until the Conjur token has expired (no failed authentication is spent on checking it).
    wait_for(lambda: "expired" in statuses().values(), timeout=8, interval=0.2, desc="the Conjur token to expire")
    st = statuses()
    assert st[fac["factory_id"]] == "valid" and st[rev["factory_id"]] == "revoked", st
    assert sorted(st.values()) == ["expired", "revoked", "valid", "valid"], st
    w.setup_factories = len(st)
    w.setup_keys = 1 + len(keys) + 1 + len(made)

    c = w.creds
    c["none"] = Cred("none")
    c["wrong_secret"] = Cred("wrong_secret", secret=random_secret(), key_id=keys["admin"]["key_id"])
    for name, k in made.items():
        c[name] = Cred(name, secret=k["secret_id"], key_id=k["key_id"])
    for kind, k in (("read_only", keys["read-only"]), ("analyst", keys["analyst"]), ("admin", keys["admin"]),
                    ("deploy_b", deploy)):
        c[kind] = Cred(kind, secret=k["auth_token"], key_id=k["key_id"])
    c["factory"] = Cred("factory", secret=fac["factory_auth"], factory_id=fac["factory_id"])
    c["factory_revoked"] = Cred("factory_revoked", secret=rev["factory_auth"], factory_id=rev["factory_id"])
    c["factory_expired"] = Cred("factory_expired", secret=expiring["token"])
    c["factory_outside_cidr"] = Cred("factory_outside_cidr", secret=fenced["token"])
    assert set(c) == set(KINDS)
    return w


# --- presenting credentials -------------------------------------------------------------------------

def console_call(w, cred, method, endpoint, factory=False, **params):
    """A Console request: auth_token in the query; on factory endpoints the secret as factory_auth."""
    query, form = {}, {}
    if cred.secret is not None:
        if not factory or not cred.is_factory:
            query["auth_token"] = cred.secret
        if factory:
            (form if method == "POST" else query)["factory_auth"] = cred.secret
    (query if method == "GET" else form).update(params)
    return w.s.request(method, w.api_url + endpoint, params=query, data=form or None, timeout=15)


def ss_call(w, cred, method, body=None):
    h = {}
    if cred.secret is not None:
        h = {"X-Key-ID": cred.login_id(), "X-Secret-ID": cred.secret}
    if body is not None:
        h["Content-Type"] = "application/json"
    return w.s.request(method, w.base + "key", headers=h, data=None if body is None else json.dumps(body),
                       timeout=15)


def falcon_auth(w, cred):
    """Log in (asserting 201 or 401); -> the headers the endpoint call carries."""
    if cred.secret is None:
        return {}
    r = w.s.post(w.base + "oauth2/token", data={"client_id": cred.login_id(), "client_secret": cred.secret},
                 timeout=15)
    if cred.usable:
        assert r.status_code == 201, ("login", r.status_code, r.text[:300])
        body = r.json()
        assert body["token_type"] == "bearer" and body["expires_in"] > 120, body
        return {"Authorization": "Bearer " + body["access_token"]}
    assert_falcon_error(r, 401)
    return {"Authorization": "Bearer " + cred.secret}


def conjur_auth(w, cred):
    """Log in (asserting 200 or 401); -> the headers the endpoint call carries."""
    if cred.secret is None:
        return {}
    r = w.s.post(authn_url(w.server, cred.login_id()), data=cred.secret, timeout=15)
    if cred.usable:
        assert r.status_code == 200, ("authn", r.status_code, r.text[:300])
        return token_header(r.text)
    assert r.status_code == 401, ("authn", r.status_code, r.text[:300])
    return {"Authorization": f'Token token="{cred.secret}"'}


# --- the endpoints: call, and what an allowed answer must show ---------------------------------------

def call_disable(w, cred):
    tid = w.admin_api.create_token("dns", memo=f"matrix-disable-{cred.kind}")["canarytoken"]
    r = console_call(w, cred, "POST", "canarytoken/disable", canarytoken=tid)
    r.matrix_tid = tid
    return r


def call_falcon(method, path, body=None):
    def call(w, cred):
        h = falcon_auth(w, cred)
        return w.s.request(method, w.base + "installation-tokens/" + path, headers=h, json=body, timeout=15)
    return call


def call_hf_tokens(w, cred):
    h = conjur_auth(w, cred)
    return w.s.post(w.base + "host_factory_tokens", headers=h,
                    data=[("host_factory", DEFAULT_HF), ("expiration", future())], timeout=15)


def call_enrol(w, cred):
    if cred.is_factory:
        h = hf_header(cred.secret)
    else:
        h = conjur_auth(w, cred)      # an API key's access token (or its refused secret)
    return w.s.post(w.base + "host_factories/hosts", headers=h, data={"id": f"matrix-{cred.kind}"}, timeout=15)


CALLS = {
    "console-ping": lambda w, c: console_call(w, c, "GET", "ping"),
    "console-canarytokens_fetch": lambda w, c: console_call(w, c, "GET", "canarytokens/fetch"),
    "console-canarytoken_create": lambda w, c: console_call(
        w, c, "POST", "canarytoken/create", kind="dns", memo=f"matrix-made-{c.kind}", flock_id=DEFAULT_FLOCK),
    "console-canarytoken_disable": call_disable,
    "console-canarytoken_download": lambda w, c: console_call(
        w, c, "GET", "canarytoken/download", canarytoken=w.win_tid),
    "console-flock_create": lambda w, c: console_call(w, c, "POST", "flock/create", name=f"matrix-{c.kind}"),
    "console-incidents_all": lambda w, c: console_call(w, c, "GET", "incidents/all"),
    "console-incidents_search": lambda w, c: console_call(w, c, "GET", "incidents/search", filter_incident_state="all"),
    # A filter that matches nothing: allowed callers get an empty list of keys, and nothing changes.
    "console-incidents_acknowledge": lambda w, c: console_call(
        w, c, "POST", "incidents/acknowledge", filter_str=f"matrix-no-such-memo-{c.kind}"),
    "console-flock_list": lambda w, c: console_call(w, c, "GET", "flock/list", flock_id=DEFAULT_FLOCK),
    "console-canarytokens_delete": lambda w, c: console_call(
        w, c, "POST", "canarytokens/delete", domains="tokens.example.com"),
    "console-create_factory": lambda w, c: console_call(
        w, c, "POST", "canarytoken/create_factory", memo=f"matrix-{c.kind}"),
    "console-list_factories": lambda w, c: console_call(w, c, "GET", "canarytoken/list_factories"),
    "console-factory_create": lambda w, c: console_call(
        w, c, "POST", "canarytoken/factory/create", factory=True, kind="dns", memo=f"matrix-made-{c.kind}"),
    "console-factory_download": lambda w, c: console_call(
        w, c, "GET", "canarytoken/factory/download", factory=True, canarytoken=w.win_tid),
    "spacesiren-key_get": lambda w, c: ss_call(w, c, "GET"),
    "spacesiren-key_post": lambda w, c: ss_call(w, c, "POST", {"admin": False, "description": f"matrix-{c.kind}"}),
    "falcon-tokens_query": call_falcon("GET", "queries/tokens/v1"),
    "falcon-tokens_create": lambda w, c: call_falcon("POST", "entities/tokens/v1", {"label": f"matrix-{c.kind}"})(w, c),
    "falcon-customer_settings": call_falcon("GET", "entities/customer-settings/v1"),
    "conjur-host_factory_tokens": call_hf_tokens,
    "conjur-hosts_enrol": call_enrol,
}
assert set(CALLS) == {e for e, _ in GRID}


def console_ok(r):
    assert r.status_code == 200, (r.status_code, r.text[:300])
    body = r.json()
    assert body.get("result") == "success", body
    return body


def check_zip(r):
    assert attachment_re("zip").match(r.headers.get("Content-Disposition", "")), r.headers
    zf = zipfile.ZipFile(io.BytesIO(r.content))
    assert zf.testzip() is None
    assert any(n.endswith("desktop.ini") for n in zf.namelist()), zf.namelist()


def falcon_ok(r, status=200):
    assert r.status_code == status, (r.status_code, r.text[:300])
    body = r.json()
    assert set(body) >= {"meta", "resources", "errors"}, body
    assert body["errors"] == [], body
    assert "X-Cs-Region" not in r.headers
    return body


def verify_allowed(w, endpoint, cred, r):
    if endpoint == "console-ping":
        console_ok(r)
    elif endpoint == "console-canarytokens_fetch":
        assert w.win_tid in {t["canarytoken"] for t in console_ok(r)["tokens"]}
    elif endpoint in ("console-canarytoken_create", "console-factory_create"):
        tok = console_ok(r)["canarytoken"]
        assert tok["flock_id"] == DEFAULT_FLOCK and tok["memo"] == f"matrix-made-{cred.kind}", tok
        if cred.is_factory:
            assert tok["factory_auth"] == cred.secret, tok
    elif endpoint == "console-canarytoken_disable":
        console_ok(r)
        assert w.admin_api.fetch_token(r.matrix_tid)["enabled"] is False
    elif endpoint in ("console-canarytoken_download", "console-factory_download"):
        assert r.status_code == 200, (r.status_code, r.text[:300])
        check_zip(r)
    elif endpoint == "console-flock_create":
        assert console_ok(r)["flock_id"].startswith("flock:")
    elif endpoint == "console-incidents_all":
        assert isinstance(console_ok(r)["incidents"], list)
    elif endpoint == "console-incidents_search":
        body = console_ok(r)
        assert isinstance(body["incidents"], list) and body["total_results"] == len(body["incidents"]), body
    elif endpoint == "console-incidents_acknowledge":
        assert console_ok(r)["keys"] == []
    elif endpoint == "console-flock_list":
        assert w.win_tid in console_ok(r)["sensors"]
    elif endpoint == "console-canarytokens_delete":
        assert console_ok(r)["deleted_count"] == 0
    elif endpoint == "console-create_factory":
        body = console_ok(r)
        assert HEX64_RE.match(body["factory_auth"]) and body["flock_id"] == DEFAULT_FLOCK, body
    elif endpoint == "console-list_factories":
        body = console_ok(r)
        listed = {f["factory_id"]: f["factory_auth"] for f in body["factories"]}
        assert listed.get(w.creds["factory"].factory_id) == w.creds["factory"].secret, body
    elif endpoint == "spacesiren-key_get":
        assert r.status_code == 200, (r.status_code, r.text[:300])
        body = r.json()
        assert body["count"] == len(body["keys"]) and cred.key_id in {k["key_id"] for k in body["keys"]}, body
        assert "secret_id" not in r.text
    elif endpoint == "spacesiren-key_post":
        assert r.status_code == 200, (r.status_code, r.text[:300])
        k = r.json()["key"]
        assert k["admin"] is False and k["secret_id"] and k["description"] == f"matrix-{cred.kind}", k
    elif endpoint == "falcon-tokens_query":
        body = falcon_ok(r)
        assert all(isinstance(i, str) for i in body["resources"]) and body["resources"], body
    elif endpoint == "falcon-tokens_create":
        res = falcon_ok(r, 201)["resources"]
        assert len(res) == 1 and res[0]["value"] and res[0]["status"] == "valid", res
        assert res[0]["label"] == f"matrix-{cred.kind}", res
    elif endpoint == "falcon-customer_settings":
        res = falcon_ok(r)["resources"]
        assert len(res) == 1 and set(res[0]) >= {"max_active_tokens", "tokens_required"}, res
    elif endpoint == "conjur-host_factory_tokens":
        assert r.status_code == 200, (r.status_code, r.text[:300])
        toks = r.json()
        assert len(toks) == 1 and HEX64_RE.match(toks[0]["token"]) and toks[0]["cidr"] == [], toks
    elif endpoint == "conjur-hosts_enrol":
        assert r.status_code == 201, (r.status_code, r.text[:300])
        host = r.json()
        assert isinstance(host["api_key"], str) and host["api_key"], host
        assert host["id"].endswith(f":host:matrix-{cred.kind}"), host
    else:
        raise AssertionError(f"no check for {endpoint}")


# --- refusals in each dialect's shape -----------------------------------------------------------------

def assert_falcon_error(r, status):
    assert r.status_code == status, (r.status_code, r.text[:300])
    assert r.headers.get("Content-Type", "").split(";")[0].strip() == "application/json", r.headers
    body = r.json()
    assert set(body) >= {"meta", "resources", "errors"}, body
    assert isinstance(body["meta"], dict), body
    assert isinstance(body["meta"].get("query_time"), (int, float)), body
    assert isinstance(body["meta"].get("trace_id"), str) and body["meta"]["trace_id"], body
    assert body["resources"] == [], body
    assert body["errors"], body
    for e in body["errors"]:
        assert e.get("code") == status, body
        assert isinstance(e.get("message"), str) and e["message"], body
    assert "X-Cs-Region" not in r.headers


def assert_ss_error(r, status):
    assert r.status_code == status, (r.status_code, r.text[:300])
    assert r.headers.get("Content-Type", "").split(";")[0].strip() == "application/json", r.headers
    assert r.json() == {"error": {401: SS_AUTH_FAILED, 403: SS_DENIED}[status]}, r.text


def assert_refused(w, endpoint, r, status):
    dialect = dialect_of(endpoint)
    if dialect == "console":
        message = {401: BAD_FACTORY if endpoint in CONSOLE_FACTORY_ENDPOINTS else BAD_AUTH,
                   404: NOT_FOUND_MESSAGE.get(endpoint)}.get(status)
        assert_error(r, status, message)
        assert "Content-Disposition" not in r.headers, r.headers
    elif dialect == "spacesiren":
        assert_ss_error(r, status)
    elif dialect == "falcon":
        assert_falcon_error(r, status)
    else:
        assert r.status_code == status, (r.status_code, r.text[:300])   # Conjur: bare 401 / 403
    for c in w.creds.values():
        if c.secret:
            assert c.secret not in r.text, f"a refusal echoes the {c.kind} secret"


# --- the cells ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("endpoint,kind,expected", CELLS, ids=CELL_IDS)
def test_cell(world, endpoint, kind, expected):
    RAN.add((endpoint, kind))
    cred = world.creds[kind]
    r = CALLS[endpoint](world, cred)
    if expected == "ok":
        assert r.status_code == SUCCESS_STATUS.get(endpoint, 200), (r.status_code, r.text[:300])
        verify_allowed(world, endpoint, cred, r)
    else:
        assert_refused(world, endpoint, r, int(expected))
        if endpoint == "console-canarytoken_disable":
            assert world.admin_api.fetch_token(r.matrix_tid)["enabled"] is True


# --- the audit log -------------------------------------------------------------------------------------

def need_full_matrix():
    missing = len(CELLS) - len(RAN)
    if missing:
        pytest.skip(f"needs the whole matrix in this run ({missing} cells did not run)")


def audit_rows(server, action=None):
    uri = Path(server.data_dir, "trapline.db").resolve().as_uri() + "?mode=ro"
    con = sqlite3.connect(uri, uri=True, timeout=10)
    try:
        sql = "SELECT id, time_us, actor, action, target, description, src_ip, dialect FROM audit_log"
        args = ()
        if action is not None:
            sql += " WHERE action = ?"
            args = (action,)
        return [dict(zip(("id", "time_us", "actor", "action", "target", "description", "src_ip", "dialect"), row))
                for row in con.execute(sql, args).fetchall()]
    finally:
        con.close()


def matrix_actors(world):
    """Audit actor id -> kind, for every credential that is somebody."""
    return {c.actor: c.kind for c in world.creds.values() if c.actor}


def test_audit_permission_denied(world):
    """Every 403 cell left exactly one `permission_denied` row: actor = the key id, its dialect."""
    need_full_matrix()
    expected = Counter((world.creds[k].actor, dialect_of(e)) for e, k, exp in CELLS if exp == "403")
    rows = audit_rows(world.server, "permission_denied")
    got = Counter((r["actor"], r["dialect"]) for r in rows)
    actors = matrix_actors(world)
    named = {(actors.get(a, a), d): n for (a, d), n in got.items()}
    want = {(actors[a], d): n for (a, d), n in expected.items()}
    assert named == want, f"permission_denied rows by (kind, dialect): got {named}, expected {want}"
    assert len(rows) == sum(expected.values())
    for r in rows:
        assert r["src_ip"] == "127.0.0.1", r
        assert r["description"], r


def test_audit_allowed_changes(world):
    """Each allowed change (and download) has its own action row, by its actor, in its dialect;
    refused calls wrote none."""
    need_full_matrix()
    actors = matrix_actors(world)
    expected = Counter((k, ACTION[e], dialect_of(e)) for e, k, exp in CELLS if exp == "ok" and e in ACTION)
    expected.update((k, "permission_denied", dialect_of(e)) for e, k, exp in CELLS if exp == "403")
    got = Counter((actors[r["actor"]], r["action"], r["dialect"]) for r in audit_rows(world.server)
                  if r["actor"] in actors and r["action"] in TRACKED_ACTIONS)
    assert got == expected, (f"missing: {dict(expected - got)}; unexpected: {dict(got - expected)}")
    # the targets name what was changed
    rows = [r for r in audit_rows(world.server) if r["actor"] in actors and r["action"] != "permission_denied"
            and r["action"] in TRACKED_ACTIONS]
    for r in rows:
        assert r["target"], r
        if r["action"] == "token_download":
            assert r["target"] == world.win_tid, r
        if r["action"] == "token_disable":
            assert world.admin_api.fetch_token(r["target"])["memo"] == f"matrix-disable-{actors[r['actor']]}", r


def failed_auth_attempts(endpoint, kind):
    """(unknown credential, other definite failures, ambiguous) for one cell.

    Definite: a secret or factory token was presented and did not check out. `unknown
    credential`: the secret matches no key (a wrong secret, or a factory token used as a key).
    Ambiguous: a request that carried nothing at all, or a session token no login issued (whether
    these count as failed authentications is not part of the contract)."""
    dialect = dialect_of(endpoint)
    if kind == "none":
        return 0, 0, 1
    unknown = kind == "wrong_secret" or kind in FACTORY_KINDS
    if endpoint in CONSOLE_FACTORY_ENDPOINTS:
        return 0, 0 if kind == "factory" else 1, 0
    if dialect in ("console", "spacesiren"):
        if kind in USABLE:
            return 0, 0, 0
        return (1, 0, 0) if unknown else (0, 1, 0)
    if endpoint == "conjur-hosts_enrol":
        if kind == "factory":
            return 0, 0, 0
        if kind in FACTORY_KINDS or kind in USABLE:
            return 0, 1, 0
        return (1, 1, 0) if unknown else (0, 2, 0)     # refused login, then the secret as a token
    # Falcon, Conjur host_factory_tokens: a login, then the call
    if kind in USABLE:
        return 0, 0, 0
    return (1, 0, 1) if unknown else (0, 1, 1)


def parse_auth_failed(row):
    m = AUTH_FAILED_RE.match(row["description"])
    assert m, row
    return m.group("why"), int(m.group("n") or 1)


def test_audit_failed_authentications(world):
    """Failed authentications arrive coalesced, as `auth_failed` rows from `anonymous` with the
    attempt count; the `unknown credential` counts per dialect are exact, the totals within the
    bounds the matrix sets."""
    need_full_matrix()
    unknown, low, high = Counter(), Counter(), Counter()
    for e, k, _ in CELLS:
        u, o, a = failed_auth_attempts(e, k)
        d = dialect_of(e)
        unknown[d] += u
        low[d] += u + o
        high[d] += u + o + a

    def tally():
        rows = audit_rows(world.server, "auth_failed")
        unk, tot = Counter(), Counter()
        for r in rows:
            why, n = parse_auth_failed(r)
            tot[r["dialect"]] += n
            if why == "unknown credential":
                unk[r["dialect"]] += n
        return rows, unk, tot

    def settled():
        rows, unk, tot = tally()
        return all(unk[d] >= unknown[d] and tot[d] >= low[d] for d in DIALECTS)

    deadline = time.monotonic() + 5.0
    while not settled() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.3)
    rows, unk, tot = tally()
    for d in DIALECTS:
        assert unk[d] == unknown[d], f"{d}: {unk[d]} 'unknown credential' attempts logged, expected {unknown[d]}"
        assert low[d] <= tot[d] <= high[d], f"{d}: {tot[d]} failed authentications logged, expected {low[d]}..{high[d]}"
    for r in rows:
        assert r["actor"] == "anonymous", r
        assert r["src_ip"] in ("127.0.0.1", "127.0.0.2"), r
        assert r["dialect"] in DIALECTS, r
    # coalesced: far fewer rows than attempts
    for d in DIALECTS:
        n_rows = sum(1 for r in rows if r["dialect"] == d and parse_auth_failed(r)[0] == "unknown credential")
        assert n_rows < unknown[d], f"{d}: {n_rows} rows for {unknown[d]} unknown-credential attempts"
    assert any(parse_auth_failed(r)[1] > 1 for r in rows), rows


def test_audit_never_holds_secrets(world):
    """No audit row carries a secret or factory token value that was presented."""
    need_full_matrix()
    secrets = [c.secret for c in world.creds.values() if c.secret]
    for r in audit_rows(world.server):
        text = json.dumps(r)
        for s in secrets:
            assert s not in text, r


def test_refused_calls_changed_nothing(world):
    """The store holds exactly what the allowed cells made: flocks, factories, keys, tokens."""
    need_full_matrix()
    allowed = Counter(e for e, _, exp in CELLS if exp == "ok")
    api = world.admin_api
    flocks = api.ok_get("flocks/list")["flocks"]
    assert set(flocks) >= {DEFAULT_FLOCK, world.flock_b}, flocks
    assert len(flocks) == 2 + allowed["console-flock_create"], flocks
    assert sorted(n for f, n in flocks.items() if f not in (DEFAULT_FLOCK, world.flock_b)) == ["matrix-admin"]

    factories = api.ok_get("canarytoken/list_factories")["factories"]
    made = allowed["console-create_factory"] + allowed["falcon-tokens_create"] + allowed["conjur-host_factory_tokens"]
    assert len(factories) == world.setup_factories + made, factories

    r = ss_request(world, "GET", world.server.admin_key)
    assert r.status_code == 200, r.text
    assert r.json()["count"] == world.setup_keys + allowed["spacesiren-key_post"] + allowed["conjur-hosts_enrol"]

    tokens = api.ok_get("canarytokens/fetch")["tokens"]
    made_memos = sorted(t["memo"] for t in tokens if t["memo"].startswith("matrix-made-"))
    want = sorted(f"matrix-made-{k}" for e, k, exp in CELLS
                  if exp == "ok" and e in ("console-canarytoken_create", "console-factory_create"))
    assert made_memos == want
    assert all(t["flock_id"] == DEFAULT_FLOCK for t in tokens if t["memo"].startswith("matrix-")), tokens
    assert api.ok_get("canarytokens/fetch", flock_id=world.flock_b)["tokens"] == []

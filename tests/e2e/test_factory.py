"""Canarytoken factory (Console dialect, seed 001): factory kinds, factory auth strings made with
`canarytoken/create_factory`, listed (never with their value), used to mint tokens in their own
flock (`canarytoken/factory/create` and the older `canarytoken/factory`), to download a token's
file, and deleted. A factory string can do nothing but that: every other endpoint answers it
with 401 `Invalid auth_token`, and an API key is no factory string either.
"""

import io
import re
import zipfile

import pytest
import requests

from conftest import DOMAIN, TOKEN_RE, Api, random_token_id, unique
from kindtools import assert_error, attachment_re, lookup

HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
HEX32_RE = re.compile(r"^[0-9a-f]{32}$")
FACTORY_URL = "/api/v1/canarytoken/factory"
BAD_FACTORY = "Invalid factory_auth"
BAD_AUTH = "Invalid auth_token"
NO_FLOCK = "Flock does not exist."
NO_TOKEN = "Could not find the Canarytoken"
CREATE_PATHS = ("canarytoken/factory/create", "canarytoken/factory")


# --- helpers -------------------------------------------------------------------------------

def bare(server):
    """A raw Console client that sends no auth_token at all."""
    return Api(server.api_url, None)


def make_factory(api, memo=None, **extra):
    body = api.ok_post("canarytoken/create_factory", memo=memo or unique("factory"), **extra)
    assert HEX64_RE.match(body["factory_auth"]), body
    assert HEX32_RE.match(body["factory_id"]), body
    return body


def factory_create(server, factory_auth, kind="dns", memo=None, path="canarytoken/factory/create", **extra):
    """POST a factory create the way the seed's Python example does (form body, no auth_token)."""
    return bare(server).post(path, auth=None, factory_auth=factory_auth, kind=kind,
                             memo=unique("made") if memo is None else memo, **extra)


def factory_token(server, factory_auth, kind="dns", memo=None, **extra):
    r = factory_create(server, factory_auth, kind=kind, memo=memo, **extra)
    tok = Api.ok(r)["canarytoken"]
    assert TOKEN_RE.match(tok["canarytoken"]), tok
    assert tok["factory_auth"] == factory_auth, tok
    assert tok["kind"] == kind
    return tok


def listed(api, factory_id):
    facs = [f for f in api.ok_get("canarytoken/list_factories")["factories"] if f["factory_id"] == factory_id]
    assert len(facs) <= 1, facs
    return facs[0] if facs else None


# --- factory kinds -----------------------------------------------------------------------------

def test_factory_kind_list(server, api):
    body = api.ok_get("canarytokens/factory/list")
    kinds = body["factory_canarytokens"]
    assert isinstance(kinds, dict)
    for kind in ("http", "dns", "qr-code", "windows-dir"):
        assert kind in kinds, kinds
    assert kinds["http"] == "Web Bug"
    assert all(isinstance(v, str) and v for v in kinds.values()), kinds
    assert_error(bare(server).get("canarytokens/factory/list", auth=None), 401, BAD_AUTH)


# --- create_factory ------------------------------------------------------------------------------

def test_create_factory_shape(api):
    body = make_factory(api, memo="fleet bootstrap")
    assert body["result"] == "success"
    assert body["factory_url"] == FACTORY_URL
    assert body["flock_id"] == "flock:default"


def test_create_factory_in_a_flock(api):
    fid = api.create_flock(unique("fac-flock"))
    body = make_factory(api, flock_id=fid)
    assert body["flock_id"] == fid
    assert listed(api, body["factory_id"])["flock_id"] == fid


def test_create_factory_auth_strings_are_unique(api):
    a, b = make_factory(api), make_factory(api)
    assert a["factory_auth"] != b["factory_auth"]
    assert a["factory_id"] != b["factory_id"]
    assert a["factory_auth"] != api.auth_token


def test_create_factory_bad_input(server, api):
    before = len(api.ok_get("canarytoken/list_factories")["factories"])
    assert_error(api.post("canarytoken/create_factory", memo=""), 400, "Empty memo")
    assert_error(api.post("canarytoken/create_factory"), 400)
    assert_error(api.post("canarytoken/create_factory", memo="m", flock_id="flock:" + "0" * 32), 404, NO_FLOCK)
    assert_error(api.post("canarytoken/create_factory", memo="m", flock_id="no-such-flock"), 404, NO_FLOCK)
    assert_error(bare(server).post("canarytoken/create_factory", auth=None, memo="m"), 401, BAD_AUTH)
    assert len(api.ok_get("canarytoken/list_factories")["factories"]) == before


@pytest.mark.parametrize("role", ["analyst", "read-only"])
def test_only_admins_create_factories(server, api, role):
    key = server.create_key(role)
    other = server.api(key["auth_token"])
    before = len(api.ok_get("canarytoken/list_factories")["factories"])
    assert_error(other.post("canarytoken/create_factory", memo="not allowed"), 403)
    assert_error(other.post("canarytoken/create_factory", memo="not allowed", flock_id="flock:default"), 403)
    assert len(api.ok_get("canarytoken/list_factories")["factories"]) == before


def test_cli_admin_key_creates_factories(server):
    adm = server.api(server.create_key("admin")["auth_token"])
    fac = make_factory(adm)
    factory_token(server, fac["factory_auth"])


# --- list_factories ------------------------------------------------------------------------------

def test_list_factories_shows_the_value_to_admins(server, api, tmp_path):
    """As documented, the list names each factory by its auth string (kept encrypted at rest,
    so it can be shown again), so scripts can delete by it; only admins may list."""
    fac = make_factory(api, memo="listed memo")
    r = api.get("canarytoken/list_factories")
    api.ok(r)
    item = listed(api, fac["factory_id"])
    assert set(item) >= {"factory_auth", "factory_id", "flock_id", "memo", "created", "last_used", "use_count",
                         "status"}, item
    assert item["factory_auth"] == fac["factory_auth"]
    assert item["memo"] == "listed memo"
    assert item["flock_id"] == "flock:default"
    assert item["status"] == "valid"
    assert item["use_count"] == 0
    assert item["created"]
    # The value is not in the database in the clear: only the data directory's key opens it.
    import sqlite3
    db = sqlite3.connect(f"file:{server.data_dir}/trapline.db?mode=ro", uri=True)
    try:
        dump = "\n".join(db.iterdump())
    finally:
        db.close()
    assert fac["factory_auth"] not in dump
    # Deleting by the listed string works.
    api.ok_delete("canarytoken/delete_factory", factory_auth=item["factory_auth"])
    assert listed(api, fac["factory_id"]) is None
    for role in ("analyst", "read-only"):
        other = Api(server.api_url, server.create_key(role)["auth_token"])
        assert_error(other.get("canarytoken/list_factories"), 403)


def test_use_count_increments(server, api):
    fac = make_factory(api)
    assert listed(api, fac["factory_id"])["use_count"] == 0
    factory_token(server, fac["factory_auth"])
    first = listed(api, fac["factory_id"])
    assert first["use_count"] == 1
    assert first["last_used"]
    factory_token(server, fac["factory_auth"], path="canarytoken/factory")
    factory_token(server, fac["factory_auth"], kind="http")
    second = listed(api, fac["factory_id"])
    assert second["use_count"] == 3
    assert second["status"] == "valid"
    # other factories are untouched
    other = make_factory(api)
    assert listed(api, other["factory_id"])["use_count"] == 0
    assert listed(api, fac["factory_id"])["use_count"] == 3


# --- factory create ----------------------------------------------------------------------------

@pytest.mark.parametrize("path", CREATE_PATHS)
def test_factory_creates_a_token(server, api, path):
    fac = make_factory(api)
    memo = unique("from factory")
    tok = factory_token(server, fac["factory_auth"], kind="http", memo=memo, path=path)
    assert tok["memo"] == memo
    assert tok["flock_id"] == "flock:default"
    assert tok["enabled"] is True
    assert tok["triggered_count"] == 0
    assert tok["key"] == f"canarydrop:{tok['canarytoken']}"
    fetched = api.fetch_token(tok["canarytoken"])
    assert fetched["memo"] == memo
    assert fetched["kind"] == "http"
    assert fetched["flock_id"] == "flock:default"


def test_factory_create_with_query_params_like_curl_get(server, api):
    """Parameters may also travel in the query string."""
    fac = make_factory(api)
    r = requests.post(bare(server).url("canarytoken/factory/create"),
                      params={"factory_auth": fac["factory_auth"], "kind": "dns", "memo": "query memo"}, timeout=10)
    tok = Api.ok(r)["canarytoken"]
    assert tok["memo"] == "query memo"
    assert tok["factory_auth"] == fac["factory_auth"]


def test_factory_for_a_flock_makes_tokens_there(server, api):
    fid = api.create_flock(unique("fleet"))
    other = api.create_flock(unique("elsewhere"))
    fac = make_factory(api, flock_id=fid)
    tok = factory_token(server, fac["factory_auth"])
    assert tok["flock_id"] == fid
    assert api.fetch_token(tok["canarytoken"])["flock_id"] == fid
    explicit = factory_token(server, fac["factory_auth"], flock_id=fid)
    assert explicit["flock_id"] == fid
    for path in CREATE_PATHS:
        for bad in ("flock:default", other, "flock:" + "0" * 32):
            assert_error(factory_create(server, fac["factory_auth"], path=path, flock_id=bad), 404, NO_FLOCK)
    in_other = [t["canarytoken"] for t in api.ok_get("canarytokens/fetch")["tokens"] if t.get("flock_id") == other]
    assert in_other == []


def test_default_flock_factory_cannot_target_another_flock(server, api):
    other = api.create_flock(unique("not-mine"))
    fac = make_factory(api)
    assert_error(factory_create(server, fac["factory_auth"], flock_id=other), 404, NO_FLOCK)
    assert factory_token(server, fac["factory_auth"], flock_id="flock:default")["flock_id"] == "flock:default"


def test_factory_create_bad_input(server, api):
    fac = make_factory(api)
    assert_error(factory_create(server, fac["factory_auth"], memo=""), 400, "Empty memo")
    assert_error(factory_create(server, fac["factory_auth"], kind="no-such-kind"), 400,
                 "Supplied kind is not valid.")


# --- factory download ----------------------------------------------------------------------------

def test_factory_download_windows_dir(server, api):
    fid = api.create_flock(unique("dl"))
    fac = make_factory(api, flock_id=fid)
    tok = factory_token(server, fac["factory_auth"], kind="windows-dir")
    assert tok["flock_id"] == fid
    r = bare(server).get("canarytoken/factory/download", auth=None, factory_auth=fac["factory_auth"],
                         canarytoken=tok["canarytoken"])
    assert r.status_code == 200, (r.status_code, r.text[:300])
    assert attachment_re("zip").match(r.headers.get("Content-Disposition", "")), r.headers
    zf = zipfile.ZipFile(io.BytesIO(r.content))
    assert zf.testzip() is None
    assert any(i.filename.endswith("desktop.ini") for i in zf.infolist()), zf.namelist()
    # the same file as the admin gets
    r2 = api.get("canarytoken/download", canarytoken=tok["canarytoken"])
    assert r2.status_code == 200
    assert sorted(zipfile.ZipFile(io.BytesIO(r2.content)).namelist()) == sorted(zf.namelist())


def test_factory_download_refuses_other_flocks(server, api):
    fid = api.create_flock(unique("dl-mine"))
    fac = make_factory(api, flock_id=fid)
    foreign = api.create_token("windows-dir", memo=unique("foreign"))       # default flock
    other_fac = make_factory(api)
    foreign2 = factory_token(server, other_fac["factory_auth"], kind="windows-dir")  # default flock
    for tid in (foreign["canarytoken"], foreign2["canarytoken"], random_token_id()):
        r = bare(server).get("canarytoken/factory/download", auth=None, factory_auth=fac["factory_auth"],
                             canarytoken=tid)
        assert_error(r, 404, NO_TOKEN)
        assert "Content-Disposition" not in r.headers


def test_factory_download_bad_auth(server, api):
    fac = make_factory(api)
    tok = factory_token(server, fac["factory_auth"], kind="windows-dir")
    b = bare(server)
    tid = tok["canarytoken"]
    assert_error(b.get("canarytoken/factory/download", auth=None, canarytoken=tid), 401, BAD_FACTORY)
    assert_error(b.get("canarytoken/factory/download", auth=None, factory_auth="0" * 64, canarytoken=tid),
                 401, BAD_FACTORY)
    assert_error(b.get("canarytoken/factory/download", auth=None, factory_auth=api.auth_token, canarytoken=tid),
                 401, BAD_FACTORY)


# --- the factory string is not an API key, and an API key is no factory string ----------------------

def _refused_everywhere(server, api, fa, tid):
    """Every non-factory endpoint with the factory string as auth_token (query, form, header)."""
    b = bare(server)
    calls = [
        ("GET", "canarytoken/fetch", {"canarytoken": tid}),
        ("GET", "canarytokens/fetch", {}),
        ("GET", "canarytokens/paginate", {"limit": "10"}),
        ("POST", "canarytoken/delete", {"canarytoken": tid}),
        ("DELETE", "canarytoken/delete", {"canarytoken": tid}),
        ("POST", "canarytoken/disable", {"canarytoken": tid}),
        ("POST", "canarytoken/update", {"canarytoken": tid, "memo": "hijacked"}),
        ("GET", "incidents/all", {}),
        ("GET", "flocks/list", {}),
        ("POST", "canarytoken/create", {"kind": "dns", "memo": "via factory string"}),
        ("POST", "canarytoken/create_factory", {"memo": "factory from factory"}),
        ("GET", "canarytoken/list_factories", {}),
    ]
    for method, ep, params in calls:
        url = b.url(ep)
        attempts = {
            "query": dict(params={"auth_token": fa, **params}),
            "form": dict(data={"auth_token": fa, **params}),
            "header": dict(params=params if method == "GET" else None,
                           data=None if method == "GET" else params,
                           headers={"X-Canary-Auth-Token": fa}),
        }
        for how, kw in attempts.items():
            r = requests.request(method, url, timeout=10, **kw)
            try:
                # The Console words a bad header ("Unauthorized") apart from a bad parameter.
                assert_error(r, 401, "Unauthorized" if how == "header" else BAD_AUTH)
            except AssertionError as e:
                raise AssertionError(f"{method} {ep} with factory string in {how}: {e}") from None


def test_factory_string_is_not_an_auth_token(server, api):
    fac = make_factory(api)
    fa = fac["factory_auth"]
    tok = api.create_token("dns", memo="must survive")
    tid = tok["canarytoken"]
    factories_before = len(api.ok_get("canarytoken/list_factories")["factories"])
    tokens_before = {t["canarytoken"] for t in api.ok_get("canarytokens/fetch")["tokens"]}

    _refused_everywhere(server, api, fa, tid)

    after = api.fetch_token(tid)
    assert after["memo"] == "must survive"
    assert after["enabled"] is True
    assert len(api.ok_get("canarytoken/list_factories")["factories"]) == factories_before
    assert {t["canarytoken"] for t in api.ok_get("canarytokens/fetch")["tokens"]} == tokens_before
    # and the factory itself still works
    factory_token(server, fa)


def test_factory_string_cannot_delete_factories(server, api):
    fac = make_factory(api)
    b = bare(server)
    r = b.delete("canarytoken/delete_factory", auth=fac["factory_auth"], factory_auth=fac["factory_auth"])
    assert_error(r, 401, BAD_AUTH)
    assert listed(api, fac["factory_id"]) is not None


def test_api_keys_are_not_factory_strings(server, api):
    analyst = server.create_key("analyst")["auth_token"]
    for key in (api.auth_token, analyst):
        for path in CREATE_PATHS:
            assert_error(factory_create(server, key, path=path), 401, BAD_FACTORY)
        # not even alongside a valid auth_token
        r = api.post("canarytoken/factory/create", factory_auth=key, kind="dns", memo="m")
        assert_error(r, 401, BAD_FACTORY)


def test_wrong_or_missing_factory_auth(server, api):
    fac = make_factory(api)
    fa = fac["factory_auth"]
    b = bare(server)
    wrong = [("0" if fa[0] != "0" else "1") + fa[1:], fa[:-1], fa + "0", "", "x",
             fac["factory_id"]]
    for path in CREATE_PATHS:
        assert_error(b.post(path, auth=None, kind="dns", memo="m"), 401, BAD_FACTORY)
        for w in wrong:
            assert_error(factory_create(server, w, path=path), 401, BAD_FACTORY)
    # auth_token does not stand in for a missing factory_auth
    assert_error(api.post("canarytoken/factory/create", kind="dns", memo="m"), 401, BAD_FACTORY)
    assert listed(api, fac["factory_id"])["use_count"] == 0


# --- delete_factory ----------------------------------------------------------------------------

def test_delete_factory_by_auth_string(server, api):
    fac = make_factory(api)
    made = factory_token(server, fac["factory_auth"])
    body = api.ok_delete("canarytoken/delete_factory", factory_auth=fac["factory_auth"])
    assert body == {"result": "success", "msg": "TokenFactory auth string deleted"}
    assert listed(api, fac["factory_id"]) is None
    for path in CREATE_PATHS:
        assert_error(factory_create(server, fac["factory_auth"], path=path), 401, BAD_FACTORY)
    assert_error(api.delete("canarytoken/delete_factory", factory_auth=fac["factory_auth"]), 404)
    # the tokens it made live on
    assert api.fetch_token(made["canarytoken"])["memo"] == made["memo"]


def test_delete_factory_by_id(server, api):
    fac = make_factory(api)
    keep = make_factory(api)
    made = factory_token(server, fac["factory_auth"], kind="windows-dir")
    body = api.ok_delete("canarytoken/delete_factory", factory_id=fac["factory_id"])
    assert body["msg"] == "TokenFactory auth string deleted"
    assert listed(api, fac["factory_id"]) is None
    assert_error(factory_create(server, fac["factory_auth"]), 401, BAD_FACTORY)
    r = bare(server).get("canarytoken/factory/download", auth=None, factory_auth=fac["factory_auth"],
                         canarytoken=made["canarytoken"])
    assert_error(r, 401, BAD_FACTORY)
    assert_error(api.delete("canarytoken/delete_factory", factory_id=fac["factory_id"]), 404)
    # only that one went
    assert listed(api, keep["factory_id"]) is not None
    factory_token(server, keep["factory_auth"])
    assert api.fetch_token(made["canarytoken"])["kind"] == "windows-dir"


def test_delete_factory_form_body_like_the_seed(server, api):
    fac = make_factory(api)
    r = requests.delete(api.url("canarytoken/delete_factory"),
                        data={"auth_token": api.auth_token, "factory_auth": fac["factory_auth"]}, timeout=10)
    assert Api.ok(r)["msg"] == "TokenFactory auth string deleted"
    assert listed(api, fac["factory_id"]) is None


def test_delete_factory_needs_auth(server, api):
    fac = make_factory(api)
    assert_error(bare(server).delete("canarytoken/delete_factory", auth=None, factory_auth=fac["factory_auth"]),
                 401, BAD_AUTH)
    assert_error(bare(server).delete("canarytoken/delete_factory", auth="bogus", factory_id=fac["factory_id"]),
                 401, BAD_AUTH)
    assert listed(api, fac["factory_id"]) is not None
    assert_error(api.delete("canarytoken/delete_factory", factory_auth="f" * 64), 404)
    assert_error(api.delete("canarytoken/delete_factory", factory_id="0" * 32), 404)


# --- factory tokens fire -----------------------------------------------------------------------

def test_factory_token_fires(server, api):
    fid = api.create_flock(unique("fires"))
    fac = make_factory(api, flock_id=fid)
    memo = unique("factory dns")
    tok = factory_token(server, fac["factory_auth"], kind="dns", memo=memo)
    assert tok["hostname"] == f"{tok['canarytoken']}.{DOMAIN}"
    lookup(server, tok["hostname"])
    incs = api.wait_incidents(tok["canarytoken"])
    assert len(incs) == 1, incs
    assert incs[0]["memo"] == memo
    assert incs[0]["events"][0]["type"] == "dns"
    assert api.fetch_token(tok["canarytoken"])["triggered_count"] >= 1

"""Every error of the Console dialect: status code and exact error shape;
and the three ways to pass auth_token."""

import pytest
import requests

from conftest import random_token_id, unique
from kindtools import assert_error

PROCESS_PREFIX = "Could not process the parameters"


CLIENT_ERROR = range(400, 500)


# --- authentication -----------------------------------------------------------

def test_missing_auth_is_401(api):
    assert_error(api.get("ping", auth=None), 401, "Invalid auth_token")
    assert_error(api.get("canarytokens/fetch", auth=None), 401, "Invalid auth_token")
    assert_error(api.post("canarytoken/create", auth=None, kind="http", memo="m"), 401, "Invalid auth_token")
    assert_error(api.delete("incident/delete", auth=None, incident="x"), 401, "Invalid auth_token")


def test_wrong_auth_in_query_is_401(api):
    assert_error(api.get("ping", auth="wrong" + api.auth_token[5:]), 401, "Invalid auth_token")
    assert_error(api.get("ping", auth=""), 401, "Invalid auth_token")
    assert_error(api.get("ping", auth=api.auth_token + "x"), 401, "Invalid auth_token")
    # auth is checked before parameters are validated
    assert_error(api.post("canarytoken/create", auth="nope", kind="http", memo=""), 401, "Invalid auth_token")


def test_auth_header_works(api):
    r = api.get("ping", auth=None, headers={"X-Canary-Auth-Token": api.auth_token})
    assert api.ok(r)
    r = api.post("canarytoken/create", auth=None, headers={"X-Canary-Auth-Token": api.auth_token},
                 kind="dns", memo="via header")
    assert api.ok(r)["canarytoken"]["memo"] == "via header"
    # A bad header is worded as the Console words it, apart from a bad parameter.
    assert_error(api.get("ping", auth=None, headers={"X-Canary-Auth-Token": "bogus"}), 401, "Unauthorized")


def test_auth_in_form_body_works(api):
    r = requests.post(api.url("canarytoken/create"),
                      data={"auth_token": api.auth_token, "kind": "dns", "memo": "via form body"}, timeout=10)
    tok = api.ok(r)["canarytoken"]
    assert tok["memo"] == "via form body"
    r = requests.delete(api.url("canarytoken/delete"),
                        data={"auth_token": api.auth_token, "canarytoken": tok["canarytoken"]}, timeout=10)
    api.ok(r)
    assert_error(api.get("canarytoken/fetch", canarytoken=tok["canarytoken"]), 404,
                 "Could not find the Canarytoken")
    r = requests.post(api.url("canarytoken/create"),
                      data={"auth_token": "bogus", "kind": "dns", "memo": "x"}, timeout=10)
    assert_error(r, 401, "Invalid auth_token")


# --- tokens -----------------------------------------------------------------

def test_empty_memo(api):
    assert_error(api.post("canarytoken/create", kind="http", memo=""), 400, "Empty memo")


def test_invalid_kind(api):
    assert_error(api.post("canarytoken/create", kind="no-such-kind", memo="m"), 400,
                 "Supplied kind is not valid.")
    assert_error(api.post("canarytoken/create", kind="", memo="m"), 400, "Supplied kind is not valid.")


def test_paginate_limit_not_a_number(api):
    assert_error(api.get("canarytokens/paginate", limit="abc"), 400, prefix=PROCESS_PREFIX)


def test_browser_scanner_enabled_not_a_bool(api):
    assert_error(api.post("canarytoken/create", kind="http", memo="m", browser_scanner_enabled="maybe"),
                 400, prefix=PROCESS_PREFIX)


def test_memo_length_limit(api):
    ok = api.create_token("http", memo="m" * 10000)
    assert ok["memo"] == "m" * 10000
    assert_error(api.post("canarytoken/create", kind="http", memo="m" * 10001), 400, prefix=PROCESS_PREFIX)
    assert_error(api.post("canarytoken/update", canarytoken=ok["canarytoken"], memo="u" * 10001),
                 400, prefix=PROCESS_PREFIX)
    assert api.fetch_token(ok["canarytoken"])["memo"] == "m" * 10000


def test_unknown_token_is_404(api):
    tid = random_token_id()
    msg = "Could not find the Canarytoken"
    assert_error(api.get("canarytoken/fetch", canarytoken=tid), 404, msg)
    assert_error(api.post("canarytoken/update", canarytoken=tid, memo="m"), 404, msg)
    assert_error(api.post("canarytoken/enable", canarytoken=tid), 404, msg)
    assert_error(api.post("canarytoken/disable", canarytoken=tid), 404, msg)
    assert_error(api.post("canarytoken/delete", canarytoken=tid), 404, msg)
    assert_error(api.delete("canarytoken/delete", canarytoken=tid), 404, msg)


def test_download_not_supported(api):
    for kind in ("http", "dns"):
        tid = api.create_token(kind)["canarytoken"]
        assert_error(api.get("canarytoken/download", canarytoken=tid), CLIENT_ERROR,
                     "File generation not supported.")


def test_body_over_1mib_is_413(api):
    big = "x" * (1024 * 1024 + 4096)
    try:
        r = api.post("canarytoken/create", kind="http", memo=big)
    except requests.exceptions.ConnectionError as e:  # pragma: no cover
        pytest.fail(f"server dropped the connection instead of answering 413: {e}")
    assert_error(r, 413)
    # and the server is fine afterwards
    api.ok_get("ping")


# --- incidents ---------------------------------------------------------------

def test_unknown_incident_is_404(api):
    iid = "incident:canarytoken:" + random_token_id()
    assert_error(api.get("incident/fetch", incident=iid), 404, "Incident not found")
    assert_error(api.post("incident/acknowledge", incident=iid), 404, "Incident not found")
    assert_error(api.post("incident/unacknowledge", incident=iid), 404, "Incident not found")
    assert_error(api.delete("incident/delete", incident=iid), 404, "Incident not found")


def test_src_host_with_node_id(api):
    tid = api.create_token("http")["canarytoken"]
    for ep in ("incidents/acknowledge", "incidents/delete"):
        assert_error(api.post(ep, src_host="127.0.0.1", node_id=tid), 400,
                     "Cannot use src_host and node_id together")


# --- flocks -------------------------------------------------------------------

def test_unknown_flock_is_404(api):
    fid = "flock:" + random_token_id()
    msg = "Flock does not exist."
    assert_error(api.get("flock/summary", flock_id=fid), 404, msg)
    assert_error(api.post("flock/rename", flock_id=fid, name="x"), 404, msg)
    assert_error(api.post("flock/delete", flock_id=fid), 404, msg)


def test_flock_name_length(api):
    msg = "Flock name longer than maximum (100 characters)."
    assert_error(api.post("flock/create", name="n" * 101), 400, msg)
    fid = api.create_flock("n" * 100)
    assert api.ok_get("flocks/list")["flocks"][fid] == "n" * 100
    assert_error(api.post("flock/rename", flock_id=fid, name="r" * 101), 400, msg)
    assert api.ok_get("flocks/list")["flocks"][fid] == "n" * 100


def test_flock_name_empty(api):
    assert_error(api.post("flock/create", name=""), 400, "Flock name cannot be empty.")


def test_flock_delete_rules(api):
    assert_error(api.post("flock/delete", flock_id="flock:default"), CLIENT_ERROR,
                 "Cannot delete default flock")
    fid = api.create_flock(unique("busy"))
    api.create_token("dns", flock_id=fid)
    assert_error(api.post("flock/delete", flock_id=fid), CLIENT_ERROR, "Cannot delete a non-empty flock")
    assert fid in api.ok_get("flocks/list")["flocks"]


# --- JSON bodies and odd requests ----------------------------------------------

def test_flat_json_body_is_accepted(api):
    r = requests.post(api.url("canarytoken/create"),
                      json={"auth_token": api.auth_token, "kind": "http", "memo": "via json",
                            "browser_scanner_enabled": False}, timeout=10)
    tok = api.ok(r)["canarytoken"]
    assert tok["memo"] == "via json"
    assert tok["browser_scanner_enabled"] is False


@pytest.mark.parametrize("body, detail", [
    ('{"memo": ', "not valid JSON"),
    ('["a", "b"]', "must be an object"),
    ('{"kind": "http", "memo": {"nested": 1}}', "memo must be a string"),
])
def test_bad_json_bodies_are_400(api, body, detail):
    r = requests.post(api.url("canarytoken/create"), params={"auth_token": api.auth_token}, data=body,
                      headers={"Content-Type": "application/json"}, timeout=10)
    b = assert_error(r, 400, PROCESS_PREFIX)
    assert detail in b["detail"], b


def test_unsupported_content_type_is_415(api):
    r = requests.post(api.url("canarytoken/create"), params={"auth_token": api.auth_token},
                      data=b"<memo/>", headers={"Content-Type": "application/xml"}, timeout=10)
    assert_error(r, 415, PROCESS_PREFIX)


def test_unknown_endpoint_and_wrong_method(api):
    assert_error(api.get("canarytoken/nonsense"), 404, "Unknown API endpoint")
    assert_error(api.get("canarytoken/create", kind="http", memo="get is not create"), 405, "Method not allowed")
    assert not [t for t in api.ok_get("canarytokens/fetch")["tokens"] if t["memo"] == "get is not create"]


def test_read_only_parameter_types_are_checked(api):
    assert_error(api.get("canarytokens/search", enabled="perhaps"), 400, PROCESS_PREFIX)
    assert_error(api.get("canarytokens/paginate", cursor="not-a-cursor"), 400, PROCESS_PREFIX)
    assert_error(api.get("incidents/all", event_limit="-1"), 400, PROCESS_PREFIX)
    assert_error(api.get("incidents/all", newer_than="yesterday"), 400, PROCESS_PREFIX)
    assert_error(api.post("incidents/acknowledge", older_than="3 days"), 400, "Parameter older_than was invalid.")


def test_nul_in_any_parameter_is_400(api):
    for params in ({"kind": "http", "memo": "a\x00b"}, {"kind": "http", "memo": "m", "flock_id": "flock:\x00"}):
        b = assert_error(api.post("canarytoken/create", **params), 400, PROCESS_PREFIX)
        assert "NUL" in b["detail"]
    assert_error(api.get("incidents/all", src_host="1.2.3.4\x00"), 400, PROCESS_PREFIX)


@pytest.mark.parametrize("path", ["/api/v1", "/api/v1/", "/api/v1/%ff%fe", "/api/v2/ping", "/api/", "/"])
def test_every_path_answers_in_the_console_error_shape(api, path):
    base = api.base.split("/api/v1/")[0]
    r = requests.get(base + path, params={"auth_token": api.auth_token}, timeout=10)
    assert_error(r, 404, "Unknown API endpoint")


def test_declared_oversize_body_is_refused_before_reading(api):
    import socket
    host, port = api.base.split("//")[1].split("/")[0].split(":")
    s = socket.create_connection((host, int(port)), timeout=10)
    s.sendall(b"POST /api/v1/canarytoken/create HTTP/1.1\r\nHost: x\r\n"
              b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 50000000\r\n\r\nmemo=")
    reply = s.recv(4096).decode(errors="replace")
    s.close()
    assert reply.startswith("HTTP/1.1 413"), reply[:200]


def test_incident_listing_limits_are_checked(api):
    assert_error(api.get("incidents/all", limit="0"), 400, PROCESS_PREFIX)
    assert_error(api.get("incidents/all", limit="10001"), 400, PROCESS_PREFIX)
    assert api.ok_get("incidents/all", limit="10000")["result"] == "success"

"""Conjur host-factory fidelity (seed 004, enrollment-apis C, issue 9 item 11): the documented
details a Conjur client or script relies on, beyond test_conjur.py's flows.

* `Accept-Encoding: base64` on `POST /authn/.../authenticate`: the access token comes back
  base64-encoded (`Content-Encoding: base64`) and goes straight into
  `Authorization: Token token="$TOKEN"`, the shell recipe of Conjur's docs (run here in bash).
* `expiration` as a date alone (`2050-12-31` = midnight UTC).
* Conjur's exact 422 texts (`expiration`, `host_factory`, `Input is invalid ISO8601 datetime
  string: <v>`, `Value for parameter expiration must be in the future: <v>`, `Invalid value for
  parameter 'count': <v>`, the CIDR wording); Trapline keeps an upper bound of 100 tokens per
  request and words it the same way.
* 404 bodies `{"error": {"code": "not_found", "message": "<Kind> '<id>' not found in account
  '<account>'"}}` for an unknown (or invisible) host factory and an unknown token; 401 and 403
  stay empty.
* Enrolment keeps `annotations[<name>]=<value>` (form, query, or a JSON object) and returns them
  as `[{"name", "value"}]`; ids starting with `conjur/` or `/conjur/` are refused.

Driven with curl, as Conjur's documentation drives it. Helpers come from test_conjur.py.
"""

import base64
import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import unique
from test_conjur import (DEFAULT_HF, assert_healthy, authn_url, curl, enrol, future, hf_header, hf_tokens, login,
                         new_hf_token, new_hf_tokens, root)

ARGUMENT_ERROR = "argument_error"


# --- helpers ---------------------------------------------------------------------------------------

def curl_headers(method, url, headers=None, body=None):
    """curl that also keeps the response headers; -> (status, lower-cased headers, body text)."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    fd, head_file = tempfile.mkstemp(prefix="conjur-headers-")
    os.close(fd)
    try:
        cmd = ["curl", "-sS", "-X", method, "-D", head_file, "-w", "\n%{http_code}", url]
        for k, v in (headers or {}).items():
            cmd += ["-H", f"{k}: {v}"]
        if body is not None:
            cmd += ["--data-binary", body]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=15)
        assert r.returncode == 0, (cmd, r.returncode, r.stderr)
        text, _, code = r.stdout.rpartition("\n")
        got = {}
        for line in Path(head_file).read_text(errors="replace").splitlines()[1:]:
            name, sep, value = line.partition(":")
            if sep:
                got[name.strip().lower()] = value.strip()
        return int(code), got, text
    finally:
        os.unlink(head_file)


def assert_argument_error(result, message):
    """A 422 `{"error": {"code": "argument_error", "message": <message>}}`."""
    code, parsed, text = result
    assert code == 422, (code, text)
    assert isinstance(parsed, dict) and isinstance(parsed.get("error"), dict), text
    assert parsed["error"].get("code") == ARGUMENT_ERROR, text
    assert parsed["error"].get("message") == message, text


def assert_not_found(result, message):
    """A 404 in Conjur's shape: `{"error": {"code": "not_found", "message": <message>, ...}}`."""
    code, parsed, text = result
    assert code == 404, (code, text)
    assert isinstance(parsed, dict) and isinstance(parsed.get("error"), dict), text
    assert parsed["error"].get("code") == "not_found", text
    assert parsed["error"].get("message") == message, text


def assert_empty(result, status):
    code, _, text = result
    assert code == status, (code, text[:300])
    assert text == "", text[:300]


def tokens_url(server):
    return root(server) + "host_factory_tokens"


def stored_annotations(server, key_id):
    """The annotations kept on an enrolled host's key, read from the SQLite file (read-only)."""
    uri = Path(server.data_dir, "trapline.db").resolve().as_uri() + "?mode=ro"
    con = sqlite3.connect(uri, uri=True, timeout=10)
    try:
        row = con.execute("SELECT annotations FROM api_keys WHERE key_id = ?", (key_id,)).fetchone()
    finally:
        con.close()
    assert row is not None, key_id
    return [tuple(pair) for pair in json.loads(row[0])]


@pytest.fixture(scope="module")
def auth(server):
    return login(server, server.admin_key)


# --- Accept-Encoding: base64 -------------------------------------------------------------------------

def test_base64_access_token(server):
    key = server.admin_key
    url = authn_url(server, key["key_id"])
    for accept in ("base64", "gzip, base64", "BASE64"):
        code, headers, text = curl_headers("POST", url, {"Accept-Encoding": accept}, body=key["secret_id"])
        assert code == 200, (accept, code, text)
        assert headers.get("content-encoding") == "base64", (accept, headers)
        assert headers.get("content-type", "").startswith("text/plain"), (accept, headers)
        decoded = json.loads(base64.b64decode(text, validate=True))
        assert isinstance(decoded, dict) and decoded, decoded
        assert key["secret_id"] not in text and key["secret_id"] not in json.dumps(decoded)
        # the body goes into the header as it is
        new_hf_token(server, {"Authorization": f'Token token="{text}"'})
    # without the header: the JSON, as before
    code, headers, text = curl_headers("POST", url, {"Accept-Encoding": "gzip"}, body=key["secret_id"])
    assert code == 200 and "content-encoding" not in headers, (code, headers)
    assert isinstance(json.loads(text), dict), text
    # a wrong secret is still a bare 401, base64 or not
    code, headers, text = curl_headers("POST", url, {"Accept-Encoding": "base64"}, body=key["secret_id"][:-1])
    assert (code, text) == (401, ""), (code, text)
    assert_healthy(server)


def test_the_documented_shell_recipe(server):
    """TOKEN=$(curl -H 'Accept-Encoding: base64' ... /authenticate), then Token token="$TOKEN"."""
    if shutil.which("curl") is None or shutil.which("bash") is None:
        pytest.skip("curl and bash are needed")
    key = server.admin_key
    script = r'''
set -euo pipefail
TOKEN=$(curl -s -H 'Accept-Encoding: base64' -X POST --data "$SECRET" "$BASE/authn/myorg/$LOGIN/authenticate")
curl -s -X POST -H "Authorization: Token token=\"$TOKEN\"" "$BASE/host_factory_tokens" \
     --data-urlencode "host_factory=myorg:host_factory:flock:default" \
     --data-urlencode "expiration=2050-12-31" --data-urlencode "cidr[]=127.0.0.1"
'''
    env = dict(os.environ, SECRET=key["secret_id"], LOGIN=key["key_id"], BASE=root(server).rstrip("/"))
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30, env=env)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    toks = json.loads(r.stdout)
    assert isinstance(toks, list) and len(toks) == 1, r.stdout
    assert toks[0]["expiration"] == "2050-12-31T00:00:00Z", toks
    assert toks[0]["cidr"] == ["127.0.0.1/32"], toks
    code, host, text = enrol(server, toks[0]["token"], unique("recipe"))
    assert code == 201, (code, text)
    assert_healthy(server)


# --- expiration as a date alone ----------------------------------------------------------------------

def test_date_only_expiration(server, auth):
    toks = new_hf_tokens(server, auth, expiration="2050-12-31", count=2)
    assert [t["expiration"] for t in toks] == ["2050-12-31T00:00:00Z"] * 2, toks
    code, parsed, text = curl("POST", tokens_url(server), auth,
                              json_body={"host_factory": DEFAULT_HF, "expiration": "2051-01-02"})
    assert code == 200, (code, text)
    assert parsed[0]["expiration"] == "2051-01-02T00:00:00Z", parsed
    # the token works until then
    assert enrol(server, parsed[0]["token"], unique("dated"))[0] == 201
    # full times as before, fractions and offsets included
    toks = new_hf_tokens(server, auth, expiration="2050-06-30T23:30:00.750-02:00")
    assert toks[0]["expiration"] == "2050-07-01T01:30:00Z", toks
    assert_healthy(server)


# --- Conjur's 422 texts ------------------------------------------------------------------------------

def test_argument_error_texts(server, auth):
    url = tokens_url(server)
    # missing parameters name themselves
    assert_argument_error(curl("POST", url, auth, form=[("host_factory", DEFAULT_HF)]), "expiration")
    assert_argument_error(curl("POST", url, auth, form=[("expiration", future())]), "host_factory")
    assert_argument_error(curl("POST", url, auth, json_body={"expiration": future()}), "host_factory")
    assert_argument_error(curl("POST", url, auth, json_body={"host_factory": DEFAULT_HF}), "expiration")
    # unparsable times, given back as sent
    for bad in ("tomorrow", "2050-13-01", "31/12/2050", "2050-12-31T25:00:00Z"):
        assert_argument_error(hf_tokens(server, auth, expiration=bad),
                              f"Input is invalid ISO8601 datetime string: {bad}")
    assert_argument_error(curl("POST", url, auth, json_body={"host_factory": DEFAULT_HF, "expiration": 12345}),
                          "Input is invalid ISO8601 datetime string: 12345")
    # times in the past, shown as Ruby's DateTime#to_s shows them
    assert_argument_error(hf_tokens(server, auth, expiration="2017-08-04T22:27:20+00:00"),
                          "Value for parameter expiration must be in the future: 2017-08-04T22:27:20+00:00")
    assert_argument_error(hf_tokens(server, auth, expiration="2001-01-01"),
                          "Value for parameter expiration must be in the future: 2001-01-01T00:00:00+00:00")
    assert_argument_error(hf_tokens(server, auth, expiration="2001-01-01T05:00:00+02:00"),
                          "Value for parameter expiration must be in the future: 2001-01-01T05:00:00+02:00")
    # counts: not a positive whole number, or more than Trapline's 100 per request
    for bad in ("0", "-1", "1.5", "abc", "101"):
        assert_argument_error(hf_tokens(server, auth, count=bad), f"Invalid value for parameter 'count': {bad}")
    for bad in (0, 1.5, "x"):
        res = curl("POST", url, auth, json_body={"host_factory": DEFAULT_HF, "expiration": future(), "count": bad})
        assert_argument_error(res, f"Invalid value for parameter 'count': {bad}")
    # counts as a JSON integer or an integer string are fine
    for good in (2, "2"):
        code, parsed, text = curl("POST", url, auth,
                                  json_body={"host_factory": DEFAULT_HF, "expiration": future(), "count": good})
        assert code == 200 and len(parsed) == 2, (code, text)
    # networks, in Conjur's words
    assert_argument_error(hf_tokens(server, auth, cidr=["192.0.2.1/24"]),
                          "Invalid IP address or CIDR range '192.0.2.1/24': Value has bits set to right of mask. "
                          "Did you mean '192.0.2.0/24'?")
    assert_argument_error(hf_tokens(server, auth, cidr=["1.895.abc.0/32"]),
                          "Invalid IP address or CIDR range '1.895.abc.0/32'")
    # another kind of resource
    assert_argument_error(hf_tokens(server, auth, host_factory="myorg:user:alice"), "Invalid resource kind: user")
    assert_healthy(server)


# --- 404 bodies --------------------------------------------------------------------------------------

def test_unknown_host_factory_is_a_404_with_a_body(server, auth):
    assert_not_found(hf_tokens(server, auth, host_factory="myorg:host_factory:flock:nope"),
                     "Host_factory 'flock:nope' not found in account 'myorg'")
    assert_not_found(hf_tokens(server, auth, host_factory="other:host_factory:nothing-here"),
                     "Host_factory 'nothing-here' not found in account 'other'")
    # the host factory is looked at before the other parameters, as Conjur does
    assert_not_found(hf_tokens(server, auth, host_factory="myorg:host_factory:flock:nope", expiration="never",
                               count=0), "Host_factory 'flock:nope' not found in account 'myorg'")
    code, parsed, _ = hf_tokens(server, auth, host_factory="myorg:host_factory:flock:nope")
    assert parsed["error"]["details"]["message"] == "myorg:host_factory:flock:nope", parsed
    # a flock the key cannot see is unknown to it
    own = server.api().create_flock(unique("conjur-own"))
    other = server.api().create_flock(unique("conjur-other"))
    scoped = login(server, server.create_key("admin", flock=own))
    new_hf_token(server, scoped, host_factory=f"myorg:host_factory:{own}")
    assert_not_found(hf_tokens(server, scoped, host_factory=f"myorg:host_factory:{other}"),
                     f"Host_factory '{other}' not found in account 'myorg'")
    assert_not_found(hf_tokens(server, scoped), "Host_factory 'flock:default' not found in account 'myorg'")
    # refusals stay empty-bodied: no credentials, no permission on a visible host factory
    assert_empty(hf_tokens(server, None), 401)
    assert_empty(hf_tokens(server, login(server, server.create_key("analyst"))), 403)
    assert_healthy(server)


def test_unknown_token_delete_is_a_404_with_a_body(server, auth):
    tok = new_hf_token(server, auth)
    url = f"{root(server)}host_factory_tokens/{tok}"
    assert_empty(curl("DELETE", url, None), 401)
    assert_empty(curl("DELETE", url, auth), 204)
    assert_not_found(curl("DELETE", url, auth), f"Host_factory_token '{tok}' not found in account '*'")
    ghost = "0" * 64
    assert_not_found(curl("DELETE", f"{root(server)}host_factory_tokens/{ghost}", auth),
                     f"Host_factory_token '{ghost}' not found in account '*'")
    # a token of a flock the key cannot see is unknown to it
    own = server.api().create_flock(unique("conjur-del"))
    hidden = new_hf_token(server, auth)
    scoped = login(server, server.create_key("admin", flock=own))
    assert_not_found(curl("DELETE", f"{root(server)}host_factory_tokens/{hidden}", scoped),
                     f"Host_factory_token '{hidden}' not found in account '*'")
    assert enrol(server, hidden, unique("still-there"))[0] == 201
    assert_healthy(server)


# --- enrolment: annotations and reserved ids ---------------------------------------------------------

def test_annotations_round_trip(server, auth):
    tok = new_hf_token(server, auth)
    url = root(server) + "host_factories/hosts"
    host = unique("annotated")
    form = [("id", host), ("annotations[role]", "web server"), ("annotations[team]", "ops & dev"),
            ("annotations[puppet]", "true")]
    code, parsed, text = curl("POST", url, hf_header(tok), form=form)
    assert code == 201, (code, text)
    assert parsed["id"] == f"myorg:host:{host}", parsed
    assert parsed["annotations"] == [{"name": "role", "value": "web server"}, {"name": "team", "value": "ops & dev"},
                                     {"name": "puppet", "value": "true"}], parsed
    assert stored_annotations(server, parsed["key_id"]) == [("role", "web server"), ("team", "ops & dev"),
                                                            ("puppet", "true")]
    # a JSON object, values turned into strings
    code, parsed, text = curl("POST", url, hf_header(tok),
                              json_body={"id": unique("json"), "annotations": {"rack": 12, "primary": False,
                                                                               "zone": "eu-1"}})
    assert code == 201, (code, text)
    # a JSON object has no order
    assert sorted(parsed["annotations"], key=lambda a: a["name"]) == [
        {"name": "primary", "value": "false"}, {"name": "rack", "value": "12"}, {"name": "zone", "value": "eu-1"}], parsed
    assert sorted(stored_annotations(server, parsed["key_id"])) == [("primary", "false"), ("rack", "12"),
                                                                    ("zone", "eu-1")]
    # in the query string
    code, parsed, text = curl("POST", url + f"?id={unique('query')}&annotations%5Bsite%5D=lab", hf_header(tok))
    assert code == 201, (code, text)
    assert parsed["annotations"] == [{"name": "site", "value": "lab"}], parsed
    # none: an empty array, not an object
    code, parsed, text = enrol(server, tok, unique("plain"))
    assert code == 201 and parsed["annotations"] == [], (code, text)
    assert stored_annotations(server, parsed["key_id"]) == []
    # too many, or an empty name: refused, nothing enrolled
    many = [("id", unique("many"))] + [(f"annotations[a{i}]", "x") for i in range(65)]
    code, parsed, text = curl("POST", url, hf_header(tok), form=many)
    assert code == 422 and parsed["error"]["code"] == ARGUMENT_ERROR, (code, text)
    code, parsed, text = curl("POST", url, hf_header(tok), form=[("id", unique("noname")), ("annotations[]", "x")])
    assert code == 422 and parsed["error"]["code"] == ARGUMENT_ERROR, (code, text)
    assert_healthy(server)


def test_conjur_ids_are_refused(server, auth):
    tok = new_hf_token(server, auth)
    for bad in ("conjur/x", "/conjur/x", "conjur/authn-k8s/prod"):
        assert_argument_error(enrol(server, tok, bad), f"Invalid id: {bad}")
    # only that prefix
    for fine in ("my-conjur/x", "x/conjur/y", "conjurx"):
        code, parsed, text = enrol(server, tok, fine)
        assert code == 201, (fine, code, text)
        assert parsed["id"] == f"myorg:host:{fine}", parsed
    assert_healthy(server)


def test_console_factory_enrols_under_its_flock(server):
    """A factory string made with the Console (or Falcon) has no Conjur host-factory id: the host
    is named under the account `trapline` and its flock's host factory, not under the memo."""
    memo = unique("console fleet")
    f = server.api().ok_post("canarytoken/create_factory", memo=memo)["factory_auth"]
    host = unique("from-console")
    code, parsed, text = enrol(server, f, host)
    assert code == 201, (code, text)
    assert parsed["id"] == f"trapline:host:{host}", parsed
    assert parsed["owner"] == "trapline:host_factory:flock:default", parsed
    assert memo not in text, text
    assert_healthy(server)

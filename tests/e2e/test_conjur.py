"""Conjur host-factory dialect (seed 004): log in with `POST /authn/<account>/<login>/authenticate`,
mint host-factory tokens with `POST /host_factory_tokens`, enrol hosts with
`POST /host_factories/hosts`, revoke tokens with `DELETE /host_factory_tokens/<token>`.

The endpoints live at the root of the management API listener (the Console's base without
`/api/v1/`). The seed's flows are driven with curl, as the seed shows them (`--data-urlencode`,
`Authorization: Token token="..."`); CIDR checks use `curl --interface 127.0.0.2` (Linux routes
all of 127/8 to loopback). Every test that changes something ends with a Console ping.

The small helpers here (`curl`, `login`, `hf_tokens`, `enrol`, ...) are also used by
test_trusted_proxies.py.
"""

import base64
import json
import re
import shutil
import subprocess
import time
from datetime import datetime, timedelta, timezone

import pytest
import requests

from conftest import unique

HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
EXPIRATION_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
DEFAULT_HF = "myorg:host_factory:flock:default"


# --- helpers ---------------------------------------------------------------------------------------

def root(server):
    """The listener's root: the Console lives under /api/v1/, Conjur's endpoints at the root."""
    base = server.api_url
    assert base.endswith("/api/v1/"), base
    return base[: -len("api/v1/")]


def curl(method, url, headers=None, form=None, body=None, interface=None, json_body=None):
    """Run curl like an operator would; -> (status, parsed JSON body or None, raw text).

    `form` is a list of (name, value) pairs sent with --data-urlencode; `body` is sent verbatim
    with --data-binary; `json_body` is JSON-encoded with a JSON content type."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    cmd = ["curl", "-sS", "-X", method, "-w", "\n%{http_code}", url]
    if interface:
        cmd += ["--interface", interface]
    for k, v in (headers or {}).items():
        cmd += ["-H", f"{k}: {v}"]
    for k, v in form or ():
        cmd += ["--data-urlencode", f"{k}={v}"]
    if body is not None:
        cmd += ["--data-binary", body]
    if json_body is not None:
        cmd += ["-H", "Content-Type: application/json", "--data-binary", json.dumps(json_body)]
    r = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=15)
    assert r.returncode == 0, (cmd, r.returncode, r.stderr)
    text, _, code = r.stdout.rpartition("\n")
    try:
        parsed = json.loads(text) if text else None
    except ValueError:
        parsed = None
    return int(code), parsed, text


def authn_url(server, login, account="myorg"):
    return f"{root(server)}authn/{account}/{login}/authenticate"


def login_raw(server, login, secret, account="myorg"):
    """POST the API key as the raw body; -> (status, parsed, raw text)."""
    return curl("POST", authn_url(server, login, account), body=secret)


def token_header(raw_access_token):
    """The Authorization header a Conjur client sends: base64 of the exact access-token body."""
    enc = base64.b64encode(raw_access_token.encode()).decode()
    return {"Authorization": f'Token token="{enc}"'}


def login(server, key, account="myorg"):
    """Log in with a key's (key_id, secret_id); -> the Authorization header for later calls."""
    code, parsed, text = login_raw(server, key["key_id"], key["secret_id"], account)
    assert code == 200, (code, text)
    assert isinstance(parsed, dict), text
    return token_header(text)


def hf_header(hf_token):
    return {"Authorization": f'Token token="{hf_token}"'}


def future(seconds=3600):
    """An ISO 8601 instant `seconds` from now, with an explicit UTC offset as in the seed."""
    t = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=seconds)
    return t.strftime("%Y-%m-%dT%H:%M:%S+00:00")


def hf_tokens(server, auth, host_factory=DEFAULT_HF, expiration=None, count=None, cidr=(),
              extra=None, interface=None, headers=None):
    """POST /host_factory_tokens with --data-urlencode params as in the seed; -> (status, parsed, text)."""
    form = []
    if host_factory is not None:
        form.append(("host_factory", host_factory))
    form.append(("expiration", expiration if expiration is not None else future()))
    if count is not None:
        form.append(("count", str(count)))
    for c in cidr:
        form.append(("cidr[]", c))
    form += list(extra or ())
    h = dict(auth or {})
    h.update(headers or {})
    return curl("POST", root(server) + "host_factory_tokens", h, form=form, interface=interface)


def new_hf_tokens(server, auth, **kw):
    """Mint host-factory tokens and check the 200 answer; -> the list of token objects."""
    code, parsed, text = hf_tokens(server, auth, **kw)
    assert code == 200, (code, text)
    assert isinstance(parsed, list), text
    return parsed


def new_hf_token(server, auth, **kw):
    toks = new_hf_tokens(server, auth, **kw)
    assert len(toks) == 1, toks
    return toks[0]["token"]


def enrol(server, hf_token, host_id=None, interface=None, headers=None, token_headers=True):
    """POST /host_factories/hosts with the token header and form id=...; -> (status, parsed, text)."""
    h = hf_header(hf_token) if token_headers and hf_token is not None else {}
    h.update(headers or {})
    url = root(server) + "host_factories/hosts"
    if host_id is None:
        # an empty, still form-encoded, body
        return curl("POST", url, {**h, "Content-Type": "application/x-www-form-urlencoded"}, body="",
                    interface=interface)
    return curl("POST", url, h, form=[("id", host_id)], interface=interface)


def delete_hf_token(server, auth, hf_token):
    return curl("DELETE", f"{root(server)}host_factory_tokens/{hf_token}", auth)


def assert_arg_error(result, contains=None):
    code, parsed, text = result
    assert code == 422, (code, text)
    assert isinstance(parsed, dict) and isinstance(parsed.get("error"), dict), text
    assert parsed["error"].get("code") == "argument_error", text
    msg = parsed["error"].get("message")
    assert isinstance(msg, str) and msg, text
    if contains is not None:
        assert contains in msg, text
    return msg


def assert_status(result, status):
    code, _, text = result
    assert code == status, (code, text[:300])


def assert_healthy(server):
    r = requests.get(server.api_url + "ping", params={"auth_token": server.admin_token}, timeout=10)
    assert r.status_code == 200, (r.status_code, r.text)
    assert server.alive, server.output()


def ss_headers(key):
    return {"X-Key-ID": key["key_id"], "X-Secret-ID": key["secret_id"], "Content-Type": "application/json"}


def ss_call(server, method, admin_key, body):
    return requests.request(method, root(server) + "key", data=json.dumps(body), headers=ss_headers(admin_key),
                            timeout=10)


# --- fixtures --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def auth(server):
    """The module admin's Conjur Authorization header."""
    return login(server, server.admin_key)


@pytest.fixture(scope="module")
def flock(server):
    return server.api().create_flock(unique("conjur"))


# --- login -------------------------------------------------------------------------------------------

def test_login_returns_an_access_token(server):
    key = server.admin_key
    code, parsed, text = login_raw(server, key["key_id"], key["secret_id"])
    assert code == 200, (code, text)
    assert isinstance(parsed, dict) and parsed, text
    assert key["secret_id"] not in text
    # any account name works, and each token authorises the management calls
    for account in ("myorg", "other-account", "cucumber"):
        h = login(server, key, account)
        new_hf_token(server, h)
    assert_healthy(server)


def test_login_refusals(server):
    admin = server.admin_key
    other = server.create_key("admin")
    cases = [
        (admin["key_id"], admin["secret_id"][:-1]),
        (admin["key_id"], admin["secret_id"] + "x"),
        (admin["key_id"], other["secret_id"]),
        (admin["key_id"], ""),
        (other["key_id"], admin["secret_id"]),
        ("00000000-0000-4000-8000-000000000000", admin["secret_id"]),
        ("nobody", admin["secret_id"]),
    ]
    for login_id, secret in cases:
        code, _, text = login_raw(server, login_id, secret)
        assert code == 401, (login_id, code, text)
    # an inactive key cannot log in; reactivated, it can
    r = ss_call(server, "PATCH", admin, {"key_id": other["key_id"], "active": False})
    assert r.status_code == 200, (r.status_code, r.text)
    code, _, text = login_raw(server, other["key_id"], other["secret_id"])
    assert code == 401, (code, text)
    r = ss_call(server, "PATCH", admin, {"key_id": other["key_id"], "active": True})
    assert r.status_code == 200, (r.status_code, r.text)
    login(server, other)
    assert_healthy(server)


def test_bad_access_tokens_are_refused(server, auth):
    key = server.admin_key
    code, parsed, raw = login_raw(server, key["key_id"], key["secret_id"])
    assert code == 200, (code, raw)
    b64 = base64.b64encode(raw.encode()).decode()
    forged = [
        {"Authorization": 'Token token="garbage"'},
        {"Authorization": 'Token token=""'},
        {"Authorization": "Token"},
        {"Authorization": "Bearer " + b64},
        {"Authorization": 'Token token="' + base64.b64encode(b"garbage").decode() + '"'},
        {"Authorization": 'Token token="' + base64.b64encode(b"{}").decode() + '"'},
        {"Authorization": f'Token token="{raw}"'},                 # not base64-encoded
        {"Authorization": 'Token token="' + b64[:-8] + '"'},      # truncated
        {"Authorization": f'Token token="{key["secret_id"]}"'},   # the API key itself
    ]
    # a tampered token: every string/number field changed in turn (signature kept)
    if isinstance(parsed, dict):
        other = server.create_key("admin")
        for field, value in parsed.items():
            t = dict(parsed)
            if isinstance(value, bool):
                continue
            if isinstance(value, int):
                t[field] = value + 86400
            elif isinstance(value, str) and value == key["key_id"]:
                t[field] = other["key_id"]
            elif isinstance(value, str) and value:
                t[field] = ("0" if value[0] != "0" else "1") + value[1:]
            else:
                continue
            forged.append(token_header(json.dumps(t, separators=(",", ":"))))
    for h in forged:
        res = hf_tokens(server, h)
        assert res[0] == 401, (h, res[0], res[2][:300])
    # no header at all
    assert_status(hf_tokens(server, None), 401)
    # the genuine one still works
    new_hf_token(server, auth)
    assert_healthy(server)


def test_token_of_a_deleted_key_is_refused(server, auth):
    doomed = server.create_key("admin")
    h = login(server, doomed)
    new_hf_token(server, h)
    r = ss_call(server, "DELETE", server.admin_key, {"key_id": doomed["key_id"]})
    assert r.status_code == 204, (r.status_code, r.text)
    assert_status(hf_tokens(server, h), 401)
    code, _, text = login_raw(server, doomed["key_id"], doomed["secret_id"])
    assert code == 401, (code, text)
    new_hf_token(server, auth)
    assert_healthy(server)


# --- POST /host_factory_tokens ---------------------------------------------------------------------

def check_token_objects(toks, count, cidr):
    assert isinstance(toks, list) and len(toks) == count, toks
    for t in toks:
        assert set(t) >= {"expiration", "cidr", "token"}, t
        assert EXPIRATION_RE.match(t["expiration"]), t
        assert t["cidr"] == cidr, t
        assert HEX64_RE.match(t["token"]), t
    assert len({t["token"] for t in toks}) == count, toks


def test_create_tokens_like_the_seed(server, auth):
    exp = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=2)
    code, parsed, text = hf_tokens(server, auth, expiration=exp.strftime("%Y-%m-%dT%H:%M:%S+00:00"), count=2,
                                   cidr=["192.0.2.1", "192.0.2.2"])
    assert code == 200, (code, text)
    check_token_objects(parsed, 2, ["192.0.2.1/32", "192.0.2.2/32"])
    for t in parsed:
        assert t["expiration"] == exp.strftime("%Y-%m-%dT%H:%M:%SZ"), t
    # default count is 1, no cidr means unrestricted
    toks = new_hf_tokens(server, auth)
    check_token_objects(toks, 1, [])
    # a non-UTC offset is converted to the same instant in UTC
    local = exp.astimezone(timezone(timedelta(hours=2)))
    toks = new_hf_tokens(server, auth, expiration=local.strftime("%Y-%m-%dT%H:%M:%S+02:00"))
    assert toks[0]["expiration"] == exp.strftime("%Y-%m-%dT%H:%M:%SZ"), toks
    assert_healthy(server)


def test_create_tokens_count_and_cidrs(server, auth):
    toks = new_hf_tokens(server, auth, count=100)
    check_token_objects(toks, 100, [])
    toks = new_hf_tokens(server, auth, count=3,
                         cidr=["10.0.0.0/8", "192.0.2.7", "2001:db8::1", "2001:db8::/32", "198.51.100.0/24"])
    check_token_objects(toks, 3, ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::1/128", "2001:db8::/32",
                                  "198.51.100.0/24"])
    assert_healthy(server)


def test_create_tokens_from_query_and_json(server, auth):
    url = root(server) + "host_factory_tokens"
    exp = future(7200)
    q = (f"?host_factory={DEFAULT_HF}&expiration={requests.utils.quote(exp, safe='')}&count=2"
         "&cidr[]=192.0.2.9&cidr[]=198.51.100.0/24")
    code, parsed, text = curl("POST", url + q, auth)
    assert code == 200, (code, text)
    check_token_objects(parsed, 2, ["192.0.2.9/32", "198.51.100.0/24"])
    code, parsed, text = curl("POST", url, auth, json_body={
        "host_factory": DEFAULT_HF, "expiration": exp, "count": 3, "cidr": ["192.0.2.10", "2001:db8::5"]})
    assert code == 200, (code, text)
    check_token_objects(parsed, 3, ["192.0.2.10/32", "2001:db8::5/128"])
    code, parsed, text = curl("POST", url, auth, json_body={"host_factory": DEFAULT_HF, "expiration": exp})
    assert code == 200, (code, text)
    check_token_objects(parsed, 1, [])
    assert_healthy(server)


def test_host_bits_set_is_rejected_naming_the_network(server, auth):
    msg = assert_arg_error(hf_tokens(server, auth, cidr=["192.0.2.1/24"]))
    assert "192.0.2.0/24" in msg, msg
    msg = assert_arg_error(hf_tokens(server, auth, cidr=["192.0.2.0/24", "10.1.2.3/8"]))
    assert "10.0.0.0/8" in msg, msg
    assert_healthy(server)


def test_create_tokens_bad_arguments(server, auth):
    past = (datetime.now(timezone.utc) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S+00:00")
    cases = [
        dict(expiration=""),
        dict(expiration=past),
        dict(expiration="2001-01-01T00:00:00+00:00"),
        dict(expiration="tomorrow"),
        dict(count=0),
        dict(count=-1),
        dict(count="x"),
        dict(count=101),
        dict(host_factory="nonsense"),
        dict(host_factory=""),
        dict(host_factory=None),
        dict(cidr=["x.y"]),
        dict(cidr=["192.0.2.1/33"]),
    ]
    for kw in cases:
        try:
            assert_arg_error(hf_tokens(server, auth, **kw))
        except AssertionError as e:
            raise AssertionError(f"{kw}: {e}") from None
    # no expiration at all
    code, parsed, text = curl("POST", root(server) + "host_factory_tokens", auth,
                              form=[("host_factory", DEFAULT_HF)])
    assert_arg_error((code, parsed, text))
    assert_healthy(server)


def test_create_tokens_unknown_flock_and_permissions(server, auth):
    assert_status(hf_tokens(server, auth, host_factory="myorg:host_factory:flock:nope"), 404)
    assert_status(hf_tokens(server, None), 401)
    analyst = server.create_key("analyst")
    res = hf_tokens(server, login(server, analyst))
    assert res[0] == 403, (res[0], res[2])
    assert_healthy(server)


# --- POST /host_factories/hosts -------------------------------------------------------------------

def test_enrol_a_host_gets_a_deploy_key(server, auth, flock):
    hf = f"myorg:host_factory:{flock}"
    tok = new_hf_token(server, auth, host_factory=hf, cidr=["127.0.0.1", "::1"])
    host = unique("web")
    code, parsed, text = enrol(server, tok, host)
    assert code == 201, (code, text)
    assert parsed["id"] == f"myorg:host:{host}", parsed
    assert parsed["owner"] == hf, parsed
    assert isinstance(parsed["api_key"], str) and parsed["api_key"], parsed
    assert parsed["restricted_to"] == ["127.0.0.1/32", "::1/128"], parsed
    # the api_key is a deploy key for that flock in the Console dialect
    dep = server.api(parsed["api_key"])
    made = dep.create_token("dns", memo=unique("enrolled"))
    assert made["flock_id"] == flock, made
    assert server.api().fetch_token(made["canarytoken"])["flock_id"] == flock
    r = dep.get("canarytokens/fetch")
    assert r.status_code == 403, (r.status_code, r.text[:300])
    # another host from the same (reusable) token, other account in the factory id
    other = new_hf_token(server, auth, host_factory=f"another:host_factory:{flock}")
    code, parsed2, text = enrol(server, other, "db.example_01@x/y")
    assert code == 201, (code, text)
    assert parsed2["id"] == "another:host:db.example_01@x/y", parsed2
    assert parsed2["owner"] == f"another:host_factory:{flock}", parsed2
    assert parsed2["restricted_to"] == [], parsed2
    assert parsed2["api_key"] != parsed["api_key"]
    assert_healthy(server)


def test_enrol_respects_cidr(server, auth):
    only_1 = new_hf_token(server, auth, cidr=["127.0.0.1"])
    only_2 = new_hf_token(server, auth, cidr=["127.0.0.2"])
    net = new_hf_token(server, auth, cidr=["127.0.0.0/30"])
    anyone = new_hf_token(server, auth)
    assert_status(enrol(server, only_1, unique("h"), interface="127.0.0.2"), 401)
    assert_status(enrol(server, only_1, unique("h")), 201)
    assert_status(enrol(server, only_2, unique("h")), 401)
    assert_status(enrol(server, only_2, unique("h"), interface="127.0.0.2"), 201)
    for iface in (None, "127.0.0.2"):
        assert_status(enrol(server, net, unique("h"), interface=iface), 201)
        assert_status(enrol(server, anyone, unique("h"), interface=iface), 201)
    assert_healthy(server)


def test_enrol_refusals(server, auth):
    tok = new_hf_token(server, auth)
    # no token header, a broken one, an unknown token
    assert_status(enrol(server, None, unique("h")), 401)
    assert_status(enrol(server, tok, unique("h"), token_headers=False,
                        headers={"Authorization": f"Token {tok}"}), 401)
    assert_status(enrol(server, "0" * 64, unique("h")), 401)
    assert_status(enrol(server, tok[:-1], unique("h")), 401)
    assert_status(enrol(server, "garbage", unique("h")), 401)
    # the admin's access token is no host-factory token
    assert_status(enrol(server, None, unique("h"), headers=auth), 401)
    # missing or invalid id
    assert_arg_error(enrol(server, tok, None))
    assert_arg_error(enrol(server, tok, ""))
    for bad in ("a b", ";rm", "x\ny", "$(id)", "a'b"):
        try:
            assert_arg_error(enrol(server, tok, bad))
        except AssertionError as e:
            raise AssertionError(f"id {bad!r}: {e}") from None
    # the token still works
    assert_status(enrol(server, tok, unique("h")), 201)
    assert_healthy(server)


def test_expired_token_is_refused(server, auth):
    exp = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=3)
    toks = new_hf_tokens(server, auth, expiration=exp.strftime("%Y-%m-%dT%H:%M:%S+00:00"))
    tok = toks[0]["token"]
    assert toks[0]["expiration"] == exp.strftime("%Y-%m-%dT%H:%M:%SZ"), toks
    assert_status(enrol(server, tok, unique("early")), 201)
    wait = (exp - datetime.now(timezone.utc)).total_seconds() + 1.0
    if wait > 0:
        time.sleep(wait)
    assert_status(enrol(server, tok, unique("late")), 401)
    assert_healthy(server)


def test_delete_token(server, auth):
    tok, keep = [t["token"] for t in new_hf_tokens(server, auth, count=2)]
    assert_status(enrol(server, tok, unique("before")), 201)
    # without credentials, nothing is deleted
    assert_status(delete_hf_token(server, None, tok), 401)
    assert_status(enrol(server, tok, unique("still")), 201)
    code, _, text = delete_hf_token(server, auth, tok)
    assert code == 204, (code, text)
    assert text == "", text
    assert_status(delete_hf_token(server, auth, tok), 404)
    assert_status(delete_hf_token(server, auth, "0" * 64), 404)
    assert_status(enrol(server, tok, unique("after")), 401)
    # its sibling is untouched
    assert_status(enrol(server, keep, unique("sibling")), 201)
    assert_healthy(server)

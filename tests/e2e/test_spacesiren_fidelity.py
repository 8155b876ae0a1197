"""SpaceSiren fidelity (seed 002, enrollment-apis A3, issue 9 item 10): `POST /test-alert` as
documented, SpaceSiren's exact 400 texts on `/key` and `/test-alert`, and `/token` / `/event`
answering in SpaceSiren's shape.

* `POST /test-alert` `{"description"?: string}` always answers 200 `{"message": "Test alert
  sent."}`; the description (cut to 300 characters) reaches every output's alert (a local
  webhook receiver, `--alert-webhooks ... --allow-private-alert-targets`). Without any output
  the answer is the same.
* 400 texts, once the caller is known: `Content-Type header must be application/json.` (a body
  with another media type; `; charset=utf-8` is accepted), `Could not decode json request.`,
  `Parameter '<name>' must be of type string|bool|int.`, `Parameter 'key_id' is required.`
* `/token` and `/event` on a server without AWS settings: 401 `Authentication failed.` without
  a key pair; with one, `POST /token` is a 400 `{"error": ...}` naming the AWS settings it needs,
  listings are empty, a named key or event is SpaceSiren's 404, and a missing required
  parameter its 400. (With AWS, see test_spacesiren_tokens.py.)

The documented calls are made with curl (helpers from test_spacesiren.py); requests sends the
deliberately malformed ones, where the exact bytes and headers matter.
"""

import json
import subprocess
import time

import pytest
import requests

from conftest import Server, wait_for
from test_alerts import ALLOW, Receiver
from test_spacesiren import (AUTH_FAILED, assert_ss_error, creds, curl, key_url, new_key, ok, provision,
                             provision_key, root)

TEST_SENT = {"message": "Test alert sent."}
NOT_JSON_CT = "Content-Type header must be application/json."
NOT_DECODED = "Could not decode json request."
KEY_ID_REQUIRED = "Parameter 'key_id' is required."



def wrong_secret(key):
    """The key's secret with its last character changed (never to the same character)."""
    s = key["secret_id"]
    return s[:-1] + ("A" if s[-1] != "A" else "B")


def must_be(name, kind):
    return f"Parameter '{name}' must be of type {kind}."


# --- fixtures ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def hook():
    rec = Receiver().start()
    yield rec
    rec.stop()


@pytest.fixture(scope="module")
def server(hook):
    """This module's server: one global webhook (private targets allowed)."""
    srv = Server(args=["--alert-webhooks", hook.url(), ALLOW]).start()
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def plain():
    """A server without any alert output."""
    srv = Server().start()
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def admin(server):
    code, body, text = provision(server, {"admin": True, "description": "fidelity admin"})
    assert code == 200, (code, text)
    return body["key"]


def alert_url(server):
    return root(server) + "test-alert"


def raw(server, method, path, key=None, data=None, content_type="application/json", headers=None):
    """A request with exactly these bytes and this Content-Type (None: no header)."""
    h = dict(creds(key)) if key is not None else {}
    if content_type is not None:
        h["Content-Type"] = content_type
    h.update(headers or {})
    return requests.request(method, root(server) + path, data=data, headers=h, timeout=10)


# --- POST /test-alert --------------------------------------------------------------------------------

def test_test_alert_carries_the_description(server, hook, admin):
    url = alert_url(server)
    before = len(hook.tests())
    code, body, text = curl("POST", url, creds(admin), {"description": "Payroll share token (test)"})
    assert (code, body) == (200, TEST_SENT), (code, text)
    got = wait_for(lambda: hook.tests()[before:] or None, timeout=5, desc="the test alert")
    assert len(got) == 1, got
    assert got[0]["body"]["description"] == "Payroll share token (test)", got[0]["body"]
    assert got[0]["body"]["test"] is True, got[0]["body"]

    # cut to 300 characters
    long = "".join(chr(ord("a") + i % 26) for i in range(450))
    code, body, text = curl("POST", url, creds(admin), {"description": long})
    assert (code, body) == (200, TEST_SENT), (code, text)
    got = wait_for(lambda: hook.tests()[before + 1:] or None, timeout=5, desc="the long test alert")
    assert got[0]["body"]["description"] == long[:300], got[0]["body"]

    # no description, no body, a null description: still sent, without one
    for payload in ({}, None, {"description": None}):
        n = len(hook.tests())
        code, body, text = curl("POST", url, creds(admin), payload)
        assert (code, body) == (200, TEST_SENT), (payload, code, text)
        got = wait_for(lambda: hook.tests()[n:] or None, timeout=5, desc="a plain test alert")
        assert "description" not in got[0]["body"] or not got[0]["body"]["description"], got[0]["body"]

    # any working key may send one, not only admins
    user = new_key(server, admin, admin=False, description="test-alert user")
    n = len(hook.tests())
    code, body, text = curl("POST", url, creds(user), {"description": "from a user"})
    assert (code, body) == (200, TEST_SENT), (code, text)
    got = wait_for(lambda: hook.tests()[n:] or None, timeout=5, desc="the user's test alert")
    assert got[0]["body"]["description"] == "from a user"


def test_test_alert_without_outputs(plain):
    code, body, text = provision(plain, {"admin": True})
    assert code == 200, (code, text)
    key = body["key"]
    url = alert_url(plain)
    for payload in ({"description": "nobody listens"}, {}, None):
        code, body, text = curl("POST", url, creds(key), payload)
        assert (code, body) == (200, TEST_SENT), (payload, code, text)
    # the server says, in its log, that nothing is configured
    wait_for(lambda: any("no alert output" in l for l in plain.stdout_lines + plain.stderr_lines),
             timeout=5, desc="the log line about no outputs")


def test_test_alert_errors(server, hook, admin):
    before = len(hook.tests())
    cases = [
        (json.dumps({"description": 5}), "application/json", must_be("description", "string")),
        (json.dumps({"description": ["a"]}), "application/json", must_be("description", "string")),
        (json.dumps({"description": True}), "application/json", must_be("description", "string")),
        ("{", "application/json", NOT_DECODED),
        ("not json", "application/json", NOT_DECODED),
        ("[]", "application/json", NOT_DECODED),
        (json.dumps({"description": "x"}), "text/plain", NOT_JSON_CT),
        (json.dumps({"description": "x"}), "application/x-www-form-urlencoded", NOT_JSON_CT),
        (json.dumps({"description": "x"}), None, NOT_JSON_CT),
    ]
    for data, ctype, message in cases:
        r = raw(server, "POST", "test-alert", admin, data, ctype)
        try:
            assert_ss_error(r, 400, message)
        except AssertionError as e:
            raise AssertionError(f"{data!r} as {ctype}: {e}") from None
    # no body at all: sent
    code, body, text = curl("POST", alert_url(server), creds(admin), None)
    assert (code, body) == (200, TEST_SENT), (code, text)
    # credentials come first, whatever the body
    r = raw(server, "POST", "test-alert", None, "{", "text/plain")
    assert_ss_error(r, 401, AUTH_FAILED)
    r = raw(server, "POST", "test-alert", None, "{", "text/plain",
            headers={"X-Key-ID": admin["key_id"], "X-Secret-ID": wrong_secret(admin)})
    assert_ss_error(r, 401, AUTH_FAILED)
    # a charset parameter is fine
    r = raw(server, "POST", "test-alert", admin, json.dumps({"description": "charset"}),
            "application/json; charset=utf-8")
    assert (r.status_code, r.json()) == (200, TEST_SENT), r.text
    wait_for(lambda: len(hook.tests()) >= before + 2 or None, timeout=5, desc="the charset test alert")
    time.sleep(0.3)
    # only the plain curl call and the charset one were sent
    assert len(hook.tests()) == before + 2, hook.tests()[before:]


# --- /key error texts --------------------------------------------------------------------------------

def test_key_body_error_texts(server, admin):
    count = ok(raw(server, "GET", "key", admin, None, None))["count"]
    victim = new_key(server, admin, admin=False, description="victim")
    kid = victim["key_id"]
    for method in ("GET", "POST", "PATCH", "DELETE"):
        for data, ctype, message in [
            (json.dumps({"key_id": kid}), "text/plain", NOT_JSON_CT),
            (json.dumps({"key_id": kid}), "application/x-www-form-urlencoded", NOT_JSON_CT),
            (json.dumps({"key_id": kid}), None, NOT_JSON_CT),
            ("{", "application/json", NOT_DECODED),
            ("{'admin': true}", "application/json", NOT_DECODED),
            ("[]", "application/json", NOT_DECODED),
            ('"admin"', "application/json", NOT_DECODED),
            (json.dumps({"key_id": 5}), "application/json", must_be("key_id", "string")),
            (json.dumps({"key_id": None}), "application/json", must_be("key_id", "string")),
            (json.dumps({"key_id": ["x"]}), "application/json", must_be("key_id", "string")),
        ]:
            r = raw(server, method, "key", admin, data, ctype)
            try:
                assert_ss_error(r, 400, message)
            except AssertionError as e:
                raise AssertionError(f"{method} {data!r} as {ctype}: {e}") from None
    # required key_id
    for method in ("PATCH", "DELETE"):
        for data in (json.dumps({}), json.dumps({"description": "x"}), None):
            assert_ss_error(raw(server, method, "key", admin, data), 400, KEY_ID_REQUIRED)
    # field types on POST and PATCH
    wrong = [({"admin": "yes"}, must_be("admin", "bool")), ({"admin": 1}, must_be("admin", "bool")),
             ({"active": "true"}, must_be("active", "bool")), ({"active": 0}, must_be("active", "bool")),
             ({"expire_time": "soon"}, must_be("expire_time", "int")),
             ({"expire_time": 1.5}, must_be("expire_time", "int")),
             ({"expire_time": True}, must_be("expire_time", "int")),
             ({"description": 5}, must_be("description", "string")),
             ({"description": {"a": 1}}, must_be("description", "string"))]
    for body, message in wrong:
        assert_ss_error(raw(server, "POST", "key", admin, json.dumps(body)), 400, message)
        assert_ss_error(raw(server, "PATCH", "key", admin, json.dumps({"key_id": kid, **body})), 400, message)
    # a charset parameter is accepted, and an empty key_id is just an unknown key
    r = raw(server, "PATCH", "key", admin, json.dumps({"key_id": kid, "description": "charset ok"}),
            "application/json; charset=utf-8")
    assert ok(r)["key"]["description"] == "charset ok"
    assert_ss_error(raw(server, "DELETE", "key", admin, json.dumps({"key_id": ""})), 404, "Key not found.")
    # nothing else was created or changed
    keys = ok(raw(server, "GET", "key", admin, None, None))
    assert keys["count"] == count + 1, keys
    mine = next(k for k in keys["keys"] if k["key_id"] == kid)
    assert (mine["admin"], mine["active"], mine["expire_time"], mine["description"]) == (False, True, 0, "charset ok")
    # credentials (and the admin check's 401) come before the body
    for method in ("GET", "POST", "PATCH", "DELETE"):
        r = raw(server, method, "key", None, "{", "text/plain", headers={"X-Key-ID": "x", "X-Secret-ID": "y"})
        assert_ss_error(r, 401, AUTH_FAILED)


def test_curl_without_a_content_type_is_refused(server, admin):
    """`curl -d '{...}'` without `-H 'Content-Type: application/json'` sends a form type, which
    SpaceSiren refuses: the documentation asks for the JSON type on every request with a body."""
    r = subprocess.run(["curl", "-sS", "-X", "POST", "-w", "\n%{http_code}", key_url(server),
                        "-H", f"X-Key-ID: {admin['key_id']}", "-H", f"X-Secret-ID: {admin['secret_id']}",
                        "-d", json.dumps({"description": "no type"})], capture_output=True, text=True, timeout=15)
    assert r.returncode == 0, r.stderr
    text, _, code = r.stdout.rpartition("\n")
    assert (int(code), json.loads(text)) == (400, {"error": NOT_JSON_CT}), r.stdout
    assert "no type" not in {k["description"] for k in ok(raw(server, "GET", "key", admin, None, None))["keys"]}


# --- /token and /event -------------------------------------------------------------------------------

def test_token_and_event_answer_in_spacesiren_shape(server, admin):
    user = new_key(server, admin, admin=False, description="aws user")
    missing = {"access_key_id": "AKIAIOSFODNN7EXAMPLE"}
    for key in (admin, user):
        code, parsed, text = curl("POST", root(server) + "token", creds(key), {"description": "x"})
        assert code == 400 and set(parsed) == {"error"}, text
        assert "aws-id" in parsed["error"] and "--aws-region" in parsed["error"], parsed
        code, parsed, text = curl("GET", root(server) + "token", creds(key))
        assert (code, parsed) == (200, {"count": 0, "tokens": []}), text
        for method in ("GET", "PATCH", "DELETE"):
            code, parsed, text = curl(method, root(server) + "token", creds(key), missing)
            assert (code, parsed) == (404, {"error": "Honey token not found."}), (method, text)
        for method in ("PATCH", "DELETE"):
            code, parsed, text = curl(method, root(server) + "token", creds(key))
            assert (code, parsed) == (400, {"error": "Parameter 'access_key_id' is required."}), (method, text)
        code, parsed, text = curl("GET", root(server) + "event", creds(key), missing)
        assert (code, parsed) == (404, {"error": "Token not found."}), text
        code, parsed, text = curl("GET", root(server) + "event", creds(key), {"event_id": "8c90a152-00c2-44b1-9bce-758a32f7b02e"})
        assert (code, parsed) == (404, {"error": "Event not found."}), text
        code, parsed, text = curl("GET", root(server) + "event", creds(key))
        assert (code, parsed) == (400, {"error": "Must specify 'event_id' or 'access_key_id'."}), text
        code, parsed, text = curl("GET", root(server) + "token", creds(key), {"access_key_id": 5})
        assert (code, parsed) == (400, {"error": "Parameter 'access_key_id' must be of type string."}), text
    for path in ("token", "event"):
        for method in ("GET", "POST", "PATCH", "DELETE"):
            body = missing if method != "POST" else {"description": "x"}
            # unauthenticated: SpaceSiren's 401, not another dialect's 404
            for h in ({}, {"X-Key-ID": admin["key_id"], "X-Secret-ID": wrong_secret(admin)},
                      {"X-Key-ID": "00000000-0000-4000-8000-000000000000", "X-Secret-ID": admin["secret_id"]}):
                code, parsed, text = curl(method, root(server) + path, h, body)
                assert (code, parsed) == (401, {"error": AUTH_FAILED}), (path, method, h, code, text)
    # the provision key is for POST /key only
    code, parsed, text = curl("POST", root(server) + "token", {"X-Provision-Key": provision_key(server)}, {})
    assert (code, parsed) == (401, {"error": AUTH_FAILED}), (code, text)

"""SpaceSiren `/token` and `/event` (seed 002) with AWS on (moto): honey tokens made, read,
changed and deleted field by field as SpaceSiren documents and answers them, its error texts,
and what `active` and `expire_time` do to a token's events.

* POST answers 200 with the token flat: `access_key_id`, `secret_access_key`, `create_time`,
  `expire_time`, `user` {`username`, `create_time`, `account_id` (STS GetCallerIdentity:
  moto's 123456789012), `num_tokens`}, `active`, `location`, `description`. GET one wraps it in
  `token`, GET all lists `{count, tokens: [... username instead of user ...]}`, PATCH wraps it in
  `key`, DELETE answers 204 and then 404 `Honey token not found.`.
* 400 texts as SpaceSiren's: `Parameter '<name>' must be of type string|bool|int.`,
  `Parameter 'access_key_id' is required.`, `Must specify 'event_id' or 'access_key_id'.`;
  404 `Event not found.` / `Token not found.` on `/event`.
* An inactive or expired token still records its events (in `/event`, `alerted: false`) but
  sends no alert; an expired token's key is made Inactive in IAM.
* The token is an aws-id token in the Console too.
"""

import json
import time

import pytest

import cloudtrail_emu as ct
from awstools import (ALLOW, NO_GROUPING, TELLTALE, check_ss_event, console_token_for_key, denies_everything,
                      is_int, keys_of, ss, ss_events, ss_provision, wait_gone)
from conftest import aws_server, unique, wait_for
from test_alerts import Receiver
from test_spacesiren import AUTH_FAILED, assert_ss_error

TOKEN_FIELDS = {"access_key_id", "secret_access_key", "create_time", "expire_time", "user", "active", "location",
                "description"}
USER_FIELDS = {"username", "create_time", "account_id", "num_tokens"}
LISTED_FIELDS = {"access_key_id", "create_time", "expire_time", "username", "secret_access_key", "active",
                 "location", "description"}
NOT_FOUND = "Honey token not found."
AKID_REQUIRED = "Parameter 'access_key_id' is required."
EVENT_NEEDS = "Must specify 'event_id' or 'access_key_id'."
NOT_DECODED = "Could not decode json request."
NOT_JSON_CT = "Content-Type header must be application/json."
UNKNOWN_AKID = "AKIAIOSFODNN7EXAMPLE"


def must_be(name, kind):
    return f"Parameter '{name}' must be of type {kind}."


# --- fixtures ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hook():
    rec = Receiver().start()
    yield rec
    rec.stop()


@pytest.fixture(scope="module")
def trail(moto):
    moto.reset()
    return ct.CloudTrailEmulator(moto.url, unique("ss-trail")).create_bucket()


@pytest.fixture(scope="module")
def server(moto, trail, hook):
    srv = aws_server(moto, bucket=trail.bucket, args=["--alert-webhooks", hook.url(), ALLOW, NO_GROUPING])
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def admin(server):
    return ss_provision(server, admin=True, description="ss tokens admin")


@pytest.fixture(scope="module")
def user(server, admin):
    """A non-admin key pair: /token and /event need no admin."""
    r = ss(server, admin, "POST", "key", {"admin": False, "description": "ss tokens user"})
    assert r.status_code == 200, r.text
    return r.json()["key"]


@pytest.fixture(scope="module")
def iam(moto):
    return moto.client("iam")


def create(server, key, body=None, status=200):
    r = ss(server, key, "POST", "token", body)
    assert r.status_code == status, f"POST /token {body}: {r.status_code} {r.text[:300]}"
    return r.json()


def get_one(server, key, akid):
    r = ss(server, key, "GET", "token", {"access_key_id": akid})
    assert r.status_code == 200, (r.status_code, r.text[:300])
    body = r.json()
    assert set(body) == {"token"}, body
    return body["token"]


def check_token(t, iam, *, location="", description="", active=True, expire_time=0):
    """A token object with exactly the documented fields and types, its key real in IAM."""
    assert set(t) == TOKEN_FIELDS, f"token fields {sorted(t)} != documented {sorted(TOKEN_FIELDS)}"
    assert t["access_key_id"].startswith("AKIA") and len(t["access_key_id"]) == 20, t
    assert isinstance(t["secret_access_key"], str) and len(t["secret_access_key"]) == 40, "secret of 40 characters"
    assert is_int(t["create_time"]) and abs(t["create_time"] - time.time()) < 300, t
    assert is_int(t["expire_time"]) and t["expire_time"] == expire_time, t
    assert t["active"] is active, t
    assert t["location"] == location and t["description"] == description, t
    u = t["user"]
    assert isinstance(u, dict) and set(u) == USER_FIELDS, f"user fields {sorted(u)} != documented {sorted(USER_FIELDS)}"
    assert isinstance(u["username"], str) and u["username"], u
    assert is_int(u["create_time"]) and u["create_time"] <= t["create_time"] + 1, u
    assert u["account_id"] == "123456789012", f"account_id must come from STS GetCallerIdentity: {u}"
    assert is_int(u["num_tokens"]) and u["num_tokens"] >= 1, u
    keys = keys_of(iam, u["username"])
    assert keys is not None and t["access_key_id"] in keys, f"key {t['access_key_id']} is not on {u['username']}: {keys}"
    assert u["num_tokens"] == len(keys), f"num_tokens {u['num_tokens']} but the user has {len(keys)} key(s)"
    assert not any(w in u["username"].lower() for w in TELLTALE), u["username"]
    assert denies_everything(iam.get_user_policy(UserName=u["username"], PolicyName="deny-all")["PolicyDocument"])
    return t


# --- POST / GET / PATCH / DELETE ------------------------------------------------------------------------


def test_post_answers_the_token_flat(server, user, iam):
    exp = int(time.time()) + 86400
    body = {"location": "build-01:/home/ci/.aws", "description": "CI deploy key", "expire_time": exp, "active": True}
    t = check_token(create(server, user, body), iam, location=body["location"], description=body["description"],
                    expire_time=exp)
    assert keys_of(iam, t["user"]["username"])[t["access_key_id"]] == "Active"
    # defaults, with an empty body and with none
    for b in ({}, None):
        check_token(create(server, user, b), iam)


def test_get_one_and_all(server, user, admin, iam):
    t = create(server, user, {"location": "vault export", "description": "get me"})
    one = get_one(server, user, t["access_key_id"])
    check_token(one, iam, location="vault export", description="get me")
    for f in ("access_key_id", "secret_access_key", "create_time", "expire_time", "active", "location", "description"):
        assert one[f] == t[f], (f, one[f], t[f])
    assert one["user"]["username"] == t["user"]["username"]
    for key in (user, admin):
        for req in ({"method": "GET", "path": "token"}, {"method": "GET", "path": "token", "body": {}},
                    {"method": "GET", "path": "token", "body": {"access_key_id": ""}}):
            r = ss(server, key, **req)
            assert r.status_code == 200, (req, r.status_code, r.text[:200])
            body = r.json()
            assert set(body) == {"count", "tokens"}, body
            assert body["count"] == len(body["tokens"]) and is_int(body["count"]), body
            mine = [x for x in body["tokens"] if x["access_key_id"] == t["access_key_id"]]
            assert len(mine) == 1, body
            assert set(mine[0]) == LISTED_FIELDS, f"listed fields {sorted(mine[0])} != documented {sorted(LISTED_FIELDS)}"
            assert mine[0]["username"] == t["user"]["username"]
            assert (mine[0]["secret_access_key"], mine[0]["location"], mine[0]["description"]) == \
                (t["secret_access_key"], "vault export", "get me")
    assert_ss_error(ss(server, user, "GET", "token", {"access_key_id": UNKNOWN_AKID}), 404, NOT_FOUND)


def test_patch_changes_the_given_fields(server, user, iam):
    t = create(server, user, {"location": "before", "description": "before"})
    akid = t["access_key_id"]
    exp = int(time.time()) + 7 * 86400
    r = ss(server, user, "PATCH", "token", {"access_key_id": akid, "location": "after", "description": "changed",
                                            "active": False, "expire_time": exp})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"key"}, f"PATCH answers its token under 'key': {body}"
    check_token(body["key"], iam, location="after", description="changed", active=False, expire_time=exp)
    assert body["key"]["create_time"] == t["create_time"]
    check_token(get_one(server, user, akid), iam, location="after", description="changed", active=False, expire_time=exp)
    # missing attributes are left alone
    p = ss(server, user, "PATCH", "token", {"access_key_id": akid, "description": "only this"}).json()["key"]
    assert (p["location"], p["description"], p["active"], p["expire_time"]) == ("after", "only this", False, exp), p
    p = ss(server, user, "PATCH", "token", {"access_key_id": akid, "active": True, "expire_time": 0}).json()["key"]
    assert (p["location"], p["description"], p["active"], p["expire_time"]) == ("after", "only this", True, 0), p
    assert_ss_error(ss(server, user, "PATCH", "token", {"access_key_id": UNKNOWN_AKID, "location": "x"}), 404, NOT_FOUND)
    assert_ss_error(ss(server, user, "PATCH", "token", {"location": "x"}), 400, AKID_REQUIRED)


def test_delete_answers_204_then_404_and_retires_the_key(server, user, iam):
    t = create(server, user, {"description": "doomed"})
    akid, name = t["access_key_id"], t["user"]["username"]
    others = set(keys_of(iam, name)) - {akid}
    r = ss(server, user, "DELETE", "token", {"access_key_id": akid})
    assert (r.status_code, r.content) == (204, b""), (r.status_code, r.text)
    assert_ss_error(ss(server, user, "DELETE", "token", {"access_key_id": akid}), 404, NOT_FOUND)
    assert_ss_error(ss(server, user, "GET", "token", {"access_key_id": akid}), 404, NOT_FOUND)
    if others:   # the user keeps its other tokens' keys
        wait_for(lambda: set(keys_of(iam, name) or {}) == others, timeout=10, interval=0.2,
                 desc=f"key {akid} to be deleted from {name}")
    else:
        wait_gone(iam, akid, name)
    assert_ss_error(ss(server, user, "DELETE", "token", {}), 400, AKID_REQUIRED)
    assert_ss_error(ss(server, user, "DELETE", "token", None), 400, AKID_REQUIRED)


def test_wrong_types_and_bodies_get_spacesirens_400s(server, user):
    before = ss(server, user, "GET", "token").json()["count"]
    t = create(server, user, {"description": "victim"})
    akid = t["access_key_id"]
    wrong = [({"location": 5}, must_be("location", "string")), ({"location": ["a"]}, must_be("location", "string")),
             ({"description": {"a": 1}}, must_be("description", "string")),
             ({"description": True}, must_be("description", "string")),
             ({"active": "yes"}, must_be("active", "bool")), ({"active": 1}, must_be("active", "bool")),
             ({"expire_time": "soon"}, must_be("expire_time", "int")),
             ({"expire_time": 1.5}, must_be("expire_time", "int")),
             ({"expire_time": True}, must_be("expire_time", "int"))]
    for body, message in wrong:
        assert_ss_error(ss(server, user, "POST", "token", body), 400, message)
        assert_ss_error(ss(server, user, "PATCH", "token", {"access_key_id": akid, **body}), 400, message)
    for method in ("GET", "PATCH", "DELETE"):
        for bad in (5, True, ["x"], {"a": 1}):
            assert_ss_error(ss(server, user, method, "token", {"access_key_id": bad}), 400,
                            must_be("access_key_id", "string"))
    for field in ("event_id", "access_key_id"):
        assert_ss_error(ss(server, user, "GET", "event", {field: 5}), 400, must_be(field, "string"))
    for method in ("POST", "PATCH", "DELETE", "GET"):
        assert_ss_error(ss(server, user, method, "token", raw="{"), 400, NOT_DECODED)
        assert_ss_error(ss(server, user, method, "token", raw=json.dumps({"access_key_id": akid}),
                           content_type="text/plain"), 400, NOT_JSON_CT)
    # /event needs one of its two parameters, and names what it does not know
    for body in (None, {}, {"event_id": "", "access_key_id": ""}):
        assert_ss_error(ss(server, user, "GET", "event", body), 400, EVENT_NEEDS)
    assert_ss_error(ss(server, user, "GET", "event", {"event_id": "8c90a152-00c2-44b1-9bce-758a32f7b02e"}), 404,
                    "Event not found.")
    assert_ss_error(ss(server, user, "GET", "event", {"access_key_id": UNKNOWN_AKID}), 404, "Token not found.")
    # credentials first
    for path in ("token", "event"):
        bad = {"key_id": user["key_id"], "secret_id": "x" * 44}
        assert_ss_error(ss(server, bad, "GET", path, {"access_key_id": akid}), 401, AUTH_FAILED)
    # nothing was created or changed by the refused requests
    after = ss(server, user, "GET", "token").json()
    assert after["count"] == before + 1, after["count"]
    mine = next(x for x in after["tokens"] if x["access_key_id"] == akid)
    assert (mine["description"], mine["active"], mine["expire_time"], mine["location"]) == ("victim", True, 0, "")


def test_the_token_is_an_aws_id_token_in_the_console(server, user, api):
    t = create(server, user, {"location": "laptop", "description": "console view"})
    ct_tok = console_token_for_key(api, t["access_key_id"])
    assert ct_tok is not None, "the SpaceSiren token is not in the Console's token list"
    assert ct_tok["kind"] == "aws-id", ct_tok
    assert ct_tok["username"] == t["user"]["username"], ct_tok
    full = api.fetch_token(ct_tok["canarytoken"])
    assert full["secret_access_key"] == t["secret_access_key"], full
    assert ss(server, user, "DELETE", "token", {"access_key_id": t["access_key_id"]}).status_code == 204
    assert console_token_for_key(api, t["access_key_id"]) is None, "deleted in SpaceSiren, still in the Console"


# --- events: active, inactive, expired ----------------------------------------------------------------------


def test_inactive_and_expired_tokens_record_without_alerting(server, user, trail, hook, iam):
    live = create(server, user, {"description": "live"})
    idle = create(server, user, {"description": "inactive", "active": False})
    gone = create(server, user, {"description": "expired", "expire_time": int(time.time()) - 60})
    late = create(server, user, {"description": "expires by PATCH"})
    r = ss(server, user, "PATCH", "token", {"access_key_id": late["access_key_id"], "expire_time": int(time.time()) - 1})
    assert r.status_code == 200, r.text
    # expired tokens' keys are switched off in IAM
    for t in (gone, late):
        name, akid = t["user"]["username"], t["access_key_id"]
        wait_for(lambda: (keys_of(iam, name) or {}).get(akid) == "Inactive", timeout=10, interval=0.2,
                 desc=f"expired token's key {akid} to be Inactive in IAM")
    assert keys_of(iam, live["user"]["username"])[live["access_key_id"]] == "Active"

    records = {t["access_key_id"]: ct.synthetic_records(trail.identity(t["access_key_id"]), 1)[0]
               for t in (live, idle, gone, late)}
    trail.deliver(list(records.values()))

    def all_listed():
        got = {}
        for akid, rec in records.items():
            evs = ss_events(server, user, akid)["events"]
            if not any(e["event_id"] == rec["eventID"] for e in evs):
                return None
            got[akid] = next(e for e in evs if e["event_id"] == rec["eventID"])
        return got
    events = wait_for(all_listed, timeout=15, desc="the four tokens' events in /event")
    # the live token alerts; once its alert is in, the others had their chance
    live_alert = wait_for(lambda: [p for p in hook.all() if isinstance(p["body"], dict)
                                   and (p["body"].get("data") or {}).get("access_key_id") == live["access_key_id"]],
                          timeout=10, desc="the live token's alert")
    assert live_alert[0]["body"]["kind"] == "aws-id"
    wait_for(lambda: ss_events(server, user, live["access_key_id"])["events"][0]["alerted"], timeout=5,
             desc="the live token's event marked alerted")
    time.sleep(1.0)
    for t in (idle, gone, late):
        e = check_ss_event(events[t["access_key_id"]], t["access_key_id"])
        assert e["alerted"] is False, f"{t['description']} token's event says alerted: {e}"
        sent = [p for p in hook.all() if isinstance(p["body"], dict)
                and (p["body"].get("data") or {}).get("access_key_id") == t["access_key_id"]]
        assert sent == [], f"the {t['description']} token sent an alert: {sent[0]['body']}"
    assert ss_events(server, user, live["access_key_id"])["events"][0]["alerted"] is True

    # deleting a token takes its events with it
    eid = records[live["access_key_id"]]["eventID"]
    assert ss(server, user, "DELETE", "token", {"access_key_id": live["access_key_id"]}).status_code == 204
    assert_ss_error(ss(server, user, "GET", "event", {"event_id": eid}), 404, "Event not found.")
    assert_ss_error(ss(server, user, "GET", "event", {"access_key_id": live["access_key_id"]}), 404, "Token not found.")

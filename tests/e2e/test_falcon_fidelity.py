"""Falcon installation tokens as documented (Trapline issue 9, item 9), with the official,
unmodified `crowdstrike-falconpy` 1.6.6 client wherever a real client does the thing, and raw
requests otherwise.

Covered: `value` on every token shown (read and PATCH, equal to the create's; `null` for a token
made before values were kept); the default page size 50 of `tokens_query` and
`audit_events_query`; the FQL forms `label:*` (has a value), `label:!*` (has none) and the
wildcard operator `label:*'batch*'` (also negated, on time fields, and the errors they give);
`tokens_create` without a label (falconpy leaves an empty one out) giving label ""; entity reads
of unknown ids (tokens and audit events): 404 with one error per missing id, or 200 with the
found resources plus an error per missing id; per-id errors carrying the `id` (FalconPy's token
sample prints `error['id']`); and timestamps that FalconPy's token sample parses with
`%Y-%m-%dT%H:%M:%SZ`.
"""

import os
import sqlite3
from datetime import datetime, timedelta, timezone

import pytest
import requests

from conftest import Server, unique
from test_falcon import (FUTURE, HEX64_RE, RFC3339_RE, TOKENS_ENTITIES, TOKEN_FIELDS, UNKNOWN_ID,
                         create, env, err_msg, falcon, query, query_ids, raw_env, read, root)

AUDIT_ENTITIES = "/installation-tokens/entities/audit-events/v1"
OTHER_UNKNOWN_ID = "f" * 32
SAMPLE_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # how FalconPy's token sample reads expires_timestamp


@pytest.fixture(scope="module")
def f(server):
    client = falcon(server, server.admin_key)
    assert client.token_status == 201, (client.token_status, client.token_fail_reason)
    return client


def not_found_errors(body, ids):
    """One 404 error per id in `ids`, each naming its id; -> nothing."""
    errs = body["errors"]
    assert len(errs) == len(ids), body
    for e in errs:
        assert e["code"] == 404, body
        assert isinstance(e["message"], str) and e["message"], body
    assert [e["id"] for e in errs] == list(ids), body


# --- value on every token shown ------------------------------------------------------------------

def test_read_returns_the_created_value(server, f):
    a, b = create(f), create(f, expires_timestamp=FUTURE)
    assert HEX64_RE.match(a["value"]) and HEX64_RE.match(b["value"]), (a, b)
    toks = read(f, [a["id"], b["id"]])
    for made in (a, b):
        got = toks[made["id"]]
        assert got["value"] == made["value"], (got, made)
        assert TOKEN_FIELDS | {"value"} <= set(got), got
    # One id as a plain string, and the raw request with repeated `ids` keys.
    [one] = env(f.tokens_read(ids=a["id"]), 200)["resources"]
    assert one["value"] == a["value"], one
    r = requests.get(root(server) + TOKENS_ENTITIES, params=[("ids", b["id"]), ("ids", a["id"])],
                     headers=f.headers, timeout=15)
    got = raw_env(r, 200)["resources"]
    assert [(t["id"], t["value"]) for t in got] == [(b["id"], b["value"]), (a["id"], a["value"])], got


def test_update_answers_carry_the_value(f):
    t = create(f)
    body = env(f.tokens_update(ids=t["id"], label=unique("renamed")), 200)
    assert body["resources"][0]["value"] == t["value"], body
    body = env(f.tokens_update(ids=t["id"], revoked=True), 200)
    assert body["resources"][0]["value"] == t["value"], body
    assert body["resources"][0]["status"] == "revoked", body
    body = env(f.tokens_update(ids=t["id"], revoked=False), 200)
    assert body["resources"][0]["value"] == t["value"], body
    assert read(f, [t["id"]])[t["id"]]["value"] == t["value"]


def test_value_survives_a_restart_and_older_tokens_read_null(fresh_server):
    fc = falcon(fresh_server, fresh_server.admin_key)
    old, new = create(fc), create(fc)
    fresh_server.stop()
    # A token from before values were kept has no sealed value.
    con = sqlite3.connect(os.path.join(fresh_server.data_dir, "trapline.db"), timeout=10)
    with con:
        assert con.execute("UPDATE factory_tokens SET value_sealed = NULL WHERE id = ?",
                           (old["id"],)).rowcount == 1
    con.close()
    fresh_server.start()
    fc = falcon(fresh_server, fresh_server.admin_key)
    toks = read(fc, [old["id"], new["id"]])
    assert "value" in toks[old["id"]] and toks[old["id"]]["value"] is None, toks
    assert TOKEN_FIELDS <= set(toks[old["id"]]), toks
    assert toks[new["id"]]["value"] == new["value"], toks  # the kept value outlives the restart
    body = env(fc.tokens_update(ids=old["id"], label=unique("still")), 200)
    assert body["resources"][0]["value"] is None, body


# --- default page size 50 ------------------------------------------------------------------------

def test_default_limit_is_50_for_tokens_and_audit_events(fresh_server):
    fc = falcon(fresh_server, fresh_server.admin_key)
    made = [create(fc, unique("page"))["id"] for _ in range(55)]

    body = query(fc)
    assert body["meta"]["pagination"]["limit"] == 50, body["meta"]
    assert body["meta"]["pagination"]["total"] == 55, body["meta"]
    assert len(body["resources"]) == 50, len(body["resources"])
    rest = query(fc, offset=50)
    assert rest["meta"]["pagination"] == {"offset": 50, "limit": 50, "total": 55}, rest["meta"]
    assert set(body["resources"]) | set(rest["resources"]) == set(made)
    assert query(fc, limit=100)["meta"]["pagination"]["limit"] == 100

    audit = env(fc.audit_events_query(), 200)
    assert audit["meta"]["pagination"]["limit"] == 50, audit["meta"]
    assert audit["meta"]["pagination"]["total"] >= 55, audit["meta"]
    assert len(audit["resources"]) == 50, len(audit["resources"])
    filtered = env(fc.audit_events_query(filter="action:'token_create'"), 200)
    assert len(filtered["resources"]) == 50, filtered["meta"]
    assert filtered["meta"]["pagination"]["total"] == 55, filtered["meta"]


# --- FQL: has a value, has none, the wildcard operator ------------------------------------------

# name -> (label, expires, revoked)
FSET = [
    ("b1", "batch-1", True, False),
    ("b2", "batch-2", False, True),
    ("b3", "Batch-3", False, False),
    ("x1", "other-batch", True, False),
    ("e1", "", False, False),
    ("e2", "", True, True),
]


@pytest.fixture(scope="module")
def fset():
    """A server of its own whose tokens are exactly FSET."""
    srv = Server().start()
    try:
        fc = falcon(srv, srv.admin_key)
        ids = {}
        for name, label, expires, revoked in FSET:
            kw = {"expires_timestamp": FUTURE} if expires else {}
            t = env(fc.tokens_create(label=label, **kw), 201)["resources"][0]
            assert t["label"] == label, t
            ids[name] = t["id"]
            if revoked:
                env(fc.tokens_update(ids=t["id"], revoked=True), 200)
        yield {"f": fc, "ids": ids}
    finally:
        srv.close()


FSET_FILTERS = [
    ("label:*", {"b1", "b2", "b3", "x1"}),
    ("label:!*", {"e1", "e2"}),
    ("label:*'batch*'", {"b1", "b2", "b3"}),            # wildcards ignore case
    ("label:*'BATCH*'", {"b1", "b2", "b3"}),
    ("label:*\"*batch*\"", {"b1", "b2", "b3", "x1"}),
    ("label:!*'batch*'", {"x1", "e1", "e2"}),
    ("label:*'batch-1'", {"b1"}),                       # no wildcard: exact, like label:'batch-1'
    ("label:*'batch'", set()),
    ("label:*['batch-1','other-batch']", {"b1", "x1"}),
    ("label:!*+status:'valid'", {"e1"}),
    ("label:*+expires_timestamp:*", {"b1", "x1"}),
    ("expires_timestamp:!*", {"b2", "b3", "e1"}),
    ("revoked_timestamp:*", {"b2", "e2"}),
    ("revoked_timestamp:!*+label:*'batch*'", {"b1", "b3"}),
    ("last_used_timestamp:*", set()),
    ("(label:!*,label:*'other*')+expires_timestamp:*", {"x1", "e2"}),
    ("label:!* , label:*'batch-2'", {"e1", "e2", "b2"}),
    ("id:*", {n for n, *_ in FSET}),
    ("status:*", {n for n, *_ in FSET}),
]


@pytest.mark.parametrize("flt,names", FSET_FILTERS, ids=[x[0] for x in FSET_FILTERS])
def test_fql_has_value_and_wildcard_operator(fset, flt, names):
    got = query_ids(fset["f"], flt)
    assert len(got) == len(set(got)), got
    want = {fset["ids"][n] for n in names}
    assert set(got) == want, (flt, sorted(n for n, i in fset["ids"].items() if i in got), sorted(names))


def test_fql_wildcard_operator_on_audit_events(fset):
    fc = fset["f"]
    got = env(fc.audit_events_query(filter="action:*'token_cr*'", limit=1000), 200)["resources"]
    events = env(fc.audit_events_read(ids=got), 200)["resources"]
    assert len(events) == len(FSET) and all(e["action"] == "token_create" for e in events), events
    revokes = env(fc.audit_events_query(filter="action:*'token_revoke'+description:*", limit=1000), 200)
    assert revokes["meta"]["pagination"]["total"] == 2, revokes
    assert env(fc.audit_events_query(filter="token_id:!*"), 200)["resources"] == []


MALFORMED = [
    ("label:*'", 8),                     # the quote after the wildcard operator is not closed
    ("label:!*'batch", 14),
    ("label:**", 7),                     # a second '*' is no value
    ("label:* 'x'", 8),                  # `label:*` is complete: the value is left over
    ("label:*+", 8),                     # '+' with nothing after it
    ("(label:*", 8),                     # ')' missing
    ("created_timestamp:*'2021*'", 0),   # no wildcards in times: the term is named
    ("nosuch:*", 0),                     # unknown field
]


@pytest.mark.parametrize("flt,position", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_fql_malformed_has_value_forms_are_400_at_the_right_position(fset, flt, position):
    body = env(fset["f"].tokens_query(filter=flt), 400)
    assert f"position {position}:" in err_msg(body), (flt, body)


# --- create without a label ----------------------------------------------------------------------

@pytest.mark.parametrize("how", ["no label", "empty label", "type only", "raw {}", "raw empty label"])
def test_create_without_label(server, f, how):
    if how == "no label":
        r = f.tokens_create(expires_timestamp=FUTURE)
    elif how == "empty label":
        r = f.tokens_create(label="")           # falconpy leaves the empty label out
    elif how == "type only":
        r = f.tokens_create(type="customer_managed")
    else:
        body = {} if how == "raw {}" else {"label": ""}
        resp = requests.post(root(server) + TOKENS_ENTITIES, json=body, headers=f.headers, timeout=15)
        r = {"status_code": resp.status_code, "headers": dict(resp.headers), "body": resp.json()}
    [t] = env(r, 201)["resources"]
    assert t["label"] == "" and t["status"] == "valid", t
    assert HEX64_RE.match(t["value"]), t
    got = read(f, [t["id"]])[t["id"]]
    assert got["label"] == "" and got["value"] == t["value"], got
    assert t["id"] in query_ids(f, "label:!*")


# --- unknown ids -----------------------------------------------------------------------------------

def test_read_unknown_token_is_404_with_an_error_per_id(server, f):
    body = env(f.tokens_read(ids=UNKNOWN_ID), 404)
    assert body["resources"] == [], body
    not_found_errors(body, [UNKNOWN_ID])
    body = env(f.tokens_read(ids=[UNKNOWN_ID, OTHER_UNKNOWN_ID]), 404)
    not_found_errors(body, [UNKNOWN_ID, OTHER_UNKNOWN_ID])
    # Raw, comma-separated.
    r = requests.get(root(server) + TOKENS_ENTITIES, params={"ids": f"{OTHER_UNKNOWN_ID},{UNKNOWN_ID}"},
                     headers=f.headers, timeout=15)
    not_found_errors(raw_env(r, 404), [OTHER_UNKNOWN_ID, UNKNOWN_ID])


def test_read_some_unknown_tokens_is_200_with_errors(f):
    a, b = create(f), create(f)
    body = env(f.tokens_read(ids=[a["id"], UNKNOWN_ID, b["id"], OTHER_UNKNOWN_ID]), 200)
    assert [t["id"] for t in body["resources"]] == [a["id"], b["id"]], body
    not_found_errors(body, [UNKNOWN_ID, OTHER_UNKNOWN_ID])
    # An id asked for twice is answered once.
    body = env(f.tokens_read(ids=[a["id"], a["id"]]), 200)
    assert [t["id"] for t in body["resources"]] == [a["id"]] and body["errors"] == [], body


def test_read_unknown_audit_events(f):
    t = create(f)
    [eid] = env(f.audit_events_query(filter=f"token_id:'{t['id']}'"), 200)["resources"]
    body = env(f.audit_events_read(ids=["999999999"]), 404)
    assert body["resources"] == [], body
    not_found_errors(body, ["999999999"])
    body = env(f.audit_events_read(ids=["no-such-event", "999999998"]), 404)
    not_found_errors(body, ["no-such-event", "999999998"])
    body = env(f.audit_events_read(ids=[eid, "no-such-event"]), 200)
    assert [e["id"] for e in body["resources"]] == [eid], body
    assert body["resources"][0]["token_id"] == t["id"], body
    not_found_errors(body, ["no-such-event"])


def test_update_and_delete_errors_name_the_id(f):
    """FalconPy's token sample prints `error['id']` for every error of an update or delete."""
    a = create(f)
    body = env(f.tokens_update(ids=UNKNOWN_ID, revoked=True), 404)
    not_found_errors(body, [UNKNOWN_ID])
    body = env(f.tokens_update(ids=[a["id"], UNKNOWN_ID], label=unique("both")), 200)
    assert [t["id"] for t in body["resources"]] == [a["id"]], body
    not_found_errors(body, [UNKNOWN_ID])
    body = env(f.tokens_delete(ids=[a["id"], OTHER_UNKNOWN_ID]), 200)
    not_found_errors(body, [OTHER_UNKNOWN_ID])
    body = env(f.tokens_delete(ids=a["id"]), 404)
    not_found_errors(body, [a["id"]])
    env(f.tokens_read(ids=a["id"]), 404)


# --- timestamps ------------------------------------------------------------------------------------

def test_whole_second_timestamps_parse_as_falconpy_sample_does(f):
    """FalconPy's token sample adds days to `expires_timestamp` with `%Y-%m-%dT%H:%M:%SZ`."""
    t = create(f, expires_timestamp="2031-06-01T12:00:00Z")
    assert t["expires_timestamp"] == "2031-06-01T12:00:00Z", t
    got = read(f, [t["id"]])[t["id"]]
    expires = datetime.strptime(got["expires_timestamp"], SAMPLE_TIME_FORMAT)
    later = (expires + timedelta(days=30)).strftime(SAMPLE_TIME_FORMAT)
    body = env(f.tokens_update(ids=t["id"], expires_timestamp=later), 200)
    assert body["resources"][0]["expires_timestamp"] == "2031-07-01T12:00:00Z", body
    # Times with a fraction keep their milliseconds; every one is RFC 3339 in UTC.
    t2 = create(f, expires_timestamp="2031-06-01T12:00:00.250Z")
    assert t2["expires_timestamp"] == "2031-06-01T12:00:00.250Z", t2
    for k in ("created_timestamp", "expires_timestamp"):
        assert RFC3339_RE.match(got[k]) and got[k].endswith("Z"), got
    created = datetime.fromisoformat(got["created_timestamp"].replace("Z", "+00:00"))
    assert abs(created - datetime.now(timezone.utc)) < timedelta(minutes=5), got


# --- audit F11: long FQL lists are refused with a 400 that names the limit ----------------------

@pytest.mark.parametrize("flt", [
    "id:[" + ",".join(["'1'"] * 1000) + "]",
    "label:[" + ",".join(["'*'"] * 1000) + "]",
    ",".join(["label:'a'"] * 300),
], ids=["1000 ids", "1000 labels", "300 terms"])
def test_fql_too_many_comparisons_is_400(fset, flt):
    body = env(fset["f"].tokens_query(filter=flt), 400)
    assert "more than 256 comparisons" in err_msg(body), body


def test_fql_256_comparisons_work(fset):
    flt = "label:[" + ",".join(["'zq'"] * 256) + "]"
    assert env(fset["f"].tokens_query(filter=flt), 200)["resources"] == []

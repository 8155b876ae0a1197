"""Falcon installation-tokens dialect (seed 003), driven with the official, unmodified
`crowdstrike-falconpy` client (`InstallationTokens`) pointed at the management API listener's root.

Covered: OAuth2 login (201, expires_in, no `X-Cs-Region`), wrong secrets, logout revoking the
bearer; the `{meta, resources, errors}` envelope on every answer; token create / read (with its
`value`; unknown ids answered with errors) / update (revoke, restore, label, expiry set and
cleared, several ids) / delete; FQL filters, sorting and paging on a dedicated server whose token
set is fully known (including an `expired` token); the audit log of every change; customer
settings (`max_active_tokens`, `tokens_required`); roles; and the fact that an installation token
is a Console factory token (`canarytoken/factory/create`). The documented details added for
issue 9 (value on read, default limit 50, `label:*` / `label:!*` / `label:*'x*'`, create without a
label, 404s per unknown id, timestamps) are in test_falcon_fidelity.py.
"""

import re
import time
from datetime import datetime, timedelta, timezone

import pytest
import requests

from conftest import Server, unique

HEX32_RE = re.compile(r"^[0-9a-f]{32}$")
HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
RFC3339_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
FUTURE = "2030-01-01T00:00:00Z"
TOKENS_QUERY = "/installation-tokens/queries/tokens/v1"
TOKENS_ENTITIES = "/installation-tokens/entities/tokens/v1"
BAD_FACTORY = "Invalid factory_auth"
TOKEN_FIELDS = {"id", "label", "status", "type", "created_timestamp", "expires_timestamp",
                "last_used_timestamp", "revoked_timestamp"}
UNKNOWN_ID = "0" * 32


# --- helpers ---------------------------------------------------------------------------------------

def root(server):
    """The listener's root (the Console lives under /api/v1/, Falcon's endpoints at the root)."""
    base = server.api_url
    assert base.endswith("/api/v1/"), base
    return base[: -len("/api/v1/")]


def falcon(server, key):
    """An unmodified falconpy client logged in (automatically) with an API key."""
    from falconpy import InstallationTokens
    return InstallationTokens(client_id=key["key_id"], client_secret=key["secret_id"],
                              base_url=root(server))


def no_region(headers):
    low = {k.lower() for k in (headers or {})}
    assert "x-cs-region" not in low, headers


def env(result, status):
    """Check a falconpy result: status and the Falcon envelope; -> body."""
    assert result["status_code"] == status, result
    no_region(result.get("headers"))
    body = result["body"]
    check_envelope(body)
    if status >= 400:
        assert body["errors"], body
        assert isinstance(body["errors"][0].get("message"), str) and body["errors"][0]["message"], body
    return body


def check_envelope(body):
    assert isinstance(body, dict), body
    meta = body.get("meta")
    assert isinstance(meta, dict), body
    assert isinstance(meta.get("query_time"), float), body
    assert isinstance(meta.get("trace_id"), str) and meta["trace_id"], body
    assert isinstance(body.get("resources"), list), body
    assert isinstance(body.get("errors"), list), body


def raw_env(resp, status):
    """The same checks for a raw `requests` response; -> body."""
    assert resp.status_code == status, (resp.status_code, resp.text[:300])
    no_region(resp.headers)
    body = resp.json()
    check_envelope(body)
    return body


def login_raw(server, key):
    r = requests.post(root(server) + "/oauth2/token", timeout=15,
                      data={"client_id": key["key_id"], "client_secret": key["secret_id"]})
    assert r.status_code == 201, (r.status_code, r.text)
    return r.json()["access_token"]


def err_msg(body):
    return body["errors"][0]["message"]


def ts(dt):
    """RFC 3339 with milliseconds, UTC."""
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def parse_ts(s):
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def create(f, label=None, **kw):
    body = env(f.tokens_create(label=label or unique("lbl"), **kw), 201)
    assert len(body["resources"]) == 1, body
    return body["resources"][0]


def read(f, ids):
    return {t["id"]: t for t in env(f.tokens_read(ids=ids), 200)["resources"]}


def read_one(f, tid):
    toks = read(f, [tid])
    assert set(toks) == {tid}, toks
    return toks[tid]


def query(f, **kw):
    return env(f.tokens_query(**kw), 200)


def query_ids(f, flt, **kw):
    return query(f, filter=flt, limit=1000, **kw)["resources"]


def factory_create(server, factory_auth, memo=None):
    """Mint a DNS token through the Console dialect's factory endpoint (no auth_token)."""
    return requests.post(server.api_url + "canarytoken/factory/create", timeout=15,
                         data={"factory_auth": factory_auth, "memo": memo or unique("made"),
                               "kind": "dns"})


def factory_ok(server, factory_auth):
    r = factory_create(server, factory_auth)
    assert r.status_code == 200, (r.status_code, r.text[:300])
    body = r.json()
    assert body.get("result") == "success", body
    assert body["canarytoken"]["kind"] == "dns", body
    assert body["canarytoken"]["factory_auth"] == factory_auth, body
    return body["canarytoken"]


def factory_refused(server, factory_auth):
    r = factory_create(server, factory_auth)
    assert r.status_code == 401, (r.status_code, r.text[:300])
    body = r.json()
    assert body.get("result") == "error" and body.get("message") == BAD_FACTORY, body


# --- fixtures --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def admin_key(server):
    return server.admin_key


@pytest.fixture(scope="module")
def f(server, admin_key):
    client = falcon(server, admin_key)
    assert client.token_status == 201, (client.token_status, client.token_fail_reason)
    return client


# --- OAuth2 -------------------------------------------------------------------------------------------

def test_token_endpoint_answers_201(server, admin_key):
    r = requests.post(root(server) + "/oauth2/token", timeout=15,
                      data={"client_id": admin_key["key_id"], "client_secret": admin_key["secret_id"]})
    assert r.status_code == 201, (r.status_code, r.text)
    no_region(r.headers)
    body = r.json()
    assert isinstance(body["access_token"], str) and body["access_token"], body
    assert isinstance(body["expires_in"], int) and body["expires_in"] > 120, body
    assert body["token_type"].lower() == "bearer", body


def test_client_logs_in_and_stays_on_local_base(server, admin_key):
    client = falcon(server, admin_key)
    assert client.token_status == 201
    assert client.auth_object.token_value
    # No X-Cs-Region: the client did not redirect itself to a public cloud.
    assert client.base_url == root(server), client.base_url
    env(client.tokens_query(), 200)


@pytest.mark.parametrize("which", ["secret", "client_id"])
def test_wrong_credentials_give_401(server, admin_key, which):
    key = dict(admin_key)
    if which == "secret":
        key["secret_id"] = key["secret_id"][:-4] + "xxxx"
    else:
        key["key_id"] = "00000000-0000-0000-0000-000000000000"
    r = requests.post(root(server) + "/oauth2/token", timeout=15,
                      data={"client_id": key["key_id"], "client_secret": key["secret_id"]})
    assert r.status_code == 401, (r.status_code, r.text)
    assert "access_token" not in r.text
    client = falcon(server, key)
    assert client.token_status == 401, client.token_status
    env(client.tokens_query(), 401)
    env(client.tokens_create(label=unique("nope")), 401)


def test_no_bearer_is_401(server):
    raw_env(requests.get(root(server) + TOKENS_QUERY, timeout=15), 401)
    raw_env(requests.get(root(server) + TOKENS_QUERY, timeout=15,
                         headers={"Authorization": "Bearer not-a-real-token"}), 401)


def test_logout_revokes_the_bearer(server):
    key = server.create_key("admin")  # its own key: revoking must not disturb the module's client
    client = falcon(server, key)
    old = client.auth_object.token_value
    assert old
    hdr = {"Authorization": f"Bearer {old}"}
    raw_env(requests.get(root(server) + TOKENS_QUERY, headers=hdr, timeout=15), 200)
    out = client.logout()
    assert out["status_code"] == 200, out
    raw_env(requests.get(root(server) + TOKENS_QUERY, headers=hdr, timeout=15), 401)
    # The key itself still works: a new login gets a working bearer.
    time.sleep(1.1)
    again = falcon(server, key)
    assert again.token_status == 201
    env(again.tokens_query(), 200)


def test_raw_revoke_endpoint(server):
    key = server.create_key("admin")
    tok = login_raw(server, key)
    rv = requests.post(root(server) + "/oauth2/revoke", data={"token": tok}, timeout=15,
                       auth=(key["key_id"], key["secret_id"]))
    raw_env(rv, 200)
    raw_env(requests.get(root(server) + TOKENS_QUERY, timeout=15,
                         headers={"Authorization": f"Bearer {tok}"}), 401)


def test_each_login_gets_its_own_bearer(server):
    """Two client sessions of one key are independent: logging one out leaves the other alone."""
    key = server.create_key("admin")
    one, two = falcon(server, key), falcon(server, key)
    assert one.token_status == two.token_status == 201
    assert one.auth_object.token_value != two.auth_object.token_value, \
        "two logins of the same key in the same second got the same bearer"
    assert one.logout()["status_code"] == 200
    env(two.tokens_query(), 200)


# --- create / read / update / delete ------------------------------------------------------------------

def test_create_with_expiry(f):
    label = unique("created")
    t = create(f, label, expires_timestamp=FUTURE)
    assert TOKEN_FIELDS | {"value"} <= set(t), t
    assert HEX32_RE.match(t["id"]), t
    assert HEX64_RE.match(t["value"]), t
    assert t["label"] == label
    assert t["status"] == "valid"
    assert isinstance(t["type"], str) and t["type"], t
    assert RFC3339_RE.match(t["created_timestamp"]), t
    assert abs(parse_ts(t["created_timestamp"]) - datetime.now(timezone.utc)) < timedelta(minutes=5), t
    assert RFC3339_RE.match(t["expires_timestamp"]), t
    assert parse_ts(t["expires_timestamp"]) == datetime(2030, 1, 1, tzinfo=timezone.utc), t
    assert t["last_used_timestamp"] is None, t
    assert t["revoked_timestamp"] is None, t


def test_create_without_expiry(f):
    a, b = create(f), create(f)
    assert a["expires_timestamp"] is None, a
    assert a["status"] == "valid"
    assert a["id"] != b["id"] and a["value"] != b["value"]


@pytest.mark.parametrize("how", ["kwarg", "body"])
def test_create_too_long_label_is_400(f, how):
    label = "x" * 10_001  # labels go up to 10,000 characters, as Console memos do
    before = query(f, limit=1)["meta"]["pagination"]["total"]
    r = f.tokens_create(label=label) if how == "kwarg" else f.tokens_create(body={"label": label})
    body = env(r, 400)
    assert "label" in err_msg(body).lower(), body
    assert query(f, limit=1)["meta"]["pagination"]["total"] == before


@pytest.mark.parametrize("expiry", ["2001-01-01T00:00:00Z", "yesterday", "2030-13-45T99:00:00Z", "12345"])
def test_create_bad_expiry_is_400(f, expiry):
    label = unique("badexp")
    env(f.tokens_create(label=label, expires_timestamp=expiry), 400)
    assert query_ids(f, f"label:'{label}'") == []


def test_read(server, f):
    a, b = create(f), create(f, expires_timestamp=FUTURE)
    body = env(f.tokens_read(ids=[a["id"], UNKNOWN_ID, b["id"]]), 200)
    toks = {t["id"]: t for t in body["resources"]}
    assert set(toks) == {a["id"], b["id"]}, toks
    assert [(e["code"], e["id"]) for e in body["errors"]] == [(404, UNKNOWN_ID)], body
    for src in (a, b):
        t = toks[src["id"]]
        assert TOKEN_FIELDS | {"value"} <= set(t), t
        for k in TOKEN_FIELDS | {"value"}:
            assert t[k] == src[k], (k, t, src)
    # Repeated `ids` query keys, as the spec describes them, sent by hand.
    r = requests.get(root(server) + TOKENS_ENTITIES, params=[("ids", a["id"]), ("ids", b["id"])],
                     headers=f.headers, timeout=15)
    assert {t["id"] for t in raw_env(r, 200)["resources"]} == {a["id"], b["id"]}
    assert env(f.tokens_read(ids=UNKNOWN_ID), 404)["resources"] == []


def test_update_revoke_and_restore(f):
    t = create(f, expires_timestamp=FUTURE)
    body = env(f.tokens_update(ids=t["id"], revoked=True), 200)
    [u] = body["resources"]
    assert u["id"] == t["id"] and u["status"] == "revoked", u
    assert u["revoked_timestamp"] and RFC3339_RE.match(u["revoked_timestamp"]), u
    assert u["value"] == t["value"], u
    assert read_one(f, t["id"])["status"] == "revoked"
    body = env(f.tokens_update(ids=t["id"], revoked=False), 200)
    assert body["resources"][0]["status"] == "valid", body
    got = read_one(f, t["id"])
    assert got["status"] == "valid" and got["label"] == t["label"], got
    assert got["expires_timestamp"] == t["expires_timestamp"], got


def test_update_label_and_expiry(f):
    t = create(f, expires_timestamp=FUTURE)
    new_label = unique("renamed")
    body = env(f.tokens_update(ids=t["id"], label=new_label), 200)
    assert body["resources"][0]["label"] == new_label, body
    got = read_one(f, t["id"])
    assert got["label"] == new_label and got["status"] == "valid", got
    assert got["expires_timestamp"] == t["expires_timestamp"], got

    body = env(f.tokens_update(ids=t["id"], expires_timestamp="2031-06-01T12:00:00Z"), 200)
    got = read_one(f, t["id"])
    assert parse_ts(got["expires_timestamp"]) == datetime(2031, 6, 1, 12, tzinfo=timezone.utc), got
    assert got["label"] == new_label, got

    body = env(f.tokens_update(ids=t["id"], body={"expires_timestamp": None}), 200)
    assert body["resources"][0]["expires_timestamp"] is None, body
    got = read_one(f, t["id"])
    assert got["expires_timestamp"] is None and got["label"] == new_label, got
    assert got["status"] == "valid", got


def test_update_bad_values_are_400(f):
    t = create(f)
    env(f.tokens_update(ids=t["id"], expires_timestamp="not a time"), 400)
    env(f.tokens_update(ids=t["id"], expires_timestamp="2030-13-45T99:00:00Z"), 400)
    got = read_one(f, t["id"])
    assert got["label"] == t["label"] and got["expires_timestamp"] is None, got


def test_update_several_ids(f):
    a, b, c = create(f), create(f), create(f)
    body = env(f.tokens_update(ids=f"{a['id']},{b['id']}", revoked=True), 200)
    assert {r["id"] for r in body["resources"]} == {a["id"], b["id"]}, body
    assert all(r["status"] == "revoked" for r in body["resources"]), body
    toks = read(f, [a["id"], b["id"], c["id"]])
    assert [toks[x["id"]]["status"] for x in (a, b, c)] == ["revoked", "revoked", "valid"], toks
    body = env(f.tokens_update(ids=[a["id"], b["id"]], revoked=False), 200)
    assert {r["id"] for r in body["resources"]} == {a["id"], b["id"]}, body
    toks = read(f, [a["id"], b["id"]])
    assert all(t["status"] == "valid" for t in toks.values()), toks


def test_update_unknown_id_is_404(f):
    env(f.tokens_update(ids=UNKNOWN_ID, revoked=True), 404)
    env(f.tokens_update(ids=UNKNOWN_ID, label=unique("x")), 404)


def test_delete(f):
    a, b, keep = create(f), create(f), create(f)
    env(f.tokens_delete(ids=[a["id"], b["id"]]), 200)
    assert read(f, [a["id"], b["id"], keep["id"]]).keys() == {keep["id"]}
    assert query_ids(f, f"id:'{a['id']}',id:'{b['id']}'") == []
    env(f.tokens_delete(ids=a["id"]), 404)
    env(f.tokens_delete(ids=UNKNOWN_ID), 404)
    env(f.tokens_update(ids=a["id"], revoked=True), 404)
    assert read_one(f, keep["id"])["status"] == "valid"


# --- FQL, sorting, paging (a dedicated server with a fully known token set) --------------------------

# name -> (label, final status, has an expiry); created in this order.
QSET = [
    ("t0", "apple-one", "valid", False),
    ("t1", "apple-two", "revoked", True),
    ("t2", "banana-PART", "expired", True),
    ("t3", "cherry-part-3", "revoked", False),
    ("t4", "pre-date", "valid", True),
    ("t5", "prelude", "valid", False),
]


@pytest.fixture(scope="module")
def qset():
    srv = Server().start()
    try:
        fc = falcon(srv, srv.admin_key)
        assert env(fc.tokens_query(), 200)["resources"] == [], "fresh server must have no tokens"
        ids, values, created = {}, {}, {}
        expired_at = None
        for name, label, status, has_exp in QSET:
            kw = {"expires_timestamp": "2031-01-01T00:00:00Z"} if has_exp else {}
            t = create(fc, label, **kw)
            ids[name], values[name], created[name] = t["id"], t["value"], t["created_timestamp"]
            if status == "expired":
                # Creating with a past (or nearly past) expiry is refused, so shorten it now.
                expired_at = datetime.now(timezone.utc) + timedelta(seconds=2)
                env(fc.tokens_update(ids=t["id"], expires_timestamp=ts(expired_at)), 200)
            time.sleep(0.02)  # distinct created_timestamps (millisecond precision)
        for name, _, status, _ in QSET:
            if status == "revoked":
                env(fc.tokens_update(ids=ids[name], revoked=True), 200)
        wait = (expired_at + timedelta(seconds=1) - datetime.now(timezone.utc)).total_seconds()
        if wait > 0:
            time.sleep(wait)
        yield {"server": srv, "f": fc, "ids": ids, "values": values, "created": created}
    finally:
        srv.close()


def expect(qset, pred):
    return {qset["ids"][n] for n, label, status, has_exp in QSET if pred(label, status, has_exp)}


def test_qset_statuses(qset):
    toks = read(qset["f"], list(qset["ids"].values()))
    for name, label, status, has_exp in QSET:
        t = toks[qset["ids"][name]]
        assert (t["label"], t["status"], t["expires_timestamp"] is not None) == (label, status, has_exp), t


def _between(a, b):
    ta, tb = parse_ts(a), parse_ts(b)
    assert tb - ta >= timedelta(milliseconds=2), (a, b)
    return ts(ta + (tb - ta) / 2)


FILTERS = [
    ("label:'apple-one'", lambda l, s, e: l == "apple-one"),
    ("label:~'PART'", lambda l, s, e: "part" in l.lower()),
    ("label:~'part'", lambda l, s, e: "part" in l.lower()),
    ("label:!~'PART'", lambda l, s, e: "part" not in l.lower()),
    ("label:'pre*'", lambda l, s, e: l.startswith("pre")),
    ("label:'*-PART'", lambda l, s, e: l.endswith("-PART")),
    ("label:!'apple-one'", lambda l, s, e: l != "apple-one"),
    ("status:'revoked'", lambda l, s, e: s == "revoked"),
    ("status:'expired'", lambda l, s, e: s == "expired"),
    ("status:['valid','expired']", lambda l, s, e: s in ("valid", "expired")),
    ("status:!'valid'", lambda l, s, e: s != "valid"),
    ("expires_timestamp:null", lambda l, s, e: not e),
    ("expires_timestamp:!null", lambda l, s, e: e),
    ("created_timestamp:>'now-1h'", lambda l, s, e: True),
    ("created_timestamp:<'now-1h'", lambda l, s, e: False),
    ("label:'apple-one'+status:'valid'", lambda l, s, e: l == "apple-one"),
    ("label:'apple-two'+status:'valid'", lambda l, s, e: False),
    ("label:'apple*'+status:'valid'", lambda l, s, e: l == "apple-one"),
    ("(label:'apple-one',label:'apple-two')+status:'revoked'", lambda l, s, e: l == "apple-two"),
    # `+` binds tighter than `,`: apple-one OR (apple-two AND revoked)
    ("label:'apple-one',label:'apple-two'+status:'revoked'",
     lambda l, s, e: l in ("apple-one", "apple-two")),
    ("label:'apple-one',label:'banana-PART'+status:'revoked'", lambda l, s, e: l == "apple-one"),
]


@pytest.mark.parametrize("flt,pred", FILTERS, ids=[x[0] for x in FILTERS])
def test_fql_filter(qset, flt, pred):
    got = query_ids(qset["f"], flt)
    assert len(got) == len(set(got)), got
    assert set(got) == expect(qset, pred), (flt, got, qset["ids"])


def test_fql_created_after_a_moment(qset):
    c = qset["created"]
    moment = _between(c["t2"], c["t3"])
    got = query_ids(qset["f"], f"created_timestamp:>='{moment}'")
    assert set(got) == {qset["ids"][n] for n in ("t3", "t4", "t5")}, (moment, got)
    got = query_ids(qset["f"], f"created_timestamp:<'{moment}'")
    assert set(got) == {qset["ids"][n] for n in ("t0", "t1", "t2")}, (moment, got)
    # The exact creation time of t3 is included by >=.
    got = query_ids(qset["f"], f"created_timestamp:>='{c['t3']}'")
    assert set(got) == {qset["ids"][n] for n in ("t3", "t4", "t5")}, got


def _order(qset, names):
    return [qset["ids"][n] for n in names]


SORTS = [
    ("label.asc", ["t0", "t1", "t2", "t3", "t4", "t5"]),
    ("label.desc", ["t5", "t4", "t3", "t2", "t1", "t0"]),
    ("label|asc", ["t0", "t1", "t2", "t3", "t4", "t5"]),
    ("created_timestamp|desc", ["t5", "t4", "t3", "t2", "t1", "t0"]),
    ("created_timestamp.asc", ["t0", "t1", "t2", "t3", "t4", "t5"]),
]


@pytest.mark.parametrize("sort,names", SORTS, ids=[s for s, _ in SORTS])
def test_sort(qset, sort, names):
    body = query(qset["f"], sort=sort)
    assert body["resources"] == _order(qset, names), (sort, body["resources"], qset["ids"])
    assert body["meta"]["pagination"]["total"] == len(QSET), body


@pytest.mark.parametrize("sort,names", [SORTS[0], SORTS[3]], ids=["label.asc", "created_timestamp|desc"])
def test_paging(qset, sort, names):
    walked = []
    for offset in (0, 2, 4):
        body = query(qset["f"], sort=sort, offset=offset, limit=2)
        assert body["meta"]["pagination"] == {"offset": offset, "limit": 2, "total": len(QSET)}, body
        assert len(body["resources"]) == 2, body
        walked += body["resources"]
    assert walked == _order(qset, names)
    body = query(qset["f"], sort=sort, offset=6, limit=2)
    assert body["resources"] == [], body
    assert body["meta"]["pagination"]["total"] == len(QSET), body
    body = query(qset["f"], sort=sort, offset=1, limit=4, filter="status:!'revoked'")
    valid_order = [i for i in _order(qset, names)
                   if i not in {qset["ids"]["t1"], qset["ids"]["t3"]}]
    assert body["resources"] == valid_order[1:5], body
    assert body["meta"]["pagination"] == {"offset": 1, "limit": 4, "total": 4}, body


def test_expired_installation_token_is_no_factory(qset):
    srv = qset["server"]
    factory_refused(srv, qset["values"]["t2"])     # expired
    factory_refused(srv, qset["values"]["t1"])     # revoked
    factory_ok(srv, qset["values"]["t0"])          # valid


# --- malformed queries -----------------------------------------------------------------------------

@pytest.mark.parametrize("flt", ["label:'open", "label", "(label:'x'", "nosuchfield:'x'",
                                 "created_timestamp:'yesterday'", "label:'x'+", "label:'x')"])
def test_malformed_filter_is_400_with_position(f, flt):
    body = env(f.tokens_query(filter=flt), 400)
    assert "position" in err_msg(body), (flt, body)


@pytest.mark.parametrize("limit", [0, 5000, "x", -1])
def test_bad_limit_is_400(f, limit):
    env(f.tokens_query(limit=limit), 400)


def test_malformed_audit_filter_is_400(f):
    body = env(f.audit_events_query(filter="action:'token_create"), 400)
    assert "position" in err_msg(body), body


# --- audit log --------------------------------------------------------------------------------------

def test_audit_events_of_one_token(f, admin_key):
    t = create(f, expires_timestamp=FUTURE)
    steps = [
        lambda: f.tokens_update(ids=t["id"], label=unique("audit")),
        lambda: f.tokens_update(ids=t["id"], revoked=True),
        lambda: f.tokens_update(ids=t["id"], revoked=False),
        lambda: f.tokens_update(ids=t["id"], body={"expires_timestamp": None}),
        lambda: f.tokens_delete(ids=t["id"]),
    ]
    for step in steps:
        time.sleep(0.005)  # distinct millisecond timestamps
        env(step(), 200)
    want = ["token_create", "token_update", "token_revoke", "token_restore", "token_update",
            "token_delete"]

    body = env(f.audit_events_query(filter=f"token_id:'{t['id']}'", sort="timestamp.asc"), 200)
    ids = body["resources"]
    assert len(ids) == len(want), body
    assert all(isinstance(i, str) and i for i in ids), ids
    events = {e["id"]: e for e in env(f.audit_events_read(ids=ids), 200)["resources"]}
    assert set(events) == set(ids), events
    ordered = [events[i] for i in ids]
    assert [e["action"] for e in ordered] == want, ordered
    for e in ordered:
        assert e["token_id"] == t["id"], e
        assert e["actor"] == admin_key["key_id"], e
        assert isinstance(e["description"], str) and e["description"], e
        assert RFC3339_RE.match(e["timestamp"]), e
    stamps = [parse_ts(e["timestamp"]) for e in ordered]
    assert stamps == sorted(stamps), stamps

    # The same events, newest first.
    desc = env(f.audit_events_query(filter=f"token_id:'{t['id']}'", sort="timestamp.desc"), 200)
    assert desc["resources"] == ids[::-1], desc


def test_audit_query_by_action(f):
    t = create(f)
    body = env(f.audit_events_query(filter="action:'token_create'", limit=1000), 200)
    ids = body["resources"]
    assert ids, body
    events = env(f.audit_events_read(ids=ids), 200)["resources"]
    assert all(e["action"] == "token_create" for e in events), events
    assert any(e["token_id"] == t["id"] for e in events), events
    # Combined with the token id: exactly one event.
    one = env(f.audit_events_query(filter=f"action:'token_create'+token_id:'{t['id']}'"), 200)
    assert len(one["resources"]) == 1, one
    # Unknown audit ids: 404, with an error naming the id.
    body = env(f.audit_events_read(ids=["no-such-event"]), 404)
    assert body["resources"] == [] and body["errors"][0]["id"] == "no-such-event", body


# --- customer settings -------------------------------------------------------------------------------

def test_customer_settings_and_max_active_tokens(fresh_server):
    fc = falcon(fresh_server, fresh_server.admin_key)
    body = env(fc.customer_settings_read(), 200)
    [s] = body["resources"]
    assert {"max_active_tokens", "tokens_required"} <= set(s), s
    assert isinstance(s["max_active_tokens"], int) and isinstance(s["tokens_required"], bool), s
    try:
        toks = [create(fc) for _ in range(3)]
        count = query(fc, filter="status:'valid'")["meta"]["pagination"]["total"]
        assert count >= 3

        body = env(fc.customer_settings_update(max_active_tokens=count, tokens_required=True), 200)
        assert body["resources"][0]["max_active_tokens"] == count, body
        assert body["resources"][0]["tokens_required"] is True, body
        got = env(fc.customer_settings_read(), 200)["resources"][0]
        assert got["max_active_tokens"] == count and got["tokens_required"] is True, got

        label = unique("over")
        body = env(fc.tokens_create(label=label), 400)
        assert "max_active_tokens" in err_msg(body), body
        assert query_ids(fc, f"label:'{label}'") == []

        env(fc.tokens_update(ids=toks[0]["id"], revoked=True), 200)
        create(fc)
        body = env(fc.tokens_create(label=unique("over")), 400)
        assert "max_active_tokens" in err_msg(body), body

        body = env(fc.customer_settings_update(max_active_tokens=-1, tokens_required=True), 400)
        assert env(fc.customer_settings_read(), 200)["resources"][0]["max_active_tokens"] == count

        body = env(fc.customer_settings_update(max_active_tokens=0, tokens_required=False), 200)
        assert body["resources"][0]["max_active_tokens"] == 0, body
        assert body["resources"][0]["tokens_required"] is False, body
        for _ in range(2):
            create(fc)  # 0 = no limit
    finally:
        fc.customer_settings_update(max_active_tokens=0, tokens_required=False)
    got = env(fc.customer_settings_read(), 200)["resources"][0]
    assert got["max_active_tokens"] == 0, got


# --- permissions --------------------------------------------------------------------------------------

@pytest.mark.parametrize("role", ["read-only", "analyst"])
def test_non_admin_roles_cannot_manage_tokens(server, keys, f, role):
    existing = create(f)
    fc = falcon(server, keys[role])
    assert fc.token_status == 201, (role, fc.token_status, fc.token_fail_reason)
    env(fc.tokens_create(label=unique("denied")), 403)
    env(fc.tokens_query(), 403)
    env(fc.tokens_update(ids=existing["id"], revoked=True), 403)
    env(fc.tokens_delete(ids=existing["id"]), 403)
    assert read_one(f, existing["id"])["status"] == "valid"
    body = env(fc.customer_settings_read(), 200)
    assert {"max_active_tokens", "tokens_required"} <= set(body["resources"][0]), body


def test_deploy_key_cannot_manage_tokens(server):
    flock = server.api().create_flock(unique("falcon-deploy"))
    key = server.create_key("deploy", flock=flock)
    fc = falcon(server, key)
    assert fc.token_status == 201, (fc.token_status, fc.token_fail_reason)
    env(fc.tokens_create(label=unique("denied")), 403)
    env(fc.tokens_query(), 403)


# --- cross-dialect: installation tokens are Console factory tokens ------------------------------------

def test_installation_token_is_a_factory_token(server, f):
    t = create(f)
    made = factory_ok(server, t["value"])
    assert made["canarytoken"], made
    assert read_one(f, t["id"])["last_used_timestamp"] is not None

    env(f.tokens_update(ids=t["id"], revoked=True), 200)
    factory_refused(server, t["value"])

    env(f.tokens_update(ids=t["id"], revoked=False), 200)
    factory_ok(server, t["value"])

    env(f.tokens_delete(ids=t["id"]), 200)
    factory_refused(server, t["value"])

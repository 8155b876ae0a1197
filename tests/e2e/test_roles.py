"""Roles: keys made with `trapline key create` while the server runs."""

import pytest

from conftest import TOKEN_RE, run_key_create, unique


def assert_forbidden(resp):
    assert resp.status_code == 403, (resp.status_code, resp.text[:300])
    body = resp.json()
    assert body["result"] == "error"
    assert isinstance(body["message"], str) and body["message"]


def test_key_create_output_shape(server, keys):
    seen = set()
    for role, key in keys.items():
        assert set(key) >= {"key_id", "secret_id", "auth_token", "role", "flock_id"}
        assert key["role"] == role
        assert key["flock_id"] is None
        assert key["auth_token"] == key["secret_id"]
        assert key["key_id"] and key["secret_id"]
        assert key["key_id"] not in seen
        seen.add(key["key_id"])
    assert len({k["auth_token"] for k in keys.values()} | {server.admin_token}) == 4


def test_key_create_with_flock(server):
    fid = server.api().create_flock(unique("scoped"))
    key = server.create_key("analyst", flock=fid)
    assert key["flock_id"] == fid
    assert key["role"] == "analyst"


def test_key_create_rejects_unknown_role(server):
    r = run_key_create(server.data_dir, "superuser", env=server.env)
    assert r.returncode != 0
    assert not r.stdout.strip().startswith('{"key_id"')


def test_new_keys_work_immediately(server, keys):
    for key in keys.values():
        assert server.api(key["auth_token"]).ok_get("ping")


def test_read_only_can_read(server, keys):
    admin = server.api()
    tok = admin.create_token("http", memo="visible to read-only")
    fid = admin.create_flock(unique("ro-visible"))
    ro = server.api(keys["read-only"]["auth_token"])
    assert ro.ok_get("canarytoken/fetch", canarytoken=tok["canarytoken"])["token"]["memo"] == "visible to read-only"
    assert tok["canarytoken"] in {t["canarytoken"] for t in ro.ok_get("canarytokens/fetch")["tokens"]}
    assert "canarytokens" in ro.ok_get("canarytokens/paginate", limit=10)
    assert ro.ok_get("flocks/list")["flocks"][fid]
    assert ro.ok_get("flock/summary", flock_id=fid)["flock_id"] == fid
    assert isinstance(ro.ok_get("incidents/all")["incidents"], list)
    assert ro.ok_get("canarytokens/list")["canarytokens"]["http"] == "Web Bug"


def test_read_only_cannot_write(server, keys):
    admin = server.api()
    tok = admin.create_token("http", memo="untouchable")
    tid = tok["canarytoken"]
    fid = admin.create_flock(unique("ro-flock"))
    ro = server.api(keys["read-only"]["auth_token"])

    assert_forbidden(ro.post("canarytoken/create", kind="http", memo="nope"))
    assert_forbidden(ro.post("canarytoken/update", canarytoken=tid, memo="changed"))
    assert_forbidden(ro.post("canarytoken/disable", canarytoken=tid))
    assert_forbidden(ro.post("canarytoken/enable", canarytoken=tid))
    assert_forbidden(ro.post("canarytoken/delete", canarytoken=tid))
    assert_forbidden(ro.delete("canarytoken/delete", canarytoken=tid))
    assert_forbidden(ro.post("flock/create", name=unique("ro")))
    assert_forbidden(ro.post("flock/rename", flock_id=fid, name="renamed"))
    assert_forbidden(ro.post("flock/delete", flock_id=fid))

    # nothing changed
    after = admin.fetch_token(tid)
    assert after["memo"] == "untouchable"
    assert after["enabled"] is True
    assert admin.ok_get("flocks/list")["flocks"][fid].startswith("ro-flock")


def test_read_only_cannot_disable_a_disabled_token_either(server, keys):
    admin = server.api()
    tid = admin.create_token("dns")["canarytoken"]
    admin.ok_post("canarytoken/disable", canarytoken=tid)
    ro = server.api(keys["read-only"]["auth_token"])
    assert_forbidden(ro.post("canarytoken/enable", canarytoken=tid))
    assert admin.fetch_token(tid)["enabled"] is False


def test_analyst_can_manage_tokens(server, keys):
    an = server.api(keys["analyst"]["auth_token"])
    tok = an.create_token("dns", memo="analyst made")
    assert TOKEN_RE.match(tok["canarytoken"])
    assert an.ok_post("canarytoken/update", canarytoken=tok["canarytoken"], memo="analyst edit")["token"]["memo"] \
        == "analyst edit"
    an.ok_post("canarytoken/disable", canarytoken=tok["canarytoken"])
    assert an.fetch_token(tok["canarytoken"])["enabled"] is False
    an.ok_post("canarytoken/enable", canarytoken=tok["canarytoken"])
    an.ok_post("canarytoken/delete", canarytoken=tok["canarytoken"])
    assert an.get("canarytoken/fetch", canarytoken=tok["canarytoken"]).status_code == 404


def test_analyst_can_create_token_in_existing_flock(server, keys):
    fid = server.api().create_flock(unique("for-analyst"))
    an = server.api(keys["analyst"]["auth_token"])
    tok = an.create_token("http", flock_id=fid)
    assert tok["flock_id"] == fid


def test_analyst_cannot_manage_flocks(server, keys):
    admin = server.api()
    fid = admin.create_flock(unique("analyst-target"))
    an = server.api(keys["analyst"]["auth_token"])
    before = set(admin.ok_get("flocks/list")["flocks"])
    assert_forbidden(an.post("flock/create", name=unique("analyst")))
    assert_forbidden(an.post("flock/rename", flock_id=fid, name="hijacked"))
    assert_forbidden(an.post("flock/delete", flock_id=fid))
    flocks = admin.ok_get("flocks/list")["flocks"]
    assert set(flocks) == before
    assert flocks[fid].startswith("analyst-target")
    # but may read them
    assert an.ok_get("flocks/list")["flocks"][fid] == flocks[fid]


def test_admin_key_from_cli_can_manage_flocks(server, keys):
    adm = server.api(keys["admin"]["auth_token"])
    fid = adm.create_flock(unique("cli-admin"))
    adm.ok_post("flock/rename", flock_id=fid, name="cli-admin-renamed")
    assert adm.ok_get("flocks/list")["flocks"][fid] == "cli-admin-renamed"
    adm.ok_post("flock/delete", flock_id=fid)
    assert fid not in adm.ok_get("flocks/list")["flocks"]

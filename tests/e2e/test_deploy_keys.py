"""Deploy keys: `trapline key create --role deploy --flock FLOCK` makes a key that can only create
tokens in its flock and download their files. It may not read, change or delete anything, nor
reach another flock.
"""

import io
import zipfile

import pytest
import requests

from conftest import TOKEN_RE, Api, random_token_id, run_key_create, unique
from kindtools import assert_error, attachment_re

NO_FLOCK = "Flock does not exist."
NO_TOKEN = "Could not find the Canarytoken"


@pytest.fixture(scope="module")
def flock(server):
    return server.api().create_flock(unique("deploy-target"))


@pytest.fixture(scope="module")
def deploy_key(server, flock):
    return server.create_key("deploy", flock=flock)


@pytest.fixture
def dep(server, deploy_key):
    return server.api(deploy_key["auth_token"])


def test_key_create_output(server, flock, deploy_key):
    assert deploy_key["role"] == "deploy"
    assert deploy_key["flock_id"] == flock
    assert deploy_key["key_id"] and deploy_key["secret_id"]
    assert deploy_key["auth_token"] == deploy_key["secret_id"]
    assert deploy_key["auth_token"] != server.admin_token
    # the raw CLI output is one JSON line
    r = run_key_create(server.data_dir, "deploy", flock=flock, env=server.env)
    assert r.returncode == 0, (r.stdout, r.stderr)
    lines = [l for l in r.stdout.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("{"), r.stdout
    assert '"role":"deploy"' in lines[0].replace(" ", "")


def test_deploy_key_creates_tokens_in_its_flock(server, dep, flock):
    admin = server.api()
    tok = dep.create_token("dns", memo="deployed")
    assert TOKEN_RE.match(tok["canarytoken"])
    assert tok["flock_id"] == flock
    assert tok["memo"] == "deployed"
    explicit = dep.create_token("http", memo="deployed explicitly", flock_id=flock)
    assert explicit["flock_id"] == flock
    for t in (tok, explicit):
        fetched = admin.fetch_token(t["canarytoken"])
        assert fetched["flock_id"] == flock
        assert fetched["memo"] == t["memo"]


def test_deploy_key_downloads_its_files(server, dep, flock):
    tok = dep.create_token("windows-dir", memo=unique("deployed folder"))
    assert tok["flock_id"] == flock
    r = dep.get("canarytoken/download", canarytoken=tok["canarytoken"])
    assert r.status_code == 200, (r.status_code, r.text[:300])
    assert attachment_re("zip").match(r.headers.get("Content-Disposition", "")), r.headers
    zf = zipfile.ZipFile(io.BytesIO(r.content))
    assert zf.testzip() is None
    assert any(n.endswith("desktop.ini") for n in zf.namelist()), zf.namelist()


def test_deploy_key_cannot_create_in_another_flock(server, dep, flock):
    admin = server.api()
    other = admin.create_flock(unique("not-deploys"))
    before = len(admin.ok_get("canarytokens/fetch")["tokens"])
    for fid in ("flock:default", other, "flock:" + "0" * 32):
        assert_error(dep.post("canarytoken/create", kind="dns", memo="elsewhere", flock_id=fid), 404, NO_FLOCK)
    assert len(admin.ok_get("canarytokens/fetch")["tokens"]) == before


def test_deploy_key_cannot_download_other_flocks(server, dep):
    admin = server.api()
    other = admin.create_flock(unique("other-files"))
    foreign = [admin.create_token("windows-dir", memo=unique("default flock"))["canarytoken"],
               admin.create_token("windows-dir", memo=unique("other flock"), flock_id=other)["canarytoken"],
               random_token_id()]
    for tid in foreign:
        r = dep.get("canarytoken/download", canarytoken=tid)
        assert_error(r, 404, NO_TOKEN)
        assert "Content-Disposition" not in r.headers


def test_deploy_key_cannot_read_or_change_anything(server, dep, flock):
    admin = server.api()
    own = dep.create_token("dns", memo="own token")["canarytoken"]
    theirs = admin.create_token("dns", memo="admin token", flock_id=flock)["canarytoken"]
    flocks_before = admin.ok_get("flocks/list")["flocks"]
    factories_before = len(admin.ok_get("canarytoken/list_factories")["factories"])
    for tid in (own, theirs):
        calls = [
            ("GET", "canarytoken/fetch", {"canarytoken": tid}),
            ("POST", "canarytoken/update", {"canarytoken": tid, "memo": "changed"}),
            ("POST", "canarytoken/disable", {"canarytoken": tid}),
            ("POST", "canarytoken/delete", {"canarytoken": tid}),
            ("DELETE", "canarytoken/delete", {"canarytoken": tid}),
        ]
        calls += [
            ("GET", "canarytokens/fetch", {}),
            ("GET", "canarytokens/paginate", {"limit": "10"}),
            ("GET", "incidents/all", {}),
            ("GET", "flocks/list", {}),
            ("POST", "flock/create", {"name": unique("deploy-made")}),
            ("POST", "canarytoken/create_factory", {"memo": "deploy factory"}),
            ("POST", "canarytoken/create_factory", {"memo": "deploy factory", "flock_id": flock}),
        ]
        for method, ep, params in calls:
            if method == "GET":
                r = dep.get(ep, **params)
            elif method == "POST":
                r = dep.post(ep, **params)
            else:
                r = dep.delete(ep, **params)
            try:
                assert_error(r, 403)
            except AssertionError as e:
                raise AssertionError(f"{method} {ep} with a deploy key: {e}") from None
    # nothing changed
    for tid, memo in ((own, "own token"), (theirs, "admin token")):
        t = admin.fetch_token(tid)
        assert t["memo"] == memo and t["enabled"] is True
    assert admin.ok_get("flocks/list")["flocks"] == flocks_before
    assert len(admin.ok_get("canarytoken/list_factories")["factories"]) == factories_before


def test_deploy_key_auth_by_header_and_form(server, deploy_key, flock):
    url = server.api_url + "canarytoken/create"
    r = requests.post(url, headers={"X-Canary-Auth-Token": deploy_key["auth_token"]},
                      data={"kind": "dns", "memo": "via header"}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["canarytoken"]["flock_id"] == flock
    r = requests.post(url, data={"auth_token": deploy_key["auth_token"], "kind": "dns", "memo": "via form"},
                      timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["canarytoken"]["flock_id"] == flock
    r = requests.get(server.api_url + "canarytokens/fetch",
                     headers={"X-Canary-Auth-Token": deploy_key["auth_token"]}, timeout=10)
    assert_error(r, 403)


def test_deploy_key_bad_create_input(server, dep):
    assert_error(dep.post("canarytoken/create", kind="dns", memo=""), 400, "Empty memo")
    assert_error(dep.post("canarytoken/create", kind="no-such-kind", memo="m"), 400, "Supplied kind is not valid.")


def test_two_deploy_keys_are_kept_apart(server, dep, flock):
    admin = server.api()
    other = admin.create_flock(unique("second-deploy"))
    dep2 = server.api(server.create_key("deploy", flock=other)["auth_token"])
    t2 = dep2.create_token("windows-dir", memo="second")
    assert t2["flock_id"] == other
    t1 = dep.create_token("windows-dir", memo="first")
    assert_error(dep.get("canarytoken/download", canarytoken=t2["canarytoken"]), 404, NO_TOKEN)
    assert_error(dep2.get("canarytoken/download", canarytoken=t1["canarytoken"]), 404, NO_TOKEN)
    assert_error(dep2.post("canarytoken/create", kind="dns", memo="x", flock_id=flock), 404, NO_FLOCK)


# --- audit F5: credentials that may only create cannot route or silence alerts --------------------

ALERT_SETTINGS = [
    {"alert_email": "victim1@example.com;victim2@example.com"},
    {"alert_webhook_url": "https://attacker.example/x"},
    {"ignore_sources": "0.0.0.0/0"},
    {"alert_cooldown": "-1"},
    {"alert_max_per_hour": "1"},
]


def _count_tokens(server):
    return len(server.api().ok_get("canarytokens/fetch")["tokens"])


@pytest.mark.parametrize("setting", ALERT_SETTINGS, ids=lambda s: next(iter(s)))
def test_deploy_key_may_not_set_alert_settings(server, dep, flock, setting):
    before = _count_tokens(server)
    r = dep.post("canarytoken/create", kind="dns", memo=unique("routed"), flock_id=flock, **setting)
    assert_error(r, 403, "Permission denied")
    assert _count_tokens(server) == before, "nothing was created"
    # blank values change nothing on create, so they are no reason to refuse
    blank = {k: "" for k in setting}
    tok = dep.ok_post("canarytoken/create", kind="dns", memo=unique("plain"), flock_id=flock, **blank)["canarytoken"]
    assert TOKEN_RE.match(tok["canarytoken"]), tok


@pytest.mark.parametrize("setting", ALERT_SETTINGS, ids=lambda s: next(iter(s)))
def test_factory_string_may_not_set_alert_settings(server, flock, setting):
    admin = server.api()
    fac = admin.ok_post("canarytoken/create_factory", memo=unique("fleet"), flock_id=flock)
    before = _count_tokens(server)
    r = Api(server.api_url, None).post("canarytoken/factory/create", auth=None, factory_auth=fac["factory_auth"], kind="dns",
                              memo=unique("routed"), **setting)
    assert_error(r, 403, "Permission denied")
    assert _count_tokens(server) == before, "nothing was created"


def test_analyst_may_set_alert_settings_on_create(server, flock):
    analyst = server.api(server.create_key("analyst")["auth_token"])
    tok = analyst.ok_post("canarytoken/create", kind="dns", memo=unique("routed"), flock_id=flock,
                          alert_cooldown="-1", ignore_sources="10.0.0.0/8")["canarytoken"]
    assert TOKEN_RE.match(tok["canarytoken"]), tok

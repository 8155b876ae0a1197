"""aws-id ("AWS API Key"): Trapline makes a real IAM user and access key (in moto, through
`--aws-endpoint-url`), the Console answers the key and a ready credentials file, and an intruder
who uses the key with the real aws CLI is caught from the CloudTrail file the emulator delivers:
an incident with the call's details, a webhook alert, and SpaceSiren `/event` entries.

* Without `--aws-region` the kind cannot be made (a clear Console 400 / SpaceSiren error), and
  the rest of the server works.
* The IAM user: the chosen `aws_id_username`, or an innocuous generated name (no "canary",
  "honey", "trap", "token", no UUID: AccessDenied messages show the ARN to the intruder); the
  path of `--aws-iam-path`, the tags of `--aws-user-tags`, an inline `deny-all` policy, one key.
* fetch, download (`credentials.txt`), canarytools, the factory (seed 001), delete (key and user
  gone from IAM), and the secret never in plain text in the data directory or the log.
"""

import json
import os
import re
from pathlib import Path

import pytest

import cloudtrail_emu as ct
from awstools import (ALLOW, NO_GROUPING, TELLTALE, aws_hits, aws_ok, check_ss_event, denies_everything,
                      epoch, keys_of, ss, ss_events, ss_provision, tags_of, user_exists, user_of_key, wait_aws_hits,
                      wait_gone)
from conftest import Api, Server, aws_server, free_port, make_console, unique, wait_for
from kindtools import assert_error, attachment_re
from test_alerts import Receiver

KIND = "aws-id"
IAM_PATH = "/svc/data-pipeline/"
TAGS = {"team": "platform", "cost-center": "4521"}
AKID_RE = re.compile(r"^AKIA[A-Z0-9]{16}$")
SECRET_RE = re.compile(r"^[A-Za-z0-9/+]{40}$")
IAM_NAME_RE = re.compile(r"^[\w+=,.@-]{1,64}$")
UUIDISH_RE = re.compile(r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}", re.I)


def credentials_file(akid, secret):
    return (f"[default]\naws_access_key_id = {akid}\naws_secret_access_key = {secret}\n"
            f"region = us-east-1\noutput = json\n")


# --- fixtures -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hook():
    rec = Receiver().start()
    yield rec
    rec.stop()


@pytest.fixture(scope="module")
def trail(moto):
    moto.reset()
    return ct.CloudTrailEmulator(moto.url, unique("trail")).create_bucket()


@pytest.fixture(scope="module")
def server(moto, trail, hook):
    """AWS on (moto), the trail listed every second, a path and tags for honey users (given as
    flags), one webhook, and every hit an alert of its own."""
    srv = aws_server(moto, bucket=trail.bucket,
                     args=["--aws-iam-path", IAM_PATH,
                           "--aws-user-tags", ",".join(f"{k}={v}" for k, v in TAGS.items()),
                           "--alert-webhooks", hook.url(), ALLOW, NO_GROUPING])
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def iam(moto):
    return moto.client("iam")


@pytest.fixture(scope="module")
def ss_admin(server):
    return ss_provision(server)


def check_answer(tok, username=None):
    """The Console's aws-id fields: the key, its secret, the user, the credentials file."""
    assert tok["kind"] == KIND, tok
    assert AKID_RE.match(tok.get("access_key_id", "")), f"access_key_id must be AKIA + 16: {tok.get('access_key_id')!r}"
    assert SECRET_RE.match(tok.get("secret_access_key", "")), "secret_access_key must be 40 characters"
    assert isinstance(tok.get("username"), str) and IAM_NAME_RE.match(tok["username"]), tok.get("username")
    if username is not None:
        assert tok["username"] == username, (tok["username"], username)
    render = tok.get("renders", {}).get(KIND)
    assert render == credentials_file(tok["access_key_id"], tok["secret_access_key"]), \
        f"renders['aws-id'] is not the credentials file:\n{render!r}"
    return tok


def check_iam_user(iam, tok):
    """The user in moto: path, tags, deny-all inline policy, exactly this one key, active."""
    name = tok["username"]
    assert user_exists(iam, name), f"IAM user {name} does not exist in moto"
    user = iam.get_user(UserName=name)["User"]
    assert user["Path"] == IAM_PATH, f"user path {user['Path']!r}, expected --aws-iam-path {IAM_PATH!r}"
    assert user["Arn"] == f"arn:aws:iam::123456789012:user{IAM_PATH}{name}", user["Arn"]
    assert tags_of(iam, name) == TAGS, f"user tags {tags_of(iam, name)} != --aws-user-tags {TAGS}"
    policies = iam.list_user_policies(UserName=name)["PolicyNames"]
    assert policies == ["deny-all"], f"inline policies {policies}, expected exactly deny-all"
    doc = iam.get_user_policy(UserName=name, PolicyName="deny-all")["PolicyDocument"]
    assert denies_everything(doc), f"deny-all does not deny * on *: {doc}"
    assert keys_of(iam, name) == {tok["access_key_id"]: "Active"}, f"keys of {name}: {keys_of(iam, name)}"
    return user


def check_innocuous(name):
    low = name.lower()
    assert not any(w in low for w in TELLTALE), f"generated user name {name!r} gives the trap away"
    assert not UUIDISH_RE.search(name), f"generated user name {name!r} is a UUID"
    assert not re.search(r"[0-9a-f]{16,}", low), f"generated user name {name!r} is a long hex string"


# --- no AWS settings -------------------------------------------------------------------------------------


def test_without_aws_settings_the_kind_is_refused_clearly(request):
    srv = Server()
    request.addfinalizer(srv.close)
    srv.start()
    assert srv.cloudtrail_line is None, f"a CloudTrail listener without AWS settings: {srv.cloudtrail_line}"
    api = srv.api()
    for kind, extra in ((KIND, {}), ("aws-s3", {"s3_source_bucket": "src-bucket-e2e", "s3_log_bucket": "log-bucket-e2e"})):
        body = assert_error(api.post("canarytoken/create", kind=kind, memo=unique("no-aws"), **extra), 400)
        msg = body["message"].lower()
        assert "aws" in msg and re.search(r"region|setting|configur", msg), \
            f"the error for {kind} does not name the AWS settings: {body['message']!r}"
    # the rest still works
    kinds = api.ok_get("canarytokens/list")["canarytokens"]
    assert kinds.get("http") == "Web Bug", kinds
    api.create_token("dns", memo=unique("still works"))
    # canarytools sees a typed error, not a crash
    import canarytools
    with pytest.raises(canarytools.exceptions.ConsoleError):
        make_console(srv).tokens.create(memo=unique("no-aws"), kind=canarytools.CanaryTokenKinds.AWS)
    # SpaceSiren: its own error shape, never a 500
    key = ss_provision(srv)
    # listing works (there are none); making one says what is missing
    r = ss(srv, key, "GET", "token", None)
    assert (r.status_code, r.json()) == (200, {"count": 0, "tokens": []}), r.text[:200]
    for method, body in (("POST", {"location": "laptop"}), ("POST", None)):
        r = ss(srv, key, method, "token", body)
        assert r.status_code != 500 and 400 <= r.status_code < 600, \
            f"{method} /token without AWS: {r.status_code} {r.text[:200]}"
        got = r.json()
        assert set(got) == {"error"} and "aws" in got["error"].lower(), f"{method} /token: {got}"


# --- create --------------------------------------------------------------------------------------------------


def test_startup_line_names_the_trail(server, trail):
    line = server.cloudtrail_line
    assert line is not None, f"no 'ingest CloudTrail:' line\n{server.output()}"
    assert f"s3://{trail.bucket}/" in line and "every 1 s" in line, line


def test_kind_is_listed_by_the_console_and_the_factory(api):
    assert api.ok_get("canarytokens/list")["canarytokens"].get(KIND) == "AWS API Key"
    assert api.ok_get("canarytokens/factory/list")["factory_canarytokens"].get(KIND) == "AWS API Key"


def test_create_with_a_generated_name(api, iam):
    a = check_answer(api.create_token(KIND, memo=unique("aws generated")))
    check_innocuous(a["username"])
    check_iam_user(iam, a)
    b = check_answer(api.create_token(KIND, memo=unique("aws generated")))
    assert b["username"] != a["username"] and b["access_key_id"] != a["access_key_id"]
    check_iam_user(iam, b)


def test_create_with_a_chosen_name(api, iam):
    name = "jenkins-deploy-" + unique("x")[-6:]
    tok = check_answer(api.create_token(KIND, memo=unique("aws named"), aws_id_username=name), username=name)
    check_iam_user(iam, tok)
    # a name IAM would refuse is refused with a Console error, and nothing is made
    users = len(iam.list_users()["Users"])
    for bad in ("bad name!", "x" * 65, "slash/in/name"):
        r = api.post("canarytoken/create", kind=KIND, memo=unique("bad"), aws_id_username=bad)
        try:
            assert_error(r, 400)
        except AssertionError as e:
            raise AssertionError(f"aws_id_username={bad!r}: {e}") from None
    assert len(iam.list_users()["Users"]) == users, "a refused name still made an IAM user"


def test_fetch_and_download(api):
    tok = check_answer(api.create_token(KIND, memo=unique("aws fetch")))
    got = api.fetch_token(tok["canarytoken"])
    for field in ("access_key_id", "secret_access_key", "username", "renders", "kind", "memo"):
        assert got.get(field) == tok[field], (field, got.get(field), tok[field])
    r = api.get("canarytoken/download", canarytoken=tok["canarytoken"])
    assert r.status_code == 200, (r.status_code, r.text[:200])
    m = attachment_re("txt").match(r.headers.get("Content-Disposition", ""))
    assert m and m.group(1) == "credentials.txt", r.headers.get("Content-Disposition")
    assert r.headers.get("Content-Type", "").startswith("text/plain"), r.headers.get("Content-Type")
    assert r.text == tok["renders"][KIND], r.text


def test_secret_is_never_in_plain_text_on_disk_or_in_the_log(server, api):
    tok = check_answer(api.create_token(KIND, memo=unique("aws secret")))
    api.fetch_token(tok["canarytoken"])      # read back, so nothing is pending
    secret = tok["secret_access_key"].encode()
    for root, _dirs, files in os.walk(server.data_dir):
        for f in files:
            data = Path(root, f).read_bytes()
            assert secret not in data, f"the secret access key is in plain text in {Path(root, f)}"
    lines = server.stdout_lines + server.stderr_lines
    assert not any(tok["secret_access_key"] in l for l in lines), "the secret access key is in the server log"
    assert not any(ct.OPERATOR_SECRET in l for l in lines), "the operator's AWS secret is in the server log"


def test_canarytools_creates_downloads_and_deletes(server, iam, tmp_path):
    import canarytools
    con = make_console(server)
    tok = con.tokens.create(memo=unique("aws via canarytools"), kind=canarytools.CanaryTokenKinds.AWS)
    assert tok.kind == KIND
    assert AKID_RE.match(tok.access_key_id) and SECRET_RE.match(tok.secret_access_key), vars(tok)
    assert keys_of(iam, tok.username) == {tok.access_key_id: "Active"}
    out = tmp_path / "credentials.txt"
    tok.download(filename=str(out))
    assert out.read_text() == credentials_file(tok.access_key_id, tok.secret_access_key)
    named = con.tokens.create(memo=unique("aws named via canarytools"), kind=canarytools.CanaryTokenKinds.AWS,
                              aws_id_username="etl-reader-" + unique("y")[-5:], attempt_unrecognized=True)
    assert named.username.startswith("etl-reader-"), named.username
    assert user_exists(iam, named.username)
    assert tok.delete().result == "success"
    wait_gone(iam, tok.access_key_id, tok.username)


def test_factory_creates_an_aws_id_token(server, api, iam):
    fac = api.ok_post("canarytoken/create_factory", memo=unique("aws factory"))["factory_auth"]
    bare = Api(server.api_url, None)
    r = bare.post("canarytoken/factory/create", auth=None, factory_auth=fac, kind=KIND, memo=unique("fleet"))
    tok = check_answer(Api.ok(r)["canarytoken"])
    assert tok["factory_auth"] == fac, tok
    check_innocuous(tok["username"])
    check_iam_user(iam, tok)
    name = "build-agent-" + unique("z")[-5:]
    r = bare.post("canarytoken/factory/create", auth=None, factory_auth=fac, kind=KIND, memo=unique("fleet"),
                  aws_id_username=name)
    check_iam_user(iam, check_answer(Api.ok(r)["canarytoken"], username=name))
    d = bare.get("canarytoken/factory/download", auth=None, factory_auth=fac, canarytoken=tok["canarytoken"])
    assert d.status_code == 200 and d.text == tok["renders"][KIND], (d.status_code, d.text[:200])


def test_delete_retires_the_key_and_the_user(api, iam):
    tok = check_answer(api.create_token(KIND, memo=unique("aws doomed")))
    assert user_exists(iam, tok["username"])
    api.ok_post("canarytoken/delete", canarytoken=tok["canarytoken"])
    wait_gone(iam, tok["access_key_id"], tok["username"])
    assert_error(api.get("canarytoken/fetch", canarytoken=tok["canarytoken"]), 404)


def pending_retirements(data_dir):
    """`trapline retirements` over the data directory: -> its JSON lines."""
    import subprocess
    from conftest import BIN
    out = subprocess.run([BIN, "retirements", "--data-dir", data_dir], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def test_a_failed_retirement_is_retried_shown_and_finished_when_aws_answers(moto, trail, iam, request):
    srv = aws_server(moto, bucket=trail.bucket)
    request.addfinalizer(srv.close)
    api = srv.api()
    tok = check_answer(api.create_token(KIND, memo=unique("aws unreachable")))
    srv.stop()
    # AWS unreachable: the delete is accepted, the key stays live and the retirement is retried
    srv.env["TRAPLINE_AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{free_port()}"
    srv.start()
    api = srv.api()
    api.ok_post("canarytoken/delete", canarytoken=tok["canarytoken"])
    assert_error(api.get("canarytoken/fetch", canarytoken=tok["canarytoken"]), 404)
    wait_for(lambda: [r for r in pending_retirements(srv.data_dir) if r["attempts"] >= 2], timeout=40,
             interval=0.5, desc="two failed attempts")
    [r] = pending_retirements(srv.data_dir)
    assert r["token"] == tok["canarytoken"] and r["kind"] == KIND and r["last_error"], r
    assert user_of_key(iam, tok["access_key_id"]) is not None, "the key went while AWS was unreachable?"
    srv.stop()
    # AWS back: the start-up lines count it, and the next attempt removes key and user
    srv.env["TRAPLINE_AWS_ENDPOINT_URL"] = moto.url
    srv.start()
    assert any("retirements:" in l and "1 deleted token" in l for l in srv.stdout_lines), srv.output()
    wait_gone(iam, tok["access_key_id"], tok["username"], timeout=30)
    wait_for(lambda: pending_retirements(srv.data_dir) == [], timeout=10, desc="the retirement to be done")


# --- the intruder ----------------------------------------------------------------------------------------------


def test_intruder_using_the_key_is_caught_from_cloudtrail(server, api, moto, trail, hook, ss_admin, tmp_path):
    tok = check_answer(api.create_token(KIND, memo=unique("aws bait")))
    tid, ak, sk = tok["canarytoken"], tok["access_key_id"], tok["secret_access_key"]
    # the intruder finds the file and copies it to ~/.aws/credentials
    home = tmp_path / "intruder"
    (home / ".aws").mkdir(parents=True)
    creds = home / ".aws" / "credentials"
    creds.write_bytes(api.get("canarytoken/download", canarytoken=tid).content)
    ident = trail.identity(ak)
    with trail.recording() as rec:
        me = aws_ok(moto, "sts", "get-caller-identity", home=home, key=ak, secret=sk)
        aws_ok(moto, "s3", "ls", home=home, credentials_file=creds, config_file=creds, region=None)
    assert me["Arn"] == f"arn:aws:iam::123456789012:user{IAM_PATH}{tok['username']}", me
    records = ct.records_from_entries(rec.entries, {ak: ident})
    assert [r["eventName"] for r in records] == ["GetCallerIdentity", "ListBuckets"], records
    key = trail.deliver(records)

    # two hits, from CloudTrail, with the call's details
    by_name = {r["eventName"]: r for r in records}
    hits = wait_aws_hits(api, tid, count=2, via="cloudtrail", timeout=15)
    assert sorted(h["event_name"] for h in hits) == ["GetCallerIdentity", "ListBuckets"], hits
    for h in hits:
        r = by_name[h["event_name"]]
        assert h["event_id"] == r["eventID"], (h, r["eventID"])
        assert h["event_source"] == r["eventSource"], h
        assert h["event_time"] == epoch(r["eventTime"]) and isinstance(h["event_time"], int), h
        assert h["event_region"] == "us-east-1", h
        assert h["source_ip_address"] == "127.0.0.1", h
        assert h["user_agent"] == r["userAgent"] and "aws-cli/" in h["user_agent"], h
        assert h["access_key_id"] == ak and h["user_arn"] == ident.arn and h["account_id"] == "123456789012", h
        assert h.get("error_code") in (None, ""), h
    gci = next(h for h in hits if h["event_name"] == "GetCallerIdentity")
    assert gci["request_parameters"] is None, gci

    # the Console's incidents
    def two_events():
        evs = [e for e in api.events_for(tid) if e.get("via") == "cloudtrail"]
        return evs if len(evs) >= 2 else None
    events = wait_for(two_events, timeout=10, desc="two incident events")
    incs = api.incidents_for(tid)
    assert incs and all(i["kind"] == KIND and str(i["logtype"]) == "17012" for i in incs), incs
    for ev in events:
        assert (ev["type"], ev["channel"]) == (KIND, "aws"), ev
        assert ev["event_name"] in by_name and ev["source_ip_address"] == "127.0.0.1", ev
        assert "aws-cli/" in ev["user_agent"] and ev["event_region"] == "us-east-1", ev
        assert ev["memo"] == tok["memo"], ev

    # alerts
    posts = hook.wait_token(tid, count=2, timeout=10)
    for p in posts:
        b = p["body"]
        assert (b["kind"], b["channel"], b["memo"]) == (KIND, "aws", tok["memo"]), b
        assert b["data"]["event_name"] in by_name and b["data"]["access_key_id"] == ak, b["data"]
        assert b["src_ip"] == "127.0.0.1", b
        assert sk.encode() not in p["raw"], "the alert carries the secret access key"

    # SpaceSiren's view of the same events
    def listed():
        body = ss_events(server, ss_admin, ak)
        evs = {e["event_id"]: e for e in body["events"]}
        done = all(evs.get(r["eventID"], {}).get("alerted") for r in records)
        return body if done else None
    body = wait_for(listed, timeout=10, desc="both events listed and alerted in SpaceSiren /event")
    assert set(body) == {"count", "access_key_id", "events"}, body
    assert body["access_key_id"] == ak and body["count"] == len(body["events"]), body
    for e in body["events"]:
        check_ss_event(e, ak)
    for r in records:
        e = next(e for e in body["events"] if e["event_id"] == r["eventID"])
        assert (e["event_name"], e["event_time"], e["event_region"], e["source_ip_address"], e["user_agent"]) == \
            (r["eventName"], epoch(r["eventTime"]), "us-east-1", "127.0.0.1", r["userAgent"]), e
        assert e["alerted"] is True, e
        one = ss(server, ss_admin, "GET", "event", {"event_id": r["eventID"]})
        assert one.status_code == 200, one.text
        assert one.json() == {"event": e}, one.json()
    assert next(e for e in body["events"] if e["event_name"] == "GetCallerIdentity")["request_parameters"] is None
    assert isinstance(next(e for e in body["events"] if e["event_name"] == "ListBuckets")["request_parameters"], dict)

    # exactly once, and the token can still be deleted (with its incidents)
    assert len(aws_hits(api, tid, via="cloudtrail")) == 2
    api.ok_post("canarytoken/delete", canarytoken=tid, clear_incidents="true")
    wait_gone(moto.client("iam"), ak, tok["username"])
    assert key in trail.delivered

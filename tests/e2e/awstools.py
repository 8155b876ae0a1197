"""Helpers shared by the AWS tests (test_kind_aws_id.py, test_kind_aws_s3.py,
test_spacesiren_tokens.py, test_cloudtrail_ingest.py, test_cloudtrail_emu.py): the moto server
(`moto_server` from the venv, in its own process group), the real aws CLI run as the intruder
(a clean environment: the honey key in env vars, or the downloaded credentials file), the
operator's view of moto's IAM (boto3), the environment that points a Trapline server at moto,
a token's stored hits, and SpaceSiren `/token` / `/event` calls.

The CloudTrail files themselves come from cloudtrail_emu.py.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests

from cloudtrail_emu import ACCOUNT, OPERATOR_KEY, OPERATOR_SECRET
from conftest import free_port, wait_for

REGION = "us-east-1"
VENV_BIN = Path(sys.executable).parent
# Every hit an incident and an alert of its own (the default groups repeats from one source).
NO_GROUPING = "--incident-window-secs=0"
ALLOW = "--allow-private-alert-targets"
# The documented fields of one SpaceSiren event.
SS_EVENT_FIELDS = {"event_id", "access_key_id", "alerted", "event_name", "event_time", "event_region",
                   "request_parameters", "source_ip_address", "user_agent"}
# Substrings an innocuous IAM user name must not contain.
TELLTALE = ("canary", "honey", "trap", "token")


def tool(name):
    """A program from the test venv (next to this Python), else from PATH; None when missing."""
    here = VENV_BIN / name
    if here.exists():
        return str(here)
    return shutil.which(name)


def need(name):
    path = tool(name)
    if path is None:
        msg = f"{name} is not installed (pip install -r tests/e2e/requirements.txt)"
        if os.environ.get("CI"):
            pytest.fail(msg + " - required in CI")
        pytest.skip(msg)
    return path


# --- moto ---------------------------------------------------------------------------------------------


class Moto:
    """One `moto_server -H 127.0.0.1 -p PORT`, in its own process group (killed by group), with
    its recorder file in a private temporary directory."""

    def __init__(self):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dir = tempfile.mkdtemp(prefix="trapline-moto-")
        self.proc = None
        self.log = None

    def start(self):
        exe = need("moto_server")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MOTO_"))}
        env["MOTO_RECORDER_FILEPATH"] = os.path.join(self.dir, "recording.jsonl")
        self.log = open(os.path.join(self.dir, "moto.log"), "wb")
        self.proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(self.port)], cwd=self.dir, env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"moto_server exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if requests.get(self.url + "/moto-api/data.json", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"moto_server did not answer within 30 s\n{self.output()}")
            time.sleep(0.1)
        return self

    def output(self):
        try:
            return Path(self.dir, "moto.log").read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
            except ProcessLookupError:
                pass
        if self.log:
            self.log.close()
            self.log = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def reset(self):
        """Forget every user, key, bucket and queue (POST /moto-api/reset)."""
        r = requests.post(self.url + "/moto-api/reset", timeout=10)
        assert r.status_code == 200, (r.status_code, r.text[:200])

    def client(self, service, region=REGION, key=OPERATOR_KEY, secret=OPERATOR_SECRET):
        import boto3
        return boto3.client(service, endpoint_url=self.url, region_name=region,
                            aws_access_key_id=key, aws_secret_access_key=secret)


def trapline_aws_env(moto, bucket=None, sqs_url=None, **settings):
    """The environment a Trapline server needs to use moto: the operator's dummy credentials,
    `TRAPLINE_AWS_REGION` and `TRAPLINE_AWS_ENDPOINT_URL`, the trail (`bucket`, `sqs_url`), and
    1-second CloudTrail / last-used intervals with a 3-second grace. `settings` adds or overrides
    `TRAPLINE_*` variables by their suffix (`AWS_IAM_PATH="/svc/"` sets TRAPLINE_AWS_IAM_PATH);
    a None value leaves the variable out."""
    env = {
        "AWS_ACCESS_KEY_ID": OPERATOR_KEY,
        "AWS_SECRET_ACCESS_KEY": OPERATOR_SECRET,
        # nothing from a developer's ~/.aws, and no instance-metadata lookups
        "AWS_SHARED_CREDENTIALS_FILE": os.path.join(moto.dir, "no-such-credentials"),
        "AWS_CONFIG_FILE": os.path.join(moto.dir, "no-such-config"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "TRAPLINE_AWS_REGION": REGION,
        "TRAPLINE_AWS_ENDPOINT_URL": moto.url,
        "TRAPLINE_CLOUDTRAIL_INTERVAL": "1",
        "TRAPLINE_AWS_LAST_USED_INTERVAL": "1",
        "TRAPLINE_AWS_LAST_USED_GRACE": "3",
    }
    if bucket:
        env["TRAPLINE_CLOUDTRAIL_BUCKET"] = bucket
    if sqs_url:
        env["TRAPLINE_CLOUDTRAIL_SQS_URL"] = sqs_url
    for k, v in settings.items():
        name = "TRAPLINE_" + k.upper()
        if v is None:
            env.pop(name, None)
        else:
            env[name] = str(v)
    return env


# --- the intruder's aws CLI ------------------------------------------------------------------------------


def aws_cli(moto, *args, home, key=None, secret=None, region=REGION, credentials_file=None,
            config_file=None, timeout=60):
    """Run the real aws CLI against moto in a clean environment, as an intruder would: the honey
    key in `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` (and `AWS_DEFAULT_REGION`), or the found
    credentials file through `AWS_SHARED_CREDENTIALS_FILE` (and `AWS_CONFIG_FILE`, whose
    `[default]` section gives the region). -> CompletedProcess (text)."""
    exe = need("aws")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8",
           "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_CONFIG_FILE": str(config_file) if config_file else os.path.join(str(home), "no-config"),
           "AWS_SHARED_CREDENTIALS_FILE": str(credentials_file) if credentials_file
           else os.path.join(str(home), "no-credentials")}
    if key is not None:
        env["AWS_ACCESS_KEY_ID"] = key
        env["AWS_SECRET_ACCESS_KEY"] = secret
    if region is not None:
        env["AWS_DEFAULT_REGION"] = region
    return subprocess.run([exe, "--endpoint-url", moto.url, *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def aws_ok(moto, *args, **kw):
    r = aws_cli(moto, *args, **kw)
    assert r.returncode == 0, f"aws {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return json.loads(r.stdout) if r.stdout.strip().startswith(("{", "[")) else r.stdout


# --- the operator's view of IAM ------------------------------------------------------------------------------


def user_of_key(iam, access_key_id):
    """The IAM user dict (UserName, Path, Arn, UserId) holding `access_key_id`, or None."""
    for page in iam.get_paginator("list_users").paginate():
        for user in page["Users"]:
            keys = keys_of(iam, user["UserName"])  # None: deleted since the listing (a retirement)
            if keys and access_key_id in keys:
                return user
    return None


def user_exists(iam, name):
    try:
        iam.get_user(UserName=name)
        return True
    except iam.exceptions.NoSuchEntityException:
        return False


def keys_of(iam, name):
    """The user's access keys (AccessKeyId -> Status), or None when the user does not exist."""
    try:
        return {k["AccessKeyId"]: k["Status"] for k in iam.list_access_keys(UserName=name)["AccessKeyMetadata"]}
    except iam.exceptions.NoSuchEntityException:
        return None


def key_exists(iam, access_key_id):
    return user_of_key(iam, access_key_id) is not None


def denies_everything(doc):
    """Does the policy document deny every action on every resource?"""
    if isinstance(doc, str):
        from urllib.parse import unquote
        doc = json.loads(unquote(doc))
    stmts = doc.get("Statement")
    stmts = stmts if isinstance(stmts, list) else [stmts]

    def every(v):
        return v == "*" or v == ["*"]

    return any(isinstance(s, dict) and s.get("Effect") == "Deny" and every(s.get("Action"))
               and every(s.get("Resource")) and "Condition" not in s for s in stmts)


def tags_of(iam, name):
    return {t["Key"]: t["Value"] for t in iam.list_user_tags(UserName=name)["Tags"]}


def wait_gone(iam, access_key_id, user_name, timeout=10.0):
    """Poll until the key and its user are gone from IAM (retirement may be asynchronous)."""
    def check():
        return not key_exists(iam, access_key_id) and not user_exists(iam, user_name)
    wait_for(check, timeout=timeout, interval=0.2,
             desc=f"access key {access_key_id} and user {user_name} to be deleted in moto")


# --- hits ---------------------------------------------------------------------------------------------------


def all_hits(api, tid):
    """Every stored hit of a token (canarytoken/hits, all pages)."""
    out, before = [], None
    while True:
        params = {"canarytoken": tid, "limit": 1000}
        if before is not None:
            params["before"] = before
        body = api.ok_get("canarytoken/hits", **params)
        out.extend(body["hits"])
        before = body.get("next_before")
        if before is None:
            return out


def aws_hits(api, tid, via=None):
    return [h for h in all_hits(api, tid) if via is None or h.get("via") == via]


def wait_aws_hits(api, tid, count=1, via=None, pred=None, timeout=15.0):
    def check():
        hits = [h for h in aws_hits(api, tid, via) if pred is None or pred(h)]
        return hits if len(hits) >= count else None
    return wait_for(check, timeout=timeout, interval=0.2,
                    desc=f"{count} AWS hit(s) (via {via or 'any'}) for token {tid}")


def aws_events(api, tid, via=None):
    """The token's incident events from the Console feeds (hit data flattened into each)."""
    return [e for e in api.events_for(tid) if via is None or e.get("via") == via]


def epoch(iso_time):
    import calendar
    return calendar.timegm(time.strptime(iso_time, "%Y-%m-%dT%H:%M:%SZ"))


def console_token_for_key(api, access_key_id):
    toks = [t for t in api.ok_get("canarytokens/fetch")["tokens"] if t.get("access_key_id") == access_key_id]
    assert len(toks) <= 1, toks
    return toks[0] if toks else None


# --- SpaceSiren ------------------------------------------------------------------------------------------------


def ss_root(server):
    base = server.api_url
    assert base.endswith("/api/v1/"), base
    return base[: -len("api/v1/")]


def ss_provision(server, admin=True, description="aws tests"):
    """An API key pair made with the provision key (admin by default)."""
    pk = (Path(server.data_dir) / "provision.key").read_text().strip()
    r = requests.post(ss_root(server) + "key", data=json.dumps({"admin": admin, "description": description}),
                      headers={"X-Provision-Key": pk, "Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 200, (r.status_code, r.text)
    return r.json()["key"]


def ss(server, key, method, path, body=None, raw=None, content_type="application/json"):
    """A SpaceSiren call: JSON `body` (or `raw` bytes), the key pair in X-Key-ID / X-Secret-ID."""
    h = {"X-Key-ID": key["key_id"], "X-Secret-ID": key["secret_id"]}
    data = json.dumps(body) if body is not None else raw
    if data is not None and content_type:
        h["Content-Type"] = content_type
    return requests.request(method, ss_root(server) + path, data=data, headers=h, timeout=30)


def ss_events(server, key, access_key_id):
    r = ss(server, key, "GET", "event", {"access_key_id": access_key_id})
    assert r.status_code == 200, (r.status_code, r.text[:300])
    return r.json()


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def check_ss_event(ev, access_key_id):
    """One SpaceSiren event: exactly the documented fields, with their types."""
    assert set(ev) == SS_EVENT_FIELDS, f"event fields {sorted(ev)} != documented {sorted(SS_EVENT_FIELDS)}"
    assert ev["access_key_id"] == access_key_id, ev
    assert isinstance(ev["event_id"], str) and ev["event_id"], ev
    assert isinstance(ev["alerted"], bool), f"alerted must be a bool: {ev}"
    assert isinstance(ev["event_name"], str) and ev["event_name"], ev
    assert is_int(ev["event_time"]), f"event_time must be an int: {ev}"
    assert isinstance(ev["event_region"], str), ev
    assert ev["request_parameters"] is None or isinstance(ev["request_parameters"], dict), ev
    assert isinstance(ev["source_ip_address"], str), ev
    assert isinstance(ev["user_agent"], str), ev
    return ev


__all__ = ["ACCOUNT", "Moto", "REGION", "aws_cli", "aws_ok", "trapline_aws_env"]

"""The CloudTrail emulator (cloudtrail_emu.py) and the moto fixture checked against moto alone,
without Trapline: what the real aws CLI does with an IAM user's key becomes documented
CloudTrail records (fields, names, sources, regions, identity), the log file lands under the
documented key as gzipped `{"Records": [...]}`, the SNS-wrapped, raw and S3-event notifications
arrive on the SQS queue, and the access-log lines and S3 data events have the documented shape.
If these fail, the Trapline AWS tests prove nothing.
"""

import datetime as dt
import gzip
import json
import re
import uuid

import pytest
import requests

import cloudtrail_emu as ct
from awstools import aws_cli, aws_ok
from conftest import unique

LOG_KEY_RE = re.compile(r"^AWSLogs/123456789012/CloudTrail/(?P<region>[a-z0-9-]+)/(?P<y>\d{4})/(?P<m>\d\d)/(?P<d>\d\d)/"
                        r"123456789012_CloudTrail_(?P=region)_(?P=y)(?P=m)(?P=d)T\d{4}Z_[A-Za-z0-9]{16}\.json\.gz$")
DIGEST_KEY_RE = re.compile(r"^AWSLogs/123456789012/CloudTrail-Digest/us-east-1/\d{4}/\d\d/\d\d/"
                           r"123456789012_CloudTrail-Digest_us-east-1_[\w-]+_us-east-1_\d{8}T\d{6}Z\.json\.gz$")
ACCESS_LOG_KEY_RE = re.compile(r"^(?P<src>[a-z0-9.-]+)/\d{4}-\d\d-\d\d-\d\d-\d\d-\d\d-[0-9A-F]{16}$")
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
RECORD_FIELDS = {"eventVersion", "userIdentity", "eventTime", "eventSource", "eventName", "awsRegion",
                 "sourceIPAddress", "userAgent", "requestParameters", "responseElements", "requestID", "eventID",
                 "readOnly", "eventType", "managementEvent", "recipientAccountId", "eventCategory"}


def check_record(rec, identity):
    """A record as the CloudTrail documentation describes one."""
    missing = RECORD_FIELDS - set(rec)
    assert not missing, f"record lacks {missing}: {rec}"
    assert rec["eventVersion"] == "1.08"
    assert rec["userIdentity"] == {"type": "IAMUser", "principalId": identity.principal_id, "arn": identity.arn,
                                   "accountId": "123456789012", "accessKeyId": identity.access_key_id,
                                   "userName": identity.user_name}, rec["userIdentity"]
    assert TIME_RE.match(rec["eventTime"]), rec["eventTime"]
    t = dt.datetime.strptime(rec["eventTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    assert abs((dt.datetime.now(dt.timezone.utc) - t).total_seconds()) < 300, rec["eventTime"]
    assert re.match(r"^[a-z0-9-]+\.amazonaws\.com$", rec["eventSource"]), rec["eventSource"]
    assert rec["sourceIPAddress"] == "127.0.0.1"
    assert uuid.UUID(rec["eventID"])
    assert rec["eventType"] == "AwsApiCall"
    assert rec["recipientAccountId"] == "123456789012"
    assert isinstance(rec["readOnly"], bool) and isinstance(rec["managementEvent"], bool)
    assert rec["eventCategory"] in ("Management", "Data")
    assert rec["requestParameters"] is None or isinstance(rec["requestParameters"], dict)
    return rec


@pytest.fixture(scope="module")
def emu(moto):
    e = ct.CloudTrailEmulator(moto.url, unique("trail")).create_bucket()
    e.create_queue(unique("trail-q"))
    return e


@pytest.fixture(scope="module")
def intruder(moto):
    """An IAM user with a key, made by the operator (the honey key's stand-in)."""
    iam = moto.client("iam")
    name = unique("svc")
    iam.create_user(UserName=name, Path="/svc/")
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return key


def receive_all(emu, n, timeout=5):
    sqs = emu.client("sqs")
    got = []
    deadline = dt.datetime.now() + dt.timedelta(seconds=timeout)
    while len(got) < n and dt.datetime.now() < deadline:
        for m in sqs.receive_message(QueueUrl=emu.queue_url, WaitTimeSeconds=1, MaxNumberOfMessages=10).get("Messages", []):
            got.append(m["Body"])
            sqs.delete_message(QueueUrl=emu.queue_url, ReceiptHandle=m["ReceiptHandle"])
    assert len(got) == n, f"expected {n} notification(s) on the queue, got {len(got)}: {got}"
    return got


def test_recorded_cli_calls_become_cloudtrail_records(moto, emu, intruder, tmp_path):
    ak, sk = intruder["AccessKeyId"], intruder["SecretAccessKey"]
    s3 = moto.client("s3")
    bucket = unique("data")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="reports/q3 payroll.csv", Body=b"name,salary\n")
    ident = emu.identity(ak)
    assert ident.arn.endswith(f":user/svc/{intruder['UserName']}"), ident
    with emu.recording() as rec:
        me = aws_ok(moto, "sts", "get-caller-identity", home=tmp_path, key=ak, secret=sk)
        aws_ok(moto, "s3", "ls", home=tmp_path, key=ak, secret=sk, region="eu-west-1")
        aws_ok(moto, "s3api", "get-object", "--bucket", bucket, "--key", "reports/q3 payroll.csv",
               str(tmp_path / "out.csv"), home=tmp_path, key=ak, secret=sk)
        aws_ok(moto, "iam", "get-access-key-last-used", "--access-key-id", ak, home=tmp_path, key=ak, secret=sk)
        aws_ok(moto, "sqs", "list-queues", home=tmp_path, key=ak, secret=sk)
        moto.client("iam").list_users()   # the operator's call: never a record
    assert me["Arn"] == ident.arn and me["Account"] == "123456789012", me
    assert len(rec.signed_by(ak)) == 5, [e["url"] for e in rec.entries]
    assert len(rec.entries) > 5, "the operator's request was recorded too"

    records = ct.records_from_entries(rec.entries, {ak: ident})
    names = [(r["eventSource"], r["eventName"], r["awsRegion"]) for r in records]
    assert names == [("sts.amazonaws.com", "GetCallerIdentity", "us-east-1"),
                     ("s3.amazonaws.com", "ListBuckets", "eu-west-1"),
                     ("s3.amazonaws.com", "GetObject", "us-east-1"),
                     ("iam.amazonaws.com", "GetAccessKeyLastUsed", "us-east-1"),
                     ("sqs.amazonaws.com", "ListQueues", "us-east-1")], names
    for r in records:
        check_record(r, ident)
        assert r["userAgent"].startswith("aws-cli/1.46.3 "), r["userAgent"]
        assert "errorCode" not in r, r
    gci, lb, get, lu, lq = records
    assert gci["requestParameters"] is None and gci["readOnly"] is True and gci["managementEvent"] is True
    assert lb["requestParameters"]["Host"].startswith("127.0.0.1:"), lb["requestParameters"]
    assert get["requestParameters"]["bucketName"] == bucket
    assert get["requestParameters"]["key"] == "reports/q3 payroll.csv"
    assert (get["managementEvent"], get["eventCategory"]) == (False, "Data")
    assert {"type": "AWS::S3::Object", "ARN": f"arn:aws:s3:::{bucket}/reports/q3 payroll.csv"} in get["resources"]
    assert lu["requestParameters"] == {"accessKeyId": ak}, lu["requestParameters"]
    assert len({r["eventID"] for r in records}) == 5

    # a request the caller marks as refused gets an errorCode
    denied = dict(rec.signed_by(ak)[0], status=403)
    assert ct.record_from_entry(denied, {ak: ident})["errorCode"] == "AccessDenied"
    # another key's requests are not this identity's records
    assert ct.records_from_entries(rec.entries, {ct.fake_access_key_id(): ident}) == []


def test_presigned_url_credentials_are_read_from_the_query(moto, emu, intruder, tmp_path):
    ak, sk = intruder["AccessKeyId"], intruder["SecretAccessKey"]
    bucket = unique("pre")
    moto.client("s3").create_bucket(Bucket=bucket)
    moto.client("s3").put_object(Bucket=bucket, Key="k.txt", Body=b"x")
    url = aws_ok(moto, "s3", "presign", f"s3://{bucket}/k.txt", home=tmp_path, key=ak, secret=sk).strip()
    with emu.recording() as rec:
        assert requests.get(url, timeout=10).status_code == 200
    [r] = ct.records_from_entries(rec.entries, {ak: emu.identity(ak)})
    assert (r["eventName"], r["eventSource"], r["requestParameters"]["key"]) == ("GetObject", "s3.amazonaws.com", "k.txt")


def test_log_file_lands_gzipped_under_the_documented_key(emu, intruder):
    ident = emu.identity(intruder["AccessKeyId"])
    records = ct.synthetic_records(ident, 3)
    key = emu.deliver(records, notify=False)
    assert LOG_KEY_RE.match(key), key
    today = dt.datetime.now(dt.timezone.utc)
    assert f"/{today:%Y/%m/%d}/" in key, key
    obj = emu.client("s3").get_object(Bucket=emu.bucket, Key=key)["Body"].read()
    assert obj[:2] == b"\x1f\x8b", "not gzip"
    assert ct.gunzip_json(obj) == {"Records": records}
    for r in records:
        check_record(r, ident)
    # a prefix goes before AWSLogs/, other regions name themselves twice
    k2 = ct.log_file_key("ap-south-1", prefix="org/trail/")
    assert k2.startswith("org/trail/AWSLogs/") and LOG_KEY_RE.match(k2[len("org/trail/"):]), k2
    assert "/ap-south-1/" in k2 and "_CloudTrail_ap-south-1_" in k2


def test_notifications_arrive_on_the_queue(emu, intruder):
    ident = emu.identity(intruder["AccessKeyId"])
    k1 = emu.deliver(ct.synthetic_records(ident, 1))                 # SNS envelope, by default
    k2 = emu.deliver(ct.synthetic_records(ident, 1), style="raw")
    k3 = emu.deliver(ct.synthetic_records(ident, 1), style="s3")
    sns, raw, s3 = receive_all(emu, 3)
    env = json.loads(sns)
    assert env["Type"] == "Notification" and isinstance(env["Message"], str), env
    assert json.loads(env["Message"]) == {"s3Bucket": emu.bucket, "s3ObjectKey": [k1]}
    assert json.loads(raw) == {"s3Bucket": emu.bucket, "s3ObjectKey": [k2]}
    ev = json.loads(s3)["Records"][0]
    assert (ev["eventSource"], ev["eventName"], ev["s3"]["bucket"]["name"]) == ("aws:s3", "ObjectCreated:Put", emu.bucket)
    assert ev["s3"]["object"]["key"] == k3     # nothing in a CloudTrail key needs encoding
    assert ct.s3_event_notification("b", ["a b/c+d"])  # and a key that does is encoded:
    assert json.loads(ct.s3_event_notification("b", ["a b/c+d"]))["Records"][0]["s3"]["object"]["key"] == "a+b/c%2Bd"
    assert json.loads(ct.s3_test_event("b"))["Event"] == "s3:TestEvent"


def test_files_a_poller_must_skip_or_survive(emu, intruder):
    ident = emu.identity(intruder["AccessKeyId"])
    s3 = emu.client("s3")
    dk = emu.deliver_digest(records=ct.synthetic_records(ident, 1), notify=False)
    assert DIGEST_KEY_RE.match(dk), dk
    digest = ct.gunzip_json(s3.get_object(Bucket=emu.bucket, Key=dk)["Body"].read())
    assert digest["awsAccountId"] == "123456789012" and "logFiles" in digest and len(digest["Records"]) == 1
    ik = emu.deliver_insight(ct.synthetic_records(ident, 1), notify=False)
    assert "/CloudTrail-Insight/" in ik and "_CloudTrail-Insight_" in ik, ik
    for how in ("garbage", "truncated", "not-json", "no-records"):
        key = emu.deliver_corrupt(how, notify=False)
        assert LOG_KEY_RE.match(key), key
        data = s3.get_object(Bucket=emu.bucket, Key=key)["Body"].read()
        try:
            body = json.loads(gzip.decompress(data))
            readable = isinstance(body, dict) and isinstance(body.get("Records"), list)
        except Exception:
            readable = False
        assert not readable, f"the {how} file is a readable log file"


def test_synthetic_and_duplicate_records(intruder):
    ident = ct.fake_identity()
    recs = ct.synthetic_records(ident, 2000)
    assert len({r["eventID"] for r in recs}) == 2000
    assert {r["userIdentity"]["accessKeyId"] for r in recs} == {ident.access_key_id}
    assert len(gzip.compress(json.dumps({"Records": recs}).encode())) < 2_000_000


def test_access_log_lines_and_s3_data_events(moto, emu, intruder, tmp_path):
    ak, sk = intruder["AccessKeyId"], intruder["SecretAccessKey"]
    src, logs = unique("src"), unique("logs")
    s3 = moto.client("s3")
    s3.create_bucket(Bucket=src)
    s3.create_bucket(Bucket=logs)
    s3.put_object(Bucket=src, Key="hr/salaries 2026.xlsx", Body=b"12345")
    with emu.recording() as rec:
        aws_ok(moto, "s3api", "get-object", "--bucket", src, "--key", "hr/salaries 2026.xlsx",
               str(tmp_path / "o"), home=tmp_path, key=ak, secret=sk)
    [entry] = rec.signed_by(ak)
    ident = emu.identity(ak)
    line = ct.access_log_line(entry, requester=ident.arn, bytes_sent=5, object_size=5)
    fields = dict(zip(ct.ACCESS_LOG_FIELDS, ct.parse_access_log_line(line)))
    assert len(ct.parse_access_log_line(line)) == len(ct.ACCESS_LOG_FIELDS) == 26, line
    assert re.match(r"^\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d \+0000$", fields["time"]), fields["time"]
    assert fields["bucket"] == src and fields["remote_ip"] == "127.0.0.1"
    assert fields["requester"] == ident.arn
    assert fields["operation"] == "REST.GET.OBJECT"
    assert fields["key"] == "hr/salaries%202026.xlsx"
    assert fields["request_uri"].startswith(f"GET /{src}/hr/salaries%202026.xlsx") and \
        fields["request_uri"].endswith(" HTTP/1.1"), fields["request_uri"]
    assert (fields["http_status"], fields["bytes_sent"], fields["object_size"]) == ("200", "5", "5")
    assert fields["user_agent"].startswith("aws-cli/1.46.3 ")
    assert fields["signature_version"] == "SigV4" and fields["authentication_type"] == "AuthHeader"
    key = emu.deliver_access_log(logs, src, [line])
    m = ACCESS_LOG_KEY_RE.match(key)
    assert m and m.group("src") == src, key
    assert s3.get_object(Bucket=logs, Key=key)["Body"].read().decode() == line + "\n"

    ev = ct.s3_data_event(ident, src, "hr/salaries 2026.xlsx")
    check_record(ev, ident)
    assert (ev["eventSource"], ev["eventName"], ev["managementEvent"]) == ("s3.amazonaws.com", "GetObject", False)
    assert ev["requestParameters"]["bucketName"] == src and ev["requestParameters"]["key"] == "hr/salaries 2026.xlsx"
    assert [r["ARN"] for r in ev["resources"]] == [f"arn:aws:s3:::{src}/hr/salaries 2026.xlsx", f"arn:aws:s3:::{src}"]


def test_s3_operation_names():
    def e(method, url, **headers):
        return {"method": method, "url": "http://127.0.0.1:1" + url, "headers": {"Host": "127.0.0.1:1", **headers}}
    cases = [
        (e("GET", "/"), "ListBuckets"), (e("GET", "/b?list-type=2&prefix="), "ListObjects"),
        (e("GET", "/b"), "ListObjects"), (e("HEAD", "/b"), "HeadBucket"), (e("PUT", "/b"), "CreateBucket"),
        (e("GET", "/b?location"), "GetBucketLocation"), (e("GET", "/b?logging"), "GetBucketLogging"),
        (e("PUT", "/b?acl"), "PutBucketAcl"), (e("GET", "/b/k"), "GetObject"), (e("HEAD", "/b/k"), "HeadObject"),
        (e("PUT", "/b/k"), "PutObject"), (e("DELETE", "/b/k"), "DeleteObject"), (e("DELETE", "/b"), "DeleteBucket"),
        (e("POST", "/b?delete"), "DeleteObjects"), (e("GET", "/b/k?acl"), "GetObjectAcl"),
        (e("PUT", "/b/k", **{"x-amz-copy-source": "/a/b"}), "CopyObject"),
        ({"method": "GET", "url": "http://b.s3.amazonaws.com/k", "headers": {"Host": "b.s3.amazonaws.com"}}, "GetObject"),
    ]
    for entry, name in cases:
        assert ct.s3_operation(entry) == name, (entry["method"], entry["url"], ct.s3_operation(entry))
    assert ct.s3_target(cases[-1][0])[:2] == ("b", "k")


def test_the_intruders_cli_env_is_clean(moto, tmp_path):
    """The intruder's CLI sees nothing of the test runner's own AWS settings."""
    r = aws_cli(moto, "sts", "get-caller-identity", home=tmp_path, region="us-east-1")
    assert r.returncode != 0 and "credentials" in r.stderr.lower(), (r.returncode, r.stdout, r.stderr)

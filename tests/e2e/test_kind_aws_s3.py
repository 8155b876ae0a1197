"""aws-s3 ("AWS S3 Bucket"): Trapline makes the monitored bucket in moto with server access
logging into the log bucket (prefix `<source bucket>/`), or registers a bucket that already
exists; reads of it are hits, whether they are reported by an S3 server access log line in the
log bucket or by a CloudTrail S3 data event in the trail.

moto writes no access logs, so the emulator turns the intruder's recorded GetObject (the real aws
CLI, with a key of another IAM user) into the documented log line and data event.
"""

import json

import pytest

import cloudtrail_emu as ct
from awstools import aws_ok, wait_aws_hits
from conftest import aws_server, unique
from kindtools import assert_error, new_token

KIND = "aws-s3"


@pytest.fixture(scope="module")
def trail(moto):
    moto.reset()
    return ct.CloudTrailEmulator(moto.url, unique("s3-trail")).create_bucket()


@pytest.fixture(scope="module")
def server(moto, trail):
    srv = aws_server(moto, bucket=trail.bucket)
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def s3(moto):
    return moto.client("s3")


@pytest.fixture(scope="module")
def mallory(moto):
    """Someone else's IAM user and key: the intruder reading the bucket."""
    iam = moto.client("iam")
    name = unique("mallory")
    iam.create_user(UserName=name)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return key


def operator_log_bucket(s3, name):
    """A log bucket the operator made and opened to S3's logging service, as the README says."""
    s3.create_bucket(Bucket=name)
    s3.put_bucket_policy(Bucket=name, Policy=json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "logging.s3.amazonaws.com"}, "Action": "s3:PutObject",
        "Resource": f"arn:aws:s3:::{name}/*"}]}))


@pytest.fixture
def watched(api, s3):
    """A new aws-s3 token: a source bucket Trapline makes, and the operator's log bucket."""
    src, logs = unique("reports"), unique("access-logs")
    operator_log_bucket(s3, logs)
    tok = new_token(api, KIND, "s3 bucket", s3_source_bucket=src, s3_log_bucket=logs)
    s3.put_object(Bucket=src, Key="finance/2026-payroll.csv", Body=b"name,salary\nceo,1\n")
    s3.put_object(Bucket=src, Key="finance/q4 forecast.xlsx", Body=b"xlsx")
    return tok, src, logs


def intruder_get(moto, trail, mallory, bucket, key, tmp_path):
    """mallory's `aws s3api get-object`, as moto's recorder saw it -> the one recorded entry."""
    with trail.recording() as rec:
        aws_ok(moto, "s3api", "get-object", "--bucket", bucket, "--key", key, str(tmp_path / "loot"),
               home=tmp_path, key=mallory["AccessKeyId"], secret=mallory["SecretAccessKey"])
    [entry] = rec.signed_by(mallory["AccessKeyId"])
    return entry


def test_create_makes_the_bucket_with_access_logging(watched, s3):
    tok, src, logs = watched
    s3.head_bucket(Bucket=src)
    logging = s3.get_bucket_logging(Bucket=src).get("LoggingEnabled")
    assert logging == {"TargetBucket": logs, "TargetPrefix": f"{src}/"}, \
        f"access logging of {src}: {logging}, expected into {logs} under {src}/"


def test_both_buckets_are_required(api):
    for params in ({"s3_source_bucket": unique("src")}, {"s3_log_bucket": unique("log")}, {}):
        assert_error(api.post("canarytoken/create", kind=KIND, memo=unique("s3"), **params), 400)
    assert_error(api.post("canarytoken/create", kind=KIND, memo=unique("s3"), s3_source_bucket="Not A Bucket!",
                          s3_log_bucket=unique("log")), 400)


def test_an_existing_bucket_is_registered(api, s3):
    src, logs = unique("existing"), unique("existing-logs")
    s3.create_bucket(Bucket=src)
    operator_log_bucket(s3, logs)
    s3.put_object(Bucket=src, Key="keep/me.txt", Body=b"mine")
    tok = new_token(api, KIND, "s3 existing", s3_source_bucket=src, s3_log_bucket=logs)
    assert api.fetch_token(tok["canarytoken"])["kind"] == KIND
    assert s3.get_object(Bucket=src, Key="keep/me.txt")["Body"].read() == b"mine", "the existing bucket was replaced"


def test_an_access_log_line_is_a_hit(moto, api, trail, mallory, watched, tmp_path):
    tok, src, logs = watched
    entry = intruder_get(moto, trail, mallory, src, "finance/2026-payroll.csv", tmp_path)
    arn = trail.identity(mallory["AccessKeyId"]).arn
    line = ct.access_log_line(entry, requester=arn, bytes_sent=18, object_size=18)
    trail.deliver_access_log(logs, src, [line])
    [hit] = wait_aws_hits(api, tok["canarytoken"], via="s3-access-log", timeout=15)
    assert hit["bucket"] == src, hit
    assert hit["object_key"] == "finance/2026-payroll.csv", hit
    assert hit["operation"] in ("REST.GET.OBJECT", "GetObject"), hit
    assert hit["requester"] == arn, hit
    assert hit["source_ip_address"] == "127.0.0.1", hit
    assert "aws-cli/" in hit["user_agent"], hit
    assert hit["http_status"] in (200, "200"), hit
    incs = api.wait_incidents(tok["canarytoken"])
    assert incs[0]["kind"] == KIND and str(incs[0]["logtype"]) == "17005", incs[0]


def test_a_cloudtrail_data_event_is_a_hit(moto, api, trail, mallory, watched, tmp_path):
    tok, src, _ = watched
    entry = intruder_get(moto, trail, mallory, src, "finance/q4 forecast.xlsx", tmp_path)
    ident = trail.identity(mallory["AccessKeyId"])
    [rec] = ct.records_from_entries([entry], {mallory["AccessKeyId"]: ident})
    assert (rec["eventSource"], rec["eventName"]) == ("s3.amazonaws.com", "GetObject")
    elsewhere = ct.s3_data_event(ident, unique("not-watched"), "finance/q4 forecast.xlsx")
    trail.deliver([elsewhere, rec])
    [hit] = wait_aws_hits(api, tok["canarytoken"], via="cloudtrail", timeout=15)
    assert hit["event_id"] == rec["eventID"], (hit, rec["eventID"])
    assert hit["event_name"] == "GetObject" and hit["event_source"] == "s3.amazonaws.com", hit
    assert hit["bucket"] == src and hit["object_key"] == "finance/q4 forecast.xlsx", hit
    assert hit["user_arn"] == ident.arn and hit["access_key_id"] == mallory["AccessKeyId"], hit
    assert hit["source_ip_address"] == "127.0.0.1" and "aws-cli/" in hit["user_agent"], hit


def test_a_log_bucket_trapline_makes_is_opened_to_s3_logging_and_can_be_shared(api, s3):
    logs = unique("made-logs")
    first, second = unique("made-src-a"), unique("made-src-b")
    new_token(api, KIND, "s3 made a", s3_source_bucket=first, s3_log_bucket=logs)
    [stmt] = json.loads(s3.get_bucket_policy(Bucket=logs)["Policy"])["Statement"]
    assert stmt["Principal"] == {"Service": "logging.s3.amazonaws.com"} and stmt["Action"] == "s3:PutObject", stmt
    assert stmt["Resource"] == f"arn:aws:s3:::{logs}/*", stmt
    assert stmt["Condition"]["StringEquals"]["aws:SourceAccount"] == "123456789012", stmt
    new_token(api, KIND, "s3 made b", s3_source_bucket=second, s3_log_bucket=logs)
    assert s3.get_bucket_logging(Bucket=second)["LoggingEnabled"]["TargetBucket"] == logs


def test_an_existing_log_bucket_that_s3_may_not_write_to_is_a_clear_400(api, s3):
    logs = unique("closed-logs")
    s3.create_bucket(Bucket=logs)
    r = api.post("canarytoken/create", kind=KIND, memo=unique("s3"), s3_source_bucket=unique("src"), s3_log_bucket=logs)
    body = assert_error(r, 400)
    assert "logging.s3.amazonaws.com" in str(body), body
    assert not _has_policy(s3, logs), "Trapline changed the policy of the operator's bucket"


def _has_policy(s3, bucket):
    try:
        s3.get_bucket_policy(Bucket=bucket)
        return True
    except s3.exceptions.ClientError:
        return False

"""CloudTrail ingestion: the `[listeners.cloudtrail]` poller reading the trail bucket (listing
mode) or the SNS/S3 notifications on an SQS queue, against files the emulator writes into moto.

* Each record is one hit, however often CloudTrail delivers it (the same eventID in two files,
  or twice in one file).
* Digest and Insights files are skipped (even when they hold records); a corrupt `.json.gz` is
  logged and skipped, and the files next to it are read; records of other people's keys make no
  hit; a trail prefix and other regions' paths are followed.
* kill -9 in the middle of a 10,000-record delivery (2,000 of them the honey key's), then a
  restart on the same data directory: every honey record recorded exactly once.
* SQS mode: SNS-wrapped, raw and S3-event notifications (one naming two files), S3's TestEvent
  and garbage messages survived, handled messages deleted, and the bucket itself not listed.
* The safety net: a key used with no CloudTrail record becomes a `last-used` hit (service and
  region from GetAccessKeyLastUsed) after the grace; a key whose record arrived does not.
"""

import random
import time
from pathlib import Path

import pytest

import cloudtrail_emu as ct
from awstools import aws_hits, aws_ok, ss_events, ss_provision, wait_aws_hits
from conftest import aws_server, unique, wait_for

KIND = "aws-id"


# --- fixtures ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trail(moto):
    moto.reset()
    return ct.CloudTrailEmulator(moto.url, unique("ingest-trail")).create_bucket()


@pytest.fixture(scope="module")
def server(moto, trail):
    srv = aws_server(moto, bucket=trail.bucket)
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def sqs_trail(moto, trail):
    """A second trail, with a queue (made after `trail` reset moto)."""
    emu = ct.CloudTrailEmulator(moto.url, unique("sqs-trail")).create_bucket()
    emu.create_queue(unique("sqs-trail-q"))
    return emu


@pytest.fixture(scope="module")
def sqs_server(moto, sqs_trail):
    srv = aws_server(moto, bucket=sqs_trail.bucket, sqs_url=sqs_trail.queue_url)
    yield srv
    srv.close()


def honey(api, trail, memo="ingest"):
    """A new aws-id token and the CloudTrail identity of its key."""
    tok = api.create_token(KIND, memo=unique(memo))
    return tok, trail.identity(tok["access_key_id"])


def event_ids(api, tid, via="cloudtrail"):
    return [h["event_id"] for h in aws_hits(api, tid, via)]


def wait_event_ids(api, tid, ids, timeout=15):
    ids = set(ids)
    return wait_for(lambda: (lambda got: got if ids <= set(got) else None)(event_ids(api, tid)), timeout=timeout,
                    interval=0.2, desc=f"hits with event ids {sorted(ids)} for {tid}")


def settle(api, trail, tok, ident, **deliver):
    """A positive control: one more record of the token, delivered after everything else; once
    its hit is in (and one more interval has passed) the earlier files were all read."""
    rec = ct.synthetic_records(ident, 1)[0]
    trail.deliver([rec], **deliver)
    wait_event_ids(api, tok["canarytoken"], [rec["eventID"]])
    time.sleep(1.2)
    return rec


def log_text(server):
    return "\n".join(server.stdout_lines + server.stderr_lines)


# --- listing mode ---------------------------------------------------------------------------------------


def test_listing_startup_line(server, trail):
    assert server.cloudtrail_line is not None and f"s3://{trail.bucket}/" in server.cloudtrail_line, server.output()
    assert "every 1 s" in server.cloudtrail_line, server.cloudtrail_line


def test_a_record_delivered_twice_is_one_hit(server, api, trail):
    tok, ident = honey(api, trail, "dupes")
    tid = tok["canarytoken"]
    a, b = ct.synthetic_records(ident, 2)
    trail.deliver([a])
    trail.deliver([a, ct.make_record(ct.fake_identity(), "ListBuckets", "s3.amazonaws.com")])   # CloudTrail repeats a file's record
    trail.deliver([b, b])                         # ... or a record within one file
    wait_event_ids(api, tid, [a["eventID"], b["eventID"]])
    c = settle(api, trail, tok, ident)
    ids = event_ids(api, tid)
    assert sorted(ids) == sorted([a["eventID"], b["eventID"], c["eventID"]]), \
        f"each record must be one hit, got event ids {ids}"
    admin = ss_provision(server, description="dupes")
    assert ss_events(server, admin, tok["access_key_id"])["count"] == 3


def test_other_regions_and_other_keys(server, api, trail):
    tok, ident = honey(api, trail, "regions")
    tid = tok["canarytoken"]
    rec = ct.make_record(ident, "DescribeInstances", "ec2.amazonaws.com", region="ap-southeast-2")
    trail.deliver([rec] + [ct.make_record(ct.fake_identity(), "GetCallerIdentity", "sts.amazonaws.com")
                           for _ in range(5)], region="ap-southeast-2")
    [hit] = wait_aws_hits(api, tid, via="cloudtrail")
    assert (hit["event_name"], hit["event_region"], hit["event_source"]) == \
        ("DescribeInstances", "ap-southeast-2", "ec2.amazonaws.com"), hit
    # an error code travels with the hit
    denied = ct.make_record(ident, "ListUsers", "iam.amazonaws.com", error_code="AccessDenied",
                            error_message="User is not authorized to perform: iam:ListUsers")
    trail.deliver([denied])
    [h] = wait_aws_hits(api, tid, via="cloudtrail", pred=lambda h: h["event_id"] == denied["eventID"])
    assert (h["error_code"], h["error_message"]) == ("AccessDenied", denied["errorMessage"]), h


def test_digest_insight_and_corrupt_files_are_skipped(server, api, trail):
    tok, ident = honey(api, trail, "corrupt")
    tid = tok["canarytoken"]
    smuggled_digest, smuggled_insight, good = ct.synthetic_records(ident, 3)
    trail.deliver_digest(records=[smuggled_digest])
    trail.deliver_insight([smuggled_insight])
    corrupt = {how: trail.deliver_corrupt(how) for how in ("garbage", "truncated", "not-json", "no-records")}
    trail.deliver([good])
    wait_event_ids(api, tid, [good["eventID"]])
    control = settle(api, trail, tok, ident)
    assert server.alive, f"the server died on a corrupt file\n{server.output()}"
    ids = set(event_ids(api, tid))
    assert smuggled_digest["eventID"] not in ids, "a CloudTrail-Digest file was read as a log file"
    assert smuggled_insight["eventID"] not in ids, "a CloudTrail-Insight file was read as a log file"
    assert ids == {good["eventID"], control["eventID"]}, ids
    for how, key in corrupt.items():
        name = Path(key).name
        wait_for(lambda: name in log_text(server), timeout=5, desc=f"a log line naming the {how} file {name}")


def test_a_trail_prefix_is_followed(moto, request):
    emu = ct.CloudTrailEmulator(moto.url, unique("prefixed"), prefix="org/main-trail/").create_bucket()
    srv = aws_server(moto, bucket=emu.bucket, CLOUDTRAIL_PREFIX="org/main-trail/")
    request.addfinalizer(srv.close)
    assert f"s3://{emu.bucket}/org/main-trail/" in (srv.cloudtrail_line or ""), srv.output()
    api = srv.api()
    tok, ident = honey(api, emu, "prefix")
    inside, outside = ct.synthetic_records(ident, 2)
    emu.put(ct.log_file_key(prefix="elsewhere/"), ct.gz_records([outside]))
    emu.deliver([inside])
    wait_event_ids(api, tok["canarytoken"], [inside["eventID"]])
    settle(api, emu, tok, ident)
    assert outside["eventID"] not in event_ids(api, tok["canarytoken"]), "a file outside the trail's prefix was read"


def test_an_organization_trail_is_read_for_every_member_account_and_region(server, api, trail):
    """Organization trails write `AWSLogs/<org id>/<account>/CloudTrail/<region>/…`: a record of a
    member account's file in another region is found as well as the management account's."""
    tok, ident = honey(api, trail, "org")
    member, mine = ct.synthetic_records(ident, 2)
    key = ct.log_file_key(region="eu-central-1", account="210987654321")
    org_key = key.replace("AWSLogs/", "AWSLogs/o-a1b2c3d4e5/", 1)
    trail.put(org_key, ct.gz_records([member]))
    trail.deliver([mine])
    wait_event_ids(api, tok["canarytoken"], [member["eventID"], mine["eventID"]])


def test_kill9_in_the_middle_of_a_big_delivery_loses_and_repeats_nothing(moto, request):
    emu = ct.CloudTrailEmulator(moto.url, unique("big-trail")).create_bucket()
    srv = aws_server(moto, bucket=emu.bucket)
    request.addfinalizer(srv.close)
    api = srv.api()
    tok, ident = honey(api, emu, "big")
    tid = tok["canarytoken"]
    honey_recs = ct.synthetic_records(ident, 2000)
    strangers = [ct.fake_identity() for _ in range(40)]
    others = [ct.make_record(random.choice(strangers), "GetCallerIdentity", "sts.amazonaws.com") for _ in range(8000)]
    # five files of 2,000 records, 400 of them the honey key's, interleaved
    for i in range(5):
        part = honey_recs[i * 400:(i + 1) * 400] + others[i * 1600:(i + 1) * 1600]
        random.shuffle(part)
        emu.deliver(part)
    seen = wait_for(lambda: len(aws_hits(api, tid, "cloudtrail")), timeout=30, interval=0.02,
                    desc="the first hits of the big delivery")
    srv.kill9()
    print(f"kill -9 with about {seen} of 2000 honey records recorded")
    srv.start()
    api = srv.api()
    wait_for(lambda: len(aws_hits(api, tid, "cloudtrail")) >= 2000, timeout=90, interval=0.5,
             desc="all 2000 honey records after the restart")
    settle(api, emu, tok, ident)
    ids = event_ids(api, tid)
    expected = {r["eventID"] for r in honey_recs}
    assert len(ids) == 2001, f"{len(ids)} hits for 2000 records (+1 control): duplicates or losses"
    assert expected <= set(ids) and len(set(ids)) == len(ids), "some record was recorded twice or never"
    admin = ss_provision(srv, description="big")
    assert ss_events(srv, admin, tok["access_key_id"])["count"] == 2001, "SpaceSiren /event counts otherwise"


# --- SQS mode -----------------------------------------------------------------------------------------


def queue_depth(emu):
    attrs = emu.client("sqs").get_queue_attributes(
        QueueUrl=emu.queue_url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])
    a = attrs["Attributes"]
    return int(a["ApproximateNumberOfMessages"]) + int(a["ApproximateNumberOfMessagesNotVisible"])


def test_sqs_startup_line(sqs_server, sqs_trail):
    line = sqs_server.cloudtrail_line or ""
    assert "sqs" in line and sqs_trail.queue_url in line, sqs_server.output()


def test_sqs_notifications_of_each_style(sqs_server, sqs_trail):
    api = sqs_server.api()
    tok, ident = honey(api, sqs_trail, "sqs")
    tid = tok["canarytoken"]
    recs = ct.synthetic_records(ident, 5)
    sqs_trail.deliver([recs[0]], style="sns")
    sqs_trail.deliver([recs[1]], style="raw")
    sqs_trail.deliver([recs[2]], style="s3")
    k3 = sqs_trail.deliver([recs[3]], notify=False)
    k4 = sqs_trail.deliver([recs[4]], notify=False)
    sqs_trail.notify([k3, k4])                     # one notification naming two files
    wait_event_ids(api, tid, [r["eventID"] for r in recs])
    wait_for(lambda: queue_depth(sqs_trail) == 0, timeout=10, interval=0.2,
             desc="the handled notifications deleted from the queue")
    assert sorted(event_ids(api, tid)) == sorted(r["eventID"] for r in recs)


def test_sqs_survives_test_events_and_garbage(sqs_server, sqs_trail):
    api = sqs_server.api()
    tok, ident = honey(api, sqs_trail, "sqs-garbage")
    for body in (ct.s3_test_event(sqs_trail.bucket), "not json at all", '{"Type": "Notification", "Message": "{"}',
                 ct.sns_envelope(ct.cloudtrail_message(sqs_trail.bucket, ["AWSLogs/123456789012/CloudTrail/nope.json.gz"])),
                 ct.sns_envelope(ct.cloudtrail_message(unique("no-such-bucket"), ["x.json.gz"]))):
        sqs_trail.send_message(body)
    rec = ct.synthetic_records(ident, 1)[0]
    sqs_trail.deliver([rec])
    wait_event_ids(api, tok["canarytoken"], [rec["eventID"]])
    assert sqs_server.alive, sqs_server.output()


def test_sqs_mode_does_not_list_the_bucket(sqs_server, sqs_trail):
    api = sqs_server.api()
    tok, ident = honey(api, sqs_trail, "sqs-nolist")
    silent = ct.synthetic_records(ident, 1)[0]
    sqs_trail.deliver([silent], notify=False)
    settle(api, sqs_trail, tok, ident)
    assert silent["eventID"] not in event_ids(api, tok["canarytoken"]), \
        "in SQS mode a file nobody notified about was read (the bucket was listed)"


# --- the safety net -----------------------------------------------------------------------------------------


def test_safety_net_catches_a_key_used_without_a_cloudtrail_record(server, api, moto, trail, tmp_path):
    seen, ident_seen = honey(api, trail, "net-seen")
    quiet, _ = honey(api, trail, "net-quiet")
    # `seen`: used, and its CloudTrail record delivered at once
    with trail.recording() as rec:
        aws_ok(moto, "sts", "get-caller-identity", home=tmp_path, key=seen["access_key_id"],
               secret=seen["secret_access_key"])
    trail.deliver_entries(rec.entries, {seen["access_key_id"]: ident_seen})
    # `quiet`: used in another region, and CloudTrail never says so
    aws_ok(moto, "sts", "get-caller-identity", home=tmp_path, key=quiet["access_key_id"],
           secret=quiet["secret_access_key"], region="eu-west-2")
    [hit] = wait_aws_hits(api, quiet["canarytoken"], via="last-used", timeout=20)
    assert hit["access_key_id"] == quiet["access_key_id"], hit
    assert hit["event_region"] == "eu-west-2", f"the region of GetAccessKeyLastUsed: {hit}"
    assert hit.get("event_source") in ("sts", "sts.amazonaws.com"), f"the service of GetAccessKeyLastUsed: {hit}"
    assert aws_hits(api, quiet["canarytoken"], via="cloudtrail") == []
    wait_aws_hits(api, seen["canarytoken"], via="cloudtrail")
    time.sleep(2.5)      # more than two last-used polls after the quiet key's hit
    assert len(aws_hits(api, quiet["canarytoken"], via="last-used")) == 1, "the same use raised the safety net twice"
    assert aws_hits(api, seen["canarytoken"], via="last-used") == [], \
        "the safety net fired although the key's CloudTrail record had arrived"
    inc = api.incidents_for(quiet["canarytoken"])
    assert inc and inc[0]["kind"] == KIND, inc

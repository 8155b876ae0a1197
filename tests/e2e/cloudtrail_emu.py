"""A CloudTrail emulator for the end-to-end tests: moto answers AWS calls but writes no trail, so
this module turns the requests moto's recorder saw into the CloudTrail log files (and SNS/SQS
notifications, S3 server access logs) AWS would deliver, and writes them where Trapline's
production poller reads them.

Written by hand because no package emulates CloudTrail delivery: moto's `cloudtrail` gives an
HTTP 500 on lookup-events and never writes log files, and its S3 writes no access logs. The
formats follow the AWS documentation (see spec/openers.md section 10):

* moto's recorder (`POST /moto-api/recorder/start-recording`, `GET …/download-recording`,
  `POST …/stop-recording`, `POST …/reset-recording`) gives one JSON line per request: `headers`,
  `method`, `url`, `body` (base64 when `body_encoded`). It has no response status, so a record
  gets an `errorCode` only when the caller marks the entry (`entry["status"]`/`entry["error_code"]`).
* `record_from_entry` makes a CloudTrail record (eventVersion 1.08) of one request signed with
  one of the given access keys: the service and region from the SigV4 credential scope
  (`Authorization` header or a presigned URL's `X-Amz-Credential`), the event name from
  `Action=` (query protocol), `X-Amz-Target` (JSON protocol) or the S3 method and path.
* `CloudTrailEmulator.deliver` writes `{"Records": [...]}` gzipped to
  `s3://<bucket>/<prefix>AWSLogs/<acct>/CloudTrail/<region>/YYYY/MM/DD/<acct>_CloudTrail_<region>_YYYYMMDDTHHmmZ_<16 alnum>.json.gz`
  and, with a queue, sends the SNS notification `{"s3Bucket": …, "s3ObjectKey": [...]}` (in the
  SNS envelope unless raw delivery) or an S3 event notification.
* Helpers write what a poller must skip (digest and Insights files, corrupt objects), files
  with duplicated records, big synthetic files, S3 server access log objects
  (`<prefix>YYYY-MM-DD-HH-MM-SS-<16 hex>`) and CloudTrail S3 data events.

boto3 (a dependency of moto) writes the objects, with operator credentials the emulator's own
filter never turns into records.
"""

import base64
import datetime as dt
import gzip
import io
import json
import random
import secrets
import string
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, quote_plus, unquote, urlsplit

import requests

ACCOUNT = "123456789012"
# The operator's credentials: moto accepts any key, and maps unknown ones to the default account.
OPERATOR_KEY = "AKIAOPERATORE2ETEST1"
OPERATOR_SECRET = "operator-secret-for-moto-e2e-only-000000"
# The canonical id of the bucket owner as it appears in access logs (any 64 hex digits in moto).
OWNER_CANONICAL_ID = "79a59df900b949e55d96a1e698fbacedfd6e09d98eacf8f8d5218e7cd47ef2be"

ALNUM = string.ascii_letters + string.digits

# --- identities ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """The IAM user behind an access key, as CloudTrail's `userIdentity` shows it."""

    access_key_id: str
    user_name: str
    arn: str
    principal_id: str
    account_id: str = ACCOUNT

    def user_identity(self):
        return {
            "type": "IAMUser",
            "principalId": self.principal_id,
            "arn": self.arn,
            "accountId": self.account_id,
            "accessKeyId": self.access_key_id,
            "userName": self.user_name,
        }


def fake_identity(access_key_id=None, user_name=None):
    """An identity that exists nowhere (for the records of other people's keys)."""
    akid = access_key_id or fake_access_key_id()
    name = user_name or "svc-" + "".join(random.choice(string.ascii_lowercase) for _ in range(8))
    return Identity(akid, name, f"arn:aws:iam::{ACCOUNT}:user/{name}",
                    "AIDA" + "".join(random.choice(string.ascii_uppercase + string.digits) for _ in range(17)))


def fake_access_key_id():
    return "AKIA" + "".join(random.choice(string.ascii_uppercase + "234567") for _ in range(16))


# --- recorder entries ------------------------------------------------------------------------------


def parse_recording(text):
    """moto's download-recording text -> entries (dicts), one per JSON line."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def entry_body(entry):
    body = entry.get("body") or ""
    if entry.get("body_encoded"):
        return base64.b64decode(body)
    return body.encode("utf-8") if isinstance(body, str) else bytes(body)


def _header(entry, name):
    for k, v in (entry.get("headers") or {}).items():
        if k.lower() == name.lower():
            return v
    return None


def credential_scope(entry, default_region="us-east-1"):
    """(access key id, date, region, service) of a signed request, or None. SigV4 names all four
    (Authorization header or a presigned URL's X-Amz-Credential); an S3 SigV2 signature (header
    `AWS AKID:sig`, or the `AWSAccessKeyId` of a URL made by `aws s3 presign`) only the key, so
    the date is None, the service s3 and the region `default_region`."""
    auth = _header(entry, "Authorization") or ""
    query = dict(parse_qsl(urlsplit(entry.get("url", "")).query, keep_blank_values=True))
    cred = None
    if auth.startswith("AWS4-HMAC-SHA256"):
        for part in auth[len("AWS4-HMAC-SHA256"):].split(","):
            part = part.strip()
            if part.startswith("Credential="):
                cred = part[len("Credential="):]
    elif auth.startswith("AWS ") and ":" in auth:
        return auth[4:].split(":", 1)[0], None, default_region, "s3"
    if cred is None:
        cred = query.get("X-Amz-Credential")
    if cred is None and query.get("AWSAccessKeyId"):
        return query["AWSAccessKeyId"], None, default_region, "s3"
    if not cred:
        return None
    parts = cred.split("/")
    if len(parts) != 5 or parts[4] != "aws4_request":
        return None
    return parts[0], parts[1], parts[2], parts[3]


def access_key_of(entry):
    scope = credential_scope(entry)
    return scope[0] if scope else None


def request_time(entry):
    """The request's time from X-Amz-Date (or a presigned URL's), as an aware datetime."""
    stamp = _header(entry, "X-Amz-Date")
    if not stamp:
        query = dict(parse_qsl(urlsplit(entry.get("url", "")).query, keep_blank_values=True))
        stamp = query.get("X-Amz-Date")
    if not stamp and _header(entry, "Date"):
        from email.utils import parsedate_to_datetime
        return parsedate_to_datetime(_header(entry, "Date")).astimezone(dt.timezone.utc)
    if stamp:
        return dt.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.timezone.utc)
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def iso(t):
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _lower_camel(name):
    return name[:1].lower() + name[1:] if name else name


# --- S3 operations --------------------------------------------------------------------------------

# Bucket subresources and the name they give an operation (GetBucketLogging, PutBucketAcl, ...).
_BUCKET_SUBRESOURCES = {
    "acl": "Acl", "policy": "Policy", "logging": "Logging", "versioning": "Versioning",
    "tagging": "Tagging", "cors": "Cors", "lifecycle": "LifecycleConfiguration",
    "encryption": "Encryption", "website": "Website", "notification": "NotificationConfiguration",
    "replication": "Replication", "publicAccessBlock": "PublicAccessBlock",
    "ownershipControls": "OwnershipControls", "requestPayment": "RequestPayment",
    "accelerate": "AccelerateConfiguration", "policyStatus": "PolicyStatus",
    "object-lock": "ObjectLockConfiguration",
}
_OBJECT_SUBRESOURCES = {"acl": "Acl", "tagging": "Tagging", "retention": "Retention",
                        "legal-hold": "LegalHold", "attributes": "Attributes"}
# Operations CloudTrail logs as S3 data events (object level, and object listings).
S3_DATA_EVENTS = {
    "GetObject", "HeadObject", "PutObject", "CopyObject", "DeleteObject", "DeleteObjects",
    "GetObjectAcl", "PutObjectAcl", "GetObjectTagging", "PutObjectTagging", "DeleteObjectTagging",
    "GetObjectAttributes", "ListObjects", "ListObjectVersions", "CreateMultipartUpload",
    "UploadPart", "CompleteMultipartUpload", "AbortMultipartUpload", "ListParts",
}


def s3_target(entry):
    """(bucket or None, key or None, query dict, host) of an S3 request (path or virtual-host style)."""
    url = urlsplit(entry.get("url", ""))
    host = _header(entry, "Host") or url.netloc
    query = dict(parse_qsl(url.query, keep_blank_values=True))
    segments = url.path.lstrip("/").split("/", 1)
    hostname = host.split(":")[0]
    labels = hostname.split(".")
    virtual = len(labels) > 2 and not all(l.isdigit() for l in labels) and ".s3" in hostname \
        and not hostname.startswith("s3.")
    if virtual:
        bucket = labels[0]
        key = unquote(url.path.lstrip("/")) or None
    else:
        bucket = unquote(segments[0]) or None
        key = unquote(segments[1]) if len(segments) > 1 and segments[1] else None
    return bucket, key, query, host


def s3_operation(entry):
    """The CloudTrail eventName of an S3 request, from its method, path and query."""
    method = entry.get("method", "GET").upper()
    bucket, key, query, _ = s3_target(entry)
    verb = {"GET": "Get", "PUT": "Put", "DELETE": "Delete"}.get(method)
    if bucket is None:
        return "ListBuckets" if method == "GET" else f"{method.title()}Service"
    if key is None:
        if method == "GET":
            if "location" in query:
                return "GetBucketLocation"
            if "versions" in query:
                return "ListObjectVersions"
            if "uploads" in query:
                return "ListMultipartUploads"
        if method == "POST" and "delete" in query:
            return "DeleteObjects"
        for sub, name in _BUCKET_SUBRESOURCES.items():
            if sub in query and verb:
                return f"{verb}Bucket{name}"
        return {"GET": "ListObjects", "HEAD": "HeadBucket", "PUT": "CreateBucket",
                "DELETE": "DeleteBucket"}.get(method, f"{method.title()}Bucket")
    if method == "POST" and "uploads" in query:
        return "CreateMultipartUpload"
    if method == "POST" and "uploadId" in query:
        return "CompleteMultipartUpload"
    if method == "PUT" and "partNumber" in query:
        return "UploadPart"
    if method == "DELETE" and "uploadId" in query:
        return "AbortMultipartUpload"
    if method == "GET" and "uploadId" in query:
        return "ListParts"
    for sub, name in _OBJECT_SUBRESOURCES.items():
        if sub in query and verb:
            return f"{verb}Object{name}"
    if method == "PUT" and _header(entry, "x-amz-copy-source"):
        return "CopyObject"
    return {"GET": "GetObject", "HEAD": "HeadObject", "PUT": "PutObject",
            "DELETE": "DeleteObject"}.get(method, f"{method.title()}Object")


def s3_resources(bucket, key, account=ACCOUNT):
    res = []
    if key is not None:
        res.append({"type": "AWS::S3::Object", "ARN": f"arn:aws:s3:::{bucket}/{key}"})
    if bucket is not None:
        res.append({"accountId": account, "type": "AWS::S3::Bucket", "ARN": f"arn:aws:s3:::{bucket}"})
    return res


# --- CloudTrail records ------------------------------------------------------------------------------

_ERROR_BY_STATUS = {400: "ValidationException", 401: "InvalidClientTokenId", 403: "AccessDenied",
                    404: "NoSuchEntity", 409: "Conflict", 429: "ThrottlingException"}


def event_name_and_parameters(entry, service):
    """(eventName, requestParameters or None, S3 bucket, S3 key) of a recorded request."""
    body = entry_body(entry)
    target = _header(entry, "X-Amz-Target")
    if service == "s3":
        bucket, key, query, host = s3_target(entry)
        params = {"Host": host}
        if bucket is not None:
            params["bucketName"] = bucket
        if key is not None:
            params["key"] = key
        params.update({k: v for k, v in query.items()
                       if not k.startswith("X-Amz-") and k not in ("AWSAccessKeyId", "Signature", "Expires")})
        return s3_operation(entry), params, bucket, key
    if target:
        name = target.rsplit(".", 1)[-1]
        try:
            params = json.loads(body) if body else None
        except ValueError:
            params = None
        return name, params or None, None, None
    url_query = urlsplit(entry.get("url", "")).query
    form = dict(parse_qsl(url_query, keep_blank_values=True))
    ctype = (_header(entry, "Content-Type") or "").lower()
    if body and ("x-www-form-urlencoded" in ctype or b"Action=" in body):
        form.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    name = form.pop("Action", None)
    form.pop("Version", None)
    for k in [k for k in form if k.startswith("X-Amz-")]:
        form.pop(k)
    params = {_lower_camel(k): v for k, v in form.items()} or None
    return name or f"{entry.get('method', 'GET').title()}Request", params, None, None


def is_read_only(event_name):
    return event_name.startswith(("Get", "List", "Describe", "Head", "Lookup"))


def make_record(identity, event_name, event_source, region="us-east-1", event_time=None,
                source_ip="127.0.0.1", user_agent="aws-cli/1.46.3 Python/3.11.7 Linux/6 botocore/1.43.62",
                request_parameters=None, error_code=None, error_message=None, event_id=None,
                resources=None, data_event=None, response_elements=None):
    """One CloudTrail record (eventVersion 1.08) of an API call made with `identity`'s key."""
    t = event_time or dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    if data_event is None:
        data_event = event_source == "s3.amazonaws.com" and event_name in S3_DATA_EVENTS
    rec = {
        "eventVersion": "1.08",
        "userIdentity": identity.user_identity(),
        "eventTime": iso(t) if isinstance(t, dt.datetime) else t,
        "eventSource": event_source,
        "eventName": event_name,
        "awsRegion": region,
        "sourceIPAddress": source_ip,
        "userAgent": user_agent,
        "requestParameters": request_parameters,
        "responseElements": response_elements,
        "requestID": uuid.uuid4().hex[:16].upper() if data_event else str(uuid.uuid4()),
        "eventID": event_id or str(uuid.uuid4()),
        "readOnly": is_read_only(event_name),
        "eventType": "AwsApiCall",
        "managementEvent": not data_event,
        "recipientAccountId": identity.account_id,
        "eventCategory": "Data" if data_event else "Management",
    }
    if resources is not None:
        rec["resources"] = resources
    if error_code:
        rec["errorCode"] = error_code
        rec["errorMessage"] = error_message or f"{error_code} (emulated)"
    return rec


def record_from_entry(entry, identities, account=ACCOUNT):
    """The CloudTrail record of one recorded request, or None when it was not signed with one
    of `identities` (a dict access key id -> Identity)."""
    scope = credential_scope(entry)
    if scope is None or scope[0] not in identities:
        return None
    akid, _date, region, service = scope
    name, params, bucket, key = event_name_and_parameters(entry, service)
    status = entry.get("status")
    error = entry.get("error_code") or (_ERROR_BY_STATUS.get(status, "ClientError")
                                         if isinstance(status, int) and status >= 400 else None)
    data_event = service == "s3" and name in S3_DATA_EVENTS
    return make_record(
        identities[akid], name, f"{service}.amazonaws.com", region=region, event_time=request_time(entry),
        source_ip="127.0.0.1", user_agent=_header(entry, "User-Agent") or "",
        request_parameters=params, error_code=error, error_message=entry.get("error_message"),
        resources=s3_resources(bucket, key, account) if data_event else None, data_event=data_event)


def records_from_entries(entries, identities, account=ACCOUNT):
    """The CloudTrail records of the entries signed with one of `identities`, in order."""
    out = []
    for e in entries:
        rec = record_from_entry(e, identities, account)
        if rec is not None:
            out.append(rec)
    return out


def s3_data_event(identity, bucket, key, event_name="GetObject", region="us-east-1", event_time=None,
                  source_ip="127.0.0.1", user_agent="aws-cli/1.46.3", host=None, error_code=None):
    """A CloudTrail S3 data event (eventSource s3.amazonaws.com) on `bucket`/`key`."""
    params = {"bucketName": bucket, "Host": host or f"{bucket}.s3.{region}.amazonaws.com"}
    if key is not None:
        params["key"] = key
    return make_record(identity, event_name, "s3.amazonaws.com", region=region, event_time=event_time,
                       source_ip=source_ip, user_agent=user_agent, request_parameters=params,
                       error_code=error_code, resources=s3_resources(bucket, key), data_event=True)


# --- S3 server access logs ------------------------------------------------------------------------------


def access_log_operation(entry):
    """REST.GET.OBJECT, REST.HEAD.BUCKET, REST.GET.LOGGING_STATUS... of an S3 request."""
    method = entry.get("method", "GET").upper()
    bucket, key, query, _ = s3_target(entry)
    if key is not None:
        for sub in ("acl", "tagging"):
            if sub in query:
                return f"REST.{method}.{sub.upper()}"
        if "uploads" in query:
            return "REST.POST.UPLOADS"
        if "uploadId" in query:
            return f"REST.{method}.UPLOAD" if method != "PUT" else "REST.PUT.PART"
        if method == "PUT" and _header(entry, "x-amz-copy-source"):
            return "REST.COPY.OBJECT"
        return f"REST.{method}.OBJECT"
    if bucket is None:
        return f"REST.{method}.SERVICE"
    named = {"logging": "LOGGING_STATUS", "location": "LOCATION", "acl": "ACL", "policy": "BUCKETPOLICY",
             "versioning": "VERSIONING", "tagging": "TAGGING", "versions": "BUCKETVERSIONS",
             "uploads": "UPLOADS", "delete": "MULTI_OBJECT_DELETE"}
    for sub, name in named.items():
        if sub in query:
            return f"REST.{method}.{name}"
    return f"REST.{method}.BUCKET"


def _quoted(value):
    if value is None or value == "":
        return '"-"'
    return '"' + str(value).replace('"', '\\"') + '"'


def access_log_line(entry=None, *, bucket=None, key=None, operation=None, request_uri=None, requester="-",
                    remote_ip="127.0.0.1", status=200, error_code=None, bytes_sent=None, object_size=None,
                    user_agent=None, when=None, host=None, request_id=None, auth_type="AuthHeader"):
    """One S3 server access log line, in the documented field order: bucket owner, bucket,
    [time], remote IP, requester, request id, operation, key, "request-URI", status, error code,
    bytes sent, object size, total time, turn-around time, "referrer", "user agent", version id,
    host id, signature version, cipher suite, authentication type, host header, TLS version,
    access point ARN, ACL required. From a recorded `entry`, or from the keyword fields."""
    if entry is not None:
        b, k, _, h = s3_target(entry)
        bucket = bucket or b
        key = key if key is not None else k
        operation = operation or access_log_operation(entry)
        url = urlsplit(entry.get("url", ""))
        request_uri = request_uri or f"{entry.get('method', 'GET').upper()} {url.path}" + \
            (f"?{url.query}" if url.query else "") + " HTTP/1.1"
        user_agent = user_agent if user_agent is not None else _header(entry, "User-Agent")
        when = when or request_time(entry)
        host = host or h
        sig = "SigV4" if credential_scope(entry) else "-"
    else:
        sig = "SigV4"
        request_uri = request_uri or f"GET /{bucket}/{quote(key or '')} HTTP/1.1"
        operation = operation or "REST.GET.OBJECT"
    when = when or dt.datetime.now(dt.timezone.utc)
    stamp = when.astimezone(dt.timezone.utc).strftime("[%d/%b/%Y:%H:%M:%S +0000]")
    fields = [
        OWNER_CANONICAL_ID,
        bucket,
        stamp,
        remote_ip,
        requester or "-",
        request_id or secrets.token_hex(8).upper(),
        operation,
        quote(key, safe="/") if key else "-",
        _quoted(request_uri),
        str(status),
        error_code or "-",
        str(bytes_sent) if bytes_sent is not None else "-",
        str(object_size) if object_size is not None else "-",
        str(random.randint(5, 60)),
        str(random.randint(1, 5)),
        '"-"',
        _quoted(user_agent),
        "-",
        base64.b64encode(secrets.token_bytes(56)).decode(),
        sig,
        "-",
        auth_type if sig != "-" else "-",
        host or f"{bucket}.s3.us-east-1.amazonaws.com",
        "-",
        "-",
        "-",
    ]
    return " ".join(fields)


def parse_access_log_line(line):
    """Split an access log line into its fields ([time] and "quoted" fields kept whole, unquoted)."""
    out, i, n = [], 0, len(line)
    while i < n:
        if line[i] == " ":
            i += 1
            continue
        if line[i] == "[":
            j = line.index("]", i)
            out.append(line[i + 1:j])
            i = j + 1
        elif line[i] == '"':
            j = i + 1
            buf = []
            while line[j] != '"':
                if line[j] == "\\" and j + 1 < n:
                    j += 1
                buf.append(line[j])
                j += 1
            out.append("".join(buf))
            i = j + 1
        else:
            j = line.find(" ", i)
            j = n if j < 0 else j
            out.append(line[i:j])
            i = j
    return out


ACCESS_LOG_FIELDS = [
    "bucket_owner", "bucket", "time", "remote_ip", "requester", "request_id", "operation", "key",
    "request_uri", "http_status", "error_code", "bytes_sent", "object_size", "total_time",
    "turn_around_time", "referrer", "user_agent", "version_id", "host_id", "signature_version",
    "cipher_suite", "authentication_type", "host_header", "tls_version", "access_point_arn",
    "acl_required",
]


# --- file names ---------------------------------------------------------------------------------------


def unique_string(n=16):
    return "".join(secrets.choice(ALNUM) for _ in range(n))


def log_file_key(region="us-east-1", when=None, prefix="", account=ACCOUNT, kind="CloudTrail"):
    """`<prefix>AWSLogs/<acct>/CloudTrail/<region>/YYYY/MM/DD/<acct>_CloudTrail_<region>_YYYYMMDDTHHmmZ_<16>.json.gz`
    (`kind` CloudTrail-Insight gives an Insights file's key)."""
    t = (when or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc)
    return (f"{prefix}AWSLogs/{account}/{kind}/{region}/{t:%Y/%m/%d}/"
            f"{account}_{kind}_{region}_{t:%Y%m%dT%H%MZ}_{unique_string()}.json.gz")


def digest_file_key(region="us-east-1", when=None, prefix="", account=ACCOUNT, trail="management-events"):
    t = (when or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc)
    return (f"{prefix}AWSLogs/{account}/CloudTrail-Digest/{region}/{t:%Y/%m/%d}/"
            f"{account}_CloudTrail-Digest_{region}_{trail}_{region}_{t:%Y%m%dT%H%M%SZ}.json.gz")


def access_log_key(source_bucket, when=None, prefix=None):
    """`<source bucket>/YYYY-MM-DD-HH-MM-SS-<16 hex>` (the log object's key under its target prefix)."""
    t = (when or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc)
    p = f"{source_bucket}/" if prefix is None else prefix
    return f"{p}{t:%Y-%m-%d-%H-%M-%S}-{secrets.token_hex(8).upper()}"


def gz_records(records):
    return gzip.compress(json.dumps({"Records": records}).encode("utf-8"))


# --- notifications ----------------------------------------------------------------------------------------


def cloudtrail_message(bucket, keys):
    return json.dumps({"s3Bucket": bucket, "s3ObjectKey": list(keys)})


def sns_envelope(message, topic=f"arn:aws:sns:us-east-1:{ACCOUNT}:cloudtrail-logs"):
    return json.dumps({
        "Type": "Notification",
        "MessageId": str(uuid.uuid4()),
        "TopicArn": topic,
        "Message": message,
        "Timestamp": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "SignatureVersion": "1",
        "Signature": base64.b64encode(secrets.token_bytes(64)).decode(),
        "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0000.pem",
        "UnsubscribeURL": f"https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn={topic}:1",
    })


def s3_event_notification(bucket, keys, region="us-east-1"):
    """An S3 `ObjectCreated:Put` event notification (keys URL-encoded, `+` for a space)."""
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return json.dumps({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": region, "eventTime": now,
        "eventName": "ObjectCreated:Put",
        "userIdentity": {"principalId": "AWS:CLOUDTRAIL"},
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "trail-objects",
               "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
               "object": {"key": quote_plus(k, safe="/"), "size": 1, "sequencer": secrets.token_hex(8).upper()}},
    } for k in keys]})


def s3_test_event(bucket):
    return json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent",
                       "Time": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                       "Bucket": bucket, "RequestId": secrets.token_hex(8).upper(),
                       "HostId": base64.b64encode(secrets.token_bytes(32)).decode()})


# --- the emulator ---------------------------------------------------------------------------------------------


class Recording:
    """What moto's recorder saw inside one `CloudTrailEmulator.recording()` block."""

    def __init__(self):
        self.entries = []

    def signed_by(self, *access_key_ids):
        return [e for e in self.entries if access_key_of(e) in access_key_ids]


class CloudTrailEmulator:
    """Delivers CloudTrail files (and notifications, access logs) for one trail into moto.

    `endpoint` is moto's URL; `bucket` the trail's bucket (created by `create_bucket`), `prefix`
    its key prefix before `AWSLogs/`, `queue_url` an SQS queue for notifications."""

    def __init__(self, endpoint, bucket, prefix="", queue_url=None, account=ACCOUNT, region="us-east-1"):
        self.endpoint = endpoint.rstrip("/")
        self.bucket = bucket
        self.prefix = prefix
        self.queue_url = queue_url
        self.account = account
        self.region = region
        self.delivered = []   # object keys written, in order

    # --- clients
    def client(self, service):
        import boto3
        return boto3.client(service, endpoint_url=self.endpoint, region_name=self.region,
                            aws_access_key_id=OPERATOR_KEY, aws_secret_access_key=OPERATOR_SECRET)

    def create_bucket(self):
        self.client("s3").create_bucket(Bucket=self.bucket)
        return self

    def create_queue(self, name):
        self.queue_url = self.client("sqs").create_queue(QueueName=name)["QueueUrl"]
        return self.queue_url

    # --- moto's recorder
    def _recorder(self, action, method="POST"):
        r = requests.request(method, f"{self.endpoint}/moto-api/recorder/{action}", timeout=30)
        assert r.status_code == 200, f"moto recorder {action}: {r.status_code} {r.text[:200]}"
        return r.text

    @contextmanager
    def recording(self):
        """Record every request moto answers inside the block; the Recording's entries are
        filled in when the block ends (the recorder is global: one block at a time)."""
        rec = Recording()
        self._recorder("reset-recording")
        self._recorder("start-recording")
        try:
            yield rec
        finally:
            self._recorder("stop-recording")
            rec.entries = parse_recording(self._recorder("download-recording", "GET"))
            self._recorder("reset-recording")

    # --- identities
    def identity(self, access_key_id):
        """The Identity of a key that exists in moto's IAM (found through the operator's view)."""
        iam = self.client("iam")
        for page in iam.get_paginator("list_users").paginate():
            for user in page["Users"]:
                keys = iam.list_access_keys(UserName=user["UserName"])["AccessKeyMetadata"]
                if any(k["AccessKeyId"] == access_key_id for k in keys):
                    return Identity(access_key_id, user["UserName"], user["Arn"], user["UserId"], self.account)
        raise AssertionError(f"access key {access_key_id} belongs to no IAM user in moto")

    # --- delivery
    def put(self, key, data):
        self.client("s3").put_object(Bucket=self.bucket, Key=key, Body=data)
        self.delivered.append(key)
        return key

    def notify(self, keys, style="sns", bucket=None):
        """Send a notification for `keys`: `sns` (SNS envelope around the CloudTrail message),
        `raw` (the CloudTrail message alone) or `s3` (an S3 event notification)."""
        assert self.queue_url, "no SQS queue for notifications"
        bucket = bucket or self.bucket
        if style == "sns":
            body = sns_envelope(cloudtrail_message(bucket, keys))
        elif style == "raw":
            body = cloudtrail_message(bucket, keys)
        elif style == "s3":
            body = s3_event_notification(bucket, keys, self.region)
        else:
            raise ValueError(style)
        self.send_message(body)
        return body

    def send_message(self, body):
        self.client("sqs").send_message(QueueUrl=self.queue_url, MessageBody=body)

    def deliver(self, records, region=None, when=None, notify=None, style="sns", key=None):
        """Write one log file of `records`; notify the queue (by default when there is one).
        -> the object key."""
        key = key or log_file_key(region or self.region, when, self.prefix, self.account)
        self.put(key, gz_records(records))
        if notify if notify is not None else bool(self.queue_url):
            self.notify([key], style)
        return key

    def deliver_entries(self, entries, identities, **kw):
        """The CloudTrail file of the recorded requests signed by `identities`; -> (key, records)."""
        records = records_from_entries(entries, identities, self.account)
        return self.deliver(records, **kw), records

    def deliver_digest(self, records=None, region=None, notify=None):
        """A digest file (CloudTrail-Digest/), which a poller must skip. `records` smuggles a
        Records array into it, so a poller that reads it anyway would record them."""
        key = digest_file_key(region or self.region, prefix=self.prefix, account=self.account)
        body = {
            "awsAccountId": self.account,
            "digestStartTime": iso(dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)),
            "digestEndTime": iso(dt.datetime.now(dt.timezone.utc)),
            "digestS3Bucket": self.bucket, "digestS3Object": key,
            "digestPublicKeyFingerprint": secrets.token_hex(16), "digestSignatureAlgorithm": "SHA256withRSA",
            "newestEventTime": iso(dt.datetime.now(dt.timezone.utc)), "oldestEventTime": None,
            "previousDigestS3Bucket": None, "previousDigestS3Object": None, "previousDigestHashValue": None,
            "previousDigestHashAlgorithm": None, "previousDigestSignature": None,
            "logFiles": [{"s3Bucket": self.bucket, "s3Object": k, "hashValue": secrets.token_hex(32),
                          "hashAlgorithm": "SHA-256", "newestEventTime": iso(dt.datetime.now(dt.timezone.utc)),
                          "oldestEventTime": iso(dt.datetime.now(dt.timezone.utc))} for k in self.delivered[-3:]],
        }
        if records:
            body["Records"] = records
        self.put(key, gzip.compress(json.dumps(body).encode()))
        if notify if notify is not None else bool(self.queue_url):
            self.notify([key])
        return key

    def deliver_insight(self, records, region=None, notify=None):
        """An Insights file (CloudTrail-Insight/), which a poller must skip, holding `records`."""
        key = log_file_key(region or self.region, prefix=self.prefix, account=self.account, kind="CloudTrail-Insight")
        self.put(key, gz_records(records))
        if notify if notify is not None else bool(self.queue_url):
            self.notify([key])
        return key

    def deliver_corrupt(self, how="garbage", region=None, notify=None):
        """A `.json.gz` log file that cannot be read: `garbage` (not gzip), `truncated` (gzip cut
        short), `not-json` (gzip of text), `no-records` (JSON without a Records array)."""
        if how == "garbage":
            data = secrets.token_bytes(512)
        elif how == "truncated":
            full = gz_records([make_record(fake_identity(), "GetCallerIdentity", "sts.amazonaws.com")] * 20)
            data = full[: len(full) // 2]
        elif how == "not-json":
            data = gzip.compress(b"this is not json {")
        elif how == "no-records":
            data = gzip.compress(json.dumps({"Records": "nope", "other": [1, 2]}).encode())
        else:
            raise ValueError(how)
        key = log_file_key(region or self.region, prefix=self.prefix, account=self.account)
        self.put(key, data)
        if notify if notify is not None else bool(self.queue_url):
            self.notify([key])
        return key

    def deliver_access_log(self, log_bucket, source_bucket, lines, prefix=None, when=None):
        """Write S3 server access log lines as AWS does: one object `<prefix>YYYY-MM-DD-HH-MM-SS-<16 hex>`
        in the log bucket (prefix `<source bucket>/` by default). -> the key."""
        key = access_log_key(source_bucket, when, prefix)
        self.client("s3").put_object(Bucket=log_bucket, Key=key, Body=("\n".join(lines) + "\n").encode())
        return key


def synthetic_records(identity, n, names=("GetCallerIdentity", "ListBuckets", "GetAccessKeyInfo", "ListUsers"),
                      start=None):
    """`n` distinct records of `identity`'s key (eventIDs unique), one second apart."""
    t0 = start or (dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(seconds=n))
    sources = {"GetCallerIdentity": "sts.amazonaws.com", "GetAccessKeyInfo": "sts.amazonaws.com",
               "ListBuckets": "s3.amazonaws.com", "ListUsers": "iam.amazonaws.com"}
    out = []
    for i in range(n):
        name = names[i % len(names)]
        out.append(make_record(identity, name, sources.get(name, "sts.amazonaws.com"),
                               event_time=t0 + dt.timedelta(seconds=i),
                               request_parameters={"Host": "s3.amazonaws.com"} if name == "ListBuckets" else None,
                               user_agent=f"aws-cli/1.46.3 synthetic/{i}"))
    return out


def gunzip_json(data):
    return json.load(io.TextIOWrapper(gzip.GzipFile(fileobj=io.BytesIO(data)), encoding="utf-8"))

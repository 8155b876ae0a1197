#!/usr/bin/env python3
"""Makes the fuzz targets' seed corpora (fuzz/corpus/<target>/) from real traffic.

Starts a `trapline serve` on loopback, puts a recording relay in front of its DNS listener and a
recording proxy in front of its API and trigger listeners, then drives them with the real
clients: dig for DNS queries, curl for Console forms, JSON and multipart uploads, SpaceSiren and
Falcon bodies and trigger requests, and falconpy (from ./.venv, when it is there) for Falcon's own
query strings. What the clients sent becomes the seeds, in each target's input format (see the
doc comment of each file in fuzz_targets/). FQL seeds are the filters the end-to-end tests use;
cursors are the ones the server handed out. Scanner reports are written here in the shape the
scanner page's script posts. CloudTrail log files, SQS notifications and S3 access logs come
from AWS, not from Trapline, so they are written here (first, needing no server) in the shapes
AWS documents and the end-to-end tests' CloudTrail emulator writes. PDF uploads are LibreOffice's
and qpdf's (classic, object streams, linearized, QDF, encrypted, cut short) when those are
installed, and the server's own generated PDF.

Usage: fuzz/make_corpus.py [TRAPLINE_BIN]   (default target/debug/trapline; needs dig and curl)
Existing seeds are kept; files are named by content hash, so reruns add only what is new.
SEEDS_ONLY=TARGET writes the seeds of that target alone (the rest of a run makes new token ids,
which would otherwise add seeds to every other target too).

OOXML uploads (ooxml_inject) are documents LibreOffice saves (when soffice is installed), the
documents Trapline itself makes (downloaded from the server), and hand-written packages with the
section, footer and drawing shapes the injectors handle; each raw, and split into its XML parts
(the target's structured mode).
"""
import base64
import hashlib
import http.client
import http.server
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")
BIN = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target", "debug", "trapline")
DOMAIN, NX = "trapline.test", "nx.trapline.test"


# Secrets of the throwaway server, blanked (same length) in the seeds so none is committed.
SECRETS = []


def seed(target, data):
    if os.environ.get("SEEDS_ONLY", target) != target:
        return
    if isinstance(data, str):
        data = data.encode()
    for secret in SECRETS:
        data = data.replace(secret.encode(), b"0" * len(secret))
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()[:16]), "wb") as f:
        f.write(data)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


# --- AWS: CloudTrail log files, SQS notifications, S3 access logs (AWS's documented shapes) ----
def aws_seeds():
    import gzip
    acct, key_id = "123456789012", "AKIAIOSFODNN7EXAMPLE"
    ident = {"type": "IAMUser", "principalId": "AIDAEXAMPLEPRINCIPAL", "arn": f"arn:aws:iam::{acct}:user/svc-backup",
             "accountId": acct, "accessKeyId": key_id, "userName": "svc-backup"}
    common = {"eventVersion": "1.08", "userIdentity": ident, "awsRegion": "us-east-1",
              "sourceIPAddress": "203.0.113.9", "userAgent": "aws-cli/1.46.3 Python/3.12.3 Linux/6.8 botocore/1.38",
              "readOnly": True, "eventType": "AwsApiCall", "managementEvent": True,
              "recipientAccountId": acct, "eventCategory": "Management",
              "tlsDetails": {"tlsVersion": "TLSv1.3", "cipherSuite": "TLS_AES_128_GCM_SHA256"}}
    records = [
        {**common, "eventTime": "2024-03-05T10:11:12Z", "eventSource": "sts.amazonaws.com",
         "eventName": "GetCallerIdentity", "requestParameters": None, "responseElements": None,
         "requestID": "9f3c1a2b-0000-4000-8000-000000000001", "eventID": "0d5a8c3e-1111-4d2b-9f00-000000000001"},
        {**common, "eventTime": "2024-03-05T10:11:13Z", "eventSource": "iam.amazonaws.com", "eventName": "ListUsers",
         "errorCode": "AccessDenied",
         "errorMessage": f"User: arn:aws:iam::{acct}:user/svc-backup is not authorized to perform: iam:ListUsers "
                         f"on resource: arn:aws:iam::{acct}:user/ with an explicit deny in an identity-based policy",
         "requestParameters": {"maxItems": 100}, "eventID": "0d5a8c3e-1111-4d2b-9f00-000000000002"},
        {**common, "eventTime": "2024-03-05T10:11:14.250Z", "eventSource": "s3.amazonaws.com", "eventName": "GetObject",
         "awsRegion": "eu-west-1", "eventCategory": "Data", "managementEvent": False,
         "requestParameters": {"bucketName": "honey-bucket", "Host": "honey-bucket.s3.eu-west-1.amazonaws.com",
                               "key": "payroll/2024 Q1.xlsx"},
         "resources": [{"type": "AWS::S3::Object", "ARN": "arn:aws:s3:::honey-bucket/payroll/2024 Q1.xlsx"},
                       {"accountId": acct, "type": "AWS::S3::Bucket", "ARN": "arn:aws:s3:::honey-bucket"}],
         "eventID": "0d5a8c3e-1111-4d2b-9f00-000000000003"},
        {"eventVersion": "1.08", "userIdentity": {"type": "AWSService", "invokedBy": "s3.amazonaws.com"},
         "eventTime": "2024-03-05T10:11:15Z", "eventSource": "sts.amazonaws.com", "eventName": "AssumeRole",
         "awsRegion": "us-east-1", "sourceIPAddress": "s3.amazonaws.com", "userAgent": "s3.amazonaws.com",
         "eventID": "0d5a8c3e-1111-4d2b-9f00-000000000004"},
    ]
    files = [
        {"Records": records},
        {"Records": records[2:3]},
        {"Records": []},
        {"Records": [records[0], {"digestStartTime": "2024-03-05T09:00:00Z", "logFiles": []}, "x", 7, None]},
        {"awsAccountId": acct, "digestStartTime": "2024-03-05T09:00:00Z", "digestEndTime": "2024-03-05T10:00:00Z",
         "digestS3Bucket": "trail-bucket", "logFiles": [], "digestSignatureAlgorithm": "SHA256withRSA"},
    ]
    for f in files:
        body = json.dumps(f).encode()
        seed("cloudtrail_file", b"\x01" + body)
        seed("cloudtrail_file", b"\x00" + gzip.compress(body, mtime=0))
    gz = gzip.compress(json.dumps(files[0]).encode(), mtime=0)
    seed("cloudtrail_file", b"\x00" + gz[: len(gz) // 2])
    seed("cloudtrail_file", b"\x00" + gzip.compress(b'{"Records":[', mtime=0) + gzip.compress(b"]}", mtime=0))
    seed("cloudtrail_file", b"\x03" + json.dumps(files[1]).encode())

    log_key = f"AWSLogs/{acct}/CloudTrail/us-east-1/2024/03/05/{acct}_CloudTrail_us-east-1_20240305T1015Z_aB3dE5fG7hI9jK1l.json.gz"
    trail = {"s3Bucket": "trail-bucket", "s3ObjectKey": [log_key]}
    s3_event = {"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1", "eventTime": "2024-03-05T10:16:00.000Z",
        "eventName": "ObjectCreated:Put", "userIdentity": {"principalId": "AWS:AROAEXAMPLE:regionalDeliverySession"},
        "requestParameters": {"sourceIPAddress": "10.0.0.1"}, "responseElements": {"x-amz-request-id": "C3D13FE58DE4C810"},
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "trail-logs",
               "bucket": {"name": "trail-bucket", "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                          "arn": "arn:aws:s3:::trail-bucket"},
               "object": {"key": urllib.parse.quote_plus(log_key, safe="/"), "size": 1024, "eTag": "d41d8cd98f00b204e9800998ecf8427e",
                          "sequencer": "0055AED6DCD90281E5"}}}]}
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2024-03-05T10:00:00.000Z",
                  "Bucket": "trail-bucket", "RequestId": "5582815E1AEA5ADF", "HostId": "8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB9wrR+YstdA6Knx4Ip8EXAMPLE"}

    def sns(message):
        return {"Type": "Notification", "MessageId": "5f8e4c1a-0000-4000-8000-000000000001",
                "TopicArn": f"arn:aws:sns:us-east-1:{acct}:trail-topic", "Message": json.dumps(message),
                "Timestamp": "2024-03-05T10:16:01.123Z", "SignatureVersion": "1", "Signature": "c2lnbmF0dXJl",
                "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0000.pem",
                "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=x"}
    for m in [trail, s3_event, test_event]:
        seed("cloudtrail_notification", json.dumps(m))
        seed("cloudtrail_notification", json.dumps(sns(m)))
    seed("cloudtrail_notification", json.dumps({
        "Type": "SubscriptionConfirmation", "MessageId": "m", "Token": "0" * 32,
        "TopicArn": f"arn:aws:sns:us-east-1:{acct}:trail-topic", "Message": "You have chosen to subscribe to the topic",
        "SubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription", "Timestamp": "2024-03-05T10:00:00.000Z"}))

    owner = "79a59df900b949e55d96a1e698fbacedfd6e09d98eacf8f8d5218e7cd47ef2be"
    lines = [
        f'{owner} honey-bucket [06/Feb/2019:00:00:38 +0000] 192.0.2.3 {owner} 3E57427F3EXAMPLE REST.GET.VERSIONING - '
        f'"GET /honey-bucket?versioning HTTP/1.1" 200 - 113 - 7 - "-" "S3Console/0.4" - '
        f's9lzHYrFp76ZVxRcpX9+5cjAnEH2ROuNkd2BHfIa6UkFVdtjf5mKR3/eTPFvsiP/XV/VLi31234= SigV4 ECDHE-RSA-AES128-GCM-SHA256 '
        f'AuthHeader honey-bucket.s3.us-west-1.amazonaws.com TLSV1.2 arn:aws:s3:us-west-1:{acct}:accesspoint/example-AP Yes',
        f'{owner} honey-bucket [06/Feb/2019:00:01:57 +0000] 198.51.100.7 arn:aws:iam::{acct}:user/svc-backup '
        f'A1206F460EXAMPLE REST.GET.OBJECT payroll/2024%20Q1.xlsx "GET /payroll/2024%20Q1.xlsx?x-id=GetObject HTTP/1.1" '
        f'403 AccessDenied 243 - 24 - "-" "aws-cli/1.46.3 md/Botocore#1.38" - HostIdExample= SigV4 '
        f'TLS_AES_128_GCM_SHA256 AuthHeader s3.dualstack.eu-west-1.amazonaws.com TLSv1.3 - - us-east-1',
        f'{owner} honey-bucket [31/Dec/2015:23:59:59 -0500] 203.0.113.250 - 7B4A0FABBEXAMPLE WEBSITE.GET.OBJECT index.html '
        f'"GET /index.html HTTP/1.1" 304 - - 4242 10 9 "https://example.com/?q=\\"x\\"" "curl/8.5.0" -',
    ]
    for line in lines:
        seed("s3_access_log", line + "\n")
    seed("s3_access_log", "\n".join(lines) + "\n\nnot a log line\r\n")


# --- PE images for pe_sign: tiny ones made here, and one signed by osslsigncode ------------------
def tiny_pe(pe32_plus, sections, tail=0):
    """A small well-formed image (the shape of `tiny_pe` in src/artefacts/pe.rs)."""
    import struct
    opt_size = 240 if pe32_plus else 224
    b = bytearray(512)
    b[0:2] = b"MZ"
    b[0x3C:0x40] = struct.pack("<I", 0x80)
    b[0x80:0x84] = b"PE\0\0"
    struct.pack_into("<HHIIIHH", b, 0x84, 0x8664, sections, 0, 0, 0, opt_size, 0x0022)
    opt = 0x84 + 20
    struct.pack_into("<H", b, opt, 0x20B if pe32_plus else 0x10B)
    struct.pack_into("<I", b, opt + 36, 512)
    struct.pack_into("<I", b, opt + 60, 512)
    struct.pack_into("<I", b, opt + (108 if pe32_plus else 92), 16)
    for i in range(sections):
        at = opt + opt_size + 40 * i
        b[at:at + 8] = f".s{i:02}".encode().ljust(8, b"\0")
        struct.pack_into("<II", b, at + 16, 512, 512 + 512 * i)
    for i in range(sections):
        b += bytes((i * 7 + j) & 0xFF for j in range(512))
    return bytes(b + bytes((j ^ 0x5A) & 0xFF for j in range(tail)))


def pe_seeds():
    seed("pe_sign", tiny_pe(True, 2))
    seed("pe_sign", tiny_pe(False, 1, tail=13))
    seed("pe_sign", tiny_pe(True, 2)[:400])
    seed("pe_sign", b"MZ" + b"\0" * 62)
    osslsigncode, openssl = shutil.which("osslsigncode"), shutil.which("openssl")
    if not (osslsigncode and openssl):
        print("pe_sign: no osslsigncode/openssl, no signed seed")
        return
    with tempfile.TemporaryDirectory() as d:
        key, cert, src, out = (os.path.join(d, n) for n in ("k.pem", "c.pem", "in.exe", "out.exe"))
        subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-keyout", key, "-out", cert, "-days", "30", "-subj", "/CN=seed"],
                       check=True, capture_output=True)
        with open(src, "wb") as f:
            f.write(tiny_pe(False, 1, tail=5))
        subprocess.run([osslsigncode, "sign", "-certs", cert, "-key", key, "-h", "sha256", "-in", src, "-out", out],
                       check=True, capture_output=True)
        with open(out, "rb") as f:
            seed("pe_sign", f.read())


aws_seeds()
pe_seeds()


# --- PDF uploads, made by real tools (LibreOffice and qpdf, when installed) -----------------------
def pdf_seeds():
    if not shutil.which("qpdf"):
        print("note: qpdf not found; no PDF seeds but the server's own", file=sys.stderr)
        return
    tmp = tempfile.mkdtemp(prefix="trapline-pdf-seeds-")
    base = os.path.join(tmp, "notes.pdf")
    if shutil.which("soffice"):
        with open(os.path.join(tmp, "notes.txt"), "w") as f:
            f.write("Trustees meeting\nItem 4: noted.\n")
        p = subprocess.Popen(["soffice", f"-env:UserInstallation=file://{tmp}/lo", "--headless", "--convert-to",
                              "pdf", "--outdir", tmp, os.path.join(tmp, "notes.txt")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            p.wait(timeout=120)
        finally:
            try:
                os.killpg(p.pid, 9)
            except ProcessLookupError:
                pass
    if not os.path.exists(base):
        # No LibreOffice: qpdf rewrites the hand-made hybrid file instead.
        with open(base, "wb") as f:
            f.write(hybrid_pdf())
    variants = {"plain": [], "classic": ["--object-streams=disable"], "objstm": ["--object-streams=generate"],
                "linearized": ["--linearize"], "qdf": ["--qdf"],
                "encrypted": ["--encrypt", "", "owner", "256", "--"]}
    for name, flags in variants.items():
        dst = os.path.join(tmp, f"{name}.pdf")
        subprocess.run(["qpdf", *flags, base, dst], capture_output=True, timeout=60)
        if os.path.exists(dst):
            data = open(dst, "rb").read()
            seed("pdf_inject", data)
            if name == "objstm":
                seed("pdf_inject", data[: len(data) * 2 // 3])  # cut short
                PDF_UPLOADS.append(dst)
    seed("pdf_inject", hybrid_pdf())
    PDF_UPLOADS.append(os.path.join(tmp, "hybrid.pdf"))
    with open(PDF_UPLOADS[-1], "wb") as f:
        f.write(hybrid_pdf())


def hybrid_pdf():
    """A hybrid-reference PDF (no tool here writes one): a classic table whose trailer's /XRefStm
    names a cross-reference stream for the page tree, kept in an object stream; the page already
    opens a URI."""
    import struct
    import zlib
    out, offs = bytearray(b"%PDF-1.5\n"), {}

    def obj(n, body):
        offs[n] = len(out)
        out.extend(b"%d 0 obj\n" % n + body + b"\nendobj\n")
    obj(1, b"<< /Type /Catalog /Pages 2 0 R >>")
    objs = (b"<< /Type /Pages /Kids [3 0 R] /Count 1 >> "
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /AA << /O << /S /URI /URI (http://old.example/) >> >> >>")
    hdr = b"2 0 3 %d " % objs.index(b"<< /Type /Page ")
    data = zlib.compress(hdr + objs)
    obj(4, b"<< /Type /ObjStm /N 2 /First %d /Filter /FlateDecode /Length %d >>\nstream\n" % (len(hdr), len(data))
        + data + b"\nendstream")
    xs = len(out)
    rows = struct.pack(">BHB", 2, 4, 0) + struct.pack(">BHB", 2, 4, 1) + struct.pack(">BHB", 1, xs, 0)
    obj(7, b"<< /Type /XRef /Size 8 /W [1 2 1] /Index [2 2 7 1] /Length %d >>\nstream\n" % len(rows) + rows
        + b"\nendstream")
    xref = len(out)
    out += b"xref\n0 2\n0000000000 65535 f\r\n%010d 00000 n\r\n4 1\n%010d 00000 n\r\n" % (offs[1], offs[4])
    out += b"trailer\n<< /Size 8 /Root 1 0 R /XRefStm %d >>\nstartxref\n%d\n%%%%EOF\n" % (xs, xref)
    return bytes(out)


# Files the server is later sent as uploads (their injected downloads are seeds too).
PDF_UPLOADS = []


pdf_seeds()


# --- OOXML uploads: raw packages, and their parts for the structured mode -----------------------
# The part names of the ooxml_inject target's structured mode, in its order.
OOXML_PARTS = ["[Content_Types].xml", "_rels/.rels", "word/document.xml", "word/_rels/document.xml.rels",
               "word/settings.xml", "word/footer1.xml", "xl/workbook.xml", "xl/_rels/workbook.xml.rels",
               "xl/worksheets/sheet1.xml", "xl/worksheets/_rels/sheet1.xml.rels", "xl/drawings/drawing1.xml"]


def ooxml_seed(package=None, parts=None):
    if package is not None:
        seed("ooxml_inject", b"\x00" + package)
        with zipfile.ZipFile(io.BytesIO(package)) as z:
            parts = {n: z.read(n) for n in z.namelist() if n in OOXML_PARTS}
    chunks = [parts.get(n, b"") for n in OOXML_PARTS]
    seed("ooxml_inject", b"\x01" + b"\n--\n".join(c.encode() if isinstance(c, str) else c for c in chunks))


def ooxml_seeds():
    soffice = shutil.which("soffice")
    if soffice:
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "notes.txt"), "w") as f:
                f.write("Quarterly notes\n\nA second paragraph.\n")
            with open(os.path.join(d, "pay.csv"), "w") as f:
                f.write("Name,Salary\nAlice,52000\nBob,61000\n")
            for src, fmt in [("notes.txt", "docx"), ("pay.csv", "xlsx")]:
                subprocess.run([soffice, f"-env:UserInstallation=file://{d}/profile", "--headless", "--convert-to",
                                fmt, "--outdir", d, os.path.join(d, src)], capture_output=True, timeout=120,
                               start_new_session=True)
                out = os.path.join(d, src.rsplit(".", 1)[0] + "." + fmt)
                if os.path.exists(out):
                    ooxml_seed(open(out, "rb").read())
    ct = ('<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" '
          'ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" '
          'ContentType="application/xml"/><Override PartName="/{main}" ContentType="{ct}"/></Types>')
    rel = '<Relationship Id="{id}" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/{t}" Target="{to}"/>'
    rels = '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">{}</Relationships>'
    ns = ('xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main" '
          'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"')
    word = {
        "[Content_Types].xml": ct.format(main="word/document.xml", ct="application/vnd.openxmlformats-"
                                         "officedocument.wordprocessingml.document.main+xml"),
        "_rels/.rels": rels.format(rel.format(id="rId1", t="officeDocument", to="word/document.xml")),
        "word/_rels/document.xml.rels": rels.format(rel.format(id="rId3", t="settings", to="settings.xml")
                                                    + rel.format(id="rId7", t="footer", to="footer1.xml")),
        "word/settings.xml": f"<w:settings {ns}><w:evenAndOddHeaders/></w:settings>",
        "word/footer1.xml": f"<w:ftr {ns}><w:p><w:r><w:t>Page</w:t></w:r></w:p><w:tbl/><w:p/></w:ftr>",
        "word/document.xml": f"<w:document {ns}><w:body><w:p><w:pPr><w:sectPr><w:footerReference "
                             'w:type="default" r:id="rId7"/><w:titlePg/></w:sectPr></w:pPr></w:p><w:p><w:pPr>'
                             '<w:sectPr w:rsidR="1"/></w:pPr></w:p><w:sectPrChange><w:sectPr/></w:sectPrChange>'
                             '<w:sectPr><w:titlePg w:val="0"/></w:sectPr></w:body></w:document>',
    }
    ooxml_seed(parts=word)
    ooxml_seed(parts={**word, "word/document.xml": '<document xmlns="http://schemas.openxmlformats.org/'
                      'wordprocessingml/2006/main"><body><p/></body></document>'})
    sheet_ns = ('xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
                'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"')
    excel = {
        "[Content_Types].xml": ct.format(main="xl/workbook.xml", ct="application/vnd.openxmlformats-"
                                         "officedocument.spreadsheetml.sheet.main+xml"),
        "_rels/.rels": rels.format(rel.format(id="rId1", t="officeDocument", to="xl/workbook.xml")),
        "xl/workbook.xml": f'<workbook {sheet_ns}><sheets><sheet name="S" sheetId="1" r:id="rId1"/></sheets></workbook>',
        "xl/_rels/workbook.xml.rels": rels.format(rel.format(id="rId1", t="worksheet", to="worksheets/sheet1.xml")),
        "xl/worksheets/sheet1.xml": f'<worksheet {sheet_ns}><sheetData/><drawing r:id="rId4"/><legacyDrawing '
                                    'r:id="rId5"/></worksheet>',
        "xl/worksheets/_rels/sheet1.xml.rels": rels.format(rel.format(id="rId4", t="drawing",
                                                                      to="../drawings/drawing1.xml")),
        "xl/drawings/drawing1.xml": '<d:wsDr xmlns:d="http://schemas.openxmlformats.org/drawingml/2006/'
                                    'spreadsheetDrawing"><d:oneCellAnchor><d:pic><d:nvPicPr><d:cNvPr id="7" '
                                    'name="Chart"/></d:nvPicPr></d:pic></d:oneCellAnchor></d:wsDr>',
    }
    ooxml_seed(parts=excel)
    ooxml_seed(parts={**excel, "xl/worksheets/sheet1.xml": f"<worksheet {sheet_ns}><sheetData/><tableParts/></worksheet>"})


ooxml_seeds()


# --- the server -------------------------------------------------------------------------------
data_dir = tempfile.mkdtemp(prefix="trapline-corpus-")
api_port, http_port, dns_port = free_port(), free_port(), free_port()
proc = subprocess.Popen(
    [BIN, "serve", "--data-dir", data_dir, "--api-listen", f"127.0.0.1:{api_port}",
     "--http-listen", f"127.0.0.1:{http_port}", "--dns-listen", f"127.0.0.1:{dns_port}",
     "--domain", DOMAIN, "--nx-domain", NX],
    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
admin = None
for line in proc.stdout:
    if line.startswith('{"key_id"') and admin is None:
        admin = json.loads(line)
    if line.strip() == "Ready.":
        break
threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
assert admin, "no admin key printed at start"
AUTH = admin["auth_token"]
SECRETS.append(AUTH)


def stop_server():
    if proc.poll() is None:
        proc.terminate()
        proc.wait(10)
    shutil.rmtree(data_dir, ignore_errors=True)


import atexit  # noqa: E402  (the server must go whatever fails below)

atexit.register(stop_server)


# --- recording proxies --------------------------------------------------------------------------
def proxy(upstream_port, record):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def handle_one(self):
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n) if n else b""
            record(self.command, self.path, self.headers, body)
            c = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=10)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
            c.request(self.command, self.path, body=body, headers=headers)
            r = c.getresponse()
            data = r.read()
            self.send_response(r.status)
            for k, v in r.getheaders():
                if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = handle_one

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{srv.server_address[1]}"


def record_api(method, path, headers, body):
    u = urllib.parse.urlsplit(path)
    ctype = headers.get("Content-Type") or ""
    if u.path.startswith("/api/v1/"):
        seed("console_body", f"{ctype}\n{u.query}\n".encode() + body)
    elif u.path in ("/key", "/test-alert"):
        seed("spacesiren_body", f"{ctype}\n".encode() + body)
    elif u.path.startswith("/installation-tokens/") or u.path.startswith("/oauth2/"):
        seed("falcon_request", f"{u.query}\n".encode() + body)


def record_trigger(method, path, headers, body):
    lines = [path] + [f"{k}: {v}" for k, v in headers.items()]
    seed("http_trigger", "\n".join(lines))
    if "tl_report" in path and body:
        seed("scanner_report", body)


API = proxy(api_port, record_api)
TRIGGER = proxy(http_port, record_trigger)


def curl(*args):
    return subprocess.run(["curl", "-s", "--max-time", "10", *args], capture_output=True, check=True).stdout


def console(endpoint, *args, get=False):
    url = f"{API}/api/v1/{endpoint}"
    if get:
        return json.loads(curl("-G", url, "--data-urlencode", f"auth_token={AUTH}", *args))
    return json.loads(curl(url, "-d", f"auth_token={AUTH}", *args))


# --- Console bodies: forms, JSON, multipart -----------------------------------------------------
tokens = {}
for kind, extra in [("http", []), ("dns", []), ("sensitive-cmd", ["-d", "process_name=klist.exe"]),
                    ("windows-dir", []), ("log4shell", []), ("fast-redirect", ["-d", "browser_redirect_url=https://example.com/x?y=1"]),
                    ("http", ["-d", "browser_scanner_enabled=false", "--data-urlencode", "memo=näive & odd=chars"])]:
    r = console("canarytoken/create", "-d", f"kind={kind}", "-d", f"memo=seed {kind}", *extra)
    assert "canarytoken" in r, (kind, r)
    tokens.setdefault(kind, r["canarytoken"]["canarytoken"])
curl(f"{API}/api/v1/canarytoken/create", "-H", "Content-Type: application/json",
     "-d", json.dumps({"auth_token": AUTH, "kind": "dns", "memo": "json body", "alert_cooldown_secs": 60,
                       "enabled": True}))
png = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
with tempfile.NamedTemporaryFile(suffix=".png", delete=False) as f:
    f.write(png)
curl(f"{API}/api/v1/canarytoken/create", "-F", f"auth_token={AUTH}", "-F", "kind=web-image",
     "-F", "memo=multipart upload", "-F", f"web_image=@{f.name};type=image/png")
curl(f"{API}/api/v1/canarytoken/create", "-F", f"auth_token={AUTH}", "-F", "kind=qr-code", "-F", "memo=two parts")
os.unlink(f.name)
# The server's own PDF (pdf-acrobat-reader), as downloaded.
pdf_tok = console("canarytoken/create", "-d", "kind=pdf-acrobat-reader", "-d", "memo=seed pdf")["canarytoken"]
seed("pdf_inject", curl("-G", f"{API}/api/v1/canarytoken/download", "--data-urlencode", f"auth_token={AUTH}",
                        "--data-urlencode", f"canarytoken={pdf_tok['canarytoken']}"))
for path in PDF_UPLOADS:  # and the user's PDFs with the action injected: two revisions each
    made = json.loads(curl(f"{API}/api/v1/canarytoken/create", "-F", f"auth_token={AUTH}",
                           "-F", "kind=pdf-acrobat-reader", "-F", "memo=seed upload", "-F", f"pdf=@{path}"))
    seed("pdf_inject", curl("-G", f"{API}/api/v1/canarytoken/download", "--data-urlencode", f"auth_token={AUTH}",
                            "--data-urlencode", f"canarytoken={made['canarytoken']['canarytoken']}"))
if PDF_UPLOADS:
    shutil.rmtree(os.path.dirname(PDF_UPLOADS[0]), ignore_errors=True)
console("canarytokens/search", "--data-urlencode", "search_string=seed", get=True)
console("incidents/unacknowledged", "-d", "limit=2", get=True)
curl(f"{API}/api/v1/canarytoken/update?auth_token={AUTH}&canarytoken={tokens['http']}", "-X", "POST",
     "--data-urlencode", "memo=updated+memo", "-d", "alert_email=soc@example.com")

# --- trigger requests and scanner reports -------------------------------------------------------
for tid in tokens.values():
    curl(f"{TRIGGER}/static/about/{tid}/index.html", "-A", "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/128.0")
curl(f"{TRIGGER}/x.gif?id={tokens['http']}&utm_source=mail", "-H", "Accept: text/html,application/xhtml+xml",
     "-H", "X-Forwarded-For: 203.0.113.9", "-H", "Referer: https://mail.example/inbox")
curl(f"{TRIGGER}/%7e{tokens['dns']}/..;/a%00b", "-H", "Cookie: a=b; c=d", "-X", "PUT", "-d", "x")
page = curl(f"{TRIGGER}/{tokens['http']}/view.html", "-H", "Accept: text/html").decode()
m = re.search(r'x\.open\("POST", "([^"]+)"', page)
if m:
    report = {"language": "en-GB", "languages": ["en-GB", "en", "de"], "platform": "Linux x86_64",
              "user_agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36",
              "screen": "1920x1080x24", "timezone": "Europe/London",
              "plugins": ["PDF Viewer", "Chrome PDF Viewer", "Chromium PDF Viewer"],
              "webrtc_local_ips": ["192.168.1.23", "3f9a3c1e-8d2b-4c5e-9f0a-1b2c3d4e5f60.local"]}
    url = f"{TRIGGER}/{tokens['http']}/view.html" + m.group(1).replace("\\/", "/")
    curl(url, "-H", "Content-Type: application/json", "-d", json.dumps(report))
    seed("scanner_report", json.dumps({**report, "plugins": [], "webrtc_local_ips": [], "timezone": "-60"}))
    seed("scanner_report", json.dumps({"language": "fr", "languages": "fr", "screen": 1080, "extra": {"x": [1]}}))

# --- cursors the server hands out ---------------------------------------------------------------
for endpoint, args in [("canarytokens/paginate", ["-d", "limit=1"]), ("canarytokens/search", ["-d", "limit=2"]),
                       ("incidents/all", ["-d", "limit=1"]), ("incidents/unacknowledged", ["-d", "limit=1"])]:
    time.sleep(0.5)
    r = console(endpoint, *args, get=True)
    c = r.get("cursor")
    nxt = c.get("next") if isinstance(c, dict) else c
    if nxt:
        seed("console_cursor", nxt)
        seed("console_cursor", base64.urlsafe_b64decode(nxt + "=" * (-len(nxt) % 4)))

# --- SpaceSiren bodies (curl) and Falcon requests (falconpy, else curl) -------------------------
with open(os.path.join(data_dir, "provision.key")) as f:
    provision = f.read().strip()
SECRETS.append(provision)
made = json.loads(curl(f"{API}/key", "-H", f"X-Provision-Key: {provision}", "-H", "Content-Type: application/json",
                       "-d", json.dumps({"admin": True, "description": "seed admin", "expire_time": 0})))
key = made["key"]
SECRETS.append(key["secret_id"])
ss = ["-H", f"X-Key-ID: {key['key_id']}", "-H", f"X-Secret-ID: {key['secret_id']}"]
for method, body in [("GET", {}), ("GET", {"key_id": key["key_id"]}),
                     ("PATCH", {"key_id": key["key_id"], "description": "renamed", "active": True, "expire_time": 4102444800}),
                     ("POST", {"admin": False, "active": False, "description": "inactive"})]:
    curl(f"{API}/key", "-X", method, *ss, "-H", "Content-Type: application/json; charset=utf-8", "-d", json.dumps(body))
curl(f"{API}/test-alert", *ss, "-H", "Content-Type: application/json", "-d", '{"description": "seed test"}')

venv_python = os.path.join(ROOT, ".venv", "bin", "python")
falcon_script = r"""
import sys
from falconpy import InstallationTokens
f = InstallationTokens(client_id=sys.argv[1], client_secret=sys.argv[2], base_url=sys.argv[3])
t = f.tokens_create(label="seed-one", expires_timestamp="2030-01-01T00:00:00Z")["body"]["resources"][0]
f.tokens_create(label="seed-two")
f.tokens_update(ids=t["id"], label="seed-renamed", revoked=True)
f.tokens_update(ids=t["id"], revoked=False, expires_timestamp=None)
f.tokens_query(filter="status:'valid'+label:*'seed*'", sort="created_timestamp.desc", limit=10, offset=0)
f.tokens_read(ids=[t["id"], "nosuch"])
f.audit_events_query(filter="action:'token_create'", sort="timestamp.asc")
f.customer_settings_update(max_active_tokens=10, tokens_required=False)
f.tokens_delete(ids=t["id"])
"""
if os.path.exists(venv_python):
    subprocess.run([venv_python, "-c", falcon_script, key["key_id"], key["secret_id"], API], check=True,
                   capture_output=True, timeout=60)
seed("falcon_request", "ids=a,b,%20b%20&ids=c&filter=label%3A%27x%27&limit=5&offset=10\n"
                       '{"label": "x", "expires_timestamp": "2030-01-01T00:00:00.123+02:00", "revoked": true}')

# --- DNS: dig through a recording relay ---------------------------------------------------------
relay = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
relay.bind(("127.0.0.1", 0))
relay_port = relay.getsockname()[1]


def run_relay():
    up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    up.settimeout(5)
    while True:
        pkt, peer = relay.recvfrom(4096)
        seed("dns_answer", pkt)
        up.sendto(pkt, ("127.0.0.1", dns_port))
        try:
            answer, _ = up.recvfrom(4096)
        except socket.timeout:
            continue
        relay.sendto(answer, peer)


threading.Thread(target=run_relay, daemon=True).start()
t = tokens["dns"]
generic = "nbswy3dpeb3w64tmmq.G07"  # base32("hello world")
names = [
    (f"{t}.{DOMAIN}", "A", []), (f"{t}.{DOMAIN}", "AAAA", ["+noedns"]), (f"{t}.{DOMAIN}", "TXT", ["+dnssec"]),
    (f"{generic}.{t}.{DOMAIN}", "A", ["+norec"]), (f"{t.upper()}.{DOMAIN}", "ANY", []),
    (f"cWS042.UN.ualice.CMD.ab12cd34.{tokens['sensitive-cmd']}.{DOMAIN}", "A", []),
    (f"alice.WS042.CORP.INI.{tokens['windows-dir']}.{DOMAIN}", "A", []),
    (f"xlogs01.internal.L4J.{tokens['log4shell']}.{DOMAIN}", "A", ["+edns=0", "+bufsize=4096"]),
    (f"c2E-.42.{t}.{DOMAIN}", "A", []), (DOMAIN, "SOA", []), (DOMAIN, "NS", []), (f"ns1.{DOMAIN}", "A", []),
    (f"{t}.{NX}", "A", []), (f"www.{NX}", "MX", []), ("example.com", "A", []), (DOMAIN, "AXFR", ["+notcp"]),
    (f"{t}.{DOMAIN}", "CAA", ["+cookie"]), (f"{t}.{DOMAIN}", "A", ["-c", "CH"]),
]
for name, qtype, opts in names:
    subprocess.run(["dig", "@127.0.0.1", "-p", str(relay_port), name, qtype, "+tries=1", "+time=2", *opts],
                   capture_output=True, timeout=15)
subprocess.run(["dig", "@127.0.0.1", "-p", str(relay_port), "+tries=1", "+time=2", "-x", "192.0.2.1"],
               capture_output=True, timeout=15)
# An answer (ignored as a response), a short packet, and a query with two questions.
up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
up.settimeout(5)
q = open(os.path.join(CORPUS, "dns_answer", sorted(os.listdir(os.path.join(CORPUS, "dns_answer")))[0]), "rb").read()
up.sendto(q, ("127.0.0.1", dns_port))
seed("dns_answer", up.recvfrom(4096)[0])
seed("dns_answer", q[:11])

# --- DNS labels: names left of the token, as the decoders get them ------------------------------
for labels in [generic, "cWS042.UN.ualice.CMD.ab12cd34", "cPC.un.ubob.cmd", "alice.WS042.CORP.INI",
               "first.last.PC1.DOM.ini", "xlogs01.internal.L4J", "c2E-.42", "dXNlcm5hbWU-.07", "www", "G12",
               "MFRGGZDFMZTWQ2LKNNWG23TPOBYXE43UOV3HO6DZPI------.G99"]:
    seed("dns_labels", labels)

# --- FQL: the filters and sorts the end-to-end tests use ----------------------------------------
for path in ["test_falcon.py", "test_falcon_fidelity.py"]:
    text = open(os.path.join(ROOT, "tests", "e2e", path)).read()
    for m in re.finditer(r'\(\s*"((?:[a-z_]+:[^"]*)|(?:\([^"]*))",', text):
        seed("fql", m.group(1).replace('\\"', '"'))
    for m in re.finditer(r'filter="([^"]+)"', text):
        seed("fql", m.group(1))
for s in ["created_timestamp.desc", "timestamp|asc", "label", "(label:'a',label:'b')+status:!'revoked'",
          "created_timestamp:>='2021-09-22T02:28:11Z'+created_timestamp:<='now+1w'", "id:[1,2,3]",
          "expires_timestamp:null,revoked_timestamp:!null", "label:'it\\'s'", "x:1.5e3"]:
    seed("fql", s)

# --- OOXML: the documents Trapline makes ----------------------------------------------------------
for kind in ("doc-msword", "doc-msexcel"):
    tid = console("canarytoken/create", "-d", f"kind={kind}", "-d", f"memo=seed {kind}")["canarytoken"]["canarytoken"]
    ooxml_seed(curl("-G", f"{API}/api/v1/canarytoken/download", "-d", f"auth_token={AUTH}", "-d", f"canarytoken={tid}"))

stop_server()
for target in sorted(os.listdir(CORPUS)):
    print(f"{target}: {len(os.listdir(os.path.join(CORPUS, target)))} seeds")

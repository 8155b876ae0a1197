"""pdf-acrobat-reader ("Acrobat PDF"): a PDF whose first page opens a URI on the token's NX
hostname, generated or injected into the user's upload (`pdf`, multipart) by an incremental update.

No viewer on Debian runs page-open URI actions (only Acrobat Reader does, spec/openers.md §3), so the
test does what the reader does, with real tools: qpdf checks the structure and shows the page's
`/AA /O` URI action (`qpdf --json=2`), pdftotext still reads the user's own text from the injected
file, and the host is then looked up through Trapline's DNS (dnspython, and glibc's resolver via
`getent` in a private mount namespace when we are root) -> a stored hit, answered NXDOMAIN.
The uploads are made by real tools: LibreOffice (`soffice --convert-to pdf` of a text file) when it
is installed, rewritten by qpdf into a classic-table file, an object-stream / cross-reference-stream
file and a linearized one; encrypted uploads by `qpdf --encrypt`.
"""

import json
import os
import shutil
import signal
import subprocess

import dns.rcode
import pytest
import requests

from conftest import NX_DOMAIN, Server, unique
from kindtools import BAD_PARAMS, assert_error, assert_one_incident, attachment_re, dns_query, download_attachment

KIND = "pdf-acrobat-reader"
MIB = 1024 * 1024
USER_TEXT = "Minutes of the pension trustees meeting"

pytestmark = pytest.mark.skipif(not (shutil.which("qpdf") and shutil.which("pdftotext")),
                                reason="needs qpdf and pdftotext (Debian: qpdf poppler-utils)")


# --- tools -------------------------------------------------------------------------------

def run(cmd, ok=(0,), **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)
    assert p.returncode in ok, (cmd, p.returncode, p.stdout[-2000:], p.stderr[-2000:])
    return p


def qpdf_check(path):
    """`qpdf --check`: exit 0 (no errors, no warnings)."""
    out = run(["qpdf", "--check", str(path)]).stdout
    assert "No syntax or stream encoding errors found" in out, out


def page_open_uris(path):
    """The URIs of the first page's page-open actions (`/AA /O`, then its `/Next` chain), read from
    qpdf's JSON; also whether the catalog has an /OpenAction."""
    doc = json.loads(run(["qpdf", "--json=2", "--json-key=pages", "--json-key=qpdf", str(path)]).stdout)
    objects = doc["qpdf"][1]

    def value(v):
        while isinstance(v, str) and v.endswith(" R"):
            v = objects.get(f"obj:{v}", {}).get("value")
        return v

    page = value(doc["pages"][0]["object"])
    uris, todo = [], [value(page.get("/AA") or {}).get("/O")]
    while todo:
        action = value(todo.pop(0))
        if isinstance(action, list):
            todo[:0] = action
            continue
        if not isinstance(action, dict):
            continue
        if action.get("/S") == "/URI":
            uri = action["/URI"]
            assert uri.startswith("u:"), uri  # qpdf's JSON marks text strings with "u:"
            uris.append(uri[2:])
        if "/Next" in action:
            todo.insert(0, action["/Next"])
    return uris


def pdftotext(path):
    return run(["pdftotext", "-layout", str(path), "-"]).stdout


def nx_uri(tid):
    return f"http://{tid}.{NX_DOMAIN}/"


def soffice_pdf(tmp, text):
    """`text` as a PDF made by LibreOffice (its own profile; the process group killed after)."""
    src = tmp / "user-notes.txt"
    src.write_text(text)
    profile = tmp / "lo-profile"
    cmd = ["soffice", f"-env:UserInstallation=file://{profile}", "--headless", "--convert-to", "pdf",
           "--outdir", str(tmp), str(src)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        p.communicate(timeout=120)
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    out = tmp / "user-notes.pdf"
    assert out.exists(), f"soffice made no PDF (rc {p.returncode})"
    return out


def plain_pdf(tmp, text):
    """Without LibreOffice: a one-page PDF written here (qpdf rewrites it into the variants)."""
    content = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
            b"/Resources << /Font << /F1 5 0 R >> >> >>",
            b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out, offs = bytearray(b"%PDF-1.4\n"), []
    for i, o in enumerate(objs, 1):
        offs.append(len(out))
        out += b"%d 0 obj\n" % i + o + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offs)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    path = tmp / "plain.pdf"
    path.write_bytes(bytes(out))
    return path


@pytest.fixture(scope="module")
def uploads(tmp_path_factory):
    """The user's PDFs, by variant: name -> bytes. All hold USER_TEXT."""
    tmp = tmp_path_factory.mktemp("pdf-uploads")
    text = USER_TEXT + "\nAgenda item 4: the actuarial valuation was received and noted.\n"
    base = soffice_pdf(tmp, text) if shutil.which("soffice") else plain_pdf(tmp, USER_TEXT)
    made = {"original": base}
    for name, flags in [("classic", ["--object-streams=disable"]),
                        ("xref-stream", ["--object-streams=generate"]),
                        ("linearized", ["--linearize"])]:
        made[name] = tmp / f"{name}.pdf"
        run(["qpdf", *flags, str(base), str(made[name])])
    files = {name: path.read_bytes() for name, path in made.items()}
    assert b"/ObjStm" in files["xref-stream"] and b"/XRef" in files["xref-stream"]
    assert b"/ObjStm" not in files["classic"] and b"\nxref" in files["classic"]
    assert b"/Linearized" in files["linearized"]
    for name, data in files.items():
        assert USER_TEXT in pdftotext(made[name]), name
    return files


def upload(api, data, name="upload-me.pdf", path="canarytoken/create", auth=None, **extra):
    params = {"auth_token": api.auth_token} if auth is None else auth
    return requests.post(api.url(path), params=params,
                         data={"kind": KIND, "memo": unique("pdf"), **extra},
                         files={"pdf": (name, data, "application/pdf")}, timeout=120)


def download(api, tid, tmp_path):
    name, r = download_attachment(api, tid, "pdf")
    assert r.headers["Content-Type"].split(";")[0].strip() == "application/pdf", r.headers
    path = tmp_path / name
    path.write_bytes(r.content)
    return name, path


def assert_fires_over_dns(server, api, tok):
    """Look the page-open action's host up the way Acrobat's resolver would: a stored hit, an
    incident that names the PDF kind, and NXDOMAIN."""
    host = f"{tok['canarytoken']}.{NX_DOMAIN}"
    resp = dns_query(server, host)
    assert resp.rcode() == dns.rcode.NXDOMAIN, dns.rcode.to_text(resp.rcode())
    assert resp.answer == []
    inc, ev = assert_one_incident(api, tok, KIND, "dns")
    assert str(inc["logtype"]) == "16008", inc["logtype"]
    assert ev["hostname"].rstrip(".").lower() == host
    assert ev["query_name"].rstrip(".").lower() == host
    assert api.fetch_token(tok["canarytoken"])["triggered_count"] == 1


# --- tests -------------------------------------------------------------------------------

def test_listed_with_human_name(api):
    assert api.ok_get("canarytokens/list")["canarytokens"][KIND] == "Acrobat PDF"
    assert api.ok_get("canarytokens/factory/list")["factory_canarytokens"][KIND] == "Acrobat PDF"


def test_generated_pdf_opens_the_nx_hostname(server, api, tmp_path):
    tok = api.create_token(KIND, memo=unique("generated pdf"))
    tid = tok["canarytoken"]
    assert tok["nx_hostname"] == f"{tid}.{NX_DOMAIN}"
    assert tok["pdf_source"] == "generated"
    name, path = download(api, tid, tmp_path)
    assert name == tok["pdf_filename"].replace(" ", "_")
    qpdf_check(path)
    assert page_open_uris(path) == [nx_uri(tid)]
    text = pdftotext(path)
    assert "From:" in text and "Page 1 of" in text, text[:500]
    info = run(["pdfinfo", str(path)]).stdout
    assert "Producer:" in info and "CreationDate:" in info, info
    assert_fires_over_dns(server, api, tok)


def test_generated_pdfs_differ(api, tmp_path):
    """Two tokens' files share neither bytes nor metadata fingerprints."""
    infos = []
    for _ in range(2):
        tid = api.create_token(KIND)["canarytoken"]
        _, path = download(api, tid, tmp_path)
        info = run(["pdfinfo", str(path)]).stdout
        infos.append(dict(line.split(":", 1) for line in info.splitlines() if ":" in line))
        infos[-1]["bytes"] = path.read_bytes()
    a, b = infos
    assert a["bytes"] != b["bytes"]
    assert a["CreationDate"] != b["CreationDate"]


@pytest.mark.parametrize("variant", ["original", "classic", "xref-stream", "linearized"])
def test_injected_upload_keeps_the_users_file(server, api, uploads, tmp_path, variant):
    original = uploads[variant]
    tok = api.ok(upload(api, original, name=f"Trustees {variant}.pdf"))["canarytoken"]
    tid = tok["canarytoken"]
    assert tok["kind"] == KIND and tok["pdf_source"] == "uploaded"
    name, path = download(api, tid, tmp_path)
    assert name == f"Trustees_{variant}.pdf"
    data = path.read_bytes()
    assert data.startswith(original), "the user's bytes come first, unchanged"
    update = data[len(original):]
    if variant == "xref-stream":
        assert b"/Type /XRef" in update and b"\nxref\n" not in update, update[-400:]
    else:
        assert b"\nxref\n" in update and b"trailer" in update, update[-400:]
    qpdf_check(path)
    assert page_open_uris(path) == [nx_uri(tid)]
    assert USER_TEXT in pdftotext(path)
    # qpdf sees one more revision, not a rewritten file.
    assert data.count(b"%%EOF") == original.count(b"%%EOF") + 1
    assert_fires_over_dns(server, api, tok)


def test_factory_create_and_download(server, api, uploads, tmp_path):
    fac = api.ok_post("canarytoken/create_factory", memo=unique("pdf factory"))["factory_auth"]
    r = upload(api, uploads["xref-stream"], path="canarytoken/factory/create", auth={}, factory_auth=fac)
    tok = api.ok(r)["canarytoken"]
    tid = tok["canarytoken"]
    d = requests.get(api.url("canarytoken/factory/download"),
                     params={"factory_auth": fac, "canarytoken": tid}, timeout=30)
    assert d.status_code == 200, d.text[:300]
    assert attachment_re("pdf").match(d.headers["Content-Disposition"]), d.headers
    assert d.headers["Content-Type"].split(";")[0] == "application/pdf"
    _, path = download(api, tid, tmp_path)
    assert d.content == path.read_bytes(), "the factory gets the file the admin gets"
    assert page_open_uris(path) == [nx_uri(tid)]
    # A generated one through the factory too.
    gen = api.ok(requests.post(api.url("canarytoken/factory/create"),
                               data={"factory_auth": fac, "kind": KIND, "memo": unique("f")}, timeout=30))
    gid = gen["canarytoken"]["canarytoken"]
    g = requests.get(api.url("canarytoken/factory/download"), params={"factory_auth": fac, "canarytoken": gid},
                     timeout=30)
    assert g.status_code == 200 and g.content.startswith(b"%PDF-"), g.text[:200]


def test_glibc_lookup_in_a_private_namespace(tmp_path):
    """The lookup as a reader on the intruder's machine makes it: glibc's resolver (getent), its
    resolv.conf naming Trapline's DNS on a port-53 loopback address of its own."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare (a private mount namespace for resolv.conf)")
    addr = "127.0.0.148"
    srv = Server(data_dir=str(tmp_path / "data"), default_flags=False, args=[
        "--data-dir", str(tmp_path / "data"), "--api-listen", "127.0.0.1:0",
        "--http-listen", "127.0.0.1:0", "--dns-listen", f"{addr}:53", "--smtp-listen", "127.0.0.1:0",
        "--domain", "canary.test", "--nx-domain", NX_DOMAIN]).start()
    try:
        api = srv.api()
        tok = api.create_token(KIND, memo=unique("glibc"))
        tid = tok["canarytoken"]
        _, path = download(api, tid, tmp_path)
        [uri] = page_open_uris(path)
        host = uri.split("/")[2]
        resolv = tmp_path / "resolv.conf"
        resolv.write_text(f"nameserver {addr}\noptions attempts:1 timeout:2\n")
        p = subprocess.run(["unshare", "-m", "sh", "-c",
                            f"mount --bind {resolv} /etc/resolv.conf && exec getent ahosts {host}"],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)  # 2: not found (NXDOMAIN)
        inc, ev = assert_one_incident(api, tok, KIND, "dns", settle=1.0)
        assert str(inc["logtype"]) == "16008"
        assert ev["hostname"].rstrip(".").lower() == host
    finally:
        srv.close()


# --- bad uploads -----------------------------------------------------------------------------

def refused(api, data, status=400, **kw):
    b = assert_error(upload(api, data, **kw), status)
    return b.get("detail", "") + " " + b["message"]


def test_not_a_pdf_is_400(api):
    detail = refused(api, b"Quarterly figures, as plain text.\n" * 20)
    assert "pdf is not a PDF" in detail, detail
    assert BAD_PARAMS in detail
    assert "pdf is not a PDF" in refused(api, b"")


@pytest.mark.parametrize("user_password", ["secret", ""])
def test_encrypted_pdf_is_400(api, uploads, tmp_path, user_password):
    src, out = tmp_path / "in.pdf", tmp_path / "locked.pdf"
    src.write_bytes(uploads["classic"])
    run(["qpdf", "--encrypt", user_password, "owner-pw", "256", "--", str(src), str(out)])
    detail = refused(api, out.read_bytes())
    assert "pdf is encrypted" in detail, detail


@pytest.mark.parametrize("variant", ["classic", "xref-stream"])
def test_truncated_pdf_is_400(api, uploads, variant):
    data = uploads[variant]
    for cut in (len(data) // 2, len(data) - 40):
        detail = refused(api, data[:cut])
        assert "pdf is damaged" in detail, (cut, detail)


def test_oversized_pdf_is_refused_before_parsing(api, uploads, tmp_path):
    data = uploads["classic"]
    big = data + b"%" + b"x" * (10 * MIB - len(data))  # a PDF comment pads it past 10 MiB
    assert len(big) == 10 * MIB + 1
    b = assert_error(upload(api, big), 413)
    assert b.get("detail") == f"pdf is larger than {10 * MIB} bytes", b
    # Just under the limit is read (and the padding kept, byte for byte).
    under = data + b"%" + b"x" * (10 * MIB - len(data) - 64) + b"\n"
    assert len(under) < 10 * MIB
    tid = api.ok(upload(api, under))["canarytoken"]["canarytoken"]
    _, path = download(api, tid, tmp_path)
    assert path.read_bytes().startswith(under)
    assert page_open_uris(path) == [nx_uri(tid)]

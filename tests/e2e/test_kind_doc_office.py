"""doc-msword and doc-msexcel (MS Word / MS Excel Document): a .docx whose footer, or an .xlsx
whose first sheet, links a one-pixel picture at the token URL, made by Trapline or injected into
the user's own document (multipart `doc`).

The opener is the real program: LibreOffice, headless, converting the downloaded file to PDF
fetches the linked picture (WebDAV OPTIONS, then GET) and the hit is checked in the Console's
incidents, with LibreOffice's user agent and the document it came from. The uploads are made by
LibreOffice itself (a text file saved as .docx, a CSV saved as .xlsx), and the user's text is
read back from the PDF LibreOffice renders of the injected file (pdftotext). Every LibreOffice
run has a profile of its own and is started in a session of its own, whose process group is
killed afterwards (soffice leaves soffice.bin behind otherwise).

Bad uploads (not a zip, a zip bomb, a password-protected document made by msoffcrypto-tool, a
document of the other kind, more than 10 MiB) are refused with the Console's error shape.
"""

import io
import os
import re
import shutil
import signal
import subprocess
import tempfile
import zipfile

import pytest
import requests

from conftest import Api, unique
from kindtools import BAD_PARAMS, assert_error, assert_one_incident, attachment_re

SOFFICE = shutil.which("soffice")
PDFTOTEXT = shutil.which("pdftotext")
MIB = 1024 * 1024

KINDS = {
    "doc-msword": {
        "human": "MS Word Document",
        "ext": "docx",
        "ctype": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "label": "Word document (.docx)",
    },
    "doc-msexcel": {
        "human": "MS Excel Document",
        "ext": "xlsx",
        "ctype": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "label": "Excel workbook (.xlsx)",
    },
}
IMAGE_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/image"
REL_RE = re.compile(r"<Relationship\b[^>]*>")


def need(tool, name, package):
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is required in CI")
        pytest.skip(f"{name} is not installed (Debian: apt-get install {package})")


@pytest.fixture
def lo():
    need(SOFFICE, "LibreOffice (soffice)", "libreoffice-writer libreoffice-calc")
    need(PDFTOTEXT, "pdftotext", "poppler-utils")
    return soffice


def soffice(workdir, *args, timeout=180):
    """Runs `soffice --headless ARGS` in `workdir` with a profile of its own, in a session of
    its own; kills what is left of its process group afterwards. -> stdout."""
    profile = tempfile.mkdtemp(prefix="lo-profile-")
    cmd = [SOFFICE, f"-env:UserInstallation=file://{profile}", "--headless", "--norestore", *map(str, args)]
    proc = subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        out, err = b"", b"timed out"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        shutil.rmtree(profile, ignore_errors=True)
    assert proc.returncode == 0, (cmd, proc.returncode, out[-500:], err[-500:])
    return out.decode(errors="replace")


def convert(workdir, path, fmt):
    """LibreOffice converts `path` to `fmt` in workdir/out; -> the new file's path."""
    outdir = workdir / f"out-{unique('c')}"
    soffice(workdir, "--convert-to", fmt, "--outdir", outdir, path)
    made = list(outdir.iterdir())
    assert len(made) == 1, made
    return made[0]


def pdf_text(pdf):
    return subprocess.run([PDFTOTEXT, "-layout", str(pdf), "-"], capture_output=True, check=True,
                          timeout=60).stdout.decode()


def make_upload(workdir, kind, marker):
    """A document of `kind` saved by LibreOffice from plain text or CSV that contains `marker`."""
    if kind == "doc-msword":
        src = workdir / "minutes.txt"
        src.write_text(f"Steering group minutes\n\nThe {marker} project is approved for next quarter.\n")
        return convert(workdir, src, "docx")
    src = workdir / "payroll.csv"
    src.write_text(f"Name,Salary,Note\nAlice,52000,{marker}\nBob,61000,contractor\n")
    return convert(workdir, src, "xlsx")


def external_images(data):
    """The targets of the external image relationships in a package."""
    out = []
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        assert z.testzip() is None
        for name in z.namelist():
            if name.endswith(".rels"):
                for rel in REL_RE.findall(z.read(name).decode()):
                    if IMAGE_REL in rel and 'TargetMode="External"' in rel:
                        out.append(re.search(r'Target="([^"]*)"', rel).group(1))
    return out


def download(client, path, tid, kind, **auth):
    r = client.get(path, auth=None, canarytoken=tid, **auth)
    assert r.status_code == 200, (r.status_code, r.text[:300])
    assert r.headers["Content-Type"] == KINDS[kind]["ctype"], r.headers
    m = attachment_re(KINDS[kind]["ext"]).match(r.headers.get("Content-Disposition", ""))
    assert m, r.headers.get("Content-Disposition")
    return m.group(1), r.content


def make_factory(api):
    return api.ok_post("canarytoken/create_factory", memo=unique("doc factory"))["factory_auth"]


def create_with_upload(server, api, kind, name, data, factory_auth=None):
    """Console create (or factory create) with the multipart `doc` field."""
    if factory_auth:
        url, params, extra = Api(server.api_url, None).url("canarytoken/factory/create"), {}, {"factory_auth": factory_auth}
    else:
        url, params, extra = api.url("canarytoken/create"), {"auth_token": api.auth_token}, {}
    return requests.post(url, params=params, data={"kind": kind, "memo": unique("doc"), **extra},
                         files={"doc": (name, data, "application/octet-stream")}, timeout=60)


def fire(workdir, api, tok, kind, data, source, name):
    """LibreOffice converts the download; -> the PDF's text, after checking the one incident."""
    path = workdir / f"opened.{KINDS[kind]['ext']}"
    path.write_bytes(data)
    pdf = convert(workdir, path, "pdf")
    _, ev = assert_one_incident(api, tok, kind, "http", settle=1.0)
    assert ev["useragent"].startswith("LibreOffice"), ev
    assert ev["document_type"] == KINDS[kind]["label"], ev
    assert (ev["document_source"], ev["document_name"]) == (source, name), ev
    assert tok["canarytoken"] in ev["path"], ev
    return pdf_text(pdf)


# --- tests -----------------------------------------------------------------------------------

def test_listed_with_human_names(api):
    for endpoint, key in (("canarytokens/list", "canarytokens"), ("canarytokens/factory/list", "factory_canarytokens")):
        listed = api.ok_get(endpoint)[key]
        for kind, k in KINDS.items():
            assert listed[kind] == k["human"], (endpoint, listed)


@pytest.mark.parametrize("kind", KINDS)
def test_generated_document_fires_in_libreoffice(server, api, lo, tmp_path, kind):
    """Made by Trapline (Console create), downloaded through the Console and the factory API
    (the same file), opened by LibreOffice: one incident with LibreOffice's user agent."""
    tok = api.create_token(kind, memo=unique("generated doc"))
    tid = tok["canarytoken"]
    name, data = download(api, "canarytoken/download", tid, kind, auth_token=api.auth_token)
    fac = make_factory(api)
    name2, data2 = download(Api(server.api_url, None), "canarytoken/factory/download", tid, kind, factory_auth=fac)
    assert (name2, data2) == (name, data)
    assert external_images(data) == [tok["url"]]
    assert api.incidents_for(tid) == [], "downloading fires nothing"
    text = fire(tmp_path, api, tok, kind, data, "generated", name)
    assert text.strip(), "the document has content of its own"


@pytest.mark.parametrize("kind", KINDS)
def test_uploaded_document_is_injected_and_fires(server, api, lo, tmp_path, kind):
    """The user's LibreOffice-made document, uploaded through the factory API, downloaded
    through both APIs; every part but the edited ones is byte-for-byte the upload's, the
    edited ones only gained the link, LibreOffice fires it and still shows the user's text."""
    marker = unique("Bluebird").replace("-", "")
    upload = make_upload(tmp_path, kind, marker)
    original = upload.read_bytes()
    assert marker in pdf_text(convert(tmp_path, upload, "pdf")), "the upload itself shows the marker"
    fac = make_factory(api)
    tok = Api.ok(create_with_upload(server, api, kind, upload.name, original, factory_auth=fac))["canarytoken"]
    assert tok["kind"] == kind
    tid = tok["canarytoken"]
    name, data = download(Api(server.api_url, None), "canarytoken/factory/download", tid, kind, factory_auth=fac)
    assert name == upload.name
    assert download(api, "canarytoken/download", tid, kind, auth_token=api.auth_token) == (name, data)
    assert external_images(data) == [tok["url"]]

    with zipfile.ZipFile(io.BytesIO(original)) as a, zipfile.ZipFile(io.BytesIO(data)) as b:
        before = {i.filename: i for i in a.infolist()}
        after = {i.filename: i for i in b.infolist()}
        assert set(before) <= set(after)
        changed = {n for n in before if a.read(n) != b.read(n)}
        if kind == "doc-msword":
            assert changed == {"[Content_Types].xml", "word/document.xml", "word/_rels/document.xml.rels"}, changed
            doc = b.read("word/document.xml").decode()
            assert re.sub(r"<w:footerReference [^>]*/>", "", doc) == a.read("word/document.xml").decode()
            added = set(after) - set(before)
            assert len(added) == 2 and all(re.search(r"footer\d+\.xml", n) for n in added), added
        else:
            assert changed == {"[Content_Types].xml", "xl/worksheets/sheet1.xml"}, changed
            sheet = b.read("xl/worksheets/sheet1.xml").decode()
            assert re.sub(r'<drawing r:id="rId\d+"/>', "", sheet) == a.read("xl/worksheets/sheet1.xml").decode()
        for n in set(before) - changed:
            # Copied raw: the same compressed bytes, not just the same content.
            assert (before[n].CRC, before[n].compress_size, before[n].compress_type) == \
                (after[n].CRC, after[n].compress_size, after[n].compress_type), n

    text = fire(tmp_path, api, tok, kind, data, "uploaded", upload.name)
    assert marker in text, text[:500]


@pytest.mark.parametrize("kind", KINDS)
def test_a_footer_or_drawing_of_its_own_gets_one_more_picture(server, api, lo, tmp_path, kind):
    """A document that already has a footer (or a drawing): Trapline's own, uploaded for a second
    token. The second picture joins that footer or drawing, no part is added, and LibreOffice
    fetches both pictures."""
    first = api.create_token(kind, memo=unique("first doc"))
    _, data = download(api, "canarytoken/download", first["canarytoken"], kind, auth_token=api.auth_token)
    name = f"again.{KINDS[kind]['ext']}"
    tok = Api.ok(create_with_upload(server, api, kind, name, data))["canarytoken"]
    _, again = download(api, "canarytoken/download", tok["canarytoken"], kind, auth_token=api.auth_token)
    assert sorted(external_images(again)) == sorted([first["url"], tok["url"]])
    with zipfile.ZipFile(io.BytesIO(data)) as a, zipfile.ZipFile(io.BytesIO(again)) as b:
        assert sorted(a.namelist()) == sorted(b.namelist())
    text = fire(tmp_path, api, tok, kind, again, "uploaded", name)
    assert text.strip()
    _, ev = assert_one_incident(api, first, kind, "http")
    assert ev["document_source"] == "generated"


# --- bad uploads -------------------------------------------------------------------------------

def zip_bomb():
    """A zip that looks like a .docx: content types, and a 'document' of 16 MiB of zeros
    deflated to a few KiB."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/'
                                          'package/2006/content-types"/>')
        with z.open("word/document.xml", "w") as f:
            for _ in range(16):
                f.write(b"\0" * MIB)
    data = buf.getvalue()
    assert len(data) < 100 * 1024
    return data


def encrypted(workdir, kind):
    """A password-protected document, as Office writes one (msoffcrypto-tool's agile encryption
    of a LibreOffice-made document)."""
    from msoffcrypto.format.ooxml import OOXMLFile
    plain = make_upload(workdir, kind, "secret")
    out = io.BytesIO()
    with open(plain, "rb") as f:
        OOXMLFile(f).encrypt("Correct-Horse-7", out)
    data = out.getvalue()
    assert data.startswith(bytes.fromhex("d0cf11e0a1b11ae1")), data[:8]
    return data


def refused(server, api, kind, data, name="upload.bin", status=400):
    b = assert_error(create_with_upload(server, api, kind, name, data), status, prefix=BAD_PARAMS)
    return b.get("detail", "")


@pytest.mark.parametrize("kind", KINDS)
def test_bad_uploads_are_refused_clearly(server, api, lo, tmp_path, kind):
    before = len(api.ok_get("canarytokens/fetch")["tokens"])
    assert refused(server, api, kind, b"Quarterly figures, not a document at all\n" * 20) == \
        "doc is not an Office Open XML document (not a zip package)"
    assert "doc looks like a zip bomb: word/document.xml would inflate from" in refused(server, api, kind, zip_bomb())
    assert refused(server, api, kind, encrypted(tmp_path, kind)).startswith(
        "doc is an encrypted (password-protected) document: encrypted documents are not supported")
    legacy = bytes.fromhex("d0cf11e0a1b11ae1") + bytes(4096)
    assert "legacy binary Office file" in refused(server, api, kind, legacy)
    plain_zip = io.BytesIO()
    with zipfile.ZipFile(plain_zip, "w") as z:
        z.writestr("notes.txt", "hello")
    assert "without [Content_Types].xml" in refused(server, api, kind, plain_zip.getvalue())
    detail = refused(server, api, kind, b"PK\x03\x04" + os.urandom(10 * MIB), status=413)
    assert detail == "doc is larger than 10485760 bytes", detail
    assert len(api.ok_get("canarytokens/fetch")["tokens"]) == before, "no token was made"
    api.ok_get("ping")


def test_a_document_of_the_other_kind_is_refused(server, api, lo, tmp_path):
    docx = make_upload(tmp_path, "doc-msword", "wordy").read_bytes()
    xlsx = make_upload(tmp_path, "doc-msexcel", "sheety").read_bytes()
    assert refused(server, api, "doc-msexcel", docx, "minutes.docx") == \
        "doc is a Word document (.docx), not an Excel workbook (.xlsx): use a doc-msword token for it"
    assert refused(server, api, "doc-msword", xlsx, "payroll.xlsx") == \
        "doc is an Excel workbook (.xlsx), not a Word document (.docx): use a doc-msexcel token for it"

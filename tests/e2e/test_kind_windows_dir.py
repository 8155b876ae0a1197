"""windows-dir ("Windows Folder"): the zipped folder with its hidden, system desktop.ini, and the
DNS lookup Explorer makes when it resolves the IconResource UNC path.

The looked-up name is taken from the unzipped desktop.ini: the IconResource line's UNC host with
%USERNAME%, %COMPUTERNAME% and %USERDOMAIN% substituted the way Windows expands them.
"""

import io
import os
import zipfile

from conftest import make_console, unique
from kindtools import (assert_no_dns_incident, assert_one_incident, attachment_re, download_attachment,
                       lookup, new_token)

KIND = "windows-dir"
CD_RE = attachment_re("zip")


# --- helpers -----------------------------------------------------------------------------

def make_token(api):
    """A windows-dir token."""
    return new_token(api, KIND, "windows folder")


def download(api, tid):
    """The downloaded zip: -> (file name, bytes)."""
    name, r = download_attachment(api, tid, "zip")
    return name, r.content


def unzip(blob):
    """-> (zipfile, directory entry name, desktop.ini ZipInfo, desktop.ini bytes)"""
    zf = zipfile.ZipFile(io.BytesIO(blob))
    assert zf.testzip() is None
    infos = zf.infolist()
    dirs = [i for i in infos if i.is_dir()]
    inis = [i for i in infos if i.filename.rsplit("/", 1)[-1] == "desktop.ini"]
    assert len(dirs) >= 1, [i.filename for i in infos]
    assert len(inis) == 1, [i.filename for i in infos]
    ini = inis[0]
    parent = ini.filename.rsplit("/", 1)[0] + "/"
    assert "/" in ini.filename and parent in [d.filename for d in dirs], \
        ("desktop.ini must sit inside the zipped folder", [i.filename for i in infos])
    assert not ini.filename.startswith("/") and ".." not in ini.filename.split("/")
    return zf, parent, ini, zf.read(ini)


def desktop_ini_text(raw):
    assert raw[:2] == b"\xff\xfe", raw[:8]
    return raw[2:].decode("utf-16-le")


def icon_resource(text):
    """The IconResource value (a UNC path) from desktop.ini."""
    lines = [l.strip() for l in text.splitlines()]
    vals = [l.split("=", 1)[1] for l in lines if l.split("=", 1)[0].strip() == "IconResource"]
    assert len(vals) == 1, text
    return vals[0]


def unc_host(unc):
    assert unc.startswith("\\\\"), unc
    host, sep, rest = unc[2:].partition("\\")
    assert sep and rest, unc
    return host


def expand(template, env):
    out = template
    for k, v in env.items():
        out = out.replace(f"%{k}%", v)
    assert "%" not in out, out
    return out


def artefact_template(api, tok):
    """The UNC host template from the downloaded desktop.ini (with %VARS% in it)."""
    _, blob = download(api, tok["canarytoken"])
    _, _, _, raw = unzip(blob)
    return unc_host(icon_resource(desktop_ini_text(raw)))


# --- tests -----------------------------------------------------------------------------

def test_listed_with_human_name(api):
    assert api.ok_get("canarytokens/list")["canarytokens"][KIND] == "Windows Folder"


def test_download_is_a_zip_with_hidden_system_desktop_ini(api):
    tok = make_token(api)
    name, blob = download(api, tok["canarytoken"])
    assert name.endswith(".zip")
    zf, folder, ini, raw = unzip(blob)

    # UTF-16 LE with BOM
    assert raw[:2] == b"\xff\xfe"
    text = desktop_ini_text(raw)
    lines = [l.strip() for l in text.splitlines()]
    assert "[.ShellClassInfo]" in lines, text
    want = f"IconResource=\\\\%USERNAME%.%COMPUTERNAME%.%USERDOMAIN%.INI.{tok['hostname']}\\resource.dll"
    assert want in lines, text

    # attributes: created on MS-DOS/Windows, hidden + system
    assert ini.create_system == 0, ini.create_system
    attrs = ini.external_attr & 0xFF
    assert attrs & 0x02, f"hidden bit missing: {attrs:#x}"
    assert attrs & 0x04, f"system bit missing: {attrs:#x}"


def test_explorer_lookup_carries_user_computer_domain(server, api):
    tok = make_token(api)
    tid = tok["canarytoken"]
    template = artefact_template(api, tok)
    name = expand(template, {"USERNAME": "alice", "COMPUTERNAME": "WS-042", "USERDOMAIN": "CORP"})
    assert name.lower() == f"alice.ws-042.corp.INI.{tok['hostname']}".lower()
    lookup(server, name)

    _, ev = assert_one_incident(api, tok, KIND, "dns")
    assert ev["windows_user"].lower() == "alice"
    assert ev["windows_computer"].lower() == "ws-042"
    assert ev["windows_domain"].lower() == "corp"
    assert api.fetch_token(tid)["triggered_count"] == 1


def test_lookup_without_domain(server, api):
    """A machine outside a domain: only user and computer before the marker."""
    tok = make_token(api)
    tid = tok["canarytoken"]
    template = artefact_template(api, tok)
    assert "%USERDOMAIN%." in template, template
    name = expand(template.replace("%USERDOMAIN%.", ""), {"USERNAME": "bob", "COMPUTERNAME": "LAPTOP7"})
    assert name.lower() == f"bob.laptop7.INI.{tok['hostname']}".lower()
    lookup(server, name, tcp=True)
    ev = api.wait_events(tid)[0]
    assert ev["windows_user"].lower() == "bob"
    assert ev["windows_computer"].lower() == "laptop7"
    assert not ev.get("windows_domain"), ev


def test_marker_without_data_is_not_an_alert(server, api):
    tok = make_token(api)
    tid = tok["canarytoken"]
    template = artefact_template(api, tok)
    bare = template[template.index("INI."):]
    assert bare == f"INI.{tok['hostname']}", bare
    lookup(server, bare)
    assert_no_dns_incident(server, api, tid)


def test_canarytools_download_writes_the_zip(server, api, tmp_path, monkeypatch):
    console = make_console(server)
    memo = unique("ct windows folder")
    token = console.tokens.create(memo=memo, kind=KIND)
    assert token.kind == KIND
    assert token.memo == memo

    # Watch the client's own download response for the server's file name.
    seen = []
    console.session.hooks["response"].append(lambda r, *a, **kw: seen.append(r))
    monkeypatch.chdir(tmp_path)
    written = token.download()

    downloads = [r for r in seen if "canarytoken/download" in r.url]
    assert len(downloads) == 1, [r.url for r in seen]
    m = CD_RE.match(downloads[0].headers.get("Content-Disposition", ""))
    assert m, downloads[0].headers
    assert written == m.group(1)
    assert os.listdir(tmp_path) == [written]
    data = (tmp_path / written).read_bytes()
    assert data == downloads[0].content
    _, _, ini, raw = unzip(data)
    assert f".INI.{token.hostname}\\resource.dll" in desktop_ini_text(raw)
    assert ini.external_attr & 0x06 == 0x06

"""The VBA project Trapline builds for the macro document kinds, run by a real office suite.

LibreOffice Calc (full package, under Xvfb, macros allowed by a profile with MacroSecurityLevel 0)
opens an .xlsm holding Trapline's vbaProject.bin; Workbook_Open and Auto_Open run, and the
`nslookup` they start reaches Trapline's DNS listener. The lookup lands on a sensitive-cmd token,
whose DNS decoding the macro reuses: the hit must carry the computer and user names (from
$HOSTNAME/$USER, the fallbacks off Windows, cleaned to DNS characters) and an invocation id, one
incident per open, and a second open is a new incident with a new id.

Writer never fires a .docm's open macros (only binary .doc gets its VBA event processor), so for
Word the test loads a hand-made .docm over UNO with macros allowed and calls the document's own
`ThisDocument.Document_Open` through the script provider, as openers.md §4 records: LibreOffice
imports the project (document module with `VB_Base "1Normal.ThisDocument"`) and runs the real
macro, Shell and nslookup included; the auto-trigger itself cannot be tested here.

The bin comes from examples/vba_project (which `cargo test` builds next to the trapline binary);
the .xlsm around it is written here with zipfile, the fewest parts Calc needs (the OOXML package
itself is another module's work). nslookup reaches Trapline through a private resolver file: it
runs in a mount namespace (unshare -m) with /etc/resolv.conf bind-mounted, and Trapline's DNS
listener is on port 53 of a loopback address of its own, so the machine's resolver never sees a
token name. Needs root (port 53, mount), LibreOffice Calc and Writer (localc, lowriter), xvfb-run,
nslookup and python3-uno; without them the tests are skipped (failed in CI, which installs them).
"""

import os
import random
import re
import shutil
import signal
import subprocess
import time
import zipfile
from pathlib import Path

import pytest

from conftest import BIN, Server, free_port
from kindtools import new_token

EXAMPLE = Path(BIN).parent / "examples" / "vba_project"

XML_HEAD = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/"
VBA_REL = "http://schemas.microsoft.com/office/2006/relationships/vbaProject"


def content_types(overrides):
    """[Content_Types].xml: rels, xml and the VBA project's bin by extension, `overrides` {part: type}."""
    parts = "".join(f'<Override PartName="{p}" ContentType="{t}"/>' for p, t in overrides.items())
    return (XML_HEAD + '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            '<Default Extension="bin" ContentType="application/vnd.ms-office.vbaProject"/>' + parts + "</Types>")


def relationships(*rels):
    """A .rels part: `rels` are (type URI, target), given ids rId1, rId2, ..."""
    items = "".join(f'<Relationship Id="rId{n}" Type="{t}" Target="{target}"/>'
                    for n, (t, target) in enumerate(rels, 1))
    return XML_HEAD + '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">' + items + "</Relationships>"


XLSM_PARTS = {
    "[Content_Types].xml": content_types({
        "/xl/workbook.xml": "application/vnd.ms-excel.sheet.macroEnabled.main+xml",
        "/xl/worksheets/sheet1.xml": "application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"}),
    "_rels/.rels": relationships((REL + "officeDocument", "xl/workbook.xml")),
    # codeName ties the workbook to the ThisWorkbook module.
    "xl/workbook.xml": XML_HEAD + '<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
    'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"><workbookPr codeName="ThisWorkbook"/>'
    '<sheets><sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>',
    "xl/_rels/workbook.xml.rels": relationships((REL + "worksheet", "worksheets/sheet1.xml"), (VBA_REL, "vbaProject.bin")),
    "xl/worksheets/sheet1.xml": XML_HEAD + '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
    "<sheetData/></worksheet>",
}
DOCM_PARTS = {
    "[Content_Types].xml": content_types({"/word/document.xml": "application/vnd.ms-word.document.macroEnabled.main+xml"}),
    "_rels/.rels": relationships((REL + "officeDocument", "word/document.xml")),
    "word/document.xml": XML_HEAD + '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
    "<w:body><w:p><w:r><w:t>Board minutes, draft</w:t></w:r></w:p></w:body></w:document>",
    "word/_rels/document.xml.rels": relationships((VBA_REL, "vbaProject.bin")),
}
# Run by the system Python (python3-uno): load the document hidden with macros always allowed,
# call its Document_Open, close it and end LibreOffice.
UNO_DRIVER = r"""
import sys, time
import uno
from com.sun.star.beans import PropertyValue
port, url = sys.argv[1], sys.argv[2]
ctx = uno.getComponentContext()
resolver = ctx.ServiceManager.createInstanceWithContext("com.sun.star.bridge.UnoUrlResolver", ctx)
deadline = time.time() + 90
while True:
    try:
        remote = resolver.resolve(f"uno:socket,host=127.0.0.1,port={port};urp;StarOffice.ComponentContext")
        break
    except Exception:
        if time.time() > deadline:
            raise
        time.sleep(0.5)
desktop = remote.ServiceManager.createInstanceWithContext("com.sun.star.frame.Desktop", remote)
props = (PropertyValue("Hidden", 0, True, 0), PropertyValue("MacroExecutionMode", 0, 4, 0))
doc = desktop.loadComponentFromURL(url, "_blank", 0, props)
script = doc.getScriptProvider().getScript(
    "vnd.sun.star.script:VBAProject.ThisDocument.Document_Open?language=Basic&location=document")
script.invoke((), (), ())
print("invoked")
doc.close(True)
try:
    desktop.terminate()
except Exception:
    pass  # the bridge goes away as LibreOffice exits
"""
LOW_SECURITY = """<?xml version="1.0" encoding="UTF-8"?>
<oor:items xmlns:oor="http://openoffice.org/2001/registry" xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
<item oor:path="/org.openoffice.Office.Common/Security/Scripting"><prop oor:name="MacroSecurityLevel" oor:op="fuse"><value>0</value></prop></item>
</oor:items>"""

# The intruder's machine, as the macro sees it off Windows (no COMPUTERNAME/USERNAME).
HOSTNAME, USER = "WS_42$", "alice.o"
COMPUTER_LABEL, USER_LABEL = "ws42", "aliceo"   # cleaned to [A-Za-z0-9-]; compared lowercased


def missing_tools():
    programs = ("soffice", "localc", "lowriter", "xvfb-run", "nslookup", "unshare", "mount")
    need = [t for t in programs if not shutil.which(t)]
    if subprocess.run(["/usr/bin/python3", "-c", "import uno"], capture_output=True).returncode != 0:
        need.append("python3-uno")
    if os.geteuid() != 0:
        need.append("root (port 53 and a mount namespace)")
    if not EXAMPLE.exists():
        need.append(f"{EXAMPLE} (cargo test or cargo build --examples builds it)")
    return need


@pytest.fixture(autouse=True)
def tools():
    """Skip without the programs (a failure in CI, which must have them)."""
    need = missing_tools()
    if need and os.environ.get("CI"):
        pytest.fail(f"CI must have {', '.join(need)}")
    if need:
        pytest.skip(f"needs {', '.join(need)}")


class Port53Server(Server):
    """A Trapline whose DNS listener is on port 53 of `dns_ip`, where glibc's resolver can reach it."""

    def __init__(self, dns_ip):
        super().__init__()
        self.dns_ip = dns_ip

    def command(self):
        cmd = super().command()
        cmd[cmd.index("--dns-listen") + 1] = f"{self.dns_ip}:53"
        return cmd


@pytest.fixture(scope="module")
def server53():
    srv = Port53Server(f"127.53.{random.randint(1, 254)}.{random.randint(1, 254)}").start()
    yield srv
    srv.close()


def make_package(path, parts, vba_bin, vba_part):
    """A macro-enabled OOXML package: `parts` {name: XML text} and the VBA project at `vba_part`."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in parts.items():
            z.writestr(name, text)
        z.write(vba_bin, vba_part)


def stop_group(proc):
    """Stop the whole process group LibreOffice and Xvfb run in (TERM, then KILL) and reap it."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            proc.poll()
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)
    proc.wait(5)


def start_office(work, server, soffice_args, xvfb=False):
    """Start `soffice SOFFICE_ARGS` with a fresh profile that allows macros, under Xvfb if
    `xvfb` (xvfb-run starts both), as an intruder's machine would run it, but with name lookups
    sent to `server`; -> the process (the leader of its own group)."""
    resolv = work / "resolv.conf"
    resolv.write_text(f"nameserver {server.dns_ip}\noptions timeout:2 attempts:1\n")
    profile = work / "lo-profile"
    (profile / "user").mkdir(parents=True, exist_ok=True)
    (profile / "user" / "registrymodifications.xcu").write_text(LOW_SECURITY)
    (work / "home").mkdir(exist_ok=True)
    (work / "tmp").mkdir(exist_ok=True)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(work / "home"), "TMPDIR": str(work / "tmp"),
           "LANG": "C.UTF-8", "HOSTNAME": HOSTNAME, "USER": USER}
    office = "xvfb-run -a soffice" if xvfb else "soffice"
    script = (f"mount --bind '{resolv}' /etc/resolv.conf && exec {office} "
              f"-env:UserInstallation=file://{profile} --norestore {soffice_args}")
    log = open(work / "soffice.log", "ab")
    return subprocess.Popen(["unshare", "-m", "sh", "-c", script], env=env, stdin=subprocess.DEVNULL,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def office_log(work):
    return (work / "soffice.log").read_text(errors="replace")[-2000:]


def check_lookup_event(ev):
    """The hit of one macro run: a DNS hit decoded as sensitive-cmd's encoding; -> its invocation id."""
    assert (ev["type"], ev["channel"]) == ("sensitive-cmd", "dns"), ev
    assert ev["sensitive_cmd_computer"].lower() == COMPUTER_LABEL, ev
    assert ev["sensitive_cmd_user"].lower() == USER_LABEL, ev
    assert re.fullmatch(r"[a-z0-9]{8}", ev["sensitive_cmd_invocation_id"]), ev
    return ev["sensitive_cmd_invocation_id"]


def token_and_bin(api, host, tmp_path):
    """A sensitive-cmd token and the VBA project whose macro looks up its hostname."""
    tok = new_token(api, "sensitive-cmd", f"vba {host}", process_name="klist.exe")
    vba_bin = tmp_path / "vbaProject.bin"
    subprocess.run([str(EXAMPLE), host, tok["hostname"], str(vba_bin)], check=True, timeout=30)
    return tok["canarytoken"], vba_bin


def test_calc_runs_the_open_macros_and_the_lookup_reaches_trapline(server53, tmp_path):
    api = server53.api()
    tid, vba_bin = token_and_bin(api, "excel", tmp_path)
    xlsm = tmp_path / "Q3 forecast.xlsm"
    make_package(xlsm, XLSM_PARTS, vba_bin, "xl/vbaProject.bin")

    ids = []
    for n in (1, 2):
        proc = start_office(tmp_path, server53, f"'{xlsm}'", xvfb=True)
        try:
            api.wait_incidents(tid, count=n, timeout=120)
            # Give the rest of this open (Auto_Open after Workbook_Open, the AAAA query after
            # the A) time to arrive: they must not make another incident.
            time.sleep(3)
        finally:
            stop_group(proc)
        incs = api.incidents_for(tid)
        assert len(incs) == n, (incs, office_log(tmp_path))
        new = [i for i in incs if i["events"][0]["sensitive_cmd_invocation_id"] not in ids]
        assert len(new) == 1, incs
        ids.append(check_lookup_event(new[0]["events"][0]))
    assert ids[0] != ids[1], ids


def test_writer_imports_the_word_project_and_its_document_open_runs(server53, tmp_path):
    api = server53.api()
    tid, vba_bin = token_and_bin(api, "word", tmp_path)
    docm = tmp_path / "Board minutes.docm"
    make_package(docm, DOCM_PARTS, vba_bin, "word/vbaProject.bin")
    port = free_port()
    proc = start_office(tmp_path, server53, f"--headless '--accept=socket,host=127.0.0.1,port={port};urp;'")
    try:
        driver = subprocess.run(["/usr/bin/python3", "-c", UNO_DRIVER, str(port), docm.as_uri()],
                                capture_output=True, text=True, timeout=150,
                                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path / "home")})
        assert driver.returncode == 0 and "invoked" in driver.stdout, \
            (driver.stdout, driver.stderr[-2000:], office_log(tmp_path))
        api.wait_incidents(tid, timeout=60)
        time.sleep(2)
    finally:
        stop_group(proc)
    incs = api.incidents_for(tid)
    assert len(incs) == 1, (incs, office_log(tmp_path))
    check_lookup_event(incs[0]["events"][0])

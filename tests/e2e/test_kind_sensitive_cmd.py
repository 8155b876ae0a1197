"""sensitive-cmd ("Sensitive Command"): the .reg file registering a SilentProcessExit monitor,
and the DNS lookup the monitor command makes when the watched program exits.

The .reg file is parsed the way regedit reads it (UTF-16 LE, sections, escaped strings); the
hostname pattern and its markers are taken out of the MonitorProcess command.
"""

import re

import pytest

from conftest import make_console, unique
from kindtools import (BAD_PARAMS, assert_error, assert_no_dns_incident, assert_one_incident,
                       download_attachment, lookup, new_token, settle_dns)

KIND = "sensitive-cmd"
SPE_KEY = r"HKEY_LOCAL_MACHINE\SOFTWARE\Microsoft\Windows NT\CurrentVersion\SilentProcessExit" + "\\"
IFEO_KEY = r"HKEY_LOCAL_MACHINE\SOFTWARE\Microsoft\Windows NT\CurrentVersion\Image File Execution Options" + "\\"


# --- .reg parsing --------------------------------------------------------------------------

def reg_string(s):
    """Unescape a .reg "..." string value body (without the quotes)."""
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and i + 1 < len(s):
            out.append(s[i + 1])
            i += 2
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def parse_reg(text):
    """-> (header line, {key: {value name: raw value text}}). Continuation lines (trailing
    backslash, used by hex values) are joined."""
    lines = text.replace("\r\n", "\n").split("\n")
    joined, buf = [], ""
    for l in lines:
        if buf:
            l = buf + l.lstrip()
            buf = ""
        if l.endswith("\\") and not l.startswith("[") and re.match(r'^(@|".*?(?<!\\)")=hex', l):
            buf = l[:-1]
            continue
        joined.append(l)
    header = joined[0]
    keys, cur = {}, None
    for l in joined[1:]:
        s = l.strip()
        if not s or s.startswith(";"):
            continue
        if s.startswith("[") and s.endswith("]"):
            cur = s[1:-1]
            keys.setdefault(cur, {})
            continue
        m = re.match(r'^"((?:[^"\\]|\\.)*)"=(.*)$', s)
        assert m and cur is not None, f"unparseable .reg line: {l!r}"
        keys[cur][reg_string(m.group(1))] = m.group(2)
    return header, keys


def reg_value_text(raw):
    """A REG_SZ ("...") or REG_EXPAND_SZ (hex(2):..) value as text."""
    if raw.startswith('"') and raw.endswith('"'):
        return reg_string(raw[1:-1])
    m = re.match(r"^hex\(2\):(.*)$", raw)
    assert m, f"MonitorProcess is neither a string nor hex(2): {raw[:80]!r}"
    data = bytes(int(b, 16) for b in m.group(1).replace(" ", "").split(",") if b)
    return data.decode("utf-16-le").rstrip("\x00")


def download_reg(api, tid):
    """The downloaded .reg file: -> (file name, raw bytes, text after the UTF-16 LE BOM)."""
    name, r = download_attachment(api, tid, "reg")
    raw = r.content
    assert raw[:2] == b"\xff\xfe", raw[:8]
    return name, raw, raw[2:].decode("utf-16-le")


def make_token(api, process="klist.exe"):
    """A sensitive-cmd token watching `process`."""
    return new_token(api, KIND, "sensitive cmd", process_name=process)


def monitor_command(api, tok, process="klist.exe"):
    _, _, text = download_reg(api, tok["canarytoken"])
    _, keys = parse_reg(text)
    return reg_value_text(keys[SPE_KEY + process]["MonitorProcess"])


def name_pattern(api, tok, process="klist.exe"):
    """The marker labels, in order, as the MonitorProcess command spells them."""
    cmd = monitor_command(api, tok, process)
    host = tok["hostname"]
    assert host in cmd, cmd
    un, cm, hi = cmd.find(".UN."), cmd.find(".CMD."), cmd.find("." + host)
    assert -1 < un < cm < hi, ("expected <computer>.UN.<user>.CMD.<id>.<hostname> in the command", cmd)
    return cmd


def lookup_name(tok, computer, user, inv):
    return f"c{computer}.UN.u{user}.CMD.{inv}.{tok['hostname']}"


# --- tests -----------------------------------------------------------------------------

def test_listed_with_human_name(api):
    assert api.ok_get("canarytokens/list")["canarytokens"][KIND] == "Sensitive Command"


def test_process_name_is_required(api):
    b = assert_error(api.post("canarytoken/create", kind=KIND, memo=unique("m")), 400, BAD_PARAMS)
    assert "process_name" in b.get("detail", ""), b
    b = assert_error(api.post("canarytoken/create", kind=KIND, memo=unique("m"), process_name=""), 400, BAD_PARAMS)
    assert "process_name" in b.get("detail", ""), b


@pytest.mark.parametrize("bad", ["notepad", "../evil.exe", "a;b.exe", "c:\\x.exe", "p" * 296 + ".exe"],
                         ids=["no-exe", "traversal", "semicolon", "drive-path", "300-chars"])
def test_invalid_process_names_are_400(api, bad):
    b = assert_error(api.post("canarytoken/create", kind=KIND, memo=unique("m"), process_name=bad), 400, BAD_PARAMS)
    assert "process_name" in b.get("detail", ""), b


def test_reg_file_registers_the_monitor(api):
    tok = make_token(api)
    name, raw, text = download_reg(api, tok["canarytoken"])
    assert name.endswith(".reg")
    header, keys = parse_reg(text)
    assert header == "Windows Registry Editor Version 5.00", header

    spe = keys[SPE_KEY + "klist.exe"]
    assert spe["ReportingMode"].lower() == "dword:00000001", spe
    assert "MonitorProcess" in spe, spe
    cmd = reg_value_text(spe["MonitorProcess"])
    assert tok["hostname"] in cmd, cmd
    assert ".UN." in cmd and ".CMD." in cmd, cmd

    ifeo = keys[IFEO_KEY + "klist.exe"]
    assert ifeo["GlobalFlag"].lower() == "dword:00000200", ifeo


@pytest.mark.parametrize("process", ["whoami.exe", "net1.exe"])
def test_other_process_names(api, process):
    tok = make_token(api, process)
    _, _, text = download_reg(api, tok["canarytoken"])
    _, keys = parse_reg(text)
    assert SPE_KEY + process in keys and IFEO_KEY + process in keys, list(keys)
    assert SPE_KEY + "klist.exe" not in keys


def test_monitor_lookup_carries_computer_user_and_id(server, api):
    tok = make_token(api)
    name_pattern(api, tok)
    lookup(server, lookup_name(tok, "WS-042", "alice", "k3j9x0qa"))

    _, ev = assert_one_incident(api, tok, KIND, "dns")
    assert ev["sensitive_cmd_computer"].lower() == "ws-042"
    assert ev["sensitive_cmd_user"].lower() == "alice"
    assert ev["sensitive_cmd_invocation_id"] == "k3j9x0qa"


def test_repeat_of_an_invocation_is_not_a_new_incident(server, api):
    tok = make_token(api)
    tid = tok["canarytoken"]
    name_pattern(api, tok)
    first = lookup_name(tok, "SRV1", "svcbackup", "aaaa1111")
    lookup(server, first)
    api.wait_incidents(tid)
    # the same exit seen again (resolver retries, a second resolver, TCP fallback)
    lookup(server, first)
    lookup(server, first, tcp=True)
    settle_dns(server, api)
    incs = api.incidents_for(tid)
    assert len(incs) == 1, incs

    # another run of the program: a new id, a new incident
    lookup(server, lookup_name(tok, "SRV1", "svcbackup", "bbbb2222"))
    incs = api.wait_incidents(tid, count=2)
    assert len(incs) == 2, incs
    ids = sorted(i["events"][0]["sensitive_cmd_invocation_id"] for i in incs)
    assert ids == ["aaaa1111", "bbbb2222"]


def test_marker_alone_is_not_an_alert(server, api):
    tok = make_token(api)
    tid = tok["canarytoken"]
    name_pattern(api, tok)
    lookup(server, f"CMD.{tok['hostname']}")
    assert_no_dns_incident(server, api, tid)


def test_canarytools_create_and_download(server, tmp_path, monkeypatch):
    console = make_console(server)
    token = console.tokens.create(memo=unique("ct sensitive"), kind=KIND, process_name="klist.exe")
    assert token.kind == KIND
    monkeypatch.chdir(tmp_path)
    written = token.download()
    assert written.endswith(".reg")
    raw = (tmp_path / written).read_bytes()
    assert raw.startswith(b"\xff\xfe")
    assert raw[2:].decode("utf-16-le").startswith("Windows Registry Editor Version 5.00")

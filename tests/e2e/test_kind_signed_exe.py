"""signed-exe ("Custom Exe/Binary"): an uploaded Windows executable comes back Authenticode-signed
by a leaf whose CRL distribution point, AIA and OCSP URLs are under the token's NX hostname.

The intruder's program is osslsigncode 2.9 (Debian bookworm-backports): `osslsigncode verify
-CAfile <the token's CA>` fetches the leaf's CRL, so it looks up `crl.<token>.<nx zone>`. Its
lookups go through the system resolver, which this test points at Trapline's DNS listener on a
port-53 loopback address of its own, inside a private mount namespace (`unshare -m` and a
bind-mounted resolv.conf), never at the machine's resolver. The listener records the hit and
answers NXDOMAIN, so the verification ends "failed" (no CRL); a second run with `-ignore-crl`
shows that the signature itself verifies against the CA. The PEs are real: the launchers that
pip vendors (distlib's t64.exe, PE32+, and t32.exe, PE32); pefile compares their sections.
"""

import os
import re
import shutil
import socket
import subprocess
import time

import pefile
import pytest
import requests

from conftest import NX_DOMAIN, Api, Server, unique, wait_for
from kindtools import BAD_PARAMS, assert_error, attachment_re, dns_query

KIND = "signed-exe"
def _osslsigncode():
    """osslsigncode 2.9 or later (bookworm-backports): earlier ones fetch no CRL when verifying."""
    path = shutil.which("osslsigncode")
    if path is None:
        return None
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout
    m = re.match(r"osslsigncode (\d+)\.(\d+)", out)
    return path if m and (int(m.group(1)), int(m.group(2))) >= (2, 9) else None


OSSLSIGNCODE = _osslsigncode()
OPENSSL = shutil.which("openssl")
MIB = 1024 * 1024
PE_TYPE = "application/vnd.microsoft.portable-executable"


def need(tool, name):
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is required in CI")
        pytest.skip(f"{name} is not installed")


def launcher(name):
    """One of the Windows launchers pip vendors (pip/_vendor/distlib/*.exe): real PE images."""
    import pip
    path = os.path.join(os.path.dirname(pip.__file__), "_vendor", "distlib", name)
    if not os.path.exists(path):
        pytest.skip(f"this pip has no {name}")
    with open(path, "rb") as f:
        return f.read()


def sections(data):
    """(name, raw data) of each section, and the overlay, as pefile reads them."""
    pe = pefile.PE(data=data, fast_load=True)
    secs = [(s.Name, s.get_data()) for s in pe.sections]
    last = max(s.PointerToRawData + s.SizeOfRawData for s in pe.sections)
    return secs, last


def assert_sections_identical(original, signed):
    o, o_end = sections(original)
    s, s_end = sections(signed)
    assert o == s, "sections changed"
    assert o_end == s_end
    assert signed[:len(original)][o_end:] == original[o_end:], "the overlay changed"
    # Nothing else before the certificate table changed but the checksum and its directory entry.
    pe = pefile.PE(data=signed, fast_load=True)
    d = pe.OPTIONAL_HEADER.DATA_DIRECTORY[pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_SECURITY"]]
    assert d.VirtualAddress >= len(original) and d.VirtualAddress % 8 == 0, (d.VirtualAddress, len(original))
    assert d.VirtualAddress + d.Size == len(signed)
    assert signed[len(original):d.VirtualAddress] == b"\0" * (d.VirtualAddress - len(original)), "padding is zeros"
    assert pe.OPTIONAL_HEADER.CheckSum == pe.generate_checksum(), "the checksum is right"


def upload(api, data, name="t64.exe", **extra):
    return requests.post(api.url("canarytoken/create"), params={"auth_token": api.auth_token},
                         data={"kind": KIND, "memo": unique("signed exe"), **extra},
                         files={"exe": (name, data, "application/octet-stream")}, timeout=60)


def check_download(resp, name):
    assert resp.status_code == 200, (resp.status_code, resp.text[:300])
    assert resp.headers["Content-Type"] == PE_TYPE, resp.headers
    m = attachment_re("exe").match(resp.headers.get("Content-Disposition", ""))
    assert m and m.group(1) == name, resp.headers.get("Content-Disposition")
    return resp.content


def osslsigncode_verify(tmp_path, signed, ca_pem, resolver, *extra):
    """`osslsigncode verify -in signed.exe -CAfile ca.pem` with its name lookups sent to `resolver`."""
    exe, ca, conf = tmp_path / "signed.exe", tmp_path / "ca.pem", tmp_path / "resolv.conf"
    exe.write_bytes(signed)
    ca.write_text(ca_pem)
    conf.write_text(f"nameserver {resolver}\noptions timeout:2 attempts:1\n")
    cmd = f"mount --bind {conf} /etc/resolv.conf && exec {OSSLSIGNCODE} verify -in {exe} -CAfile {ca} " + " ".join(extra)
    r = subprocess.run(["unshare", "-m", "sh", "-c", cmd], capture_output=True, text=True, timeout=120,
                       stdin=subprocess.DEVNULL)
    return r.returncode, r.stdout + r.stderr


def digests(out):
    cur = re.search(r"Current message digest\s*:\s*([0-9A-F]+)", out)
    calc = re.search(r"Calculated message digest\s*:\s*([0-9A-F]+)", out)
    assert cur and calc, out
    return cur.group(1), calc.group(1)


# --- a Trapline whose DNS listener is on port 53 of a loopback address of its own ---------------

def free_loopback_53():
    for n in range(2, 250):
        addr = f"127.0.53.{n}"
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, \
                    socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                u.bind((addr, 53))
                t.bind((addr, 53))
            return addr
        except OSError:
            continue
    pytest.fail("no free 127.0.53.x:53")


class Port53Server(Server):
    def __init__(self, dns_addr):
        super().__init__()
        self.dns_addr = dns_addr

    def command(self):
        cmd = super().command()
        cmd[cmd.index("--dns-listen") + 1] = f"{self.dns_addr}:53"
        return cmd


@pytest.fixture(scope="module")
def server():
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("CI runs as root: the DNS listener needs port 53")
        pytest.skip("port 53 and unshare -m need root")
    srv = Port53Server(free_loopback_53()).start()
    assert srv.dns_port == 53, srv.output()
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def api(server):
    return server.api()


# --- tests ---------------------------------------------------------------------------------------

def test_listed_with_human_name(api):
    assert api.ok_get("canarytokens/list")["canarytokens"][KIND] == "Custom Exe/Binary"
    assert api.ok_get("canarytokens/factory/list")["factory_canarytokens"][KIND] == "Custom Exe/Binary"


def test_osslsigncode_verification_looks_up_the_crl_name(server, api, tmp_path):
    need(OSSLSIGNCODE, "osslsigncode 2.9+")
    original = launcher("t64.exe")
    r = upload(api, original, name="t64.exe")
    tok = api.ok(r)["canarytoken"]
    tid = tok["canarytoken"]
    assert tok["kind"] == KIND
    assert tok["exe_filename"] == "t64.exe"
    assert tok["replaced_signature"] is False
    ca_pem = tok["code_signing_ca"]
    assert ca_pem.startswith("-----BEGIN CERTIFICATE-----\n"), ca_pem
    assert api.fetch_token(tid)["code_signing_ca"] == ca_pem

    signed = check_download(api.get("canarytoken/download", canarytoken=tid), "t64.exe")
    assert_sections_identical(original, signed)

    # The intruder verifies the signature: one CRL lookup, answered NXDOMAIN, so "failed".
    rc, out = osslsigncode_verify(tmp_path, signed, ca_pem, server.dns_addr)
    crl_host = f"crl.{tid}.{NX_DOMAIN}"
    assert f"http://{crl_host}/" in out, out
    cur, calc = digests(out)
    assert cur == calc, out
    assert "Signing certificate chain verified using" in out, out
    assert rc != 0 and "Signature verification: failed" in out, out
    api.wait_incidents(tid)
    time.sleep(1.0)
    incs = api.incidents_for(tid)
    assert len(incs) == 1, incs  # the A and AAAA lookups are one incident
    # 17008 is the Console's own log type for this kind (which fires over HTTP there).
    assert (incs[0]["kind"], incs[0]["memo"], incs[0]["logtype"]) == (KIND, tok["memo"], "17008"), incs[0]
    ev = incs[0]["events"][0]
    assert (ev["type"], ev["channel"]) == (KIND, "dns"), ev
    assert ev["query_name"].lower() == crl_host, ev
    stored = api.ok_get("canarytoken/hits", canarytoken=tid)["hits"]
    assert stored and all(h["query_name"].lower() == crl_host for h in stored), stored
    # What the verifier was told: the name does not exist (and asking again records again).
    assert dns_query(server, crl_host).rcode() == 3  # NXDOMAIN
    wait_for(lambda: len(api.ok_get("canarytoken/hits", canarytoken=tid)["hits"]) > len(stored),
             desc="the direct lookup recorded")

    # Without the CRL check the signature verifies against the token's CA (and looks nothing up).
    before = len(api.ok_get("canarytoken/hits", canarytoken=tid)["hits"])
    rc, out = osslsigncode_verify(tmp_path, signed, ca_pem, server.dns_addr, "-ignore-crl")
    assert rc == 0 and "Signature verification: ok" in out, out
    assert "O=Microsoft" not in out and "CN=Microsoft" not in out, out
    time.sleep(1.0)
    assert len(api.ok_get("canarytoken/hits", canarytoken=tid)["hits"]) == before


def test_factory_create_and_download_pe32(server, api, tmp_path):
    need(OSSLSIGNCODE, "osslsigncode 2.9+")
    original = launcher("t32.exe")
    fac = api.ok_post("canarytoken/create_factory", memo=unique("exe factory"))["factory_auth"]
    r = requests.post(api.url("canarytoken/factory/create"),
                      data={"factory_auth": fac, "kind": KIND, "memo": unique("factory exe"),
                            "signer_name": "Wexford Engineering GmbH"},
                      files={"exe": ("launcher", original, "application/x-msdownload")}, timeout=60)
    tok = Api.ok(r)["canarytoken"]
    assert tok["kind"] == KIND and tok["signer_name"] == "Wexford Engineering GmbH"
    resp = Api(server.api_url, None).get("canarytoken/factory/download", auth=None, factory_auth=fac,
                                          canarytoken=tok["canarytoken"])
    signed = check_download(resp, "launcher.exe")
    assert_sections_identical(original, signed)
    assert pefile.PE(data=signed, fast_load=True).OPTIONAL_HEADER.Magic == 0x10b
    rc, out = osslsigncode_verify(tmp_path, signed, tok["code_signing_ca"], server.dns_addr, "-ignore-crl")
    assert rc == 0 and "Signature verification: ok" in out, out
    assert "Subject: /C=US/O=Wexford Engineering GmbH/CN=Wexford Engineering GmbH" in out, out


def test_an_already_signed_upload_gets_its_signature_replaced(server, api, tmp_path):
    need(OSSLSIGNCODE, "osslsigncode 2.9+")
    need(OPENSSL, "openssl")
    original = launcher("w64.exe")
    key, cert, theirs = tmp_path / "k.pem", tmp_path / "c.pem", tmp_path / "theirs.exe"
    subprocess.run([OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "30", "-subj", "/O=Someone Else/CN=Someone Else"],
                   check=True, capture_output=True, timeout=60)
    src = tmp_path / "w64.exe"
    src.write_bytes(original)
    subprocess.run([OSSLSIGNCODE, "sign", "-certs", str(cert), "-key", str(key), "-h", "sha256",
                    "-in", str(src), "-out", str(theirs)], check=True, capture_output=True, timeout=60)
    presigned = theirs.read_bytes()
    assert pefile.PE(data=presigned, fast_load=True).OPTIONAL_HEADER.DATA_DIRECTORY[4].Size > 0
    tok = api.ok(upload(api, presigned, name="w64.exe"))["canarytoken"]
    assert tok["replaced_signature"] is True
    signed = check_download(api.get("canarytoken/download", canarytoken=tok["canarytoken"]), "w64.exe")
    assert_sections_identical(original, signed)
    rc, out = osslsigncode_verify(tmp_path, signed, tok["code_signing_ca"], server.dns_addr, "-ignore-crl")
    assert rc == 0 and "Signature verification: ok" in out, out
    assert "Someone Else" not in out and "Number of verified signatures: 1" in out, out


def test_an_overlay_of_odd_length_is_kept_and_padded(server, api, tmp_path):
    """Data appended to an image (installers keep payloads there) stays; the file is padded to 8
    bytes before the certificate table, and the padding is hashed as osslsigncode hashes it."""
    need(OSSLSIGNCODE, "osslsigncode 2.9+")
    original = launcher("t64.exe") + b"payload appended after the last section:\x01\x02"
    assert len(original) % 8 != 0
    tok = api.ok(upload(api, original, name="setup.exe"))["canarytoken"]
    signed = check_download(api.get("canarytoken/download", canarytoken=tok["canarytoken"]), "setup.exe")
    assert_sections_identical(original, signed)
    rc, out = osslsigncode_verify(tmp_path, signed, tok["code_signing_ca"], server.dns_addr, "-ignore-crl")
    cur, calc = digests(out)
    assert cur == calc and rc == 0 and "Signature verification: ok" in out, out


def test_the_ca_is_the_installations_and_survives_a_restart(fresh_server):
    server = fresh_server
    api = server.api()
    small = launcher("t32.exe")
    first = api.ok(upload(api, small))["canarytoken"]["code_signing_ca"]
    second = api.ok(upload(api, small))["canarytoken"]["code_signing_ca"]
    assert first == second
    ca_file = os.path.join(server.data_dir, "codesign-ca.pem")
    assert oct(os.stat(ca_file).st_mode & 0o777) == "0o600"
    with open(ca_file) as f:
        kept = f.read()
    assert "PRIVATE KEY" in kept and first.strip() in kept
    server.restart()
    api = server.api()
    assert api.ok(upload(api, small))["canarytoken"]["code_signing_ca"] == first


def truncated_headers():
    return launcher("t64.exe")[:300]


def cut_in_a_section():
    data = launcher("t64.exe")
    return data[: len(data) // 2]


def dos_only():
    data = bytearray(launcher("t64.exe")[:4096])
    pe_at = int.from_bytes(data[0x3C:0x40], "little")
    data[pe_at:pe_at + 4] = b"NE\0\0"
    return bytes(data)


@pytest.mark.parametrize("make,reason", [
    (lambda: b"#!/bin/sh\necho not a program\n" * 10, "no MZ header"),
    (lambda: b"", "no MZ header"),
    (truncated_headers, "truncated"),
    (cut_in_a_section, "runs past the end"),
    (dos_only, "no PE signature"),
])
def test_bad_uploads_are_400(api, make, reason):
    b = assert_error(upload(api, make(), name="bad.exe"), 400, prefix=BAD_PARAMS)
    assert b.get("detail", "").startswith("exe") and reason in b["detail"], b


def test_missing_upload_is_400(api):
    b = assert_error(api.post("canarytoken/create", kind=KIND, memo=unique("m")), 400, prefix=BAD_PARAMS)
    assert "exe" in b.get("detail", ""), b


def test_upload_over_10mib_is_413_and_the_server_carries_on(api):
    data = launcher("t64.exe")
    big = data + b"\0" * (10 * MIB + 1 - len(data))
    b = assert_error(upload(api, big), 413)
    assert "exe is larger than 10485760 bytes" in b.get("detail", ""), b
    # Just under the limit is signed (an overlay of zeros).
    ok = data + b"\0" * (10 * MIB - len(data) - 8)
    assert api.ok(upload(api, ok))["canarytoken"]["kind"] == KIND
    api.ok_get("ping")

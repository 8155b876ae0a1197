"""qr-code ("QR Code"): a PNG QR code of the token URL. zbarimg reads it as a phone would; the
decoded URL is then visited."""

import shutil
import subprocess
import struct
import zlib

import pytest
import requests

from kindtools import assert_one_incident, download_attachment, new_token

KIND = "qr-code"
ZBARIMG = shutil.which("zbarimg")
needs_zbarimg = pytest.mark.skipif(ZBARIMG is None, reason="zbarimg (Debian: zbar-tools) is not installed; "
                                                           "CI installs it")


def make_token(api):
    """A qr-code token."""
    return new_token(api, KIND, "qr")


def download(api, tid):
    """The downloaded PNG (checked to be served as image/png): -> (file name, bytes)."""
    name, r = download_attachment(api, tid, "png")
    assert r.headers["Content-Type"].split(";")[0].strip() == "image/png", r.headers
    return name, r.content


def png_chunks(data):
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:8]
    pos, chunks = 8, []
    while pos < len(data):
        n, = struct.unpack(">I", data[pos:pos + 4])
        ctype = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + n]
        crc, = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])
        assert zlib.crc32(ctype + body) & 0xFFFFFFFF == crc, ctype
        chunks.append((ctype, body))
        pos += 12 + n
    return chunks


def test_listed_with_human_name(api):
    assert api.ok_get("canarytokens/list")["canarytokens"][KIND] == "QR Code"


def test_download_is_a_well_formed_png(api):
    tok = make_token(api)
    name, data = download(api, tok["canarytoken"])
    assert name.endswith(".png")
    chunks = png_chunks(data)
    assert chunks[0][0] == b"IHDR" and chunks[-1][0] == b"IEND"
    w, h = struct.unpack(">II", chunks[0][1][:8])
    assert w == h and w >= 21, (w, h)  # a QR code is square, at least version 1


@needs_zbarimg
def test_scanned_code_is_the_token_url_and_fires(server, api, tmp_path):
    tok = make_token(api)
    tid = tok["canarytoken"]
    name, data = download(api, tid)
    path = tmp_path / name
    path.write_bytes(data)
    out = subprocess.run([ZBARIMG, "--raw", "-q", str(path)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, (out.returncode, out.stderr)
    decoded = out.stdout.strip()
    assert decoded == tok["url"], (decoded, tok["url"])

    # the phone's browser opens it
    r = requests.get(decoded, timeout=10, headers={
        "User-Agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
                      "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
        "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    })
    assert r.status_code == 200
    _, ev = assert_one_incident(api, tok, KIND, "http")
    assert "iPhone" in ev["useragent"]
    assert api.fetch_token(tid)["triggered_count"] == 1

"""web-image ("Custom Web Image"): the token URL serves the user's uploaded PNG/JPEG/GIF.

Uploads are multipart (`web_image`), as canarytools sends them. The images are real, made here
with the standard library (PNG via zlib+struct, GIF89a with a hand-rolled LZW stream) or embedded
(a 4x4 baseline JPEG made by libjpeg's cjpeg).
"""

import io
import random
import struct
import zlib

import pytest
import requests

from conftest import make_console, unique
from kindtools import BAD_PARAMS, assert_error, assert_one_incident

KIND = "web-image"
MIB = 1024 * 1024

# 4x4 baseline JPEG (cjpeg -quality 85 -optimize), 316 bytes.
TINY_JPEG = bytes.fromhex(
    "ffd8ffe000104a46494600010100000100010000ffdb0043000503040404030504040405050506070c08070707070f0b"
    "0b090c110f1212110f111113161c1713141a1511111821181a1d1d1f1f1f13172224221e241c1e1f1effdb0043010505"
    "050706070e08080e1e1411141e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e"
    "1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1effc00011080004000403012200021101031101ffc4001500010100"
    "000000000000000000000000000007ffc4001910010002030000000000000000000000000001031453a1ffc400150101"
    "0100000000000000000000000000000607ffc4001c1100000701010000000000000000000000000203055492d11516ff"
    "da000c03010002110311003f009e655fb39002adc26b8c9d0b8087a07694a5cda3ffd9"
)


# --- helpers -----------------------------------------------------------------------------

def make_png(width, height, seed=1, level=9):
    """An RGB PNG of random pixels (random pixels do not compress: size ~ 3*w*h)."""
    rng = random.Random(seed)
    raw = b"".join(b"\x00" + rng.randbytes(width * 3) for _ in range(height))

    def chunk(ctype, body):
        return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, level))
            + chunk(b"IEND", b""))


def make_gif(width=3, height=2, pixels=(0, 1, 2, 3, 2, 1)):
    """A GIF89a with a 4-colour table. The LZW stream sends a clear code before every two
    literal codes, so the code size stays at 3 bits (a valid, if uncompressed, stream)."""
    assert len(pixels) == width * height
    palette = bytes([255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255])
    min_code, clear, eoi = 2, 4, 5
    codes = []
    for i, p in enumerate(pixels):
        if i % 2 == 0:
            codes.append(clear)
        codes.append(p)
    codes.append(eoi)
    bits, nbits, out = 0, 0, bytearray()
    for c in codes:
        bits |= c << nbits
        nbits += 3
        while nbits >= 8:
            out.append(bits & 0xFF)
            bits >>= 8
            nbits -= 8
    if nbits:
        out.append(bits & 0xFF)
    data = bytes([min_code]) + bytes([len(out)]) + bytes(out) + b"\x00"
    return (b"GIF89a" + struct.pack("<HHBBB", width, height, 0xF1, 0, 0) + palette
            + b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + data + b"\x3b")


def upload(api, name, data, mimetype, **extra):
    return requests.post(api.url("canarytoken/create"), params={"auth_token": api.auth_token},
                         data={"kind": KIND, "memo": unique("web image"), **extra},
                         files={"web_image": (name, data, mimetype)}, timeout=60)


def view(url):
    return requests.get(url, timeout=10, headers={
        "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0 Safari/537.36",
        "Accept": "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8",
    })


def assert_serves(server, api, tok, data, mimetype):
    tid = tok["canarytoken"]
    r = view(tok["url"])
    assert r.status_code == 200, (r.status_code, r.text[:200])
    assert r.headers["Content-Type"].split(";")[0].strip().lower() == mimetype, r.headers
    assert r.content == data, (len(r.content), len(data))
    _, ev = assert_one_incident(api, tok, KIND, "http")
    assert ev["useragent"].startswith("Mozilla/5.0")
    assert api.fetch_token(tid)["triggered_count"] == 1


# --- tests -----------------------------------------------------------------------------

def test_generated_images_are_well_formed():
    """Self-check of this module's image makers (independent of the server)."""
    png = make_png(5, 4)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and png.endswith(b"IEND\xaeB`\x82")
    gif = make_gif()
    assert gif.startswith(b"GIF89a") and gif.endswith(b"\x3b")
    assert TINY_JPEG.startswith(b"\xff\xd8\xff") and TINY_JPEG.endswith(b"\xff\xd9")


def test_listed_with_human_name(api):
    assert api.ok_get("canarytokens/list")["canarytokens"][KIND] == "Custom Web Image"


@pytest.mark.parametrize("fmt", ["png", "jpeg", "gif"])
def test_uploaded_image_is_served_and_fires(server, api, fmt):
    data, mimetype, name = {
        "png": (make_png(7, 5, seed=11), "image/png", "logo.png"),
        "jpeg": (TINY_JPEG, "image/jpeg", "photo.jpg"),
        "gif": (make_gif(), "image/gif", "anim.gif"),
    }[fmt]
    r = upload(api, name, data, mimetype)
    tok = api.ok(r)["canarytoken"]
    assert tok["kind"] == KIND
    assert_serves(server, api, tok, data, mimetype)


class _StaysOpen(io.BytesIO):
    """A file whose `with` block does not close it."""

    def __exit__(self, *exc):
        return False


def test_canarytools_upload(server, api, tmp_path, monkeypatch):
    """canarytools 1.2.3 opens `web_image` in a `with` block and posts after the block has closed
    the file (requests then fails with "read of closed file" before anything is sent). Its `open`
    is swapped for one whose file survives the block; everything else is the client's own code,
    so the server gets exactly the multipart request the client means to send (note that it also
    sends the file's path as a plain `web_image` form field next to the file part)."""
    import canarytools.models.canarytokens as ct_tokens
    monkeypatch.setattr(ct_tokens, "open", lambda path, mode="r", *a, **kw: _StaysOpen(open(path, "rb").read()),
                        raising=False)
    data = make_png(9, 9, seed=3)
    path = tmp_path / "company-logo.png"
    path.write_bytes(data)
    console = make_console(server)
    memo = unique("ct web image")
    token = console.tokens.create(memo=memo, kind=KIND, web_image=str(path), mimetype="image/png")
    assert token.kind == KIND
    assert token.memo == memo
    tok = api.fetch_token(token.canarytoken)
    assert_serves(server, api, tok, data, "image/png")


def test_large_image_under_the_limit_is_accepted(server, api):
    data = make_png(700, 700, seed=5, level=0)
    assert 1.3 * MIB < len(data) < 1.9 * MIB, len(data)
    tok = api.ok(upload(api, "big.png", data, "image/png"))["canarytoken"]
    r = view(tok["url"])
    assert r.status_code == 200
    assert r.content == data


def test_missing_image_is_400(api):
    b = assert_error(api.post("canarytoken/create", kind=KIND, memo=unique("m")), 400, prefix=BAD_PARAMS)
    assert "web_image" in b.get("detail", "") + b["message"], b
    # multipart, but without the file part
    r = requests.post(api.url("canarytoken/create"), params={"auth_token": api.auth_token},
                      files={"kind": (None, KIND), "memo": (None, unique("m"))}, timeout=30)
    assert_error(r, 400, prefix=BAD_PARAMS)


def test_text_named_png_is_400(api):
    text = b"This is not an image, whatever its name says.\n" * 20
    b = assert_error(upload(api, "x.png", text, "image/png"), 400, prefix=BAD_PARAMS)
    assert "web_image" in b.get("detail", "") + b["message"], b


def test_empty_file_is_400(api):
    assert_error(upload(api, "empty.png", b"", "image/png"), 400, prefix=BAD_PARAMS)


def test_truncated_png_is_400(api):
    png = make_png(40, 40, seed=9)
    assert_error(upload(api, "cut.png", png[: len(png) // 2], "image/png"), 400, prefix=BAD_PARAMS)


def test_other_formats_are_400(api):
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"><script>alert(1)</script></svg>'
    assert_error(upload(api, "x.svg", svg, "image/svg+xml"), 400, prefix=BAD_PARAMS)
    bmp_header = b"BM" + struct.pack("<IHHI", 70, 0, 0, 54) + b"\x00" * 64
    assert_error(upload(api, "x.bmp", bmp_header, "image/bmp"), 400, prefix=BAD_PARAMS)


def test_upload_over_2mib_is_413(api):
    data = make_png(860, 860, seed=13, level=0)
    assert len(data) > 2 * MIB, len(data)
    try:
        r = upload(api, "huge.png", data, "image/png")
    except requests.exceptions.ConnectionError as e:  # pragma: no cover
        pytest.fail(f"server dropped the connection instead of answering 413: {e}")
    assert_error(r, 413)
    api.ok_get("ping")


# --- audit F3: big images are refused by their header, and checked off the hit path -------------

def make_flat_png(width, height):
    """An RGBA PNG of one colour: tiny on the wire, width*height*4 bytes once decoded."""
    row = b"\x00" + b"\x00" * (width * 4)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()

    def chunk(ctype, body):
        return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


@pytest.mark.parametrize("size", [(8192, 8192), (4097, 16), (16, 4097)])
def test_images_over_4096_a_side_are_refused_before_decoding(api, size):
    data = make_flat_png(*size)
    assert len(data) < MIB
    b = assert_error(upload(api, "huge.png", data, "image/png"), 400, prefix=BAD_PARAMS)
    assert "at most 4096×4096" in b.get("detail", "") + b["message"], b


def test_uploads_never_stall_hits(server, api):
    """Ten 4096×4096 uploads at once (64 MiB each decoded) while a client fires a token: every
    upload is answered 200 or, past the work pool's short queue, 503 in the Console's error
    shape at once (before the fix all ten were decoded side by side on the threads that serve
    hits); every hit is answered and stored."""
    import concurrent.futures
    import time

    from conftest import http_hit
    data = make_flat_png(4096, 4096)
    tid = api.create_token("http")["canarytoken"]
    stop = time.monotonic() + 60
    results, latencies = [], []

    def uploader():
        r = upload(api, "big.png", data, "image/png")
        return r.status_code, r.json()

    def hitter():
        n = 0
        while time.monotonic() < stop and not all(f.done() for f in ups):
            t0 = time.monotonic()
            assert http_hit(server, tid, path=f"/{tid}/p?n={n}").status_code == 200
            latencies.append(time.monotonic() - t0)
            n += 1
        return n

    with concurrent.futures.ThreadPoolExecutor(12) as ex:
        ups = [ex.submit(uploader) for _ in range(10)]
        fired = ex.submit(hitter)
        results = [u.result(timeout=60) for u in ups]
        fired = fired.result(timeout=60)
    codes = sorted(code for code, _ in results)
    assert set(codes) <= {200, 503}, results
    assert 200 in codes and 503 in codes, codes
    for code, body in results:
        if code == 503:
            assert body == {"result": "error", "message": "Too busy, try again shortly"}, body
    assert fired > 0
    assert max(latencies) < 2.0, f"a hit waited {max(latencies):.2f} s behind the uploads"
    stored = api.ok_get("canarytoken/hits", canarytoken=tid, limit="1000")["hits"]
    assert len(stored) == fired, (len(stored), fired)

"""The trigger HTTP listener: hits, recorded details, and hostile input."""

import shutil
import socket
import subprocess
import time
import uuid
from urllib.parse import parse_qs

import pytest
import requests

from conftest import (
    gif_dimensions,
    http_hit,
    is_gif,
    random_token_id,
    trigger_path,
    unique,
    url_path_parts,
)

CURL = shutil.which("curl")
LOCAL_PORTS = (43100, 43999)  # curl --local-port range, to check the recorded src_port


def query_matches(recorded, raw):
    """The event's `query` may be the raw query string or a decoded mapping."""
    if isinstance(recorded, str):
        return recorded.lstrip("?") == raw
    if isinstance(recorded, dict):
        want = parse_qs(raw, keep_blank_values=True)
        got = {k: (v if isinstance(v, list) else [v]) for k, v in recorded.items()}
        return got == want
    return False


def assert_gif_response(resp_status, ctype, body=None):
    assert resp_status == 200
    assert ctype.split(";")[0].strip().lower() == "image/gif"
    if body is not None:
        assert is_gif(body), body[:16]
        assert gif_dimensions(body) == (1, 1)


def curl(server, method, url_path, ua, data=None, extra=()):
    assert CURL, "curl is required for these tests"
    cmd = [CURL, "-sS", "-o", "-", "--max-time", "10",
           "--local-port", f"{LOCAL_PORTS[0]}-{LOCAL_PORTS[1]}", "-A", ua]
    if method == "HEAD":
        cmd += ["-I"]  # headers go to the output; there is no body
    else:
        cmd += ["-D", "-", "-X", method]
    if data is not None:
        cmd += ["--data-binary", data]
    cmd += list(extra) + [server.http_base() + url_path]
    out = subprocess.run(cmd, capture_output=True, timeout=20)
    assert out.returncode == 0, out.stderr
    head, _, body = out.stdout.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, body


@pytest.mark.parametrize("method", ["GET", "POST", "HEAD", "OPTIONS"])
def test_curl_methods_record_hits(server, api, method):
    tok = api.create_token("http", browser_scanner_enabled="false")
    tid = tok["canarytoken"]
    ua = f"curl-e2e/{uuid.uuid4().hex[:8]}"
    path = f"/images/{tid}/pixel.gif"
    query = "a=1&b=two"
    status, headers, body = curl(server, method, f"{path}?{query}", ua,
                                 data="field=value" if method == "POST" else None)
    assert_gif_response(status, headers.get("content-type", ""), None if method == "HEAD" else body)
    if method == "HEAD":
        assert body == b""

    evs = api.wait_events(tid)
    assert len(evs) == 1
    ev = evs[0]
    assert ev["canarytoken"] == tid
    assert ev["type"] == "http"
    assert ev["method"] == method
    assert ev["path"] == path
    assert query_matches(ev["query"], query), ev["query"]
    assert ev["useragent"] == ua
    assert ev["headers"]["User-Agent"] == ua
    assert ev["src_host"] == "127.0.0.1"
    assert LOCAL_PORTS[0] <= int(ev["src_port"]) <= LOCAL_PORTS[1], ev["src_port"]
    assert ev["timestamp_std"]

    incs = api.incidents_for(tid)
    assert len(incs) == 1
    inc = incs[0]
    assert inc["logtype"] == "17000"
    assert inc["kind"] == "http"
    assert inc["memo"] == tok["memo"]
    assert inc["src_host"] == "127.0.0.1"
    assert inc["summary"] == "Canarytoken triggered"
    assert api.fetch_token(tid)["triggered_count"] == 1


def test_requests_hit_records_canonical_headers(server, api):
    tok = api.create_token("http")
    tid = tok["canarytoken"]
    marker = uuid.uuid4().hex
    r = http_hit(server, tid, path=f"/a/b/{tid}/c.png?x={marker}",
                 headers={"User-Agent": "Mozilla/5.0 (e2e)", "x-trap-marker": marker,
                          "accept-language": "en-ZA"})
    assert r.status_code == 200
    ev = api.wait_events(tid)[0]
    assert ev["method"] == "GET"
    assert ev["path"] == f"/a/b/{tid}/c.png"
    assert query_matches(ev["query"], f"x={marker}")
    assert ev["useragent"] == "Mozilla/5.0 (e2e)"
    assert ev["headers"]["User-Agent"] == "Mozilla/5.0 (e2e)"
    assert ev["headers"]["X-Trap-Marker"] == marker
    assert ev["headers"]["Accept-Language"] == "en-ZA"
    assert isinstance(ev["src_port"], int) or str(ev["src_port"]).isdigit()


def test_post_body_and_default_token_url(server, api):
    tok = api.create_token("http")
    tid = tok["canarytoken"]
    parts = url_path_parts(tok["url"])
    assert parts[-2] == tid and len(parts) >= 3
    # Requesting the path of the token's own URL on the listener fires it.
    path = "/" + "/".join(parts)
    r = requests.post(server.http_base() + path, data={"k": "v"}, timeout=10)
    assert r.status_code == 200
    ev = api.wait_events(tid)[0]
    assert ev["method"] == "POST"
    assert ev["path"] == path


def test_unknown_and_disabled_tokens_get_identical_gif_and_no_hit(server, api):
    plain = api.create_token("http", browser_scanner_enabled="false")
    disabled = api.create_token("http", browser_scanner_enabled="false")
    api.ok_post("canarytoken/disable", canarytoken=disabled["canarytoken"])
    unknown = random_token_id()

    answers = {}
    for name, tid in (("plain", plain["canarytoken"]), ("disabled", disabled["canarytoken"]),
                      ("unknown", unknown)):
        r = http_hit(server, tid, path=trigger_path(tid, "logo.gif"))
        assert r.status_code == 200, name
        assert r.headers["Content-Type"].split(";")[0] == "image/gif", name
        assert is_gif(r.content) and gif_dimensions(r.content) == (1, 1), name
        answers[name] = r.content
    assert answers["unknown"] == answers["disabled"] == answers["plain"]

    # The enabled token's hit shows recording works; the other two left nothing.
    api.wait_events(plain["canarytoken"])
    assert api.incidents_for(disabled["canarytoken"]) == []
    assert all(i.get("canarytoken") != unknown for i in api.incidents())
    assert api.fetch_token(disabled["canarytoken"])["triggered_count"] == 0


def test_unknown_and_disabled_identical_for_head_and_options(server, api):
    disabled = api.create_token("http", browser_scanner_enabled="false")
    api.ok_post("canarytoken/disable", canarytoken=disabled["canarytoken"])
    for method in ("HEAD", "OPTIONS", "POST"):
        a = http_hit(server, disabled["canarytoken"], method=method)
        b = http_hit(server, random_token_id(), method=method)
        assert a.status_code == b.status_code == 200, method
        assert a.headers["Content-Type"] == b.headers["Content-Type"], method
        assert a.headers["Content-Type"].split(";")[0] == "image/gif", method
        assert a.content == b.content, method
    assert api.incidents_for(disabled["canarytoken"]) == []


def test_token_in_query_string(server, api):
    tok = api.create_token("http")
    tid = tok["canarytoken"]
    r = requests.get(f"{server.http_base()}/static/img/spacer.gif",
                     params={"id": tid, "utm": "mail"}, timeout=10)
    assert r.status_code == 200
    ev = api.wait_events(tid)[0]
    assert ev["path"] == "/static/img/spacer.gif"
    assert query_matches(ev["query"], f"id={tid}&utm=mail")


def test_hit_on_dns_token_via_http_is_recorded(server, api):
    tok = api.create_token("dns")
    tid = tok["canarytoken"]
    assert http_hit(server, tid).status_code == 200
    ev = api.wait_events(tid)[0]
    # The event's type is the token's kind; its channel says it came in over HTTP. The logtype
    # follows the kind (spec: "16xxx for DNS-triggered, 17xxx for HTTP-triggered kinds").
    assert (ev["type"], ev["channel"]) == ("dns", "http")
    assert api.incidents_for(tid)[0]["logtype"] == "16000"


def test_each_hit_counts(server, api):
    tok = api.create_token("http")
    tid = tok["canarytoken"]
    for i in range(3):
        assert http_hit(server, tid, path=f"/p/{tid}/x?n={i}").status_code == 200
    evs = api.wait_events(tid, count=3)
    assert len(evs) == 3
    for i in range(3):
        assert sum(1 for e in evs if query_matches(e["query"], f"n={i}")) == 1, evs
    assert api.fetch_token(tid)["triggered_count"] == 3


def raw_http(server, request_bytes, timeout=10):
    host, port = server.http_base().split("//", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(request_bytes)
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return data


ODD_PATHS = [
    b"/%ff%fe/..;/",
    b"/..%2f..%2f..%2fetc%2fpasswd",
    b"/%00%01%02",
    b"//////",
    b"/?%%%=&&==",
    b"/a/..;/b/%2e%2e/",
    b"/\xff\xfe\xfd",
    b"/" + b"a" * 10_000,
    b"/" + b"0123456789abcdefghijklmno" * 400,  # 10 kB of token-shaped characters
    b"/%",
    b"*",
]


@pytest.mark.parametrize("path", ODD_PATHS, ids=lambda p: repr(p[:24]))
def test_odd_urls_never_5xx(server, path):
    resp = raw_http(server, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert resp.startswith(b"HTTP/1."), resp[:200]
    status = int(resp.split(b" ", 2)[1])
    assert status < 500, resp[:300]
    # and the listener is still healthy
    assert http_hit(server, random_token_id()).status_code == 200


def test_odd_urls_via_curl_never_5xx(server):
    for p in ("/%ff%fe/..;/", "/" + "x" * 10_000, "/%2e%2e/%2e%2e/"):
        out = subprocess.run([CURL, "-s", "-o", "/dev/null", "-w", "%{http_code}", "--path-as-is",
                              "--max-time", "10", server.http_base() + p],
                             capture_output=True, text=True, timeout=20)
        code = int(out.stdout or 0)
        assert 200 <= code < 500, (p[:30], code)


def test_garbage_request_does_not_break_listener(server, api):
    host, port = server.http_base().split("//", 1)[1].split(":")
    for junk in (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,  # TLS hello
                 b"NOT HTTP AT ALL\r\n\r\n", b"GET / HTTP/1.1\r\n" + b"X: " + b"y" * 70_000 + b"\r\n\r\n"):
        with socket.create_connection((host, int(port)), timeout=5) as s:
            try:
                s.sendall(junk)
                s.recv(1024)
            except OSError:
                pass
    tok = api.create_token("http")
    assert http_hit(server, tok["canarytoken"]).status_code == 200
    api.wait_events(tok["canarytoken"])


def test_slow_headers_are_cut_off_and_do_not_block_others(server, api):
    """A client that never finishes its headers is disconnected after the header deadline
    (10 s), and other clients are served meanwhile."""
    import socket
    tid = api.create_token("http", memo=unique("slowloris"))["canarytoken"]
    host, port = server.http_base().split("//")[1].rstrip("/").split(":")
    slow = socket.create_connection((host, int(port)), timeout=20)
    slow.sendall(f"GET /x/{tid}/a.gif HTTP/1.1\r\nHost: x\r\nX-Slow: ".encode())
    started = time.monotonic()
    # Meanwhile, an ordinary request is answered at once.
    assert requests.get(f"{server.http_base()}/x/{random_token_id()}/b.gif", timeout=5).status_code == 200
    slow.settimeout(20)
    data = b""
    while True:
        chunk = slow.recv(4096)
        if not chunk:
            break
        data += chunk
    elapsed = time.monotonic() - started
    slow.close()
    assert 8 <= elapsed <= 15, elapsed
    assert not data.startswith(b"HTTP/1.1 200"), data[:100]
    assert api.events_for(tid) == [], "an unfinished request is not a hit"


def test_huge_method_is_stored_cut(server, api):
    """Audit F7: a 300 KB method name was stored uncut; every stored text is cut to 2 KiB."""
    tid = api.create_token("http")["canarytoken"]
    resp = raw_http(server, b"A" * 300_000 + f" /{tid}/m HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".encode())
    assert resp.startswith(b"HTTP/1.1 "), resp[:100]
    hits = api.ok_get("canarytoken/hits", canarytoken=tid)["hits"]
    assert len(hits) == 1, hits
    assert hits[0]["method"] == "A" * 2048

"""slow-redirect ("Slow Redirect"): a URL that records the visit and serves an HTML page that
redirects (script, with a `<meta http-equiv="refresh">` fallback) to `browser_redirect_url`.
The browser-driven check (real Chromium) is in test_kind_http_scanner.py."""

import html
import re
import time
import uuid

import pytest
import requests

from conftest import unique

KIND = "slow-redirect"
HUMAN = "Slow Redirect"


# --- helpers (copied from test_bad_input.py; test modules do not import each other) -------

BAD_PARAMS = "Could not process the parameters"
BAD_URLS = ["ftp://x", "javascript:alert(1)", "//evil", "not a url"]


def assert_error(resp, status, message=None, prefix=None):
    assert resp.status_code == status, (resp.status_code, resp.text[:300])
    assert resp.headers.get("Content-Type", "").split(";")[0].strip() == "application/json", \
        resp.headers.get("Content-Type")
    body = resp.json()
    assert body.get("result") == "error", body
    assert isinstance(body.get("message"), str) and body["message"], body
    if message is not None:
        assert body["message"] == message, body
    if prefix is not None:
        assert body["message"].startswith(prefix), body
    return body


def browser_headers(marker=None):
    """What Chrome sends for a top-level navigation."""
    ua = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          f"Chrome/126.0.0.0 Safari/537.36 e2e/{marker or uuid.uuid4().hex[:10]}")
    return {
        "User-Agent": ua,
        "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
                  "image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7",
        "Accept-Language": "en-US,en;q=0.9",
        "Accept-Encoding": "gzip, deflate",
        "Upgrade-Insecure-Requests": "1",
        "Sec-Fetch-Dest": "document",
        "Sec-Fetch-Mode": "navigate",
        "Sec-Fetch-Site": "none",
    }


def visit(tok, headers):
    return requests.get(tok["url"], headers=headers, allow_redirects=False, timeout=10)


def make_token(api, url):
    tok = api.create_token(KIND, memo=unique(KIND), browser_redirect_url=url)
    assert tok["kind"] == KIND
    assert tok["browser_redirect_url"] == url
    return tok


def test_listed_with_human_name(api):
    assert api.ok_get("canarytokens/list")["tokens"][KIND] == HUMAN


def test_redirect_url_is_required(api):
    b = assert_error(api.post("canarytoken/create", kind=KIND, memo=unique("m")), 400, prefix=BAD_PARAMS)
    assert "browser_redirect_url" in b.get("detail", "") + b["message"], b
    assert_error(api.post("canarytoken/create", kind=KIND, memo=unique("m"), browser_redirect_url=""),
                 400, prefix=BAD_PARAMS)


@pytest.mark.parametrize("bad", BAD_URLS)
def test_non_http_redirect_urls_are_400(api, bad):
    b = assert_error(api.post("canarytoken/create", kind=KIND, memo=unique("m"), browser_redirect_url=bad),
                     400, prefix=BAD_PARAMS)
    assert "browser_redirect_url" in b.get("detail", "") + b["message"], b


@pytest.mark.parametrize("url", ["http://intranet.example/", "https://intranet.example:8443/a/b?c=d"])
def test_http_and_https_are_accepted(api, url):
    tok = make_token(api, url)
    assert api.fetch_token(tok["canarytoken"])["browser_redirect_url"] == url


def test_update_redirect_url_rules(api):
    tok = make_token(api, "https://old.example/start")
    tid = tok["canarytoken"]
    for bad in BAD_URLS + [""]:
        assert_error(api.post("canarytoken/update/redirect_url", canarytoken=tid, redirect_url=bad),
                     400, prefix=BAD_PARAMS)
    assert api.fetch_token(tid)["browser_redirect_url"] == "https://old.example/start"

    http_tok = api.create_token("http", memo=unique("not a redirect"))
    assert_error(api.post("canarytoken/update/redirect_url", canarytoken=http_tok["canarytoken"],
                          redirect_url="https://new.example/"), 400)
    assert "browser_redirect_url" not in api.fetch_token(http_tok["canarytoken"]) or \
        not api.fetch_token(http_tok["canarytoken"])["browser_redirect_url"]

    api.ok_post("canarytoken/update/redirect_url", canarytoken=tid, redirect_url="https://new.example/next")
    assert api.fetch_token(tid)["browser_redirect_url"] == "https://new.example/next"


# --- the page ----------------------------------------------------------------------------

def mentions(text, url):
    return url in text or html.escape(url) in text or url.replace("/", "\\/") in text


def meta_refresh(text):
    tags = re.findall(r"<meta\b[^>]*>", text, re.I)
    return [t for t in tags if re.search(r"""http-equiv\s*=\s*["']?refresh\b""", t, re.I)]


def test_visit_serves_the_redirect_page_and_records_once(server, api):
    target = "https://intranet.example/landing-page"
    tok = make_token(api, target)
    tid = tok["canarytoken"]
    headers = browser_headers()
    r = visit(tok, headers)
    assert r.status_code == 200, (r.status_code, r.headers)
    assert r.headers["Content-Type"].split(";")[0].strip().lower() == "text/html"
    page = r.text
    assert mentions(page, target), page[:2000]
    assert re.search(r"<script\b", page, re.I), "the page redirects with script"
    metas = meta_refresh(page)
    assert len(metas) >= 1, page[:2000]
    assert any(mentions(m, target) for m in metas), metas

    incs = api.wait_incidents(tid)
    time.sleep(0.5)
    incs = api.incidents_for(tid)
    assert len(incs) == 1, incs
    inc = incs[0]
    assert inc["kind"] == KIND
    assert inc["memo"] == tok["memo"]
    assert str(inc["logtype"]).startswith("17"), inc["logtype"]
    ev = inc["events"][0]
    assert ev["type"] == "http"
    assert ev["useragent"] == headers["User-Agent"]
    assert ev["headers"]["User-Agent"] == headers["User-Agent"]
    assert api.fetch_token(tid)["triggered_count"] == 1


def test_page_carries_a_target_with_a_query(server, api):
    """A target with a query string (`&` means something in HTML) is on the page, raw in
    script or HTML-escaped in the meta tag."""
    target = "https://intranet.example/a?x=1&y=%22q%22"
    tok = make_token(api, target)
    r = visit(tok, browser_headers())
    assert r.status_code == 200
    page = r.text
    assert mentions(page, target), page[:2000]
    assert any(mentions(m, target) for m in meta_refresh(page)), meta_refresh(page)


def test_update_changes_the_page(server, api):
    tok = make_token(api, "https://old.example/start")
    tid = tok["canarytoken"]
    assert mentions(visit(tok, browser_headers()).text, "https://old.example/start")
    new = "https://new.example/next-page"
    api.ok_post("canarytoken/update/redirect_url", canarytoken=tid, redirect_url=new)
    page = visit(tok, browser_headers()).text
    assert mentions(page, new), page[:2000]
    assert "old.example" not in page
    assert api.fetch_token(tid)["browser_redirect_url"] == new

"""fast-redirect ("Fast Redirect") and slow-redirect ("Slow Redirect"): a URL that records the visit
and sends the visitor on to `browser_redirect_url`; `canarytoken/update/redirect_url` changes the
target.

fast-redirect answers 302. slow-redirect serves an HTML page that redirects (script, with a
`<meta http-equiv="refresh">` fallback); the browser-driven check (real Chromium) is in
test_kind_http_scanner.py. Creating, validating and updating the target are the same for both
kinds, so those tests run for each.
"""

import html
import re
import uuid

import pytest
import requests

from conftest import unique
from kindtools import BAD_PARAMS, assert_error, assert_one_incident, new_token, settle_http

FAST = "fast-redirect"
SLOW = "slow-redirect"
HUMAN = {FAST: "Fast Redirect", SLOW: "Slow Redirect"}
BAD_URLS = ["ftp://x", "javascript:alert(1)", "//evil", "not a url"]

each_kind = pytest.mark.parametrize("kind", [FAST, SLOW])


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
    """Open the token URL without following the redirect."""
    return requests.get(tok["url"], headers=headers, allow_redirects=False, timeout=10)


def make_token(api, kind, url):
    """A redirect token of `kind` whose target is `url`."""
    tok = new_token(api, kind, kind, browser_redirect_url=url)
    assert tok["browser_redirect_url"] == url
    return tok


# --- both kinds: creating, validating and updating the target ------------------------------

@each_kind
def test_listed_with_human_name(api, kind):
    assert api.ok_get("canarytokens/list")["canarytokens"][kind] == HUMAN[kind]


@each_kind
def test_redirect_url_is_required(api, kind):
    b = assert_error(api.post("canarytoken/create", kind=kind, memo=unique("m")), 400, prefix=BAD_PARAMS)
    assert "browser_redirect_url" in b.get("detail", "") + b["message"], b
    assert_error(api.post("canarytoken/create", kind=kind, memo=unique("m"), browser_redirect_url=""),
                 400, prefix=BAD_PARAMS)


@pytest.mark.parametrize("bad", BAD_URLS)
@each_kind
def test_non_http_redirect_urls_are_400(api, kind, bad):
    b = assert_error(api.post("canarytoken/create", kind=kind, memo=unique("m"), browser_redirect_url=bad),
                     400, prefix=BAD_PARAMS)
    assert "browser_redirect_url" in b.get("detail", "") + b["message"], b


@pytest.mark.parametrize("url", ["http://intranet.example/", "https://intranet.example:8443/a/b?c=d"])
@each_kind
def test_http_and_https_are_accepted(api, kind, url):
    tok = make_token(api, kind, url)
    assert api.fetch_token(tok["canarytoken"])["browser_redirect_url"] == url


@each_kind
def test_update_redirect_url_rules(api, kind):
    tok = make_token(api, kind, "https://old.example/start")
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


# --- fast-redirect: the 302 ------------------------------------------------------------------

def test_fast_visit_redirects_and_records(server, api):
    target = "https://intranet.example/welcome?from=mail&x=1"
    tok = make_token(api, FAST, target)
    tid = tok["canarytoken"]
    headers = browser_headers()
    r = visit(tok, headers)
    assert r.status_code == 302, (r.status_code, r.text[:200])
    assert r.headers["Location"] == target

    inc, ev = assert_one_incident(api, tok, FAST, "http")
    assert inc["summary"] == "Canarytoken triggered"
    assert ev["method"] == "GET"
    assert ev["useragent"] == headers["User-Agent"]
    assert ev["headers"]["User-Agent"] == headers["User-Agent"]
    assert ev["headers"]["Accept-Language"] == headers["Accept-Language"]
    assert ev["src_host"] == "127.0.0.1"
    assert api.fetch_token(tid)["triggered_count"] == 1


def test_fast_any_accept_header_is_redirected(server, api):
    """A link preview or curl gets the same 302 (and is recorded too)."""
    tok = make_token(api, FAST, "https://intranet.example/x")
    r = requests.get(tok["url"], headers={"User-Agent": "curl/8.5.0", "Accept": "*/*"},
                     allow_redirects=False, timeout=10)
    assert r.status_code == 302
    assert r.headers["Location"] == "https://intranet.example/x"
    ev = api.wait_events(tok["canarytoken"])[0]
    assert ev["useragent"] == "curl/8.5.0"


def test_fast_update_changes_the_next_redirect(server, api):
    tok = make_token(api, FAST, "https://old.example/start")
    tid = tok["canarytoken"]
    assert visit(tok, browser_headers()).headers["Location"] == "https://old.example/start"
    new = "http://new.example:8080/next?a=b"
    api.ok_post("canarytoken/update/redirect_url", canarytoken=tid, redirect_url=new)
    r = visit(tok, browser_headers())
    assert r.status_code == 302
    assert r.headers["Location"] == new
    assert api.fetch_token(tid)["browser_redirect_url"] == new
    # The same browser again within a minute: a further event of the same incident.
    api.wait_events(tid, count=2)
    assert len(api.incidents_for(tid)) == 1


def test_fast_disabled_token_does_not_record(server, api):
    tok = make_token(api, FAST, "https://intranet.example/d")
    api.ok_post("canarytoken/disable", canarytoken=tok["canarytoken"])
    visit(tok, browser_headers())
    settle_http(api)
    assert api.incidents_for(tok["canarytoken"]) == []


# --- slow-redirect: the page -----------------------------------------------------------------

def mentions(text, url):
    """`url` is in `text`: raw, HTML-escaped or with JSON-escaped slashes."""
    return url in text or html.escape(url) in text or url.replace("/", "\\/") in text


def meta_refresh(text):
    """The `<meta http-equiv="refresh">` tags of a page."""
    tags = re.findall(r"<meta\b[^>]*>", text, re.I)
    return [t for t in tags if re.search(r"""http-equiv\s*=\s*["']?refresh\b""", t, re.I)]


def test_slow_visit_serves_the_redirect_page_and_records_once(server, api):
    target = "https://intranet.example/landing-page"
    tok = make_token(api, SLOW, target)
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

    _, ev = assert_one_incident(api, tok, SLOW, "http", settle=0.5)
    assert ev["useragent"] == headers["User-Agent"]
    assert ev["headers"]["User-Agent"] == headers["User-Agent"]
    assert api.fetch_token(tid)["triggered_count"] == 1


def test_slow_page_carries_a_target_with_a_query(server, api):
    """A target with a query string (`&` means something in HTML) is on the page, raw in
    script or HTML-escaped in the meta tag."""
    target = "https://intranet.example/a?x=1&y=%22q%22"
    tok = make_token(api, SLOW, target)
    r = visit(tok, browser_headers())
    assert r.status_code == 200
    page = r.text
    assert mentions(page, target), page[:2000]
    assert any(mentions(m, target) for m in meta_refresh(page)), meta_refresh(page)


def test_slow_update_changes_the_page(server, api):
    tok = make_token(api, SLOW, "https://old.example/start")
    tid = tok["canarytoken"]
    assert mentions(visit(tok, browser_headers()).text, "https://old.example/start")
    new = "https://new.example/next-page"
    api.ok_post("canarytoken/update/redirect_url", canarytoken=tid, redirect_url=new)
    page = visit(tok, browser_headers()).text
    assert mentions(page, new), page[:2000]
    assert "old.example" not in page
    assert api.fetch_token(tid)["browser_redirect_url"] == new

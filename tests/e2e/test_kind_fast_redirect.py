"""fast-redirect ("Fast Redirect"): a URL that records the visit and answers 302 to
`browser_redirect_url`; `canarytoken/update/redirect_url` changes the target."""

import uuid

import pytest
import requests

from conftest import unique

KIND = "fast-redirect"
HUMAN = "Fast Redirect"


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


# --- the redirect itself ---------------------------------------------------------------

def test_visit_redirects_and_records(server, api):
    target = "https://intranet.example/welcome?from=mail&x=1"
    tok = make_token(api, target)
    tid = tok["canarytoken"]
    headers = browser_headers()
    r = visit(tok, headers)
    assert r.status_code == 302, (r.status_code, r.text[:200])
    assert r.headers["Location"] == target

    incs = api.wait_incidents(tid)
    assert len(incs) == 1, incs
    inc = incs[0]
    assert inc["kind"] == KIND
    assert inc["memo"] == tok["memo"]
    assert inc["summary"] == "Canarytoken triggered"
    assert str(inc["logtype"]).startswith("17"), inc["logtype"]
    ev = inc["events"][0]
    assert ev["type"] == "http"
    assert ev["method"] == "GET"
    assert ev["useragent"] == headers["User-Agent"]
    assert ev["headers"]["User-Agent"] == headers["User-Agent"]
    assert ev["headers"]["Accept-Language"] == headers["Accept-Language"]
    assert ev["src_host"] == "127.0.0.1"
    assert api.fetch_token(tid)["triggered_count"] == 1


def test_any_accept_header_is_redirected(server, api):
    """A link preview or curl gets the same 302 (and is recorded too)."""
    tok = make_token(api, "https://intranet.example/x")
    r = requests.get(tok["url"], headers={"User-Agent": "curl/8.5.0", "Accept": "*/*"},
                     allow_redirects=False, timeout=10)
    assert r.status_code == 302
    assert r.headers["Location"] == "https://intranet.example/x"
    ev = api.wait_events(tok["canarytoken"])[0]
    assert ev["useragent"] == "curl/8.5.0"


def test_update_changes_the_next_redirect(server, api):
    tok = make_token(api, "https://old.example/start")
    tid = tok["canarytoken"]
    assert visit(tok, browser_headers()).headers["Location"] == "https://old.example/start"
    new = "http://new.example:8080/next?a=b"
    api.ok_post("canarytoken/update/redirect_url", canarytoken=tid, redirect_url=new)
    r = visit(tok, browser_headers())
    assert r.status_code == 302
    assert r.headers["Location"] == new
    assert api.fetch_token(tid)["browser_redirect_url"] == new
    api.wait_incidents(tid, count=2)


def test_disabled_token_does_not_record(server, api):
    tok = make_token(api, "https://intranet.example/d")
    api.ok_post("canarytoken/disable", canarytoken=tok["canarytoken"])
    visit(tok, browser_headers())
    control = api.create_token("http", memo=unique("control"), browser_scanner_enabled="false")
    requests.get(control["url"], timeout=10)
    api.wait_events(control["canarytoken"])
    assert api.incidents_for(tok["canarytoken"]) == []

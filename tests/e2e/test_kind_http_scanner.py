"""The browser scanner of `http` tokens (and of slow-redirect): a browser navigating to the token
URL gets an HTML page whose script reports browser details, which join the hit (one incident).
Image requests and scanner-off tokens get the GIF.

The browser checks drive real Chromium through Playwright (CI installs both); they are skipped,
with a message, when either is missing.
"""

import os
import time
import uuid

import pytest
import requests

from conftest import is_gif, unique, wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
BROWSER_KEYS = ("language", "platform", "screen", "timezone", "plugins")

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover
    sync_playwright = None

_missing = []
if sync_playwright is None:
    _missing.append("the python package 'playwright' (pip install -r tests/e2e/requirements.txt)")
if not os.path.exists(CHROMIUM):
    _missing.append(f"{CHROMIUM} (Debian: apt-get install chromium)")
needs_browser = pytest.mark.skipif(bool(_missing), reason="real-browser test needs " + " and ".join(_missing)
                                   + "; CI installs both")


def browser_headers():
    return {
        "User-Agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                      f"Chrome/126.0.0.0 Safari/537.36 e2e/{uuid.uuid4().hex[:8]}",
        "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
                  "image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7",
        "Accept-Language": "en-US,en;q=0.9",
        "Upgrade-Insecure-Requests": "1",
        "Sec-Fetch-Dest": "document",
        "Sec-Fetch-Mode": "navigate",
    }


def image_headers():
    return {
        "User-Agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/126.0.0.0 Safari/537.36",
        "Accept": "image/*",
    }


def ctype(r):
    return r.headers.get("Content-Type", "").split(";")[0].strip().lower()


def settle_single_incident(api, tid):
    time.sleep(1.0)
    incs = api.incidents_for(tid)
    assert len(incs) == 1, incs
    return incs[0]


def wait_browser_details(api, tid, timeout=10.0):
    """Poll until the token's incident's event carries a complete `browser` object."""
    def check():
        incs = api.incidents_for(tid)
        for inc in incs:
            for ev in inc.get("events", []):
                b = ev.get("browser")
                if isinstance(b, dict) and all(k in b for k in BROWSER_KEYS):
                    return incs
        return None
    return wait_for(check, timeout=timeout, interval=0.2, desc=f"browser details on the hit of {tid}")


def assert_browser_details(b, language_prefix=None):
    for k in ("language", "platform", "screen", "timezone"):
        assert isinstance(b[k], str) and b[k].strip(), (k, b)
    assert isinstance(b["plugins"], list), b
    if language_prefix:
        assert b["language"].lower().startswith(language_prefix), b


# --- without a browser: what each kind of request gets --------------------------------

def test_scanner_is_on_by_default(api):
    tok = api.create_token("http", memo=unique("scanner default"))
    assert tok["browser_scanner_enabled"] is True
    assert api.fetch_token(tok["canarytoken"])["browser_scanner_enabled"] is True


def test_browser_navigation_gets_the_scanner_page(server, api):
    tok = api.create_token("http", memo=unique("scanner page"))
    tid = tok["canarytoken"]
    headers = browser_headers()
    r = requests.get(tok["url"], headers=headers, timeout=10)
    assert r.status_code == 200
    assert ctype(r) == "text/html", r.headers
    assert not is_gif(r.content)
    assert "<script" in r.text.lower(), r.text[:500]

    ev = api.wait_events(tid)[0]
    assert ev["useragent"] == headers["User-Agent"]
    inc = settle_single_incident(api, tid)  # no script ran, so nothing joined
    assert inc["events"][0]["type"] == "http"
    assert api.fetch_token(tid)["triggered_count"] == 1


def test_image_request_gets_the_gif(server, api):
    tok = api.create_token("http", memo=unique("scanner image"))
    r = requests.get(tok["url"], headers=image_headers(), timeout=10)
    assert r.status_code == 200
    assert ctype(r) == "image/gif", r.headers
    assert is_gif(r.content)
    api.wait_events(tok["canarytoken"])


def test_scanner_off_gets_the_gif_even_for_a_browser(server, api):
    tok = api.create_token("http", memo=unique("scanner off"), browser_scanner_enabled="false")
    assert tok["browser_scanner_enabled"] is False
    r = requests.get(tok["url"], headers=browser_headers(), timeout=10)
    assert r.status_code == 200
    assert ctype(r) == "image/gif", r.headers
    assert is_gif(r.content)
    api.wait_events(tok["canarytoken"])


# --- real Chromium ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def chromium():
    if _missing:
        pytest.skip("real-browser test needs " + " and ".join(_missing))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(chromium):
    ctx = chromium.new_context(locale="de-DE", timezone_id="Europe/Berlin")
    pg = ctx.new_page()
    pg.set_default_timeout(15_000)
    yield pg
    ctx.close()


@needs_browser
def test_chromium_reports_browser_details_into_the_same_incident(server, api, page):
    tok = api.create_token("http", memo=unique("chromium scanner"))
    tid = tok["canarytoken"]
    resp = page.goto(tok["url"], wait_until="load")
    assert resp is not None and resp.status == 200
    assert resp.headers.get("content-type", "").split(";")[0].strip() == "text/html"

    incs = wait_browser_details(api, tid)
    assert len(incs) == 1, incs
    ev = incs[0]["events"][0]
    assert ev["type"] == "http"
    assert "HeadlessChrome" in ev["useragent"] or "Chrome" in ev["useragent"], ev["useragent"]
    assert_browser_details(ev["browser"], language_prefix="de")

    inc = settle_single_incident(api, tid)  # the report joined the hit; it is not a second alert
    assert inc["events"][0]["browser"] == ev["browser"]
    assert api.fetch_token(tid)["triggered_count"] == 1


@needs_browser
def test_chromium_scanner_off_is_a_plain_hit(server, api, page):
    tok = api.create_token("http", memo=unique("chromium no scanner"), browser_scanner_enabled="false")
    tid = tok["canarytoken"]
    resp = page.goto(tok["url"], wait_until="load")
    assert resp is not None and resp.status == 200
    assert resp.headers.get("content-type", "").split(";")[0].strip() == "image/gif"
    api.wait_events(tid)
    inc = settle_single_incident(api, tid)
    assert not inc["events"][0].get("browser"), inc["events"][0]


@needs_browser
def test_chromium_follows_slow_redirect_and_reports(server, api, page):
    landing = f"{server.http_base()}/landing"
    tok = api.create_token("slow-redirect", memo=unique("chromium slow redirect"), browser_redirect_url=landing)
    tid = tok["canarytoken"]
    page.goto(tok["url"], wait_until="commit")
    page.wait_for_url(landing, timeout=10_000)
    assert page.url == landing

    incs = wait_browser_details(api, tid)
    assert len(incs) == 1, incs
    ev = incs[0]["events"][0]
    assert incs[0]["kind"] == "slow-redirect"
    assert_browser_details(ev["browser"], language_prefix="de")
    settle_single_incident(api, tid)
    assert api.fetch_token(tid)["triggered_count"] == 1

"""cloned-css ("CSS cloned site"): CSS whose background image is the token URL. A browser showing
the real site (Referer on the expected domain or a subdomain) is not an alert; a clone is.

The image URL is taken out of the rendered CSS's `url(...)`.
"""

import re
import uuid

import pytest
import requests

from conftest import unique
from kindtools import BAD_PARAMS, assert_error, assert_one_incident, new_token, settle_http

KIND = "cloned-css"
EXPECTED = "shop.example.com"


# --- helpers -----------------------------------------------------------------------------

def make_token(api, expected=EXPECTED):
    """A cloned-css token for the real site `expected`."""
    return new_token(api, KIND, "cloned css", expected_referrer=expected)


def css_image_url(tok):
    css = tok["renders"][KIND]
    urls = re.findall(r"""url\(\s*(['"]?)(.*?)\1\s*\)""", css)
    urls = [u for _, u in urls if tok["canarytoken"] in u]
    assert len(urls) == 1, css
    url = urls[0]
    assert url.startswith(tok["url"]), (url, tok["url"])
    return url


def fetch_as_browser(url, referer):
    """What a browser requests when a page on `referer` applies the stylesheet."""
    return requests.get(url, timeout=10, headers={
        "User-Agent": f"Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0 Safari/537.36 e2e/{uuid.uuid4().hex[:8]}",
        "Accept": "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8",
        "Referer": referer,
        "Sec-Fetch-Dest": "image",
    })


def assert_image(r):
    assert r.status_code == 200, (r.status_code, r.text[:200])
    assert r.headers["Content-Type"].split(";")[0].strip().lower().startswith("image/"), r.headers
    assert r.content, "an image body"


# --- tests -----------------------------------------------------------------------------

def test_listed_with_human_name(api):
    assert api.ok_get("canarytokens/list")["canarytokens"][KIND] == "CSS cloned site"


def test_expected_referrer_is_required(api):
    b = assert_error(api.post("canarytoken/create", kind=KIND, memo=unique("m")), 400, prefix=BAD_PARAMS)
    assert "expected_referrer" in b.get("detail", "") + b["message"], b


def test_render_is_css_with_the_token_url(api):
    tok = make_token(api)
    css = tok["renders"][KIND]
    assert "url(" in css
    assert "{" in css and "}" in css, css
    css_image_url(tok)


def test_real_site_and_its_subdomains_do_not_alert(server, api):
    tok = make_token(api)
    tid = tok["canarytoken"]
    url = css_image_url(tok)
    for ref in (f"https://{EXPECTED}/page", f"https://sub.{EXPECTED}/x", f"http://{EXPECTED}/"):
        assert_image(fetch_as_browser(url, ref))
    settle_http(api)
    assert api.incidents_for(tid) == [], api.incidents_for(tid)
    assert api.fetch_token(tid)["triggered_count"] == 0


def test_clone_alerts_with_its_referrer(server, api):
    tok = make_token(api)
    tid = tok["canarytoken"]
    url = css_image_url(tok)
    clone = "https://evil.example/clone"
    r = fetch_as_browser(url, clone)
    assert_image(r)

    _, ev = assert_one_incident(api, tok, KIND, "http")
    assert ev["referrer"] == clone
    assert api.fetch_token(tid)["triggered_count"] == 1


@pytest.mark.parametrize("clone", [f"https://not{EXPECTED}/page", f"https://{EXPECTED}.evil.test/page"],
                         ids=["suffix-lookalike", "prefix-lookalike"])
def test_look_alike_referrers_alert(server, api, clone):
    tok = make_token(api)
    tid = tok["canarytoken"]
    assert_image(fetch_as_browser(css_image_url(tok), clone))
    ev = api.wait_events(tid)[0]
    assert ev["referrer"] == clone

"""cloned-web ("Cloned Website"): the JavaScript snippet that, run on a host other than the
expected domain (or its subdomains), loads the token URL with the page's location and referrer.

The snippet is executed with `node` in a small fake browser environment (document, location,
Image, createElement, document.write, fetch, sendBeacon, XMLHttpRequest); whatever URL it tries to
load is then requested from the trigger listener, as the cloning visitor's browser would.
"""

import json
import shutil
import subprocess
import time
from urllib.parse import urlsplit

import pytest
import requests

from conftest import make_console, unique
from kindtools import BAD_PARAMS, assert_error, assert_one_incident, new_token

KIND = "cloned-web"
LABELS_MSG = "Could not process the parameters. cloned_web is invalid, not enough domain labels"
EXPECTED = "intranet.example.com"
CLONE_HREF = "https://evil-clone.example/login"
CLONE_REFERRER = "https://search.example/q"

NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None, reason="node is not installed; it runs the cloned-web snippet")


# --- helpers -----------------------------------------------------------------------------

FAKE_BROWSER = r"""
'use strict';
const vm = require('vm');
const fs = require('fs');
const code = fs.readFileSync(process.argv[2], 'utf8');
const env = JSON.parse(process.argv[3]);
const loads = [];
const rec = (how, url) => loads.push({ how, url: String(url) });
const u = new URL(env.href);
const location = {
  href: u.href, protocol: u.protocol, host: u.host, hostname: u.hostname, port: u.port,
  pathname: u.pathname, search: u.search, hash: u.hash, origin: u.origin,
  toString() { return this.href; }, assign() {}, replace() {}, reload() {},
};
const listeners = [];
function addEventListener(type, fn) { listeners.push([String(type), fn]); }
function makeElement(tag) {
  const el = {
    tagName: String(tag).toUpperCase(), style: {}, attributes: {}, children: [], dataset: {},
    setAttribute(k, v) {
      this.attributes[k] = String(v);
      const n = String(k).toLowerCase();
      if (n === 'src' || n === 'href' || n === 'data') rec('setAttribute:' + this.tagName, v);
    },
    getAttribute(k) { return k in this.attributes ? this.attributes[k] : null; },
    appendChild(c) { this.children.push(c); return c; }, insertBefore(c) { return c; },
    removeChild(c) { return c; }, remove() {}, addEventListener() {}, removeEventListener() {},
  };
  let src = '';
  Object.defineProperty(el, 'src', {
    get() { return src; }, set(v) { src = String(v); rec('src:' + el.tagName, v); }, enumerable: true,
  });
  return el;
}
function Image() { return makeElement('img'); }
function docWrite(...parts) {
  const s = parts.join('');
  const re = /\b(?:src|href)\s*=\s*["']?([^"'\s>]+)/gi;
  let m;
  while ((m = re.exec(s))) rec('document.write', m[1].replace(/&amp;/g, '&'));
}
const head = makeElement('head');
const body = makeElement('body');
const document = {
  domain: u.hostname, referrer: env.referrer, location, URL: u.href, documentURI: u.href,
  title: 'Sign in', cookie: '', readyState: 'complete', head, body, documentElement: makeElement('html'),
  currentScript: makeElement('script'),
  createElement: makeElement, write: docWrite, writeln: docWrite,
  getElementsByTagName: (t) => [String(t).toLowerCase() === 'head' ? head : body],
  querySelector: () => body, querySelectorAll: () => [body], getElementById: () => null,
  addEventListener, removeEventListener() {},
};
const navigator = {
  userAgent: 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36',
  language: 'en-US', languages: ['en-US'], platform: 'Linux x86_64', cookieEnabled: true,
  sendBeacon(url) { rec('sendBeacon', url); return true; },
};
function fetch(input) {
  rec('fetch', input && typeof input === 'object' && 'url' in input ? input.url : input);
  return Promise.resolve({ ok: true, status: 200, text: async () => '', json: async () => ({}) });
}
class XMLHttpRequest {
  open(method, url) { rec('xhr', url); } send() {} setRequestHeader() {} addEventListener() {}
}
const sandbox = {
  document, location, navigator, Image, fetch, XMLHttpRequest, console,
  setTimeout, clearTimeout, setInterval: (f, t) => setTimeout(f, t), clearInterval: clearTimeout,
  btoa, atob, URL, URLSearchParams, TextEncoder, addEventListener, removeEventListener() {},
  screen: { width: 1920, height: 1080 }, history: { length: 1 }, localStorage: { getItem: () => null, setItem() {} },
};
sandbox.window = sandbox; sandbox.self = sandbox; sandbox.top = sandbox; sandbox.parent = sandbox;
vm.createContext(sandbox);
vm.runInContext(code, sandbox, { filename: 'cloned-web.js', timeout: 5000 });
setTimeout(() => {
  for (const [type, fn] of listeners) {
    if (type === 'DOMContentLoaded' || type === 'load') { try { fn.call(sandbox, { type }); } catch (e) { console.error(e); } }
  }
  if (typeof sandbox.onload === 'function') { try { sandbox.onload({ type: 'load' }); } catch (e) { console.error(e); } }
}, 0);
setTimeout(() => { process.stdout.write(JSON.stringify(loads)); }, 400);
"""


def run_snippet(tmp_path, js, href=CLONE_HREF, referrer=CLONE_REFERRER):
    """Run the snippet as a page on `href` would; -> list of {how, url} it tried to load."""
    js = js.strip()
    if js.lower().startswith("<script"):  # tolerate a snippet wrapped for pasting into HTML
        js = js[js.index(">") + 1:]
        js = js[:js.lower().rindex("</script>")]
    script = tmp_path / "snippet.js"
    script.write_text(js, encoding="utf-8")
    harness = tmp_path / "fake_browser.js"
    harness.write_text(FAKE_BROWSER, encoding="utf-8")
    out = subprocess.run([NODE, str(harness), str(script), json.dumps({"href": href, "referrer": referrer})],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, f"node failed running the snippet:\n{out.stderr}\n---\n{js[:2000]}"
    return json.loads(out.stdout)


def make_token(api, domain=EXPECTED):
    """A cloned-web token for the real site `domain`."""
    return new_token(api, KIND, "cloned web", cloned_web=domain)


# --- tests -----------------------------------------------------------------------------

def test_listed_with_human_name(api):
    assert api.ok_get("canarytokens/list")["canarytokens"][KIND] == "Cloned Website"


def test_cloned_web_is_required(api):
    b = assert_error(api.post("canarytoken/create", kind=KIND, memo=unique("m")), 400, prefix=BAD_PARAMS)
    assert "cloned_web" in b.get("detail", "") + b["message"], b


@pytest.mark.parametrize("bad", ["localhost", "intranet"])
def test_single_label_domain_has_its_own_message(api, bad):
    assert_error(api.post("canarytoken/create", kind=KIND, memo=unique("m"), cloned_web=bad), 400, LABELS_MSG)


def test_canarytools_maps_the_label_error(server):
    from canarytools.exceptions import InvalidParameterError
    console = make_console(server)
    with pytest.raises(InvalidParameterError) as e:
        console.tokens.create(memo=unique("ct cloned"), kind=KIND, cloned_web="localhost")
    assert "not enough domain labels" in str(e.value)
    token = console.tokens.create(memo=unique("ct cloned"), kind=KIND, cloned_web=EXPECTED)
    assert token.kind == KIND
    assert token.cloned_web == EXPECTED
    assert EXPECTED in token.renders[KIND]


def test_render_mentions_domain_and_token_url(api):
    tok = make_token(api)
    assert tok["cloned_web"] == EXPECTED
    js = tok["renders"][KIND]
    assert EXPECTED in js
    assert tok["url"] in js


@needs_node
def test_snippet_on_a_clone_fires_with_location_and_referrer(server, api, tmp_path):
    tok = make_token(api)
    tid = tok["canarytoken"]
    loads = run_snippet(tmp_path, tok["renders"][KIND])
    urls = [l["url"] for l in loads if tid in l["url"]]
    assert len(urls) == 1, loads
    url = urls[0]
    assert urlsplit(url).scheme in ("http", "https"), url
    assert urlsplit(url).netloc == urlsplit(tok["url"]).netloc, (url, tok["url"])

    # the cloning visitor's browser fetches it as an image of the clone page
    r = requests.get(url, timeout=10, headers={
        "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0 Safari/537.36",
        "Accept": "image/avif,image/webp,image/apng,image/*,*/*;q=0.8",
        "Referer": CLONE_HREF,
    })
    assert r.status_code == 200

    _, ev = assert_one_incident(api, tok, KIND, "http")
    assert ev["location"] == CLONE_HREF
    assert ev["referrer"] == CLONE_REFERRER
    assert api.fetch_token(tid)["triggered_count"] == 1


@needs_node
@pytest.mark.parametrize("host", [EXPECTED, "www." + EXPECTED, "a.b." + EXPECTED])
def test_snippet_on_the_real_site_loads_nothing(api, tmp_path, host):
    tok = make_token(api)
    loads = run_snippet(tmp_path, tok["renders"][KIND], href=f"https://{host}/login")
    assert loads == [], loads


@needs_node
@pytest.mark.parametrize("host", ["not" + EXPECTED, EXPECTED + ".evil.test", "intranet.example.org"])
def test_look_alike_hosts_are_clones(api, tmp_path, host):
    tok = make_token(api)
    tid = tok["canarytoken"]
    loads = run_snippet(tmp_path, tok["renders"][KIND], href=f"https://{host}/login")
    assert [l for l in loads if tid in l["url"]], loads


@needs_node
def test_clone_without_referrer(server, api, tmp_path):
    tok = make_token(api, "portal.example.org")
    tid = tok["canarytoken"]
    href = "http://phish.example.net/portal/index.html?session=1"
    loads = run_snippet(tmp_path, tok["renders"][KIND], href=href, referrer="")
    urls = [l["url"] for l in loads if tid in l["url"]]
    assert len(urls) == 1, loads
    assert requests.get(urls[0], timeout=10).status_code == 200
    ev = api.wait_events(tid)[0]
    assert ev["location"] == href
    assert not ev.get("referrer"), ev
    time.sleep(0.3)
    assert len(api.incidents_for(tid)) == 1

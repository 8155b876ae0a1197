"""Helpers shared by the per-kind tests (test_kind_*.py): error-shape checks, DNS lookups as a
victim's resolver makes them, positive controls that prove earlier hits were processed, artefact
downloads, and the one-incident check every kind ends with.

Fixtures and the raw `Api` client stay in conftest.py; this module only builds on them.
"""

import re
import time

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import requests

from conftest import DOMAIN, unique

BAD_PARAMS = "Could not process the parameters"

# The first digits of an incident's logtype, by the channel of its event.
LOGTYPE_PREFIX = {"http": "17", "dns": "16", "smtp": "16"}


# --- API errors ------------------------------------------------------------------------

def assert_error(resp, status, message=None, prefix=None):
    """Check a Console error: `status` (a code or a range), JSON `{"result":"error","message":...}`;
    -> the body."""
    if isinstance(status, range):
        assert resp.status_code in status, (resp.status_code, resp.text[:300])
    else:
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


# --- tokens, artefacts and incidents -----------------------------------------------------

def new_token(api, kind, memo_prefix, **params):
    """Create a token of `kind` (memo made unique from `memo_prefix`) and check its kind."""
    tok = api.create_token(kind, memo=unique(memo_prefix), **params)
    assert tok["kind"] == kind
    return tok


def attachment_re(ext):
    """The Content-Disposition a download of a `.ext` file must carry (group 1: the file name)."""
    return re.compile(r"^attachment; filename=([^;/\\\s]+\." + re.escape(ext) + r")$")


def download_attachment(api, tid, ext):
    """GET canarytoken/download, check 200 and a safe `.ext` attachment name; -> (name, response)."""
    r = api.get("canarytoken/download", canarytoken=tid)
    assert r.status_code == 200, (r.status_code, r.text[:300])
    m = attachment_re(ext).match(r.headers.get("Content-Disposition", ""))
    assert m, r.headers.get("Content-Disposition")
    return m.group(1), r


def assert_one_incident(api, tok, kind, event_type, settle=0.0):
    """Wait for the token's only incident (re-read `settle` s later); check kind, memo, event type; -> (inc, ev)."""
    tid = tok["canarytoken"]
    incs = api.wait_incidents(tid)
    if settle:
        time.sleep(settle)
        incs = api.incidents_for(tid)
    assert len(incs) == 1, incs
    inc = incs[0]
    assert inc["kind"] == kind
    assert inc["memo"] == tok["memo"]
    assert str(inc["logtype"]).startswith(LOGTYPE_PREFIX[event_type]), inc["logtype"]
    ev = inc["events"][0]
    # An event's type is the token's kind (as the Console's are); channel says which listener.
    assert (ev["type"], ev["channel"]) == (kind, event_type), ev
    return inc, ev


def settle_http(api, pause=1.0):
    """A positive control over HTTP: once another token's hit is recorded, earlier requests were handled."""
    control = api.create_token("http", memo=unique("control"), browser_scanner_enabled="false")
    requests.get(control["url"], timeout=10)
    api.wait_events(control["canarytoken"])
    time.sleep(pause)


# --- DNS ------------------------------------------------------------------------------------

def dns_query(server, name, rdtype="A", tcp=False, timeout=3.0):
    """Send one query for `name` to the server's DNS listener (UDP, or TCP); -> the response."""
    q = dns.message.make_query(name, rdtype)
    if tcp:
        return dns.query.tcp(q, server.dns_host, port=server.dns_port, timeout=timeout)
    return dns.query.udp(q, server.dns_host, port=server.dns_port, timeout=timeout)


def a_addresses(resp):
    """The addresses of the A records in a DNS response's answer section."""
    return [rd.address for rr in resp.answer if rr.rdtype == dns.rdatatype.A for rd in rr]


def lookup(server, name, tcp=False):
    """Resolve `name` like the victim's resolver would and check the ordinary answer."""
    resp = dns_query(server, name, "A", tcp=tcp)
    assert resp.rcode() == dns.rcode.NOERROR, (name, dns.rcode.to_text(resp.rcode()))
    assert a_addresses(resp) == ["127.0.0.1"], (name, resp.answer)
    return resp


def settle_dns(server, api):
    """A positive control over DNS: once another token's lookup is recorded, earlier queries were handled."""
    control = api.create_token("dns", memo=unique("control"))["canarytoken"]
    lookup(server, f"{control}.{DOMAIN}")
    api.wait_events(control)
    time.sleep(1.0)


def assert_no_dns_incident(server, api, tid):
    """After a DNS positive control, check that `tid` has no incident and was never counted."""
    settle_dns(server, api)
    assert api.incidents_for(tid) == [], api.incidents_for(tid)
    assert api.fetch_token(tid)["triggered_count"] == 0

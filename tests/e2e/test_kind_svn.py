"""svn ("SVN Repo"): the `svn propset svn:externals` line, and the lookup a checkout makes."""

import re
import shlex

import dns.rcode

from kindtools import a_addresses, assert_one_incident, dns_query, new_token

KIND = "svn"


def make_token(api):
    """An svn token."""
    return new_token(api, KIND, "svn")


def externals_host(tok):
    """The DNS name a checkout resolves: the host of the URL in the svn:externals line."""
    line = tok["renders"][KIND]
    host = re.escape(tok["hostname"])
    names = re.findall(rf"(?<![A-Za-z0-9.-])((?:[A-Za-z0-9-]+\.)*{host})(?![A-Za-z0-9-])", line, re.I)
    assert names, line
    assert len(set(n.lower() for n in names)) == 1, names
    return names[0]


def test_listed_with_human_name(api):
    assert api.ok_get("canarytokens/list")["canarytokens"][KIND] == "SVN Repo"


def test_render_is_a_propset_line(api):
    tok = make_token(api)
    line = tok["renders"][KIND]
    assert line.startswith("svn propset svn:externals"), line
    assert tok["hostname"] in line
    assert "\n" not in line.strip(), "one shell line"
    words = shlex.split(line)  # a shell can parse it
    assert words[:3] == ["svn", "propset", "svn:externals"], words
    assert any(tok["hostname"] in w for w in words[3:]), words


def test_checkout_lookup_is_an_incident(server, api):
    tok = make_token(api)
    tid = tok["canarytoken"]
    name = externals_host(tok)
    assert name.lower().endswith(tok["hostname"].lower())
    resp = dns_query(server, name)
    assert resp.rcode() == dns.rcode.NOERROR
    assert a_addresses(resp) == ["127.0.0.1"]

    inc, ev = assert_one_incident(api, tok, KIND, "dns")
    assert inc["logtype"] == "16000"
    assert inc["summary"] == "Canarytoken triggered"
    assert ev["src_host"] == "127.0.0.1"
    assert ev["query_name"].rstrip(".").lower() == name.lower()
    assert api.fetch_token(tid)["triggered_count"] == 1


def test_bare_hostname_lookup_is_an_incident(server, api):
    tok = make_token(api)
    resp = dns_query(server, tok["hostname"], tcp=True)
    assert a_addresses(resp) == ["127.0.0.1"]
    ev = api.wait_events(tok["canarytoken"])[0]
    assert ev["transport"] == "tcp"
    assert api.incidents_for(tok["canarytoken"])[0]["logtype"] == "16000"

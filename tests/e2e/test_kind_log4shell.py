"""log4shell ("Log4Shell"): the JNDI lookup string, and the DNS lookup a vulnerable Log4j makes.

The attacker-side name is derived from the token's own render: Log4j expands `${hostName}` in
`${jndi:ldap://x${hostName}.L4J.<hostname>/a}` and resolves the LDAP host.
"""

import re
import time

import pytest

from conftest import DOMAIN
from kindtools import assert_no_dns_incident, assert_one_incident, lookup, new_token

KIND = "log4shell"


# --- helpers -----------------------------------------------------------------------------

def make_token(api):
    """A log4shell token."""
    return new_token(api, KIND, "log4shell")


def jndi_host_template(tok):
    """The LDAP host of the render, with `${hostName}` still in it."""
    render = tok["renders"][KIND]
    m = re.fullmatch(r"\$\{jndi:ldap://(.+)/a\}", render)
    assert m, render
    host = m.group(1)
    assert "${hostName}" in host, render
    return host


# --- tests -----------------------------------------------------------------------------

def test_listed_with_human_name(api):
    assert api.ok_get("canarytokens/list")["canarytokens"][KIND] == "Log4Shell"


def test_render_is_the_exact_jndi_string(api):
    tok = make_token(api)
    assert tok["hostname"] == f"{tok['canarytoken']}.{DOMAIN}"
    assert isinstance(tok.get("renders"), dict), tok
    assert tok["renders"][KIND] == "${jndi:ldap://x${hostName}.L4J." + tok["hostname"] + "/a}"
    # fetch shows the same render
    assert api.fetch_token(tok["canarytoken"])["renders"][KIND] == tok["renders"][KIND]


@pytest.mark.parametrize("host, tcp", [("WebSrv-01", False), ("app7", True)], ids=["mixed-case-udp", "tcp"])
def test_lookup_carries_the_host_name(server, api, host, tcp):
    tok = make_token(api)
    tid = tok["canarytoken"]
    name = jndi_host_template(tok).replace("${hostName}", host)
    assert name == f"x{host}.L4J.{tok['hostname']}"
    lookup(server, name, tcp=tcp)

    inc, ev = assert_one_incident(api, tok, KIND, "dns")
    assert inc["summary"] == "Canarytoken triggered"
    assert ev["canarytoken"] == tid
    assert ev["log4shell_hostname"] == host  # case preserved as sent
    assert ev["transport"] == ("tcp" if tcp else "udp")
    assert api.fetch_token(tid)["triggered_count"] == 1


def test_two_hosts_are_two_incidents(server, api):
    tok = make_token(api)
    tid = tok["canarytoken"]
    template = jndi_host_template(tok)
    for host in ("alpha01", "beta02"):
        lookup(server, template.replace("${hostName}", host))
    incs = api.wait_incidents(tid, count=2)
    got = sorted(i["events"][0]["log4shell_hostname"] for i in incs)
    assert got == ["alpha01", "beta02"]


@pytest.mark.parametrize("which", ["bare-hostname", "marker-only", "empty-host"])
def test_lookups_without_a_host_are_not_alerts(server, api, which):
    tok = make_token(api)
    tid = tok["canarytoken"]
    template = jndi_host_template(tok)
    names = {
        "bare-hostname": tok["hostname"],
        "marker-only": template.split(".", 1)[1],          # L4J.<hostname>
        "empty-host": template.replace("${hostName}", ""),  # x.L4J.<hostname>
    }
    name = names[which]
    assert name in (tok["hostname"], f"L4J.{tok['hostname']}", f"x.L4J.{tok['hostname']}"), name
    lookup(server, name)
    assert_no_dns_incident(server, api, tid)


def test_undecodable_lookup_then_real_one(server, api):
    """An ignored lookup does not stop the next real one from alerting."""
    tok = make_token(api)
    tid = tok["canarytoken"]
    template = jndi_host_template(tok)
    lookup(server, template.replace("${hostName}", ""))
    lookup(server, template.replace("${hostName}", "db-3"))
    ev = api.wait_events(tid)[0]
    assert ev["log4shell_hostname"] == "db-3"
    time.sleep(0.5)
    assert len(api.incidents_for(tid)) == 1

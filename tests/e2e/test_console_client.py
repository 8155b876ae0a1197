"""The official Canary Console client (PyPI canarytools 1.2.3, unmodified)
against Trapline's /api/v1 dialect."""

import datetime
import threading

import pytest
import requests

import canarytools
from canarytools import CanaryTokenKinds
from canarytools.exceptions import (
    CanaryTokenError,
    FlockError,
    IncidentError,
    IncidentNotFoundError,
    InvalidAuthTokenError,
    InvalidParameterError,
)
from canarytools.models.canarytokens import CanaryToken
from canarytools.models.flocks import Flock
from canarytools.models.incidents import IncidentCanarytokenTriggered

from conftest import (
    CREATED_PRINTABLE_RE,
    DOMAIN,
    TOKEN_RE,
    http_hit,
    make_console,
    unique,
    url_path_parts,
    wait_for,
)


def client_incidents_for(console, token_id, which="all"):
    """Incidents (client objects) whose events belong to token_id. The client
    keeps only a fixed set of incident attributes, so match on the events."""
    incs = getattr(console.incidents, which)()
    return [i for i in incs if any(getattr(e, "canarytoken", None) == token_id for e in i.events)]


def wait_client_incident(console, token_id, timeout=5.0):
    return wait_for(lambda: client_incidents_for(console, token_id), timeout=timeout,
                    desc=f"incident for {token_id}")


def test_ping(console):
    assert console.ping() is True


def test_wrong_api_key_raises_invalid_auth(server):
    bad = make_console(server, api_key="not-a-valid-key-" + "0" * 20)
    with pytest.raises(InvalidAuthTokenError):
        bad.ping()
    with pytest.raises(InvalidAuthTokenError):
        bad.tokens.create(memo="x", kind=CanaryTokenKinds.HTTP)


def test_create_http_token(console, server):
    memo = unique("client http")
    tok = console.tokens.create(memo=memo, kind=CanaryTokenKinds.HTTP)
    assert isinstance(tok, CanaryToken)
    assert TOKEN_RE.match(tok.canarytoken)
    assert tok.kind == "http"
    assert tok.memo == memo
    assert tok.flock_id == "flock:default"
    assert tok.enabled is True
    assert float(tok.created) > 1.5e9
    assert isinstance(tok.created, str)
    assert CREATED_PRINTABLE_RE.match(tok.created_printable), tok.created_printable
    assert tok.triggered_count == 0
    assert isinstance(tok.updated_id, int)
    assert tok.hostname == f"{tok.canarytoken}.{DOMAIN}"
    assert tok.key == f"canarydrop:{tok.canarytoken}"
    assert tok.browser_scanner_enabled is True  # documented default
    parts = url_path_parts(tok.url)
    assert len(parts) >= 3 and parts[-2] == tok.canarytoken and parts[-1], tok.url


def test_create_dns_token(console):
    memo = unique("client dns")
    tok = console.tokens.create(memo=memo, kind=CanaryTokenKinds.DNS)
    assert TOKEN_RE.match(tok.canarytoken)
    assert tok.kind == "dns"
    assert tok.memo == memo
    assert tok.hostname == f"{tok.canarytoken}.{DOMAIN}"
    assert tok.key == f"canarydrop:{tok.canarytoken}"
    assert tok.enabled is True


def test_create_http_without_browser_scanner(console):
    # The client only forwards browser_scanner_enabled with attempt_unrecognized;
    # requests then sends the Python bool as the string "False".
    tok = console.tokens.create(memo=unique("noscan"), kind=CanaryTokenKinds.HTTP,
                                browser_scanner_enabled=False, attempt_unrecognized=True)
    assert tok.browser_scanner_enabled is False
    again = console.tokens.get_token(canarytoken=tok.canarytoken)
    assert again.browser_scanner_enabled is False


def test_get_token(console):
    created = console.tokens.create(memo=unique("get"), kind=CanaryTokenKinds.DNS)
    got = console.tokens.get_token(canarytoken=created.canarytoken)
    assert isinstance(got, CanaryToken)
    assert got.canarytoken == created.canarytoken
    assert got.memo == created.memo
    assert got.kind == "dns"
    assert got.hostname == created.hostname


def test_get_unknown_token_raises(console):
    with pytest.raises(CanaryTokenError) as ei:
        console.tokens.get_token(canarytoken="0" * 25)
    assert str(ei.value) == "Could not find the Canarytoken"


def test_tokens_all_terminates_and_contains_created(console):
    created = {console.tokens.create(memo=unique("all"), kind=k).canarytoken
               for k in (CanaryTokenKinds.HTTP, CanaryTokenKinds.DNS, CanaryTokenKinds.HTTP)}
    result = {}

    def run():
        try:
            result["tokens"] = console.tokens.all()
        except Exception as e:  # pragma: no cover - reported below
            result["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(20)
    assert not t.is_alive(), "tokens.all() did not terminate (cursor never became falsy?)"
    assert "error" not in result, result.get("error")
    ids = [tk.canarytoken for tk in result["tokens"]]
    assert created <= set(ids)
    assert len(ids) == len(set(ids)), "tokens.all() returned duplicates"
    assert all(isinstance(tk, CanaryToken) for tk in result["tokens"])


def test_update_memo_then_refetch(console):
    tok = console.tokens.create(memo="old memo", kind=CanaryTokenKinds.HTTP)
    res = tok.update(memo="new memo ünïcode")
    assert res.result == "success"
    again = console.tokens.get_token(canarytoken=tok.canarytoken)
    assert again.memo == "new memo ünïcode"


def test_disable_then_enable_controls_hits(console, server):
    tok = console.tokens.create(memo=unique("toggle"), kind=CanaryTokenKinds.HTTP)
    assert tok.disable().result == "success"
    assert console.tokens.get_token(canarytoken=tok.canarytoken).enabled is False

    r = http_hit(server, tok.canarytoken, headers={"User-Agent": "disabled-probe"})
    assert r.status_code == 200

    # A control hit on another token proves hits are being recorded right now.
    control = console.tokens.create(memo=unique("control"), kind=CanaryTokenKinds.HTTP)
    http_hit(server, control.canarytoken)
    wait_client_incident(console, control.canarytoken)
    assert client_incidents_for(console, tok.canarytoken) == []
    assert console.tokens.get_token(canarytoken=tok.canarytoken).triggered_count == 0

    assert tok.enable().result == "success"
    assert console.tokens.get_token(canarytoken=tok.canarytoken).enabled is True
    r = http_hit(server, tok.canarytoken, headers={"User-Agent": "enabled-probe"})
    assert r.status_code == 200
    incs = wait_client_incident(console, tok.canarytoken)
    assert len(incs) == 1
    ev = incs[0].events[0]
    assert ev.type == "http"
    assert ev.useragent == "enabled-probe"


def test_download_raises_for_http_and_dns(console, tmp_path):
    for kind in (CanaryTokenKinds.HTTP, CanaryTokenKinds.DNS):
        tok = console.tokens.create(memo=unique("dl"), kind=kind)
        with pytest.raises(requests.exceptions.HTTPError) as ei:
            tok.download(filename=str(tmp_path / f"out-{kind}"))
        assert 400 <= ei.value.response.status_code < 500
        assert ei.value.response.json() == {"result": "error", "message": "File generation not supported."}
        assert not (tmp_path / f"out-{kind}").exists()


def test_delete_token(console):
    tok = console.tokens.create(memo=unique("del"), kind=CanaryTokenKinds.DNS)
    assert tok.delete().result == "success"
    with pytest.raises(CanaryTokenError):
        console.tokens.get_token(canarytoken=tok.canarytoken)
    ids = [t.canarytoken for t in console.tokens.all()]
    assert tok.canarytoken not in ids


def test_invalid_create_parameters_map_to_typed_errors(console):
    with pytest.raises(InvalidParameterError) as ei:
        console.tokens.create(memo="", kind=CanaryTokenKinds.HTTP)
    assert "specify a memo" in str(ei.value)  # the client's text for "Empty memo"
    with pytest.raises(InvalidParameterError) as ei:
        console.tokens.create(memo="m", kind="no-such-kind")
    assert str(ei.value) == "Supplied kind is not valid when creating a Canarytoken"


def test_incident_lifecycle(console, server):
    memo = unique("incident")
    tok = console.tokens.create(memo=memo, kind=CanaryTokenKinds.HTTP)
    r = http_hit(server, tok.canarytoken, path=f"/x/{tok.canarytoken}/p.gif?a=1",
                 headers={"User-Agent": "client-lifecycle/1.0"})
    assert r.status_code == 200

    incs = wait_client_incident(console, tok.canarytoken)
    assert len(incs) == 1
    inc = incs[0]
    assert isinstance(inc, IncidentCanarytokenTriggered)
    assert inc.summary == "Canarytoken triggered"
    assert inc.acknowledged is False
    assert inc.logtype == "17000"
    assert inc.src_host == "127.0.0.1"
    assert inc.flock_id == "flock:default"
    assert isinstance(inc.created_std, datetime.datetime), inc.created_std
    assert isinstance(inc.id, str) and inc.id
    ev = inc.events[0]
    assert ev.canarytoken == tok.canarytoken
    assert ev.type == "http"
    assert ev.src_host == "127.0.0.1"
    assert isinstance(ev.timestamp, datetime.datetime)  # parsed from timestamp_std
    assert ev.headers["User-Agent"] == "client-lifecycle/1.0"
    # The client keeps no memo on incidents, so each event carries it (and the kind).
    assert not hasattr(inc, "memo")
    assert (ev.memo, ev.kind) == (memo, "http")
    str(ev)  # the client's __str__ takes len() of every event value: all must be str/dict

    # Unacknowledged feed has it, acknowledged feed does not.
    assert [i.id for i in client_incidents_for(console, tok.canarytoken, "unacknowledged")] == [inc.id]
    assert client_incidents_for(console, tok.canarytoken, "acknowledged") == []

    got = console.incidents.get_incident(inc.id)
    assert isinstance(got, IncidentCanarytokenTriggered)
    assert got.id == inc.id
    assert got.description == "Canarytoken triggered"
    assert got.acknowledged is False
    assert got.events[0].canarytoken == tok.canarytoken

    # The client refuses locally to delete an unacknowledged incident.
    with pytest.raises(IncidentError):
        got.delete()

    got.acknowledge()  # refreshes itself from incident/fetch
    assert got.acknowledged is True
    assert [i.id for i in client_incidents_for(console, tok.canarytoken, "acknowledged")] == [inc.id]
    assert client_incidents_for(console, tok.canarytoken, "unacknowledged") == []

    got.unacknowledge()
    assert got.acknowledged is False
    assert [i.id for i in client_incidents_for(console, tok.canarytoken, "unacknowledged")] == [inc.id]

    got.acknowledge()
    assert got.delete().result == "success"
    with pytest.raises(IncidentNotFoundError):
        console.incidents.get_incident(inc.id)
    assert client_incidents_for(console, tok.canarytoken) == []


def test_get_unknown_incident_raises(console):
    with pytest.raises(IncidentNotFoundError):
        console.incidents.get_incident("incident:canarytoken:doesnotexist")


def test_bulk_acknowledge_and_delete_by_node_id(console, server):
    a = console.tokens.create(memo=unique("bulk-a"), kind=CanaryTokenKinds.HTTP)
    b = console.tokens.create(memo=unique("bulk-b"), kind=CanaryTokenKinds.HTTP)
    for t in (a, b):
        assert http_hit(server, t.canarytoken).status_code == 200
    wait_client_incident(console, a.canarytoken)
    wait_client_incident(console, b.canarytoken)

    # older_than=1h must not touch incidents that are seconds old.
    console.incidents.acknowledge(node_id=a.canarytoken, older_than="1h")
    assert all(i.acknowledged is False for i in client_incidents_for(console, a.canarytoken))

    assert console.incidents.acknowledge(node_id=a.canarytoken).result == "success"
    assert all(i.acknowledged is True for i in client_incidents_for(console, a.canarytoken))
    assert all(i.acknowledged is False for i in client_incidents_for(console, b.canarytoken))

    with pytest.raises(InvalidParameterError):
        console.incidents.acknowledge(node_id=a.canarytoken, src_host="127.0.0.1")
    with pytest.raises(InvalidParameterError):
        console.incidents.delete(node_id=a.canarytoken, src_host="127.0.0.1")

    # incidents/delete removes acknowledged ones only: b is unacknowledged.
    assert console.incidents.delete(node_id=b.canarytoken).result == "success"
    assert len(client_incidents_for(console, b.canarytoken)) == 1
    assert console.incidents.delete(node_id=a.canarytoken).result == "success"
    assert client_incidents_for(console, a.canarytoken) == []
    assert len(client_incidents_for(console, b.canarytoken)) == 1


def test_flocks_create_all_rename_delete(console):
    name = unique("Cape Town")
    flock = console.flocks.create(name=name)
    assert isinstance(flock, Flock)
    assert flock.name == name
    assert flock.flock_id.startswith("flock:") and flock.flock_id != "flock:default"

    flocks = {f.flock_id: f.name for f in console.flocks.all()}
    assert flocks["flock:default"] == "Default Flock"
    assert flocks[flock.flock_id] == name

    # canarytools' Flock.rename() sends self.name, so a user sets it first.
    new_name = unique("Durban")
    flock.name = new_name
    assert flock.rename(new_name).result == "success"
    flocks = {f.flock_id: f.name for f in console.flocks.all()}
    assert flocks[flock.flock_id] == new_name

    tok = console.tokens.create(memo=unique("in flock"), kind=CanaryTokenKinds.DNS,
                                flock_id=flock.flock_id)
    assert tok.flock_id == flock.flock_id
    with pytest.raises(FlockError) as ei:
        flock.delete()
    assert str(ei.value) == "Cannot delete a non-empty flock"

    tok.delete()
    assert flock.delete().result == "success"
    assert flock.flock_id not in {f.flock_id for f in console.flocks.all()}


def test_flock_errors_are_typed(console):
    default = next(f for f in console.flocks.all() if f.flock_id == "flock:default")
    with pytest.raises(FlockError) as ei:
        default.delete()
    assert str(ei.value) == "Cannot delete default flock"

    ghost = Flock(console, {"flock_id": "flock:doesnotexist0000", "name": "ghost"})
    with pytest.raises(FlockError) as ei:
        ghost.delete()
    assert str(ei.value) == "Flock does not exist."
    with pytest.raises(FlockError) as ei:
        ghost.rename("ghost")
    assert str(ei.value) == "Flock does not exist."

    with pytest.raises(FlockError) as ei:
        console.flocks.create(name="n" * 101)
    assert str(ei.value) == "Flock name longer than maximum (100 characters)."

    with pytest.raises(FlockError) as ei:
        console.flocks.create(name="")
    assert str(ei.value) == "Flock name cannot be empty."

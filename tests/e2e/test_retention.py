"""Hit retention (audit F7): by default every hit is kept; with `--hit-retention-per-token` (or
`--hit-retention-days`) the oldest hits go, at start and every ten minutes, but never a hit of
an unacknowledged incident, and an acknowledged incident left with no hits goes with them.
"""

import pytest

from conftest import Server, http_hit, trigger_path, wait_for


def hits_of(api, tid):
    return api.ok_get("canarytoken/hits", canarytoken=tid)["hits"]


def fire(server, api, tid, n):
    for i in range(n):
        assert http_hit(server, tid, path=trigger_path(tid) + f"?n={i}").status_code == 200
    return api.wait_incidents(tid, count=n)


def banner(server):
    lines = [l for l in server.stdout_lines if "retention:" in l]
    assert len(lines) == 1, server.output()
    return lines[0]


def test_default_keeps_every_hit(server, api):
    assert "every hit is kept" in banner(server)
    tid = api.create_token("http")["canarytoken"]
    for i in range(3):
        assert http_hit(server, tid).status_code == 200
    api.wait_events(tid, count=3)
    for inc in api.incidents_for(tid):
        api.ok_post("incident/acknowledge", incident=inc["id"])
    assert len(hits_of(api, tid)) == 3


@pytest.fixture
def kept3():
    srv = Server(args=["--hit-retention-per-token", "3", "--incident-window-secs", "0"]).start()
    yield srv
    srv.close()


def test_per_token_cap_spares_unacknowledged_incidents(kept3):
    srv = kept3
    assert "hits beyond the newest 3 of a token" in banner(srv)
    api = srv.api()
    tid = api.create_token("http")["canarytoken"]
    other = api.create_token("http")["canarytoken"]
    fire(srv, api, other, 2)
    incidents = fire(srv, api, tid, 6)  # one incident per hit: grouping is off
    by_query = {inc["description"]["events"][0]["query"]: inc for inc in incidents}
    # acknowledge n=0, 1, 3, 4; n=2 stays unacknowledged although it is beyond the newest 3
    for n in (0, 1, 3, 4):
        api.ok_post("incident/acknowledge", incident=by_query[f"n={n}"]["id"])
    srv.restart()  # retention runs at start (and every ten minutes)
    api = srv.api()
    wait_for(lambda: len(hits_of(api, tid)) == 4, timeout=10, desc="retention to run")
    assert sorted(h["query"] for h in hits_of(api, tid)) == ["n=2", "n=3", "n=4", "n=5"]
    left = {inc["description"]["events"][0]["query"] for inc in api.incidents_for(tid)}
    assert left == {"n=2", "n=3", "n=4", "n=5"}, "acknowledged incidents with no hits left are gone"
    assert len(hits_of(api, other)) == 2, "a token under its cap keeps everything"


def test_bad_retention_settings_are_refused(tmp_path):
    for flag, value in (("--hit-retention-per-token", "-1"), ("--hit-retention-days", "-5"),
                        ("--hit-retention-days", "soon")):
        srv = Server(data_dir=str(tmp_path / flag.strip("-") / value), args=[f"{flag}={value}"])
        with pytest.raises(pytest.fail.Exception):
            srv.start()
        assert "retention" in srv.output(), srv.output()
        srv.close()

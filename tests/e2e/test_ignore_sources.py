"""`--ignore-sources`: hits from listed networks (your own scanners, say) are stored, marked
ignored, and raise neither an incident nor an alert; other sources alert as usual."""

import sqlite3
import subprocess
import time

from conftest import Server, unique
from test_alerts import ALLOW, Receiver, start_failing


def _hit(srv, tid, interface):
    url = f"{srv.http_base()}/x/{tid}/p.gif"
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--interface", interface, url],
                         capture_output=True, text=True, timeout=20)
    assert out.stdout == "200", out


def test_ignored_sources_are_kept_but_silent():
    sink = Receiver().start()
    srv = Server(args=["--ignore-sources", "127.0.0.1", "--alert-webhooks", sink.url(), ALLOW]).start()
    try:
        api = srv.api()
        tok = api.create_token("http", memo=unique("ignore list"))["canarytoken"]
        _hit(srv, tok, "127.0.0.1")   # ignored
        _hit(srv, tok, "127.0.0.2")   # alerts
        incidents = api.wait_incidents(tok)
        time.sleep(1.0)
        incidents = api.incidents_for(tok)
        assert [i["src_host"] for i in incidents] == ["127.0.0.2"]
        assert api.fetch_token(tok)["triggered_count"] == 1
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not sink.for_token(tok):
            time.sleep(0.05)
        time.sleep(0.5)
        assert [p["body"]["src_ip"] for p in sink.for_token(tok)] == ["127.0.0.2"]
        # The ignored hit is stored, with its reason.
        db = sqlite3.connect(f"file:{srv.data_dir}/trapline.db?mode=ro", uri=True)
        rows = db.execute("SELECT src_ip, incident_id, data FROM hits WHERE token_id = ? ORDER BY id", (tok,)).fetchall()
        db.close()
        assert [(r[0], r[1] == 0) for r in rows] == [("127.0.0.1", True), ("127.0.0.2", False)]
        assert "source is on the ignore list" in rows[0][2]
    finally:
        srv.close()
        sink.stop()


def test_bad_ignore_sources_refuse_to_start():
    rc, out, err = start_failing(["--ignore-sources", "banana"])
    assert rc != 0 and "ignore source" in err, err

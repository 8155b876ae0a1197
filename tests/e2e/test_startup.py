"""`trapline serve` startup: printed addresses, the first-start admin key,
defaults, and configuration by flag > env > TOML file > default."""

import json
import os
import re

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import requests

from conftest import Server, create_key, url_path_parts, wait_for

LISTEN0 = ["--api-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--dns-listen", "127.0.0.1:0"]


def dns_a(server, name):
    q = dns.message.make_query(name, "A")
    resp = dns.query.udp(q, server.dns_host, port=server.dns_port, timeout=3)
    addrs = [rd.address for rr in resp.answer if rr.rdtype == dns.rdatatype.A for rd in rr]
    return resp.rcode(), addrs


def start(server, request):
    request.addfinalizer(server.close)
    return server.start()


def test_first_start_prints_admin_key_and_addresses(fresh_server):
    srv = fresh_server
    assert len(srv.key_lines_this_run) == 1, srv.output()
    line = srv.key_lines_this_run[0]
    key = json.loads(line)  # the whole line is one JSON object
    assert set(key) == {"key_id", "secret_id", "auth_token", "role", "flock_id"}
    assert key["role"] == "admin"
    assert key["flock_id"] is None
    assert key["auth_token"] == key["secret_id"]
    assert isinstance(key["key_id"], str) and key["key_id"]
    assert len(key["auth_token"]) >= 20

    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/api/v1/", srv.api_url), srv.api_url
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/?", srv.http_url), srv.http_url
    assert srv.dns_host == "127.0.0.1" and 0 < srv.dns_port < 65536
    ports = {int(srv.api_url.split(":")[2].split("/")[0]), int(srv.http_url.split(":")[2].strip("/")),
             srv.dns_port}
    assert 0 not in ports

    # "Ready." comes after the listener lines
    out = srv.stdout_lines
    ready_at = next(i for i, l in enumerate(out) if l.strip() == "Ready.")
    for pat in ("management API:", "trigger HTTP:", "DNS (UDP+TCP):"):
        assert any(pat in l for l in out[:ready_at]), pat

    api = srv.api(key["auth_token"])
    assert api.ok_get("ping")
    assert api.get("ping", auth=key["auth_token"][::-1]).status_code == 401


def test_later_starts_print_no_key_and_keep_it(fresh_server):
    srv = fresh_server
    first = srv.admin_key
    srv.restart()
    assert srv.key_lines_this_run == [], srv.output()
    assert not any('"key_id"' in l for l in srv.stdout_lines)
    assert srv.api(first["auth_token"]).ok_get("ping")
    srv.restart(graceful=False)
    assert srv.key_lines_this_run == [], srv.output()
    assert srv.api(first["auth_token"]).ok_get("ping")


def test_default_public_url_is_the_http_listener(fresh_server):
    api = fresh_server.api()
    tok = api.create_token("http")
    assert tok["url"].startswith(fresh_server.http_base() + "/"), (tok["url"], fresh_server.http_url)
    r = requests.get(tok["url"], timeout=10)
    assert r.status_code == 200
    api.wait_events(tok["canarytoken"])


def test_defaults_when_no_flags(tmp_path, request):
    """Only the listeners are given (fixed default ports could collide): the data
    dir defaults to ./trapline-data, the domain to trapline.localhost, the NX
    domain to nx.trapline.localhost and the public IP to 127.0.0.1."""
    srv = start(Server(default_flags=False, args=LISTEN0, cwd=str(tmp_path)), request)
    assert (tmp_path / "trapline-data").is_dir()
    assert any((tmp_path / "trapline-data").iterdir()), "default data dir is empty"
    api = srv.api()
    tok = api.create_token("dns")
    tid = tok["canarytoken"]
    assert tok["hostname"] == f"{tid}.trapline.localhost"
    assert dns_a(srv, f"{tid}.trapline.localhost") == (dns.rcode.NOERROR, ["127.0.0.1"])
    assert dns_a(srv, f"{tid}.nx.trapline.localhost")[0] == dns.rcode.NXDOMAIN
    assert dns_a(srv, "x.canary.test")[0] == dns.rcode.REFUSED
    api.wait_events(tid, count=2)
    # `key create` without --data-dir uses ./trapline-data too
    key = create_key(None, "read-only", env=srv.env, cwd=str(tmp_path))
    assert srv.api(key["auth_token"]).ok_get("ping")


def test_env_vars_are_honoured(tmp_path, request):
    data = tmp_path / "envdata"
    env = {
        "TRAPLINE_DATA_DIR": str(data),
        "TRAPLINE_API_LISTEN": "127.0.0.1:0",
        "TRAPLINE_HTTP_LISTEN": "127.0.0.1:0",
        "TRAPLINE_DNS_LISTEN": "127.0.0.1:0",
        "TRAPLINE_DOMAIN": "env.example",
        "TRAPLINE_NX_DOMAIN": "nx.env.example",
        "TRAPLINE_PUBLIC_IP": "192.0.2.10",
        "TRAPLINE_PUBLIC_URL": "http://env-public.example:8443",
    }
    srv = start(Server(default_flags=False, env=env, cwd=str(tmp_path)), request)
    assert data.is_dir() and any(data.iterdir())
    assert not (tmp_path / "trapline-data").exists()
    api = srv.api()
    tok = api.create_token("http")
    tid = tok["canarytoken"]
    assert tok["hostname"] == f"{tid}.env.example"
    assert tok["url"].startswith("http://env-public.example:8443/"), tok["url"]
    assert url_path_parts(tok["url"])[-2] == tid
    assert dns_a(srv, f"{tid}.env.example") == (dns.rcode.NOERROR, ["192.0.2.10"])
    assert dns_a(srv, f"{tid}.nx.env.example")[0] == dns.rcode.NXDOMAIN
    assert dns_a(srv, f"{tid}.trapline.localhost")[0] == dns.rcode.REFUSED
    # `key create` reads TRAPLINE_DATA_DIR as well
    key = create_key(None, "analyst", env=srv.env, cwd=str(tmp_path))
    assert srv.api(key["auth_token"]).ok_get("ping")


def write_config(path, **values):
    lines = [f'{k} = "{v}"' for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_config_file_is_honoured(tmp_path, request):
    data = tmp_path / "filedata"
    cfg = write_config(tmp_path / "trapline.toml",
                       data_dir=data, api_listen="127.0.0.1:0", http_listen="127.0.0.1:0",
                       dns_listen="127.0.0.1:0", domain="file.example", nx_domain="nx.file.example",
                       public_ip="192.0.2.20", public_url="http://file-public.example")
    srv = start(Server(default_flags=False, args=["--config", str(cfg)], cwd=str(tmp_path)), request)
    assert data.is_dir() and any(data.iterdir())
    api = srv.api()
    tok = api.create_token("dns")
    tid = tok["canarytoken"]
    assert tok["hostname"] == f"{tid}.file.example"
    assert tok["url"].startswith("http://file-public.example/"), tok["url"]
    assert dns_a(srv, f"{tid}.file.example") == (dns.rcode.NOERROR, ["192.0.2.20"])
    assert dns_a(srv, f"{tid}.nx.file.example")[0] == dns.rcode.NXDOMAIN
    api.wait_events(tid, count=2)


def test_precedence_flag_over_env_over_file(tmp_path, request):
    cfg = write_config(tmp_path / "trapline.toml",
                       data_dir=tmp_path / "precdata", api_listen="127.0.0.1:0", http_listen="127.0.0.1:0",
                       dns_listen="127.0.0.1:0", domain="file.example", public_ip="192.0.2.30")
    env = {"TRAPLINE_DOMAIN": "env.example"}

    # env beats file (domain); file still supplies what env does not (public_ip)
    srv = start(Server(default_flags=False, args=["--config", str(cfg)], env=env, cwd=str(tmp_path)), request)
    tok = srv.api().create_token("dns")
    assert tok["hostname"] == f"{tok['canarytoken']}.env.example"
    assert dns_a(srv, tok["hostname"]) == (dns.rcode.NOERROR, ["192.0.2.30"])
    srv.stop()

    # flag beats env and file
    srv2 = start(Server(default_flags=False, args=["--config", str(cfg), "--domain", "flag.example",
                                                    "--public-ip", "192.0.2.31"],
                        env={**env, "TRAPLINE_PUBLIC_IP": "192.0.2.99"}, cwd=str(tmp_path)), request)
    srv2.admin_key = srv.admin_key  # same data dir: no new key is printed
    assert srv2.key_lines_this_run == []
    tok = srv2.api().create_token("dns")
    assert tok["hostname"] == f"{tok['canarytoken']}.flag.example"
    assert dns_a(srv2, tok["hostname"]) == (dns.rcode.NOERROR, ["192.0.2.31"])
    assert dns_a(srv2, f"{tok['canarytoken']}.env.example")[0] == dns.rcode.REFUSED


def test_public_ip_and_url_flags(tmp_path, request):
    srv = start(Server(args=["--public-ip", "192.0.2.55", "--public-url", "https://honey.example:8000"]),
                request)
    tok = srv.api().create_token("http")
    tid = tok["canarytoken"]
    assert tok["url"].startswith("https://honey.example:8000/"), tok["url"]
    parts = url_path_parts(tok["url"])
    assert parts[-2] == tid and len(parts) >= 3 and parts[-1]
    assert dns_a(srv, f"{tid}.canary.test") == (dns.rcode.NOERROR, ["192.0.2.55"])


def test_database_and_data_dir_are_private(tmp_path):
    """Whatever the umask, the data directory and the SQLite files are the service user's only."""
    import stat
    from conftest import Server
    data = tmp_path / "private-data"
    srv = Server(data_dir=str(data))
    old = os.umask(0o022)
    try:
        srv.start()
    finally:
        os.umask(old)
    try:
        srv.api().create_token("dns", memo="perm check")
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        for f in data.iterdir():
            if f.name.startswith("trapline.db"):
                assert stat.S_IMODE(f.stat().st_mode) & 0o077 == 0, (f.name, oct(f.stat().st_mode))
    finally:
        srv.close()


def _refused(data_dir, *needles):
    """Starting on `data_dir` fails at once with a message holding every needle."""
    import pytest
    srv = Server(data_dir=str(data_dir))
    try:
        with pytest.raises(pytest.fail.Exception):
            srv.start()
        out = srv.output()
        for n in needles:
            assert n in out, out
        assert "Ready." not in out
    finally:
        srv.close()


def test_loose_data_dir_is_refused_or_made_private(tmp_path):
    """Audit F9: a data directory found writable by others is refused (anyone could put their
    own provision.key there); one merely readable by others is made 0700, with a warning."""
    import stat
    data = tmp_path / "found"
    data.mkdir()
    os.chmod(data, 0o777)
    _refused(data, "writable by its group or others (mode 0777)", f"chmod 700 {data}")
    assert stat.S_IMODE(data.stat().st_mode) == 0o777, "left for the operator to check"
    os.chmod(data, 0o755)
    srv = Server(data_dir=str(data)).start()
    try:
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        # stderr is read by its own thread: the warning may land just after "Ready.".
        wait_for(lambda: any("was readable by its group or others (mode 0755)" in l for l in srv.stderr_lines),
                 timeout=5, desc="the warning about a readable data directory")
    finally:
        srv.close()


def test_provision_key_found_loose_or_foreign_is_refused(tmp_path):
    """Audit F9: provision.key is trusted only when it is the service user's and private."""
    import stat
    data = tmp_path / "keys"
    Server(data_dir=str(data)).start().close()
    key = data / "provision.key"
    os.chmod(key, 0o666)
    _refused(data, "is writable by its group or others (mode 0666)", f"chmod 600 {key}")
    os.chmod(key, 0o644)
    srv = Server(data_dir=str(data)).start()
    try:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    finally:
        srv.close()
    os.chown(key, 65534, -1)  # nobody
    _refused(data, "belongs to user id 65534", f"chown {os.geteuid()} {key}")


def _refused_fast(data_dir, needles, within=8.0):
    import time
    t0 = time.monotonic()
    _refused(data_dir, *needles)
    assert time.monotonic() - t0 < within, "the cause is told at once, not after a pool time-out"


def test_corrupt_or_locked_database_is_explained_at_once(tmp_path):
    """Audit F15: a database that is no database, is damaged, or is locked by another process
    is named with what is wrong at once (it used to be 'pool timed out' after 30 s)."""
    import sqlite3
    garbage = tmp_path / "garbage"
    garbage.mkdir(mode=0o700)
    (garbage / "trapline.db").write_bytes(os.urandom(20000))
    _refused_fast(garbage, [f"cannot open database {garbage}/trapline.db", "not a SQLite database or it is damaged"])

    cut = tmp_path / "cut"
    Server(data_dir=str(cut)).start().close()
    db = cut / "trapline.db"
    con = sqlite3.connect(str(db))  # fold the write-ahead log in, as after a clean stop
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    assert not (cut / "trapline.db-wal").exists() or (cut / "trapline.db-wal").stat().st_size == 0
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 2])
    _refused_fast(cut, [f"cannot open database {db}", "damaged"])

    held = tmp_path / "held"
    Server(data_dir=str(held)).start().close()
    con = sqlite3.connect(str(held / "trapline.db"), isolation_level=None)
    try:
        con.execute("PRAGMA locking_mode=EXCLUSIVE")
        con.execute("BEGIN EXCLUSIVE")
        _refused_fast(held, [f"cannot open database {held}/trapline.db", "another process holds it locked"])
    finally:
        con.close()


def test_two_servers_on_one_data_dir_are_refused(tmp_path):
    """Audit F15: a second `trapline serve` on a data directory in use is refused."""
    data = tmp_path / "shared"
    first = Server(data_dir=str(data)).start()
    try:
        _refused_fast(data, [f"another trapline serve is using data directory {data}"])
        # the first one is unharmed, and the CLI may still make keys beside it
        create_key(str(data), "analyst")
        first.api().create_token("dns", memo="still serving")
    finally:
        first.close()
    Server(data_dir=str(data)).start().close()  # free again once it stopped

"""Each listener's settings in its own TOML section (`[listeners.http]`, `[listeners.dns]`),
alert mail under `[alerts.email]`; the flat keys of older files still count, and a key a
section does not know is refused at start-up with a message naming the section."""

import re
import subprocess

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
import requests

from conftest import BIN, Server, clean_env


def write(path, text):
    path.write_text(text)
    return path


def start(server, request):
    request.addfinalizer(server.close)
    return server.start()


def dns_a(server, name, tcp=False):
    q = dns.message.make_query(name, "A")
    if tcp:
        resp = dns.query.tcp(q, server.dns_host, port=server.dns_port, timeout=5)
    else:
        resp = dns.query.udp(q, server.dns_host, port=server.dns_port, timeout=3)
    return resp.rcode(), [rd.address for rr in resp.answer if rr.rdtype == dns.rdatatype.A for rd in rr]


def refused(cfg, tmp_path):
    """Runs `serve --config cfg`: it must fail at once; returns its stderr."""
    r = subprocess.run([BIN, "serve", "--config", str(cfg)], capture_output=True, text=True, timeout=30,
                       env=clean_env(), cwd=str(tmp_path))
    assert r.returncode != 0, r.stdout
    assert "Ready." not in r.stdout
    return r.stderr


def test_listener_sections_are_honoured(tmp_path, request):
    cfg = write(tmp_path / "trapline.toml", f"""
data_dir = "{tmp_path / 'data'}"
api_listen = "127.0.0.1:0"
domain = "sections.example"
nx_domain = "nx.sections.example"
public_ip = "192.0.2.40"

[listeners.http]
listen = "127.0.0.1:0"
max_conns = 64
max_conns_per_source = 8

[listeners.dns]
listen = "127.0.0.1:0"
tcp_max_conns = 32
tcp_max_conns_per_source = 4
""")
    srv = start(Server(default_flags=False, args=["--config", str(cfg)], cwd=str(tmp_path)), request)
    http_port = int(re.fullmatch(r"http://127\.0\.0\.1:(\d+)/", srv.http_url).group(1))
    assert http_port != 0 and srv.dns_host == "127.0.0.1" and srv.dns_port != 0, srv.output()
    dns_line = next(l for l in srv.stdout_lines if "DNS (UDP+TCP):" in l)
    assert "zone sections.example, NX zone nx.sections.example, answers 192.0.2.40" in dns_line, dns_line

    api = srv.api()
    tok = api.create_token("dns")
    tid = tok["canarytoken"]
    assert tok["hostname"] == f"{tid}.sections.example"
    assert tok["url"].startswith(f"http://127.0.0.1:{http_port}/"), "token URLs point at the section's listener"
    assert dns_a(srv, f"{tid}.sections.example") == (dns.rcode.NOERROR, ["192.0.2.40"])
    assert dns_a(srv, f"x.{tid}.nx.sections.example", tcp=True)[0] == dns.rcode.NXDOMAIN
    assert requests.get(tok["url"], timeout=10).status_code == 200
    events = api.wait_events(tid, count=3)
    assert sorted(e["channel"] for e in events) == ["dns", "dns", "http"], events


def test_flat_keys_of_older_files_still_work(tmp_path, request):
    """`http_listen`, `dns_listen` and the caps as flat keys, mixed with a section; `smtp_url`
    flat as before."""
    cfg = write(tmp_path / "trapline.toml", f"""
data_dir = "{tmp_path / 'data'}"
api_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
http_max_conns_per_source = 8
dns_tcp_max_conns = 32
domain = "flat.example"
nx_domain = "nx.flat.example"
smtp_url = "smtp://127.0.0.1:9"
alert_outputs = ["email=sec@example.com"]

[listeners.dns]
listen = "127.0.0.1:0"
""")
    srv = start(Server(default_flags=False, args=["--config", str(cfg)], cwd=str(tmp_path)), request)
    assert any("alert outputs:    email" in l for l in srv.stdout_lines), srv.output()
    api = srv.api()
    tok = api.create_token("http")
    tid = tok["canarytoken"]
    assert requests.get(tok["url"], timeout=10).status_code == 200
    assert dns_a(srv, f"{tid}.flat.example")[0] == dns.rcode.NOERROR
    api.wait_events(tid, count=2)


def test_alert_mail_section_and_flags(tmp_path, request):
    """`[alerts.email]` is where alert mail is set; the section is read (a bad URL there is
    refused), and the new `--alert-smtp-url` flag beats it."""
    cfg = write(tmp_path / "bad.toml", '[alerts.email]\nurl = "http://mail.example.com"\n')
    err = refused(cfg, tmp_path)
    assert "smtp" in err.lower(), err
    cfg = write(tmp_path / "trapline.toml", f"""
data_dir = "{tmp_path / 'data'}"
alert_outputs = ["email=sec@example.com"]

[alerts.email]
url = "http://mail.example.com"
from = "Trapline <t@example.com>"
""")
    srv = start(Server(default_flags=False, cwd=str(tmp_path), args=[
        "--config", str(cfg), "--api-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
        "--dns-listen", "127.0.0.1:0", "--alert-smtp-url", "smtp://127.0.0.1:9"]), request)
    assert any("alert outputs:    email" in l for l in srv.stdout_lines), srv.output()


@pytest.mark.parametrize("text, needles", [
    ('[listeners.dns]\nlisten = "127.0.0.1:0"\nbogus = 1\n', ["[listeners.dns]", "unknown field `bogus`"]),
    ('[listeners.http]\ntcp_max_conns = 4\n', ["[listeners.http]", "unknown field `tcp_max_conns`", "max_conns"]),
    ('[listeners.ftp]\nlisten = "127.0.0.1:21"\n', ["unknown field `ftp`"]),
    ('[alerts.email]\nserver = "smtp://x"\n', ["[alerts.email]", "unknown field `server`"]),
    ('dns_listen = "127.0.0.1:0"\n[listeners.dns]\nlisten = "127.0.0.1:0"\n', ["dns_listen is set twice"]),
    ('[listeners.http]\nmax_conns = 0\n', ["http_max_conns must be at least 1"]),
])
def test_unknown_or_conflicting_keys_are_refused_with_a_clear_message(tmp_path, text, needles):
    err = refused(write(tmp_path / "trapline.toml", text), tmp_path)
    assert "invalid config file" in err or "must be at least 1" in err, err
    for n in needles:
        assert n in err, err

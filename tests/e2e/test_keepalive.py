"""A refused request must not break the client's connection: every dialect reads the request
body before answering, so the server can keep a keep-alive connection open. (A body left unread
made the server drop the connection, and clients that reuse connections — falconpy among them —
saw their next request fail.)"""

import socket

import pytest

from conftest import unique


def _exchange(sock, request_head, body):
    """Send the head and the body as separate writes, then read one response."""
    sock.sendall(request_head)
    sock.sendall(body)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response; got {data!r}"
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed in the middle of a body"
        rest += chunk
    return int(head.split(b" ")[1]), head


REFUSED = [
    ("POST", "/key", b"application/json", b'{"admin": true}'),
    ("PATCH", "/key", b"application/json", b'{"key_id": "x"}'),
    ("POST", "/installation-tokens/entities/tokens/v1", b"application/json", b'{"label": "x"}'),
    ("POST", "/oauth2/revoke", b"application/x-www-form-urlencoded", b"token=abc"),
    ("POST", "/host_factory_tokens", b"application/x-www-form-urlencoded", b"host_factory=a:host_factory:flock:default"),
    ("POST", "/host_factories/hosts", b"application/x-www-form-urlencoded", b"id=web-01"),
    ("POST", "/api/v1/canarytoken/create", b"application/x-www-form-urlencoded", b"kind=dns&memo=x"),
]


@pytest.mark.parametrize("method, path, ctype, body", REFUSED, ids=[f"{m} {p}" for m, p, _, _ in REFUSED])
def test_connection_survives_a_refusal(server, method, path, ctype, body):
    host, port = server.api().base.split("//")[1].split("/")[0].split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    try:
        for _ in range(5):
            head = (f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: ".encode() + ctype +
                    f"\r\nContent-Length: {len(body)}\r\n\r\n".encode())
            status, resp_head = _exchange(sock, head, body)
            assert status in (401, 403), (status, resp_head)
            assert b"connection: close" not in resp_head.lower(), resp_head
        # ...and the same connection still serves a normal request.
        status, _ = _exchange(sock, b"GET /api/v1/ping?auth_token=" + server.admin_token.encode() +
                              b" HTTP/1.1\r\nHost: x\r\n\r\n", b"")
        assert status == 200
    finally:
        sock.close()

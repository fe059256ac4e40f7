"""The annex's HTTP server against hostile clients, over real sockets on loopback.

Slow and half-open clients are disconnected after the server's idle timeout (they never pin a
thread for good), a path the file system cannot take gets 400 (not a dropped connection and a
traceback), the listen backlog is deep, and the server keeps serving through all of it.
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from procs.publisher import HTTP_BACKLOG, AnnexHTTPServer, serve_annex

TIMEOUT_S = 0.5  # the server's idle timeout in these tests
SLOW_CLIENTS = 50


@pytest.fixture
def server(tmp_path: Path) -> Iterator[AnnexHTTPServer]:
    (tmp_path / "LATISS" / "20261124").mkdir(parents=True)
    (tmp_path / "LATISS" / "20261124" / "AT_O_20261124_000001.fits").write_bytes(b"SIMPLE  =" + b" " * 71)
    srv = serve_annex(tmp_path, 0, timeout=TIMEOUT_S)
    yield srv
    srv.shutdown()
    srv.server_close()


def base(srv: AnnexHTTPServer) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}"


def get(srv: AnnexHTTPServer, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(base(srv) + path, timeout=10) as resp:  # noqa: S310 (loopback)
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def raw_request(srv: AnnexHTTPServer, request: bytes) -> bytes:
    """Send raw bytes, read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", srv.server_address[1]), timeout=10) as s:
        s.sendall(request)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def test_slow_and_half_open_clients_are_disconnected(server: AnnexHTTPServer) -> None:
    threads_before = threading.active_count()
    clients = []
    for i in range(SLOW_CLIENTS):
        s = socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=20 * TIMEOUT_S + 5)
        if i % 2:
            s.sendall(b"GET /LATISS/20261124/AT_O_20261124_000001.fits HTTP/1.1\r\nHost: x\r\n")  # never finished
        clients.append(s)
    try:
        # the server still serves while they hang
        assert get(server, "/LATISS/20261124/AT_O_20261124_000001.fits")[0] == 200
        for s in clients:
            try:
                data = s.recv(65536)
            except socket.timeout:
                pytest.fail("a silent client was never disconnected by the server")
            assert data == b"", data[:200]  # closed by the server, nothing answered to half a request
    finally:
        for s in clients:
            s.close()
    deadline = time.monotonic() + 10
    while threading.active_count() > threads_before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= threads_before, "connection threads left behind"
    assert get(server, "/LATISS/20261124/AT_O_20261124_000001.fits")[0] == 200


@pytest.mark.parametrize("path", ["/LATISS/%00", "/LATISS/20261124/AT%00.fits", "/LATISS/%ff%fe"])
def test_bad_path_gets_400_and_the_server_goes_on(server: AnnexHTTPServer, path: str) -> None:
    reply = raw_request(server, f"GET {path} HTTP/1.0\r\n\r\n".encode())
    assert reply.startswith(b"HTTP/1.0 400 "), reply[:200]
    status, body = get(server, "/LATISS/20261124/AT_O_20261124_000001.fits")
    assert status == 200 and body.startswith(b"SIMPLE")


def test_traversal_stays_in_the_annex(server: AnnexHTTPServer, tmp_path: Path) -> None:
    (tmp_path.parent / "secret.txt").write_text("outside the annex\n")
    reply = raw_request(server, b"GET /../secret.txt HTTP/1.0\r\n\r\n")
    assert b"outside the annex" not in reply
    assert get(server, "/%2e%2e/secret.txt")[0] == 404


def test_listen_backlog_is_deep(server: AnnexHTTPServer) -> None:
    assert server.request_queue_size == HTTP_BACKLOG >= 128

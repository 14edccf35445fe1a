"""Hardening item 16: the metrics server under hostile clients (real loopback sockets).

400 half-open connections made 404 threads, a TLS probe hung a thread until the
client closed, and a dropped connection printed "Exception occurred during
processing of request" blocks to stderr.
"""

from __future__ import annotations

import json
import socket
import ssl
import struct
import threading
import urllib.request
from collections.abc import Iterator

import pytest

from copydicom.observability import HealthChecker, Metrics, MetricsConfig, ObservabilityServer
from copydicom.observability import _server


def _ok() -> None:
    return None


@pytest.fixture
def server() -> Iterator[ObservabilityServer]:
    health = HealthChecker(MetricsConfig(), sources={}, ledger=_ok, routes=lambda: [])
    srv = ObservabilityServer(Metrics(), health, "127.0.0.1", 0)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def _healthz(srv: ObservabilityServer) -> int:
    host, port = srv.address
    with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=30) as reply:
        json.loads(reply.read())
        return int(reply.status)


def test_400_half_open_connections_do_not_make_400_threads(server: ObservabilityServer) -> None:
    before = threading.active_count()
    idle: list[socket.socket] = []
    try:
        for _ in range(400):
            idle.append(socket.create_connection(server.address, timeout=30))
        # Served after the 400 were accepted (one listening socket, accepted in order): still answers.
        assert _healthz(server) == 200
        assert threading.active_count() <= before + _server.WORKERS
    finally:
        for sock in idle:
            sock.close()
    assert _healthz(server) == 200


def test_a_tls_probe_is_closed_after_the_request_timeout(server: ObservabilityServer,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_server, "REQUEST_TIMEOUT", 0.5)
    context = ssl.create_default_context()
    before = threading.active_count()
    raw = socket.create_connection(server.address, timeout=30)
    try:
        # The ClientHello carries no newline: a line-reading server waits for one forever.
        with pytest.raises((ssl.SSLError, ConnectionError)):
            context.wrap_socket(raw, server_hostname="localhost")  # socket.timeout (30 s) would mean a hang
    finally:
        raw.close()
    assert threading.active_count() <= before + _server.WORKERS
    assert _healthz(server) == 200


def test_a_dropped_connection_prints_nothing(server: ObservabilityServer, capfd: pytest.CaptureFixture[str]) -> None:
    for _ in range(5):
        sock = socket.create_connection(server.address, timeout=30)
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # headers not finished
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # reset, not a clean close
    for _ in range(5):  # and clients that go away before reading the answer
        sock = socket.create_connection(server.address, timeout=30)
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    assert _healthz(server) == 200
    captured = capfd.readouterr()
    assert "Exception occurred" not in captured.err and "Traceback" not in captured.err


def test_garbage_and_other_methods_get_a_one_line_refusal(server: ObservabilityServer) -> None:
    def ask(data: bytes) -> bytes:
        with socket.create_connection(server.address, timeout=30) as sock:
            sock.sendall(data)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
            return b"".join(chunks)

    assert ask(b"\x00\x01garbage\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert ask(b"POST /metrics HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 405 ")
    reply = ask(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200 ") and b"text/plain" in reply

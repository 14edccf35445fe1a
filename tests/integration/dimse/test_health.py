"""The listener's health probe (registry ``probe``): what ``/healthz`` and ``check-config`` report."""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
from pathlib import Path

import pytest

from copydicom import registry
from copydicom.endpoints.dimse import ListenerConfig
from copydicom.endpoints.dimse.listener import ListenerSource
from copydicom.errors import SourceUnavailable
from copydicom.observability._config import MetricsConfig
from copydicom.observability._health import HealthChecker
from tests.integration.dimse.conftest import wait_until
from tests.integration.dimse.test_kill import gone
from tests.support.orthanc import free_port


def _config(tmp_path: Path, name: str = "rx", port: int | None = None, **body: object) -> ListenerConfig:
    return ListenerConfig.from_mapping(
        name, {"port": port or free_port(), "allowed_calling": ["SENDER"], "spool": str(tmp_path / name), **body},
        where=f"endpoints.{name}")


def _health(cfg: ListenerConfig) -> tuple[bool, dict[str, object]]:
    check = registry.get("dimse_listener").probe
    assert check is not None
    checker = HealthChecker(MetricsConfig(), sources={cfg.name: functools.partial(check, cfg)},
                            ledger=lambda: None, routes=lambda: [])
    return checker.check()


def test_a_dead_receiver_process_makes_healthz_name_the_listener(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    source = ListenerSource(cfg)
    source.listener.start()
    try:
        assert _health(cfg) == (True, {"status": "ok", "ledger": {"ok": True}, "sources": {"rx": {"ok": True}},
                                       "routes": {}})
        child = source.listener.pid
        os.kill(child, signal.SIGKILL)
        # (a killed multi-threaded process shows as a zombie before its last threads are gone: wait for both)
        wait_until(lambda: gone(child) and not _health(cfg)[0], what="the receiver to die")
        healthy, body = _health(cfg)
        assert not healthy
        error = body["sources"]["rx"]["error"]  # type: ignore[index]
        assert "listener rx" in error and "exited" in error
        assert str(tmp_path) not in json.dumps(body)  # no spool path (nor anything else of the instance)
        source.listener.ensure_running()  # what the next poll does
        assert _health(cfg)[0]
    finally:
        source.close()


def test_a_dead_server_thread_is_reported(tmp_path: Path) -> None:
    cfg = _config(tmp_path, receiver="thread")
    source = ListenerSource(cfg)
    source.listener.start()
    try:
        assert _health(cfg)[0]
        source.listener._server.shutdown()  # serve_forever returns: the thread ends, the listener stays registered
        wait_until(lambda: not source.listener._thread.is_alive(), what="the server thread to end")
        healthy, body = _health(cfg)
        assert not healthy and "listener rx: not running" in body["sources"]["rx"]["error"]  # type: ignore[index]
    finally:
        source.close()


def test_elsewhere_a_free_port_or_a_listener_answering_c_echo_is_healthy(tmp_path: Path) -> None:
    port = free_port()
    cfg = _config(tmp_path, port=port)
    registry.get("dimse_listener").probe(cfg)  # type: ignore[misc]  # nothing listens: it can start
    # The same listener run by another process (here: another name in this one) answers C-ECHO.
    other = ListenerSource(_config(tmp_path, name="other", port=port, receiver="thread"))
    other.listener.start()
    try:
        registry.get("dimse_listener").probe(cfg)  # type: ignore[misc]
        assert other.listener.stats.associations == 1
    finally:
        other.close()


def test_elsewhere_a_port_held_by_something_else_is_unhealthy(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()  # accepts connections, never speaks DICOM
        cfg = _config(tmp_path, port=squatter.getsockname()[1])
        with pytest.raises(SourceUnavailable, match="listener rx: .* does not answer C-ECHO as COPYDICOM"):
            registry.get("dimse_listener").probe(cfg)  # type: ignore[misc]

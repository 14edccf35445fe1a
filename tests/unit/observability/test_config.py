"""``metrics:`` validation, and copydicom without prometheus-client."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from copydicom.config import parse_config
from copydicom.errors import ConfigError
from copydicom.observability import MetricsConfig

REPO = Path(__file__).resolve().parents[3]


def _config(metrics: Any) -> dict[str, Any]:
    return {"state": "/tmp/x/state.db", "metrics": metrics}


def test_defaults_and_port_zero() -> None:
    assert MetricsConfig.from_mapping({}) == MetricsConfig("127.0.0.1", 9108, False, 60.0, 15.0)
    cfg = MetricsConfig.from_mapping({"listen": "127.0.0.1:0", "stale_margin_seconds": 5, "max_backoff_minutes": 1})
    assert (cfg.host, cfg.port, cfg.stale_margin_seconds, cfg.max_backoff_minutes) == ("127.0.0.1", 0, 5.0, 1.0)
    assert MetricsConfig.from_mapping({"listen": "[::1]:9108"}).host == "::1"
    assert MetricsConfig.from_mapping({"listen": "localhost:9108"}).host == "localhost"
    assert parse_config(_config({"listen": "127.0.0.1:9200"}), base_dir=Path("/tmp")).metrics == {
        "listen": "127.0.0.1:9200"}


@pytest.mark.parametrize(
    ("metrics", "message"),
    [
        ({"listen": "0.0.0.0:9108"}, "metrics.listen: 0.0.0.0 is not a loopback address; set allow_remote: true"),
        ({"listen": "10.1.2.3:9108"}, "metrics.listen: 10.1.2.3 is not a loopback address"),
        ({"listen": "9108"}, "metrics.listen: must be 'host:port'"),
        ({"listen": "127.0.0.1:http"}, "metrics.listen: port 'http' is not a number"),
        ({"listen": "127.0.0.1:70000"}, "metrics.listen: port 70000 out of range"),
        ({"listen": ":9108"}, "metrics.listen: a host is required"),
        ({"allow_remote": "yes"}, "metrics.allow_remote: must be true or false"),
        ({"stale_margin_seconds": -1}, "metrics.stale_margin_seconds: must be a number >= 0"),
        ({"port": 9108}, "metrics: unknown key(s) port"),
        ("127.0.0.1:9108", "metrics: must be a mapping"),
    ],
)
def test_refused(metrics: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_config(metrics), base_dir=Path("/tmp"))
    assert str(info.value).startswith(message)


def test_remote_allowed_explicitly() -> None:
    cfg = MetricsConfig.from_mapping({"listen": "0.0.0.0:9108", "allow_remote": True})
    assert (cfg.host, cfg.allow_remote) == ("0.0.0.0", True)


def test_missing_prometheus_client_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "prometheus_client" else real(name, *a))
    with pytest.raises(ConfigError) as info:
        parse_config(_config({"listen": "127.0.0.1:0"}), base_dir=Path("/tmp"))
    assert str(info.value) == (
        "metrics: metrics need the package prometheus_client (pip install 'copydicom[metrics]')")
    # Without a metrics section nothing asks for it.
    assert parse_config({"state": "/tmp/x/state.db"}, base_dir=Path("/tmp")).metrics == {}


def test_prometheus_client_is_imported_lazily() -> None:
    code = (
        "import sys; import copydicom.daemon, copydicom.observability, copydicom.pipeline; "
        "print('prometheus_client' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, check=True)
    assert out.stdout.strip() == "False"


def test_check_config_shows_the_address(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from copydicom.cli import main

    path = tmp_path / "c.yaml"
    path.write_text("state: state.db\nmetrics:\n  listen: '127.0.0.1:9200'\n")
    assert main(["check-config", "--offline", str(path)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "  metrics and health: http://127.0.0.1:9200/metrics and /healthz"
    path.write_text("state: state.db\nmetrics:\n  listen: '0.0.0.0:9200'\n")
    assert main(["check-config", "--offline", str(path)]) == 2


def test_daemon_refuses_a_taken_port(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import signal
    import socket

    from copydicom.daemon import Daemon

    monkeypatch.setattr(signal, "signal", lambda *_: None)  # keep pytest's handlers

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        config = parse_config({"state": str(tmp_path / "state.db"), "metrics": {"listen": f"127.0.0.1:{port}"}})
        daemon = Daemon(config)
        with pytest.raises(ConfigError) as info:
            daemon.run_forever()
    assert str(info.value) == "metrics.listen: cannot listen: Address already in use"

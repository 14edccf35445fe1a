"""State hardening against real processes and real Orthanc servers.

- two daemons on one state: the second is refused at start-up naming the route (exit 2),
  read-only commands still work, and nothing is sent twice;
- a checkpoint raised 5,000 above the source, and a source whose database was wiped and
  rebuilt: the feed reset is logged at ERROR, shown by ``status`` (no negative backlog),
  ``/healthz`` answers 503, the metric is 1, and nothing is sent from the feed.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import sqlite3
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from copydicom.cli import main
from tests.integration.conftest import (
    DaemonProcess,
    changes_of,
    checkpoint_of,
    last_seq,
    load_ct,
    wait_until,
    write_config,
)
from tests.support.orthanc import OrthancServer

pytestmark = pytest.mark.integration

StartDaemon = Callable[[Path], DaemonProcess]
_ADDRESS = re.compile(r"metrics and health on http://127\.0\.0\.1:(\d+)/metrics")


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=15) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _with_metrics(config: Path) -> None:
    """Metrics on, and a feed reset held for an operator (these tests check the detection and its report;
    the automatic repair, the default, is tests/integration/test_reconcile_daemon.py's)."""
    data: dict[str, Any] = yaml.safe_load(config.read_text())
    data["metrics"] = {"listen": "127.0.0.1:0", "stale_margin_seconds": 30}
    for route in data["routes"]:
        route["reconcile"] = {"on_feed_reset": "hold"}
    config.write_text(yaml.safe_dump(data))


def _stop(proc: DaemonProcess) -> None:
    proc.signal(signal.SIGTERM)
    assert proc.wait(10) == 0, proc.log()


def _status(config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
            source: OrthancServer, dest: OrthancServer, *extra: str) -> str:
    monkeypatch.setenv("CD_TEST_SRC_PW", source.password)
    monkeypatch.setenv("CD_TEST_DST_PW", dest.password)
    capsys.readouterr()
    assert main(["status", "--config", str(config), *extra]) == 0
    return capsys.readouterr().out


def test_second_daemon_on_the_same_state_is_refused_and_nothing_is_sent_twice(
    servers: tuple[OrthancServer, OrthancServer], tmp_path: Path, daemon: StartDaemon,
    daemon_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    source, dest = servers
    dest_start = last_seq(dest)
    config = write_config(tmp_path, source, dest)
    first = daemon(config)
    wait_until(lambda: "daemon started" in first.log(), timeout=30, what="the first daemon to start")

    second = DaemonProcess(config, daemon_env, tmp_path / "second.log").start()
    try:
        status = second.wait(30)
    except subprocess.TimeoutExpired:
        second.kill()
        raise AssertionError("the second daemon was not refused:\n" + second.log()) from None
    assert status == 2
    assert "route copy: another copydicom process (pid " in second.log()
    assert "Traceback" not in second.log()

    ids = load_ct(source, 20, seed="two-daemons")
    wait_until(lambda: set(dest.instance_ids()) == ids and checkpoint_of(tmp_path / "state.db", "copy")
               == last_seq(source), timeout=60, what="the first daemon to replicate")
    # Read-only commands work while the daemon holds the route's lock.
    out = _status(config, monkeypatch, capsys, source, dest)
    assert "instances: stored: 20" in out
    assert main(["quarantine", "list", "--config", str(config)]) == 0
    assert capsys.readouterr().out.strip().endswith("0 quarantined")
    _stop(first)
    received = [c["ID"] for c in changes_of(dest, "NewInstance", since=dest_start)]
    assert sorted(received) == sorted(ids)  # each exactly once


def _caught_up_daemon(tmp_path: Path, source: OrthancServer, dest: OrthancServer, daemon: StartDaemon,
                      ids: set[str]) -> tuple[Path, DaemonProcess, str]:
    config = write_config(tmp_path, source, dest)
    _with_metrics(config)
    proc = daemon(config)
    wait_until(lambda: set(dest.instance_ids()) == ids and checkpoint_of(tmp_path / "state.db", "copy")
               == last_seq(source), timeout=60, what="the first instances")
    wait_until(lambda: _ADDRESS.search(proc.log()) is not None, timeout=30, what="the metrics server")
    match = _ADDRESS.search(proc.log())
    assert match is not None
    return config, proc, f"http://127.0.0.1:{match.group(1)}"


def _assert_reset_reported(proc: DaemonProcess, base_url: str) -> None:
    wait_until(lambda: _get(base_url + "/healthz")[0] == 503, timeout=60, what="/healthz to answer 503")
    status, body = _get(base_url + "/healthz")
    assert "change feed reset" in json.loads(body)["routes"]["copy"]["problem"]
    _, metrics = _get(base_url + "/metrics")
    assert 'copydicom_feed_reset{route="copy"} 1.0' in metrics
    errors = [line for line in proc.log().splitlines() if "ERROR" in line and "feed reset" in line]
    assert errors, proc.log()


def test_checkpoint_raised_by_5000_holds_the_route_and_is_reported(
    servers: tuple[OrthancServer, OrthancServer], tmp_path: Path, daemon: StartDaemon,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    source, dest = servers
    first = load_ct(source, 5, seed="before-raise")
    config, proc, base = _caught_up_daemon(tmp_path, source, dest, daemon, first)
    _stop(proc)
    state = tmp_path / "state.db"
    raised = checkpoint_of(state, "copy")
    assert raised is not None
    db = sqlite3.connect(state)
    db.execute("UPDATE checkpoints SET seq = seq + 5000 WHERE route = 'copy'")
    db.commit()
    db.close()

    new = load_ct(source, 5, seed="after-raise")
    proc = daemon(config)
    wait_until(lambda: _ADDRESS.search(proc.log().split("daemon stopped")[-1]) is not None, timeout=30,
               what="the metrics server of the second run")
    match = _ADDRESS.search(proc.log().split("daemon stopped")[-1])
    assert match is not None
    _assert_reset_reported(proc, f"http://127.0.0.1:{match.group(1)}")
    assert not (new & set(dest.instance_ids()))  # held: nothing sent from a feed that does not match
    assert checkpoint_of(state, "copy") == raised + 5000  # not advanced, not moved back

    out = _status(config, monkeypatch, capsys, source, dest)
    assert "backlog: -" in out and "backlog: -4" not in out and "FEED RESET" in out
    (row,) = json.loads(_status(config, monkeypatch, capsys, source, dest, "--json"))["routes"]
    assert row["backlog"] is None and row["feed_reset"]["checkpoint"] == raised + 5000
    _stop(proc)


def test_source_rebuilt_past_the_checkpoint_is_detected(
    servers: tuple[OrthancServer, OrthancServer], tmp_path: Path, daemon: StartDaemon,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    _, dest = servers
    source = OrthancServer(name="REBUILT", workdir=tmp_path / "rebuilt").start()
    try:
        first = load_ct(source, 6, seed="before-rebuild")
        config, proc, _ = _caught_up_daemon(tmp_path, source, dest, daemon, first)
        _stop(proc)
        checkpoint = checkpoint_of(tmp_path / "state.db", "copy")
        assert checkpoint is not None

        # The source's database is wiped and rebuilt; new instances take it past the old checkpoint.
        source.stop()
        shutil.rmtree(tmp_path / "rebuilt" / "storage")
        source.start()
        new: set[str] = set()
        round_ = 0
        while last_seq(source) <= checkpoint:
            new |= load_ct(source, 3, seed=f"after-rebuild-{round_}")
            round_ += 1
        proc = daemon(config)
        wait_until(lambda: _ADDRESS.search(proc.log().split("daemon stopped")[-1]) is not None, timeout=30,
                   what="the metrics server of the second run")
        match = _ADDRESS.search(proc.log().split("daemon stopped")[-1])
        assert match is not None
        _assert_reset_reported(proc, f"http://127.0.0.1:{match.group(1)}")
        assert not (new & set(dest.instance_ids()))
        assert checkpoint_of(tmp_path / "state.db", "copy") == checkpoint
        out = _status(config, monkeypatch, capsys, source, dest)
        assert "names another resource" in out
        _stop(proc)
    finally:
        source.cleanup()

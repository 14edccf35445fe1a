"""The real daemon with ``metrics:`` on: /metrics counts exactly, /healthz follows the source.

The daemon listens on port 0 (any free loopback port) and logs the address it
got; the test reads it from the log and scrapes over HTTP on 127.0.0.1.
"""

from __future__ import annotations

import json
import re
import signal
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from tests.support.orthanc import OrthancServer
from tests.support.synthetic import ct_study_files
from tests.integration.conftest import DaemonProcess, checkpoint_of, last_seq, wait_until, write_config

pytestmark = pytest.mark.integration

StartDaemon = Callable[[Path], DaemonProcess]
_ADDRESS = re.compile(r"metrics and health on http://127\.0\.0\.1:(\d+)/metrics")


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=15) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _samples(text: str) -> dict[str, float]:
    """``{'name{labels}': value}`` of a Prometheus text exposition (comments dropped)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def _with_metrics(config: Path) -> None:
    data: dict[str, Any] = yaml.safe_load(config.read_text())
    data["metrics"] = {"listen": "127.0.0.1:0", "stale_margin_seconds": 30}
    config.write_text(yaml.safe_dump(data))


def test_metrics_and_health_of_a_running_daemon(
    servers: tuple[OrthancServer, OrthancServer], tmp_path: Path, daemon: StartDaemon
) -> None:
    source, dest = servers
    files = list(ct_study_files(12, series_per_study=3, rows=32, cols=32, seed="metrics"))
    for data in files:
        source.upload(data)
    for data in files[:3]:  # three are already at the destination: skipped as existing
        dest.upload(data)
    state = tmp_path / "state.db"
    config = write_config(tmp_path, source, dest, poll_seconds=0.5)
    _with_metrics(config)
    proc = daemon(config)

    wait_until(lambda: _ADDRESS.search(proc.log()) is not None, timeout=30, what="the metrics server to listen")
    match = _ADDRESS.search(proc.log())
    assert match is not None
    base = f"http://127.0.0.1:{match.group(1)}"

    def caught_up() -> bool:
        samples = _samples(_get(base + "/metrics")[1])
        return (
            set(dest.instance_ids()) == set(source.instance_ids())
            and checkpoint_of(state, "copy") == last_seq(source)
            and samples.get('copydicom_backlog_changes{route="copy"}') == 0.0
        )

    wait_until(caught_up, timeout=60, what="replication of 12 instances and a zero backlog")
    status, text = _get(base + "/metrics")
    assert status == 200
    samples = _samples(text)
    route = 'route="copy"'
    assert samples[f'copydicom_instances_total{{destination="dst",outcome="stored",{route}}}'] == 9.0
    assert samples[f'copydicom_instances_total{{destination="dst",outcome="existing",{route}}}'] == 3.0
    assert samples[f'copydicom_route_instances_total{{outcome="stored",{route}}}'] == 9.0
    assert samples[f'copydicom_route_instances_total{{outcome="existing",{route}}}'] == 3.0
    assert not any("outcome=\"failed\"" in k or "outcome=\"quarantined\"" in k for k in samples)
    assert samples[f"copydicom_transfer_seconds_count{{{route}}}"] == 9.0
    assert samples[f"copydicom_last_success_timestamp_seconds{{{route}}}"] > 0

    status, body = _get(base + "/healthz")
    health = json.loads(body)
    assert status == 200, body
    assert health["status"] == "ok"
    assert health["ledger"] == {"ok": True}
    assert health["sources"] == {"src": {"ok": True}}
    assert health["routes"]["copy"]["ok"] is True
    assert health["routes"]["copy"]["stale_after_seconds"] == 31.5

    source.stop()
    try:
        status, body = _get(base + "/healthz")
        health = json.loads(body)
        assert status == 503, body
        assert health["status"] == "unhealthy"
        assert health["sources"]["src"]["ok"] is False
        assert source.password not in body
    finally:
        source.start()
    wait_until(lambda: _get(base + "/healthz")[0] == 200, timeout=60, what="/healthz back to 200")

    proc.signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(base + "/healthz", timeout=5)
    assert "Traceback" not in proc.log()


def test_index_documents_counted_from_the_spool(
    servers: tuple[OrthancServer, OrthancServer], tmp_path: Path, daemon: StartDaemon
) -> None:
    import sqlite3

    source, dest = servers
    for data in ct_study_files(6, series_per_study=2, rows=32, cols=32, seed="metrics-index"):
        source.upload(data)
    config = write_config(tmp_path, source, dest, poll_seconds=0.5)
    _with_metrics(config)
    data: dict[str, Any] = yaml.safe_load(config.read_text())
    data["endpoints"]["idx"] = {"type": "sqlite", "path": str(tmp_path / "index.db")}
    data["routes"][0]["indexes"] = ["idx"]
    config.write_text(yaml.safe_dump(data))
    proc = daemon(config)
    wait_until(lambda: _ADDRESS.search(proc.log()) is not None, timeout=30, what="the metrics server to listen")
    match = _ADDRESS.search(proc.log())
    assert match is not None
    base = f"http://127.0.0.1:{match.group(1)}"

    def flushed() -> bool:
        samples = _samples(_get(base + "/metrics")[1])
        return (samples.get('copydicom_index_spool_pending{sink="idx"}') == 0.0
                and samples.get('copydicom_index_documents_total{result="delivered",sink="idx"}', 0) > 0
                and len(dest.instance_ids()) == 6)

    wait_until(flushed, timeout=60, what="the index spool to be flushed")
    samples = _samples(_get(base + "/metrics")[1])
    proc.signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    db = sqlite3.connect(tmp_path / "state.db")
    try:
        (delivered,) = db.execute("SELECT count(*) FROM spool_delivered WHERE sink='idx'").fetchone()
    finally:
        db.close()
    index = sqlite3.connect(tmp_path / "index.db")
    try:
        (indexed,) = index.execute("SELECT count(*) FROM instances").fetchone()
    finally:
        index.close()
    assert indexed == 6
    assert samples['copydicom_index_documents_total{result="delivered",sink="idx"}'] == float(delivered)
    assert samples['copydicom_instances_total{destination="idx",outcome="stored",route="copy"}'] == 6.0
    assert samples['copydicom_instances_total{destination="dst",outcome="stored",route="copy"}'] == 6.0
    assert samples['copydicom_stage_seconds_count{route="copy",stage="index-documents"}'] == 6.0

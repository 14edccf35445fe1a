"""The daemon (``copydicom run``) as a real process against two real Orthanc servers.

Waits poll with a deadline (``wait_until``); nothing asserts on elapsed time
except the 10 s stop budget the issue requires.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from copydicom.cli import main
from tests.support.orthanc import OrthancServer
from tests.integration.conftest import (
    DaemonProcess,
    LedgerState,
    changes_of,
    checkpoint_of,
    instance_count,
    last_seq,
    load_ct,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.integration

StartDaemon = Callable[[Path], DaemonProcess]


def _caught_up(source: OrthancServer, dest: OrthancServer, state: Path | LedgerState,
               seen: list[int]) -> Callable[[], bool]:
    """Predicate: destination holds exactly the source's instances and the checkpoint is at ``Last``.

    Every checkpoint read is appended to ``seen`` (to check it never goes back).
    """

    def check() -> bool:
        cp = checkpoint_of(state, "copy")
        if cp is not None:
            seen.append(cp)
        return set(dest.instance_ids()) == set(source.instance_ids()) and cp == last_seq(source)

    return check


def _newest_instance_seq(source: OrthancServer) -> int:
    return max(c["Seq"] for c in changes_of(source, "NewInstance"))


def _stop(proc: DaemonProcess) -> int:
    proc.signal(signal.SIGTERM)
    try:
        return proc.wait(10)
    except subprocess.TimeoutExpired:
        raise AssertionError("the daemon did not exit within 10 s of SIGTERM:\n" + proc.log()) from None


def test_daemon_picks_up_new_instances_stops_on_sigterm_and_resumes(
    servers: tuple[OrthancServer, OrthancServer], tmp_path: Path, daemon: StartDaemon,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], ledger_state: LedgerState,
) -> None:
    """Ledger semantics (resume from the checkpoint, never backwards, nothing twice, status), on both stores."""
    source, dest = servers
    dest_start = last_seq(dest)
    state = ledger_state
    config = write_config(tmp_path, source, dest, state=ledger_state.config_value)
    seen: list[int] = []

    first = load_ct(source, 10, seed="before")
    proc = daemon(config)
    wait_until(_caught_up(source, dest, state, seen), timeout=30, what="the first 10 instances")
    assert set(dest.instance_ids()) == first

    # Instances that arrive while the daemon runs are picked up.
    second = load_ct(source, 12, seed="while")
    wait_until(_caught_up(source, dest, state, seen), timeout=30, what="instances arriving while running")
    assert set(dest.instance_ids()) == first | second

    assert _stop(proc) == 0
    stopped_at = checkpoint_of(state, "copy")
    # Stable* changes keep arriving StableAge seconds after the uploads; every instance is covered.
    assert stopped_at is not None and _newest_instance_seq(source) <= stopped_at <= last_seq(source)

    # While it is stopped more arrive; a restart resumes from the checkpoint.
    third = load_ct(source, 9, seed="after")
    assert checkpoint_of(state, "copy") == stopped_at
    proc = daemon(config)
    wait_until(_caught_up(source, dest, state, seen), timeout=30, what="instances that arrived while stopped")
    assert set(dest.instance_ids()) == first | second | third
    assert _stop(proc) == 0

    assert seen == sorted(seen), "the checkpoint moved backwards"
    assert _newest_instance_seq(source) <= seen[-1] <= last_seq(source)
    received = [c["ID"] for c in changes_of(dest, "NewInstance", since=dest_start)]
    assert sorted(received) == sorted(first | second | third)  # nothing sent twice
    assert "Traceback" not in proc.log()

    # ``copydicom status`` reads the same ledger: checkpoint, source Last, backlog, counts.
    monkeypatch.setenv("CD_TEST_SRC_PW", source.password)
    monkeypatch.setenv("CD_TEST_DST_PW", dest.password)
    capsys.readouterr()
    assert main(["status", "--config", str(config), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["routes"]
    last = last_seq(source)
    assert row["route"] == "copy"
    assert row["checkpoint"] == checkpoint_of(state, "copy")
    assert row["source_last"] == last
    assert row["backlog"] == last - row["checkpoint"]
    assert row["counts"] == {"stored": 31}
    assert row["quarantine_reasons"] == {}


def test_wait_for_stable_series(
    servers: tuple[OrthancServer, OrthancServer], tmp_path: Path, daemon: StartDaemon
) -> None:
    source, dest = servers
    dest_start = last_seq(dest)
    state = tmp_path / "state.db"
    config = write_config(tmp_path, source, dest, wait_for="stable_series")
    proc = daemon(config)
    ids = load_ct(source, 10, seed="stable", series=2)
    wait_until(lambda: set(dest.instance_ids()) == ids, timeout=40, what="stable series to be copied")
    stable = changes_of(source, "StableSeries")
    assert len(stable) == 2
    wait_until(lambda: (checkpoint_of(state, "copy") or 0) >= max(c["Seq"] for c in stable), timeout=20,
               what="the checkpoint to pass the StableSeries changes")
    assert _stop(proc) == 0
    arrivals = changes_of(dest, "NewInstance", since=dest_start)
    assert sorted(c["ID"] for c in arrivals) == sorted(ids)
    # Nothing was sent before its series was stable (Orthanc's change dates, same clock, 1 s resolution;
    # StableAge is 2 s, so an early send would show an earlier date).
    assert min(c["Date"] for c in arrivals) >= min(c["Date"] for c in stable)


def test_destination_down_then_back_nothing_lost(
    servers: tuple[OrthancServer, OrthancServer], tmp_path: Path, daemon: StartDaemon
) -> None:
    source, dest = servers
    dest_start = last_seq(dest)
    state = tmp_path / "state.db"
    config = write_config(tmp_path, source, dest, dest_retries=1)
    seen: list[int] = []

    first = load_ct(source, 8, seed="up")
    proc = daemon(config)
    wait_until(_caught_up(source, dest, state, seen), timeout=30, what="the first instances")
    held = checkpoint_of(state, "copy")
    assert held is not None

    dest.stop()
    try:
        second = load_ct(source, 10, seed="down")
        # The route fails, backs off, and keeps its checkpoint.
        wait_until(lambda: "retrying in" in proc.log(), timeout=60, what="the route to back off")
        # The watermark may pass changes the route ignores, never an instance not delivered.
        pending = [c["Seq"] for c in changes_of(source, "NewInstance", since=held) if c["ID"] in second]
        assert len(pending) == len(second)
        now = checkpoint_of(state, "copy")
        assert now is not None and held <= now < min(pending)
        assert proc.running()
    finally:
        dest.start()

    # The daemon recovers by itself once the destination is back.
    wait_until(_caught_up(source, dest, state, seen), timeout=90, what="recovery after the destination came back")
    assert set(dest.instance_ids()) == first | second
    assert _stop(proc) == 0
    assert seen == sorted(seen)
    received = [c["ID"] for c in changes_of(dest, "NewInstance", since=dest_start)]
    assert sorted(received) == sorted(first | second)


def test_sigkill_mid_run_then_restart_exactly_once(
    servers: tuple[OrthancServer, OrthancServer], tmp_path: Path, daemon: StartDaemon, ledger_state: LedgerState,
) -> None:
    """Exactly once across a SIGKILL, on both stores."""
    source, dest = servers
    dest_start = last_seq(dest)
    state = ledger_state
    config = write_config(tmp_path, source, dest, workers=2, state=ledger_state.config_value)
    total = 600
    ids = load_ct(source, total, seed="kill", series=6)
    seen: list[int] = []

    proc = daemon(config)
    wait_until(lambda: instance_count(dest) >= 150, timeout=60, what="the run to be under way", interval=0.02)
    proc.kill()
    at_kill = instance_count(dest)
    assert 150 <= at_kill < total, "the run finished before it could be killed"
    killed_checkpoint = checkpoint_of(state, "copy")
    assert killed_checkpoint is not None and killed_checkpoint < last_seq(source)

    proc = daemon(config)
    wait_until(_caught_up(source, dest, state, seen), timeout=120, what="the restarted run to finish")
    assert _stop(proc) == 0

    assert set(dest.instance_ids()) == ids
    assert seen and min(seen) >= killed_checkpoint and seen == sorted(seen)
    received = [c["ID"] for c in changes_of(dest, "NewInstance", since=dest_start)]
    assert len(received) == total, f"{len(received) - len(set(received))} instance(s) were sent twice"
    assert set(received) == ids


def test_sigterm_while_destination_is_down_exits_0_within_10_s(
    servers: tuple[OrthancServer, OrthancServer], tmp_path: Path, daemon: StartDaemon
) -> None:
    source, dest = servers
    config = write_config(tmp_path, source, dest)  # default retries: in-flight work is retrying
    dest.stop()
    try:
        load_ct(source, 12, seed="sigterm-down")
        proc = daemon(config)
        wait_until(lambda: "retry 1/4" in proc.log(), timeout=30, what="transfers to be retrying")
        assert _stop(proc) == 0
        assert checkpoint_of(tmp_path / "state.db", "copy") == 0
    finally:
        dest.start()


class _BadDestination:
    """A destination on a real loopback socket that never lets a transfer finish.

    ``mode="503"`` answers every request ``503`` with ``Retry-After: 3600`` (and
    ``mode="429"`` the same with 429); ``mode="hang"`` accepts connections, reads
    the request, and never answers.  ``requests`` counts the requests seen.
    """

    def __init__(self, mode: str) -> None:
        import socket
        import threading

        self.mode = mode
        self.requests = 0
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        import socket
        import threading

        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (socket.timeout, OSError):
                continue
            self._held.append(conn)
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _connection(self, conn: Any) -> None:
        conn.settimeout(0.5)
        buffer = b""
        while not self._stop.is_set():
            try:
                chunk = conn.recv(65536)
            except OSError:
                continue
            if not chunk:
                return
            buffer += chunk
            while b"\r\n\r\n" in buffer:
                head, _, rest = buffer.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                if len(rest) < length:
                    break
                buffer = rest[length:]
                self.requests += 1
                if self.mode == "hang":
                    continue
                status = b"503 Service Unavailable" if self.mode == "503" else b"429 Too Many Requests"
                conn.sendall(b"HTTP/1.1 " + status + b"\r\nRetry-After: 3600\r\nContent-Length: 4\r\n"
                             b"Content-Type: text/plain\r\n\r\nbusy")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for conn in self._held:
            conn.close()
        self._sock.close()


def _config_with_destination_url(tmp_path: Path, source: OrthancServer, url: str) -> Path:
    import yaml

    config = write_config(tmp_path, source, source)
    data = yaml.safe_load(config.read_text())
    data["endpoints"]["dst"]["url"] = url  # the real source, a hostile destination (same credentials)
    config.write_text(yaml.safe_dump(data))
    return config


@pytest.mark.parametrize("mode", ["503", "429", "hang"])
def test_sigterm_ends_the_daemon_within_10_s_while_the_destination_says_retry_after_3600_or_hangs(
    servers: tuple[OrthancServer, OrthancServer], tmp_path: Path, daemon: StartDaemon, mode: str,
) -> None:
    """Issue 10: a ``Retry-After: 3600`` (503 or 429) or a server that never answers cannot hold SIGTERM."""
    source, _ = servers
    bad = _BadDestination(mode)
    try:
        load_ct(source, 6, seed=f"sigterm-{mode}")
        proc = daemon(_config_with_destination_url(tmp_path, source, bad.url))
        if mode == "hang":
            wait_until(lambda: bad.requests >= 1, timeout=30, what="a request to reach the hanging destination")
        else:
            wait_until(lambda: "retry 1/4" in proc.log(), timeout=30, what="transfers to be backing off")
        assert proc.running(), proc.log()
        assert _stop(proc) == 0
        assert checkpoint_of(tmp_path / "state.db", "copy") == 0
        assert "Traceback" not in proc.log()
    finally:
        bad.close()

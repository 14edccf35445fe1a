"""Issue 7, item 8: the ledger on a full file system.

The ledger lives on a 2 MB tmpfs mounted for the test (CI and the bench run
as root; without the right to mount, the test fails and says so).  The file
system is filled while the daemon runs and new instances arrive.

Chosen behaviour: a ledger that cannot be written is a fatal error
(:class:`~copydicom.errors.LedgerError`): the daemon logs one readable
line naming the ledger and the cause and exits with status 1 (systemd's
``Restart=on-failure`` brings it back).  It must not keep replicating
without recording, and it must not leave a corrupt database: once space
returns, ``PRAGMA integrity_check`` is ``ok``, the checkpoint is where it
was or later, and a restart completes the job without re-sending anything.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.orthanc import OrthancServer
from tests.faults.conftest import figure, route_config
from tests.integration.conftest import (
    DaemonProcess,
    changes_of,
    checkpoint_of,
    last_seq,
    load_ct,
    wait_until,
)

pytestmark = [pytest.mark.faults, pytest.mark.integration]


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs, unmounted at teardown."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mount_point)],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.fail(f"the disk-full test needs to mount a tmpfs (run as root): {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(directory: Path) -> Path:
    """Write a file until the file system is full; return it."""
    filler = directory / "filler"
    chunk = b"\0" * 16384
    with open(filler, "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
        try:
            while True:
                handle.write(b"\0" * 512)
        except OSError:
            pass
    return filler


def integrity(state: Path) -> str:
    db = sqlite3.connect(state)
    try:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        db.close()


def test_ledger_on_a_full_file_system(
    servers: tuple[OrthancServer, OrthancServer], tmp_path: Path, small_fs: Path,
    daemon: Callable[[Path], DaemonProcess],
) -> None:
    source, dest = servers
    dest_start = last_seq(dest)
    state = small_fs / "state.db"
    config = route_config(tmp_path, source, dest, state=state, workers=2)
    first = load_ct(source, 20, seed="before-full", rows=32)
    proc = daemon(config)
    wait_until(lambda: checkpoint_of(state, "copy") == last_seq(source), timeout=60, what="the first instances")
    held = checkpoint_of(state, "copy")
    assert held is not None

    filler = fill(small_fs)
    second = load_ct(source, 200, seed="while-full", rows=32, series=2)
    wait_until(lambda: not proc.running(), timeout=90, what="the daemon to stop on the full ledger", interval=0.2)
    status = proc.wait(5)
    log = proc.log()
    assert status == 1, log
    assert "LedgerError: ledger" in log and "database or disk is full" in log, log
    assert "Traceback" not in log, log
    stopped_at = checkpoint_of(state, "copy")
    assert stopped_at is not None and held <= stopped_at < last_seq(source)

    # Space returns: the database is intact and a restart completes the job.
    filler.unlink()
    assert integrity(state) == "ok"
    started = time.monotonic()
    proc = daemon(config)
    wait_until(lambda: checkpoint_of(state, "copy") == last_seq(source), timeout=120, what="the restarted run")
    recovery = time.monotonic() - started
    proc.kill()
    assert integrity(state) == "ok"
    assert set(dest.instance_ids()) == first | second
    received = [c["ID"] for c in changes_of(dest, "NewInstance", since=dest_start)]
    resent = len(received) - len(set(received))
    figure("disk-full", fs="tmpfs 2m", before_full=len(first), while_full=len(second),
           exit_status=status, resends=resent, recovery_seconds=f"{recovery:.1f}")
    assert resent == 0
    assert os.path.getsize(state) > 0

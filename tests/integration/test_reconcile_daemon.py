"""The daemon's reconcile: feed reset repaired while it runs, and the start-up pass (issue 12 item 2).

Feed reset: the source Orthanc is stopped, its storage wiped, restarted, and new instances are
uploaded: their sequence numbers are below the saved checkpoint. Before this work none of them
ever reached the destination; now the daemon notices (``Last`` below the checkpoint), reconciles
the route and re-bases the checkpoint, without a restart.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
import requests
import yaml

from tests.integration.conftest import (
    REPO_ROOT,
    DaemonProcess,
    checkpoint_of,
    instance_count,
    last_seq,
    load_ct,
    wait_until,
)
from tests.support.orthanc import OrthancServer
from tests.support.synthetic import ct_dataset, ct_study_files, to_bytes, upload_all

pytestmark = pytest.mark.integration


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[OrthancServer, OrthancServer]]:
    with OrthancServer(name="RSRC", workdir=tmp_path / "src") as source, \
            OrthancServer(name="RDST", workdir=tmp_path / "dst") as dest:
        yield source, dest


def _config(tmp_path: Path, source: OrthancServer, dest: OrthancServer, **route: object) -> Path:
    data = {
        "state": str(tmp_path / "state.db"),
        "quarantine_dir": str(tmp_path / "quarantine"),
        "endpoints": {
            "src": {"type": "orthanc", "url": source.url, "user": source.user, "password": source.password,
                    "retries": 1},
            "dst": {"type": "orthanc", "url": dest.url, "user": dest.user, "password": dest.password},
        },
        "routes": [{"name": "copy", "source": "src", "destinations": ["dst"],
                    "trigger": {"changes": {"poll_seconds": 0.5}}, **route}],
    }
    path = tmp_path / "copydicom.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _daemon(tmp_path: Path, config: Path) -> DaemonProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return DaemonProcess(config, env, tmp_path / "daemon.log").start()


def test_feed_reset_while_the_daemon_runs_is_repaired_without_a_restart(
    pair: tuple[OrthancServer, OrthancServer], tmp_path: Path
) -> None:
    source, dest = pair
    load_ct(source, 20, rows=8)
    state = tmp_path / "state.db"
    daemon = _daemon(tmp_path, _config(tmp_path, source, dest))
    try:
        wait_until(lambda: instance_count(dest) == 20 and checkpoint_of(state, "copy") == last_seq(source),
                   timeout=60, what="the first 20 instances")
        before = checkpoint_of(state, "copy")
        assert before is not None and before >= 20
        # the source's database is rebuilt: stop, wipe the storage, restart on the same port
        source.stop()
        assert source.workdir is not None
        shutil.rmtree(source.workdir / "storage")
        source.start()
        new = [to_bytes(ct_dataset(7, 0, 0, i, rows=8, cols=8, seed="after-reset")) for i in range(3)]
        upload_all(source.upload, new)
        assert last_seq(source) < before  # the new instances sit below the checkpoint
        wait_until(lambda: instance_count(dest) == 23, timeout=90, what="the 3 instances uploaded after the reset")
        wait_until(lambda: checkpoint_of(state, "copy") == last_seq(source), timeout=30,
                   what="the checkpoint re-based to the source's Last")
        assert daemon.running()
        assert "change feed reset" in daemon.log()
        db = sqlite3.connect(f"file:{state}?mode=ro", uri=True)
        runs = db.execute("SELECT missing, repaired FROM reconcile_runs WHERE route='copy'").fetchall()
        db.close()
        assert runs and runs[0][0] == runs[0][1]
        # the feed goes on normally after the repair
        source.upload(to_bytes(ct_dataset(7, 0, 0, 50, rows=8, cols=8, seed="after-reset")))
        wait_until(lambda: instance_count(dest) == 24, timeout=30, what="an instance after the repair")
    finally:
        daemon.signal(signal.SIGTERM)
        daemon.wait(20)


def test_on_start_reconciles_recent_studies_deleted_at_the_destination_while_down(
    pair: tuple[OrthancServer, OrthancServer], tmp_path: Path
) -> None:
    source, dest = pair
    today = datetime.now(timezone.utc).strftime("%Y%m%d")
    files = []
    for i in range(4):
        ds = ct_dataset(9, 0, 0, i, rows=8, cols=8, seed="recent")
        ds.StudyDate = today
        files.append(to_bytes(ds))
    upload_all(source.upload, files)
    upload_all(source.upload, ct_study_files(3, rows=8, cols=8, seed="old"))  # StudyDate in 2025
    state = tmp_path / "state.db"
    config = _config(tmp_path, source, dest, reconcile={"on_start": "24h"})
    daemon = _daemon(tmp_path, config)
    try:
        wait_until(lambda: instance_count(dest) == 7 and checkpoint_of(state, "copy") == last_seq(source),
                   timeout=60, what="the first 7 instances")
    finally:
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(20) == 0
    # while copydicom is down, one recent and one old instance disappear from the destination
    recent = [i for i in dest.instance_ids()
              if dest.get(f"/instances/{i}/simplified-tags").get("StudyDate") == today]
    old = [i for i in dest.instance_ids() if i not in recent]
    for victim in (recent[0], old[0]):
        requests.delete(f"{dest.url}/instances/{victim}", auth=dest.auth, timeout=30).raise_for_status()
    daemon = _daemon(tmp_path, config)
    try:
        wait_until(lambda: recent[0] in set(dest.instance_ids()), timeout=60, what="the recent instance restored")
        wait_until(lambda: "reconcile (on start)" in daemon.log(), timeout=30, what="the log line")
        assert old[0] not in set(dest.instance_ids())  # on_start covers studies dated in the window only
        assert instance_count(dest) == 6
    finally:
        daemon.signal(signal.SIGTERM)
        daemon.wait(20)

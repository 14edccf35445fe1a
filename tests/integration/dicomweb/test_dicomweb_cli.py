"""The DICOMweb endpoint through the command line and the daemon (real Orthanc + DICOMweb plugin)."""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import sqlite3
from pathlib import Path

import pytest
import yaml

from copydicom.cli import main
from tests.integration.conftest import REPO_ROOT, DaemonProcess, wait_until
from tests.support.orthanc import OrthancServer
from tests.support.synthetic import ct_dataset, make_uid, to_bytes

pytestmark = pytest.mark.integration

SUMMARY = re.compile(
    r"^replicated=(\d+) skipped_existing=(\d+) quarantined=(\d+) failed=(\d+)(?: filtered=(\d+))? seconds=[\d.]+$"
)


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, ...]:
    status = main(list(argv))
    last = capsys.readouterr().out.rstrip().splitlines()[-1]
    match = SUMMARY.match(last)
    assert match is not None, last
    return (status, *(int(g) if g is not None else -1 for g in match.groups()))


def load_mixed(server: OrthancServer, *, study: int = 0, date: str | None = None) -> None:
    """One study: a CT series of 5 and an SR-like MR series of 3 (synthetic)."""
    for i in range(5):
        ds = ct_dataset(3, study, 0, i, rows=8, cols=8, seed="cli")
        if date:
            ds.StudyDate = date
        server.upload(to_bytes(ds))
    for i in range(3):
        ds = ct_dataset(3, study, 1, i, rows=8, cols=8, seed="cli")
        ds.Modality = "MR"
        if date:
            ds.StudyDate = date
        server.upload(to_bytes(ds))


def test_replicate_dicomweb_to_dicomweb_with_a_filter_then_nothing(
    dw: tuple[OrthancServer, OrthancServer], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, dst = dw
    load_mixed(src)
    args = ["replicate", "--src", src.dicomweb_url, "--dest", dst.dicomweb_url, "--filter", "Modality=CT,SR"]
    assert cli(capsys, *args, "--state", str(tmp_path / "s.db")) == (0, 5, 0, 0, 0, 3)
    assert dst.statistics()["CountInstances"] == 5
    assert cli(capsys, *args, "--state", str(tmp_path / "fresh.db")) == (0, 0, 5, 0, 0, 3)
    # Without a filter the line keeps today's keys; the same server over REST already holds the CT series.
    assert cli(capsys, "replicate", "--src", src.dicomweb_url, "--dest", dst.url_with_credentials,
               "--state", str(tmp_path / "s.db")) == (0, 3, 5, 0, 0, -1)


def test_replicate_one_study_by_uid(dw: tuple[OrthancServer, OrthancServer], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    src, dst = dw
    load_mixed(src, study=0)
    load_mixed(src, study=1)
    study_uid = make_uid("cli", 3, 1)
    assert cli(capsys, "replicate", "--src", src.dicomweb_url, "--dest", dst.url_with_credentials,
               "--study", study_uid, "--state", str(tmp_path / "s.db")) == (0, 8, 0, 0, 0, -1)
    assert dst.get("/studies") and len(dst.get("/studies")) == 1


def test_replicate_tags_from_dicomweb_fills_the_sqlite_index(dw: tuple[OrthancServer, OrthancServer],
                                                             tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    src, _ = dw
    load_mixed(src)
    index = tmp_path / "index.db"
    assert cli(capsys, "replicate-tags", "--src", src.dicomweb_url, "--index", f"sqlite:///{index}",
               "--state", str(tmp_path / "s.db"), "--filter", "Modality=MR") == (0, 3, 0, 0, 0, 5)
    db = sqlite3.connect(index)
    try:
        assert db.execute("SELECT count(*) FROM instances").fetchone() == (3,)
    finally:
        db.close()


def test_daemon_qido_trigger_picks_up_a_study_uploaded_after_start(
    dw: tuple[OrthancServer, OrthancServer], tmp_path: Path
) -> None:
    src, dst = dw
    config = {
        "state": str(tmp_path / "state.db"),
        "endpoints": {
            "pacs": {"type": "dicomweb", "url": src.url + "/dicom-web", "user": src.user,
                     "password": "${CD_TEST_DW_PW}"},
            "research": {"type": "dicomweb", "url": dst.url + "/dicom-web", "user": dst.user,
                         "password": "${CD_TEST_DW_PW}"},
        },
        "routes": [{
            "name": "poll",
            "source": "pacs",
            "destinations": ["research"],
            "trigger": {"qido": {"poll_seconds": 0.5, "window": "2h"}},
            "filter": {"all": [{"Modality": "CT"}]},
            "window": "00:00-24:00",
            "max_rate": "500/s",
        }],
    }
    path = tmp_path / "copydicom.yaml"
    path.write_text(yaml.safe_dump(config))
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), CD_TEST_DW_PW=src.password)
    daemon = DaemonProcess(path, env, tmp_path / "daemon.log").start()
    try:
        wait_until(lambda: "daemon started" in daemon.log(), timeout=30, what="the daemon to start")
        load_mixed(src, study=5, date=dt.date.today().strftime("%Y%m%d"))
        wait_until(lambda: dst.statistics()["CountInstances"] == 5, timeout=60, what="the polled study")
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(30) == 0
    finally:
        daemon.kill()
    assert dst.statistics()["CountInstances"] == 5  # the MR series was filtered out


def test_config_errors_name_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = {
        "state": str(tmp_path / "state.db"),
        "endpoints": {"pacs": {"type": "dicomweb", "url": "http://127.0.0.1:9/dicom-web"},
                      "dst": {"type": "dicomweb", "url": "http://127.0.0.1:9/dw2"}},
    }
    for route, key in (
        ({"filter": {"Modalty": "CT"}}, "routes[0].filter.Modalty"),
        ({"window": "7pm-7am"}, "routes[0].window"),
        ({"max_rate": "fast"}, "routes[0].max_rate"),
        ({"trigger": {"qido": {"window": "2 hours"}}}, "routes[0].trigger.qido.window"),
    ):
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump({**base, "routes": [{"name": "r", "source": "pacs", "destinations": ["dst"],
                                                            **route}]}))
        assert main(["check-config", str(path)]) == 2
        err = capsys.readouterr().err
        assert key in err, err

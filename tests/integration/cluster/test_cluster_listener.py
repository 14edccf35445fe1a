"""A DIMSE listener route in cluster mode (issue 14 item 5), with real dcmtk storescu, Orthanc, PostgreSQL and
RabbitMQ: ``cluster.staging`` makes the listener host (``copydicom listen``) store what it receives into a staging
Orthanc, and the planner + workers deliver from there. Every pushed instance reaches the destination once, the
staged copies and the spool end empty, and a sender that pushes the same instances again (its retry) causes no
second delivery.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml
from pydicom import dcmread

from copydicom.model import orthanc_id
from tests.integration.conftest import changes_of, last_seq, wait_until
from tests.support.cluster import ClusterBench, Proc
from tests.support.dcmtk import storescu, wait_listening
from tests.support.orthanc import OrthancServer, free_port
from tests.support.postgres import PostgresServer
from tests.support.rabbitmq import RabbitServer
from tests.support.synthetic import ct_study_files

pytestmark = pytest.mark.integration


def _files(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, data in enumerate(ct_study_files(n, series_per_study=3, rows=16, cols=16, seed="staged")):
        path = folder / f"{i:05d}.dcm"
        path.write_bytes(data)
        paths.append(path)
    return paths


def _ids(files: list[Path]) -> set[str]:
    out = set()
    for f in files:
        ds = dcmread(f, stop_before_pixels=True)
        out.add(orthanc_id(ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID))
    return out


def test_a_staged_listener_route_is_delivered_by_the_workers_once(
    servers: tuple[OrthancServer, OrthancServer], postgres: PostgresServer, rabbit: RabbitServer, tmp_path: Path,
) -> None:
    staging, dest = servers  # the first Orthanc is the staging store here
    bench = ClusterBench(tmp_path, postgres, rabbit, staging, dest, batch_size=5)
    port = free_port()
    data = yaml.safe_load(bench.config.read_text())
    data["endpoints"]["rx"] = {"type": "dimse_listener", "port": port, "allowed_calling": ["STORESCU"],
                               "spool": str(tmp_path / "spool")}
    data["cluster"]["staging"] = {"rx": "src"}
    data["routes"] = [{"name": bench.route, "source": "rx", "destinations": ["dst"]}]
    bench.config.write_text(yaml.safe_dump(data))
    files = _files(tmp_path / "in", 30)
    expected = _ids(files)
    dest_start = last_seq(dest)
    listen = Proc([sys.executable, "-m", "copydicom.cli", "listen", "--config", str(bench.config)], bench.env,
                  tmp_path / "listen.log").start()
    bench.procs.append(listen)
    try:
        assert listen.proc is not None
        wait_listening(port, listen.proc, timeout=30)
        bench.start("planner")
        bench.start("worker")
        bench.start("worker")
        pushed = storescu(port, files)
        assert pushed.returncode == 0, pushed.stderr
        wait_until(lambda: set(dest.instance_ids()) == expected, timeout=120, interval=0.3,
                   what="every pushed instance at the destination\n" + bench.logs())
        wait_until(lambda: staging.instance_ids() == [], timeout=60, interval=0.3,
                   what="the staged copies deleted\n" + bench.logs())
        assert not list((tmp_path / "spool").glob("*.dcm"))
        # The sender pushes the same instances again (its retry after a lost response): no second delivery.
        staged_mark = last_seq(staging)
        again = storescu(port, files[:10])
        assert again.returncode == 0, again.stderr
        wait_until(lambda: not list((tmp_path / "spool").glob("*.dcm")), timeout=60, interval=0.3,
                   what="the resent instances drained at the listener host\n" + bench.logs())
        assert changes_of(staging, "NewInstance", since=staged_mark) == []  # the ledger knew them: not staged
        assert staging.instance_ids() == []
        assert len(changes_of(dest, "NewInstance", since=dest_start)) == len(expected)
        assert bench.sql("SELECT count(*) FROM quarantine") == [(0,)]
        assert "route copy.staging: replicated=" in listen.log(), listen.log()[-2000:]
    finally:
        bench.stop_all()

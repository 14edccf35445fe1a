"""The CopyDICOM seed's three command lines, unchanged but for hosts and ports, against real Orthanc servers and
the protocol-faithful Splunk fake (Splunk itself cannot be installed here)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import REPO_ROOT
from tests.support.fake_splunk import FakeSplunk
from tests.support.orthanc import OrthancServer
from tests.support.synthetic import ct_dataset, to_bytes

pytestmark = pytest.mark.integration


@pytest.fixture
def splunk() -> Iterator[FakeSplunk]:
    server = FakeSplunk(token="seed-token", indexes=("main", "dicom"))
    server.start()
    yield server
    server.stop()


def _copydicom(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), XDG_STATE_HOME=str(tmp_path / "state"))
    return subprocess.run([sys.executable, "-m", "copydicom.cli", *argv], env=env, cwd=str(REPO_ROOT),
                          capture_output=True, text=True, timeout=300)


def test_the_seeds_three_commands(servers: tuple[OrthancServer, OrthancServer], splunk: FakeSplunk,
                                  tmp_path: Path) -> None:
    source, dest = servers
    dose_ids = set()
    for series, description in ((0, "Head 5mm"), (1, "Dose Record")):
        for k in range(3):
            ds = ct_dataset(5, 0, series, k, rows=16, cols=16, seed="seed-compat")
            ds.SeriesDescription = description
            stored = source.upload(to_bytes(ds))
            if description == "Dose Record":
                dose_ids.add(stored["ID"])
    src = source.url_with_credentials
    mgmt = f"http://admin:changeme@127.0.0.1:{splunk.mgmt.port}"
    hec = f"http://Splunk:seed-token@127.0.0.1:{splunk.hec.port}"

    tags = _copydicom(tmp_path, "replicate_tags", "--src", src, "--index", mgmt, "--hec", hec)
    assert tags.returncode == 0, tags.stderr
    assert tags.stdout.splitlines()[-1].startswith("replicated=6 ")
    assert {e["index"] for e in splunk.events} == {"dicom"}

    query = ('search index=dicom | spath SeriesDescription | search SeriesDescription="Dose Record" '
             "| spath ID | table ID")
    cond = _copydicom(tmp_path, "conditional_replicate", "--src", src, "--index", mgmt, "--query", query,
                      "--dest", dest.url_with_credentials)
    assert cond.returncode == 0, cond.stderr
    assert set(dest.instance_ids()) == dose_ids  # exactly the dose record series

    rep = _copydicom(tmp_path, "replicate", "--src", src, "--dest", dest.url_with_credentials)
    assert rep.returncode == 0, rep.stderr
    assert rep.stdout.splitlines()[-1].startswith("replicated=3 skipped_existing=3 ")
    assert set(dest.instance_ids()) == set(source.instance_ids())

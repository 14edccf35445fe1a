"""A route with a de-identification profile, end to end through two real Orthanc servers.

Issue 3, "In the pipeline": dedupe keys are computed on the de-identified
identity so a second run sends nothing (with the same ledger and with a fresh
one); all instances of a study land in one de-identified study; nothing of the
original identity reaches the destination.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from copydicom.cli import main
from copydicom.ledger import Ledger
from tests.support.orthanc import OrthancServer
from tests.integration.conftest import load_ct

pytestmark = pytest.mark.integration

SUMMARY = re.compile(r"^replicated=(\d+) skipped_existing=(\d+) quarantined=(\d+) failed=(\d+) seconds=")


def _run(capsys: pytest.CaptureFixture[str], source: OrthancServer, dest: OrthancServer, state: Path,
         key: Path) -> tuple[int, ...]:
    status = main([
        "replicate", "--src", source.url_with_credentials, "--dest", dest.url_with_credentials,
        "--state", str(state), "--profile", "default", "--key-file", str(key),
    ])
    last = capsys.readouterr().out.rstrip().splitlines()[-1]
    match = SUMMARY.match(last)
    assert match is not None, last
    return (status, *(int(g) for g in match.groups()))


@pytest.fixture
def key(tmp_path: Path) -> Path:
    path = tmp_path / "deid.key"
    path.write_bytes(os.urandom(32).hex().encode())
    path.chmod(0o600)
    return path


def test_deidentified_route_groups_studies_and_dedupes_on_the_sent_identity(
    servers: tuple[OrthancServer, OrthancServer], tmp_path: Path, key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, dest = servers
    load_ct(source, 40, series=4)
    state = tmp_path / "state.db"

    assert _run(capsys, source, dest, state, key) == (0, 40, 0, 0, 0)
    # Same ledger: nothing sent.
    assert _run(capsys, source, dest, state, key) == (0, 0, 40, 0, 0)
    # Fresh ledger: the destination is asked by the predicted de-identified IDs; nothing sent.
    assert _run(capsys, source, dest, tmp_path / "fresh.db", key) == (0, 0, 40, 0, 0)

    src_stats, dst_stats = source.statistics(), dest.statistics()
    for level in ("CountInstances", "CountSeries", "CountStudies", "CountPatients"):
        assert dst_stats[level] == src_stats[level], level

    src_study = source.get(f"/studies/{source.get('/studies')[0]}")
    dst_study = dest.get(f"/studies/{dest.get('/studies')[0]}")
    assert dst_study["MainDicomTags"]["StudyInstanceUID"] != src_study["MainDicomTags"]["StudyInstanceUID"]
    assert dst_study["MainDicomTags"]["StudyInstanceUID"].startswith("2.25.")
    assert dst_study["PatientMainDicomTags"]["PatientID"] != src_study["PatientMainDicomTags"]["PatientID"]
    assert dst_study["PatientMainDicomTags"]["PatientName"] != src_study["PatientMainDicomTags"]["PatientName"]

    instance = dest.get(f"/instances/{dest.instance_ids()[0]}/tags?simplify")
    assert instance["PatientIdentityRemoved"] == "YES"
    text = str(instance)
    # PatientID SYN000000, PatientName DOE^SYNTHETIC0000, InstitutionName, referring physician, accession.
    for planted in ("SYN000", "DOE^", "EXAMPLE HOSPITAL", "REFERRER", "ACC0000"):
        assert planted not in text, planted

    # The audit trail names tags and actions, never values.
    ledger = Ledger(state)
    try:
        route = next(iter(ledger.counts()))
        target = dest.instance_ids()[0]
        audit = ledger.audit_of(route, target)["deid"]
        assert ["(0010,0010)", "Z"] in audit or any(entry[0] == "(0010,0010)" for entry in audit)
        assert "SYN000" not in str(audit) and "DOE^" not in str(audit)
    finally:
        ledger.close()

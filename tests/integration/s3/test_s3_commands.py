"""``replicate`` to S3, ``restore`` from S3 and ``import`` of a folder, end to end on real servers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from copydicom.cli import main
from copydicom.model import Identity
from tests.support.orthanc import OrthancServer
from tests.support.seaweedfs import SeaweedFSServer
from tests.support.synthetic import ct_dataset, ct_study_files, to_bytes, upload_all

pytestmark = pytest.mark.integration


@pytest.fixture
def orthanc() -> Iterator[OrthancServer]:
    with OrthancServer("DEST") as server:
        yield server


def test_replicate_to_s3_then_restore_into_orthanc(
    seaweedfs: SeaweedFSServer, bucket: str, orthanc: OrthancServer, aws_env: None, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    files = list(ct_study_files(12, patients=2, series_per_study=2, rows=32, cols=32))
    with OrthancServer("SRC") as source:
        upload_all(source.upload, files)
        url = seaweedfs.url(bucket, "arch/")
        state = str(tmp_path / "state.db")
        assert main(["replicate", "--src", source.url_with_credentials, "--dest", url, "--state", state]) == 0
        assert capsys.readouterr().out.strip().startswith("replicated=12 skipped_existing=0 quarantined=0 failed=0")
    keys = seaweedfs.keys(bucket)
    assert len(keys) == 12 and all(k.startswith("arch/") and k.endswith(".dcm") for k in keys)

    assert main(["restore", url, "--dest", orthanc.url_with_credentials, "--state", state]) == 0
    assert capsys.readouterr().out.strip().startswith("replicated=12 skipped_existing=0 quarantined=0 failed=0")
    assert len(orthanc.instance_ids()) == 12

    # a second run with a fresh ledger: Orthanc says AlreadyStored for every instance
    state2 = str(tmp_path / "state2.db")
    assert main(["restore", url, "--dest", orthanc.url_with_credentials, "--state", state2]) == 0
    assert capsys.readouterr().out.strip().startswith("replicated=0 skipped_existing=12 quarantined=0 failed=0")


def test_restore_one_study(
    seaweedfs: SeaweedFSServer, bucket: str, orthanc: OrthancServer, aws_env: None, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client = seaweedfs.client()
    wanted = None
    for patient in range(2):
        for i in range(3):
            ds = ct_dataset(patient, 0, 0, i, rows=8, cols=8)
            wanted = wanted or (ds.StudyInstanceUID if patient == 1 else None)
            key = f"{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm"
            client.put_object(Bucket=bucket, Key=key, Body=to_bytes(ds))
    assert wanted is not None
    args = ["restore", seaweedfs.url(bucket), "--study", wanted, "--dest", orthanc.url_with_credentials]
    assert main([*args, "--state", str(tmp_path / "s.db")]) == 0
    assert capsys.readouterr().out.startswith("replicated=3 ")
    expected = {Identity.from_dataset(ct_dataset(1, 0, 0, i, rows=8, cols=8)).orthanc_id for i in range(3)}
    assert set(orthanc.instance_ids()) == expected


def test_restore_with_a_wrong_secret_exits_2(
    seaweedfs: SeaweedFSServer, bucket: str, orthanc: OrthancServer, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweedfs.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    status = main(["restore", seaweedfs.url(bucket), "--dest", orthanc.url_with_credentials,
                   "--state", str(tmp_path / "s.db")])
    assert status == 2
    assert "check the credentials" in capsys.readouterr().err


def test_import_a_folder_to_s3_and_orthanc(
    seaweedfs: SeaweedFSServer, bucket: str, orthanc: OrthancServer, aws_env: None, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    for i in range(4):
        name = f"sub/IM{i}" if i % 2 else f"{i}.dcm"
        (folder / name).write_bytes(to_bytes(ct_dataset(3, 0, 0, i, rows=8, cols=8)))
    (folder / "README.txt").write_text("hello")
    (folder / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM")
    args = ["import", str(folder), "--dest", seaweedfs.url(bucket, "imp/"), "--dest", orthanc.url_with_credentials]
    assert main([*args, "--state", str(tmp_path / "s.db")]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("replicated=4 skipped_existing=0 quarantined=0 failed=0")
    assert "skipped 2 non-DICOM file(s)" in captured.err
    assert len(seaweedfs.keys(bucket)) == 4
    assert len(orthanc.instance_ids()) == 4


def test_restore_quarantines_a_deeply_nested_object_and_orthanc_survives(
    seaweedfs: SeaweedFSServer, bucket: str, orthanc: OrthancServer, aws_env: None, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A 100-deep object from a non-Orthanc archive was forwarded to Orthanc, which crashes on it (leftovers 1)."""
    from tests.unit.test_leftovers import deep_instance

    client = seaweedfs.client()
    client.put_object(Bucket=bucket, Key="deep/1/2/3.dcm", Body=deep_instance())
    ds = ct_dataset(4, 0, 0, 1, rows=8, cols=8)
    client.put_object(Bucket=bucket, Key="deep/1/2/4.dcm", Body=to_bytes(ds))
    state = tmp_path / "s.db"
    status = main(["restore", seaweedfs.url(bucket, "deep/"), "--dest", orthanc.url_with_credentials,
                   "--state", str(state)])
    assert status == 1
    assert capsys.readouterr().out.strip().startswith("replicated=1 skipped_existing=0 quarantined=1 failed=0")
    assert orthanc.process is not None and orthanc.process.poll() is None  # still running
    assert set(orthanc.instance_ids()) == {Identity.from_dataset(ds).orthanc_id}
    kept = list((tmp_path / "quarantine").rglob("*.dcm"))
    assert [p.read_bytes() for p in kept] == [deep_instance()]

"""The folder source: DICOM recognised by the preamble, everything else skipped and listed."""

from __future__ import annotations

from pathlib import Path

import pytest

from copydicom.errors import ConfigError, InvalidInstance
from copydicom.model import InstanceRef
from copydicom.sources.folder import FolderSource, is_dicom_file
from tests.support.synthetic import ct_dataset, to_bytes


def _tree(root: Path) -> dict[str, bytes]:
    files = {
        "a/one.dcm": to_bytes(ct_dataset(0, 0, 0, 0, rows=4, cols=4)),
        "a/two": to_bytes(ct_dataset(0, 0, 0, 1, rows=4, cols=4)),
        "b/c/IM000001": to_bytes(ct_dataset(0, 0, 1, 2, rows=4, cols=4)),
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    (root / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 20)
    (root / "a" / "notes.txt").write_text("not an image")
    (root / "a" / "short.dcm").write_bytes(b"DICM")
    (root / "b" / "empty").write_bytes(b"")
    (root / "b" / "dangling").symlink_to(root / "missing")
    return files


def test_lists_dicom_files_and_skips_the_rest(tmp_path: Path) -> None:
    files = _tree(tmp_path)
    source = FolderSource(tmp_path, batch_size=10)
    batches = list(source.batches())
    assert [[Path(r.source_id).relative_to(tmp_path).as_posix() for r in b] for b in batches] == [
        ["a/one.dcm", "a/two"],
        ["b/c/IM000001"],
    ]
    assert sorted(Path(p).relative_to(tmp_path).as_posix() for p in source.skipped) == [
        "DICOMDIR", "a/notes.txt", "a/short.dcm", "b/dangling", "b/empty",
    ]
    ref = batches[0][1]
    assert source.fetch(ref) == files["a/two"]


def test_batches_respect_the_size(tmp_path: Path) -> None:
    _tree(tmp_path)
    assert [len(b) for b in FolderSource(tmp_path, batch_size=1).batches()] == [1, 1, 1]
    assert len(list(FolderSource(tmp_path).refs())) == 3


def test_vanished_file_is_invalid(tmp_path: Path) -> None:
    source = FolderSource(tmp_path)
    with pytest.raises(InvalidInstance, match="cannot read"):
        source.fetch(InstanceRef(str(tmp_path / "gone.dcm")))


def test_not_a_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a directory"):
        FolderSource(tmp_path / "nope")


def test_is_dicom_file(tmp_path: Path) -> None:
    path = tmp_path / "x"
    path.write_bytes(b"\0" * 128 + b"DICM")
    assert is_dicom_file(path) is True
    path.write_bytes(b"\0" * 127 + b"DICM")
    assert is_dicom_file(path) is False
    assert is_dicom_file(tmp_path) is False


def test_refs_carry_the_identity_from_the_header(tmp_path: Path) -> None:
    """Dedupe keys are Orthanc IDs of the identity, never the path (paths are PHI)."""
    from copydicom.model import Identity
    from tests.support.synthetic import ct_dataset, to_bytes

    ds = ct_dataset(5, 0, 0, 0, rows=8, cols=8)
    (tmp_path / "SMITH^JANE.dcm").write_bytes(to_bytes(ds))
    (tmp_path / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 7)
    refs = {Path(r.source_id).name: r for r in FolderSource(tmp_path).refs()}
    good = refs["SMITH^JANE.dcm"]
    assert good.identity == Identity.from_dataset(ds)
    assert good.series_id == Identity.from_dataset(ds).series_orthanc_id
    assert refs["broken.dcm"].identity is None  # judged (and quarantined) by the pipeline


def test_file_paths_never_reach_log_lines(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Regression (issue 11 item 6): a quarantined file's path (a patient's name) was logged."""
    import logging

    from copydicom.ledger import Ledger
    from copydicom.pipeline import Pipeline
    from tests.unit.fakes import FakeDestination

    folder = tmp_path / "DOE^JANE"
    folder.mkdir()
    (folder / "DOE^JANE_MRN0042.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x01" * 20)
    (folder / "notes.txt").write_text("x")
    source = FolderSource(folder)
    dest = FakeDestination("d", fail=lambda _i: InvalidInstance("not readable as DICOM"))
    ledger = Ledger(tmp_path / "state.db")
    caplog.set_level(logging.DEBUG)
    pipeline = Pipeline("import:x", source, [], [dest], ledger, quarantine_dir=tmp_path / "q")  # type: ignore[list-item]
    try:
        summary = pipeline.run(source.batches())
    finally:
        pipeline.close()
        ledger.close()
    assert summary.counts["quarantined"] == 1
    assert "quarantined" in caplog.text and "file:" in caplog.text
    assert "DOE" not in caplog.text and "MRN0042" not in caplog.text

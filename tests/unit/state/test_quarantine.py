"""Quarantine: kept until delivered, digest file names, one-line reasons, purge removes every file."""

from __future__ import annotations

from pathlib import Path

import pytest

from copydicom.cli import main
from copydicom.errors import DestinationUnavailable, InvalidInstance, RejectedByDestination
from copydicom.ledger import Ledger
from copydicom.model import InstanceRef
from copydicom.pipeline import Pipeline
from copydicom.state import quarantine_file_name
from tests.unit.fakes import FakeDestination, FakeSource, RaisingStage


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    led = Ledger(tmp_path / "state.db")
    yield led  # type: ignore[misc]
    led.close()


def run(ledger: Ledger, tmp_path: Path, source: FakeSource, dest: FakeDestination, *refs: str,
        stages: list[object] = ()) -> dict[str, int]:  # type: ignore[assignment]
    pipe = Pipeline("r", source, stages, [dest], ledger, quarantine_dir=tmp_path / "q", workers=2)  # type: ignore[arg-type]
    summary = pipe.run([[InstanceRef(i)] for i in refs])
    pipe.close()
    return {k: v for k, v in summary.counts.items() if v}


def test_entry_kept_until_delivered_then_released_with_its_file(ledger: Ledger, tmp_path: Path) -> None:
    source = FakeSource({"a": b"A"})
    rejected = RaisingStage(InvalidInstance("bad"), {"a"})
    assert run(ledger, tmp_path, source, FakeDestination(), "a", stages=[rejected]) == {"quarantined": 1}
    (entry,) = ledger.quarantined()
    assert entry.path is not None and Path(entry.path).read_bytes() == b"A"

    # A retry that fails again with a retryable error keeps the row and the bytes.
    down = FakeDestination(fail=lambda _i: DestinationUnavailable("503"))
    assert run(ledger, tmp_path, source, down, "a") == {"failed": 1}
    assert [e.source_id for e in ledger.quarantined()] == ["a"]
    assert Path(entry.path).exists()

    # A later run that delivers it releases the entry (list no longer shows it) and removes the bytes.
    assert run(ledger, tmp_path, source, FakeDestination(), "a") == {"stored": 1}
    assert ledger.quarantined() == []
    assert not Path(entry.path).exists()


def test_already_present_also_releases(ledger: Ledger, tmp_path: Path) -> None:
    ledger.quarantine("r", "a", "invalid", "x", None)
    assert run(ledger, tmp_path, FakeSource({"a": b"A"}), FakeDestination(held={"a"}), "a") == {"existing": 1}
    assert ledger.quarantined() == []


def test_long_paths_with_the_same_tail_do_not_overwrite_each_other(ledger: Ledger, tmp_path: Path) -> None:
    tail = "/" + "x" * 150 + ".dcm"
    one, two = "/import/DOE^JOHN" + tail, "/import/ROE^JANE" + tail
    source = FakeSource({one: b"ONE", two: b"TWO"})
    stage = RaisingStage(InvalidInstance("bad"), {one, two})
    assert run(ledger, tmp_path, source, FakeDestination(), one, two, stages=[stage]) == {"quarantined": 2}
    entries = {e.source_id: e for e in ledger.quarantined()}
    assert Path(entries[one].path or "").read_bytes() == b"ONE"
    assert Path(entries[two].path or "").read_bytes() == b"TWO"
    for sid, entry in entries.items():
        assert Path(entry.path or "").name == quarantine_file_name("r", sid)
        assert "DOE" not in (entry.path or "") and "ROE" not in (entry.path or "")


def test_list_hides_file_paths_unless_asked(ledger: Ledger, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ledger.quarantine("r", "/import/DOE^JOHN/MRN123.dcm", "invalid",
                      "InvalidInstance: cannot read /import/DOE^JOHN/MRN123.dcm: Permission denied", "/q/r/abc.dcm")
    ledger.quarantine("r", "0a1b2c3d-00000000-00000000-00000000-00000000", "invalid", "x", None)
    ledger.flush()
    state = str(ledger.path)
    assert main(["quarantine", "list", "--state", state]) == 0
    out = capsys.readouterr().out
    assert "DOE" not in out and "MRN123" not in out and "/q/r/abc.dcm" not in out
    assert "\tfile:" in out and "0a1b2c3d-00000000-00000000-00000000-00000000" in out
    assert main(["quarantine", "list", "--state", state, "--show-paths"]) == 0
    out = capsys.readouterr().out
    assert "/import/DOE^JOHN/MRN123.dcm" in out and "/q/r/abc.dcm" in out
    assert "cannot read /import/DOE^JOHN/MRN123.dcm: Permission denied" in out


def test_log_line_of_a_folder_import_quarantine_names_no_path(
    ledger: Ledger, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = "/import/DOE^JOHN/MRN123.dcm"
    stage = RaisingStage(InvalidInstance(f"cannot read {path}: truncated"), {path})
    assert run(ledger, tmp_path, FakeSource({path: b"A"}), FakeDestination(), path, stages=[stage]) == {
        "quarantined": 1}
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "quarantined" in logged and "DOE" not in logged and "MRN123" not in logged


def test_reason_is_stored_on_one_line(ledger: Ledger, tmp_path: Path) -> None:
    body = '{\n  "HttpError": "Bad Request",\n  "Message": "Bad file format"\n}'
    dest = FakeDestination(fail=lambda _i: RejectedByDestination(f"HTTP 400: {body}"))
    assert run(ledger, tmp_path, FakeSource({"a": b"A"}), dest, "a") == {"quarantined": 1}
    (entry,) = ledger.quarantined()
    assert "\n" not in entry.reason and '"Message": "Bad file format"' in entry.reason


def test_purge_removes_every_file_the_entry_ever_pointed_to(
    ledger: Ledger, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = tmp_path / "old-name.dcm", tmp_path / "new-name.dcm"
    first.write_bytes(b"PHI")
    second.write_bytes(b"PHI")
    ledger.quarantine("r", "a", "invalid", "bad", str(first))
    ledger.quarantine("r", "a", "source_gone", "gone", None)  # a retry without bytes keeps the saved path
    (entry,) = ledger.quarantined()
    assert entry.path == str(first)
    ledger.quarantine("r", "a", "invalid", "bad again", str(second))
    assert ledger.quarantined()[0].files == (str(first), str(second))
    ledger.flush()
    assert main(["quarantine", "purge", "--state", str(ledger.path)]) == 0
    assert not first.exists() and not second.exists()
    assert ledger.quarantined() == []


def test_dry_run_releases_nothing(ledger: Ledger, tmp_path: Path) -> None:
    ledger.quarantine("r", "a", "invalid", "x", None)
    pipe = Pipeline("r", FakeSource({"a": b"A"}), [], [FakeDestination()], ledger,  # type: ignore[arg-type]
                    quarantine_dir=tmp_path / "q", dry_run=True)
    pipe.run([[InstanceRef("a")]])
    pipe.close()
    assert [e.source_id for e in ledger.quarantined()] == ["a"]




def test_quarantine_folder_of_a_url_route_carries_no_credentials(tmp_path: Path) -> None:
    route = "oneshot:http://alice:hunter2@127.0.0.1:8042>dst"
    ledger = Ledger(tmp_path / "state.db")
    try:
        stage = RaisingStage(InvalidInstance("bad"), {"a"})
        pipe = Pipeline(route, FakeSource({"a": b"A"}), [stage], [FakeDestination()], ledger,  # type: ignore[arg-type]
                        quarantine_dir=tmp_path / "q")
        pipe.run([[InstanceRef("a")]])
        pipe.close()
        (entry,) = ledger.quarantined()
        relative = Path(entry.path or "").relative_to(tmp_path / "q")
        assert len(relative.parts) == 2 and "hunter2" not in str(relative) and relative.parts[0].startswith("route-")
    finally:
        ledger.close()

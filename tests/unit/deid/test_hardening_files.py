"""Issue 11 items 7, 10, 11, 12, 13: bad input to deidentify, scan and tags."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from pydicom import dcmread

from copydicom.cli import main
from copydicom.errors import InvalidInstance
from copydicom.sources.folder import FolderSource
from copydicom.stages.deid import keyed_uid
from copydicom.stages.structure import MAX_DEPTH, check_structure, read_checked
from tests.support.synthetic import ct_dataset, to_bytes
from tests.unit.deid.test_defects16 import bare_bytes

KEY_TEXT = "0123456789abcdef0123456789abcdef"


@pytest.fixture()
def key(tmp_path: Path) -> Path:
    path = tmp_path / "deid.key"
    path.write_text(KEY_TEXT)
    path.chmod(0o600)
    return path


def _deep(levels: int) -> bytes:
    """A CT file with sequences nested ``levels`` deep (undefined lengths, explicit VR)."""
    ds = ct_dataset(7, rows=8, cols=8)
    del ds.PixelData
    head = struct.pack("<HH2s2xI", 0xFFFA, 0xFFFA, b"SQ", 0xFFFFFFFF) + struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    tail = struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    return to_bytes(ds) + head * levels + tail * levels


def _run(args: list[str]) -> int:
    return main(args)


def test_structure_check_depth_and_truncation() -> None:
    check_structure(_deep(MAX_DEPTH))
    with pytest.raises(InvalidInstance, match="nested deeper than 64"):
        check_structure(_deep(MAX_DEPTH + 1))
    with pytest.raises(InvalidInstance, match="nested deeper than 64"):
        check_structure(_deep(1000))
    good = to_bytes(ct_dataset(1, rows=64, cols=64))
    with pytest.raises(InvalidInstance, match=r"truncated: element \(7FE0,0010\)"):
        check_structure(good[: len(good) - 4096])
    assert check_structure(bare_bytes(ct_dataset(1, rows=8, cols=8))) is False
    for junk in (os.urandom(4096), b"not dicom at all\n" * 20, b""):
        with pytest.raises(InvalidInstance):
            read_checked(junk)


def test_native_pixel_length_checked() -> None:
    ds = ct_dataset(1, rows=8, cols=8)
    ds.PixelData = ds.PixelData[:64]  # consistent element length, half the pixels the header announces
    with pytest.raises(InvalidInstance, match="native pixel data holds 64 of 128 bytes"):
        read_checked(to_bytes(ds))


def test_encapsulated_fragments_checked() -> None:
    from pydicom.encaps import encapsulate
    from pydicom.uid import RLELossless

    ds = ct_dataset(1, rows=8, cols=8)
    ds.PixelData = encapsulate([b"\x00" * 64])
    ds["PixelData"].VR = "OB"
    ds.file_meta = None
    data = to_bytes(ds)
    meta_ts = b"1.2.840.10008.1.2.1\x00"
    data = data.replace(meta_ts, RLELossless.encode() + b"\x00" * (len(meta_ts) - len(RLELossless)), 1)
    check_structure(data)
    with pytest.raises(InvalidInstance, match="truncated"):
        check_structure(data[:-20])


def test_folder_source_never_forwards_deep_files(tmp_path: Path) -> None:
    """The check runs in every route's pipeline (copydicom.routes.fetched_check), bytes kept in quarantine."""
    from copydicom.ledger import Ledger
    from copydicom.pipeline import Pipeline
    from copydicom.routes import fetched_check
    from tests.unit.fakes import FakeDestination

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "deep.dcm").write_bytes(_deep(1000))
    source = FolderSource(tmp_path / "in")
    dest = FakeDestination()
    ledger = Ledger(tmp_path / "state.db")
    try:
        pipe = Pipeline("r", source, [], [dest], ledger, quarantine_dir=tmp_path / "q", workers=1,
                        check_fetched=fetched_check)
        summary = pipe.run(source.batches())
        (entry,) = ledger.quarantined()
    finally:
        ledger.close()
    assert summary.counts["quarantined"] == 1 and dest.stored == []
    assert "nested deeper" in entry.reason and Path(str(entry.path)).read_bytes() == _deep(1000)


def test_deidentify_quarantines_deep_truncated_and_keeps_going(
    tmp_path: Path, key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "a_deep.dcm").write_bytes(_deep(1000))
    good = to_bytes(ct_dataset(1, rows=64, cols=64))
    (src / "b_cut.dcm").write_bytes(good[: len(good) - 4096])
    short = ct_dataset(1, 0, 0, 3, rows=8, cols=8)
    short.PixelData = short.PixelData[:64]
    (src / "c_short.dcm").write_bytes(to_bytes(short))
    (src / "d_good.dcm").write_bytes(to_bytes(ct_dataset(1, 0, 0, 1, rows=8, cols=8)))
    out = tmp_path / "out"
    assert _run(["deidentify", str(src), "--out", str(out), "--key-file", str(key)]) == 1
    captured = capsys.readouterr()
    assert "nested deeper than 64" in captured.err and "Traceback" not in captured.err
    assert captured.err.count("truncated") == 2
    assert captured.out.strip().splitlines()[-1].startswith("replicated=1 skipped_existing=0 quarantined=3 failed=0 ")
    assert len(list(out.iterdir())) == 1


def test_deidentify_never_follows_a_planted_symlink(tmp_path: Path, key: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    ds = ct_dataset(1, rows=8, cols=8)
    (src / "a.dcm").write_bytes(to_bytes(ds))
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    name = out / f"{keyed_uid(KEY_TEXT.encode(), ds.SOPInstanceUID)}.dcm"
    name.symlink_to(victim)
    assert _run(["deidentify", str(src), "--out", str(out), "--key-file", str(key)]) == 0
    assert victim.read_text() == "precious"
    assert not name.is_symlink() and dcmread(name).PatientIdentityRemoved == "YES"
    assert name.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_deidentify_refuses_bad_out(tmp_path: Path, key: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.dcm").write_bytes(to_bytes(ct_dataset(1, rows=8, cols=8)))
    afile = tmp_path / "file.txt"
    afile.write_text("x")
    assert _run(["deidentify", str(src), "--out", str(afile), "--key-file", str(key)]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err
    assert _run(["deidentify", str(src), "--out", str(src), "--key-file", str(key)]) == 2
    assert "is the input folder" in capsys.readouterr().err
    assert _run(["deidentify", str(src), "--out", str(src / "deid"), "--key-file", str(key)]) == 2
    assert "inside the input folder" in capsys.readouterr().err
    assert not (src / "deid").exists() and afile.read_text() == "x"


def test_deidentify_duplicate_sop_uids(tmp_path: Path, key: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in"
    src.mkdir()
    first = ct_dataset(1, rows=8, cols=8)
    second = ct_dataset(1, rows=8, cols=8)
    second.SeriesDescription = "A CORRECTED COPY"
    (src / "a.dcm").write_bytes(to_bytes(first))
    (src / "b.dcm").write_bytes(to_bytes(second))
    out = tmp_path / "out"
    assert _run(["deidentify", str(src), "--out", str(out), "--key-file", str(key)]) == 1
    captured = capsys.readouterr()
    assert "b.dcm: duplicate: SOP Instance UID already written in this run by input file #1" in captured.err
    assert "replicated=1 skipped_existing=0 quarantined=1" in captured.out
    assert len(list(out.iterdir())) == 1


def test_scan_unreadable_is_not_clean(tmp_path: Path, key: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = {"random.dcm": os.urandom(2048), "text.dcm": b"hello\n" * 50, "empty.dcm": b"", "deep.dcm": _deep(1000)}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        assert _run(["scan", str(tmp_path / name)]) == 1, name
        printed = capsys.readouterr().out
        assert "not readable as DICOM" in printed and "1 not readable (not clean)" in printed
    # A bare dataset (C-STORE payload, implicit VR) is scanned, not refused.
    (tmp_path / "bare.dcm").write_bytes(bare_bytes(ct_dataset(1, rows=8, cols=8)))
    assert _run(["scan", str(tmp_path / "bare.dcm")]) == 1
    printed = capsys.readouterr().out
    assert "(0010,0010): person name" in printed and "not readable" not in printed.splitlines()[0]
    # A copydicom output, from a bare input, scans clean (exit 0).
    src = tmp_path / "src"
    src.mkdir()
    (src / "bare.dcm").write_bytes(bare_bytes(ct_dataset(1, rows=8, cols=8)))
    assert _run(["deidentify", str(src), "--out", str(tmp_path / "out"), "--key-file", str(key)]) == 0
    assert _run(["scan", str(tmp_path / "out")]) == 0


def test_tags_refuses_random_bytes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "random.bin"
    path.write_bytes(os.urandom(4096))
    assert _run(["tags", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "not DICOM" in captured.err


@pytest.mark.parametrize("rows,cols,spp,bits,frames,photometric", [
    (8, 8, 1, 16, None, "MONOCHROME2"), (7, 5, 1, 1, "3", "MONOCHROME2"), (6, 6, 3, 8, "2", "YBR_FULL_422"),
    (4, 6, 3, 8, None, "RGB"), (3, 3, 1, 32, "1", "MONOCHROME1"), (2, 2, 1, 8, "0", "MONOCHROME2"),
])
def test_expected_length_agrees_with_pydicom(rows: int, cols: int, spp: int, bits: int, frames: str | None,
                                             photometric: str) -> None:
    from pydicom.pixels.utils import get_expected_length

    from copydicom.stages.structure import expected_native_length

    ds = ct_dataset(1, rows=8, cols=8)
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.BitsAllocated = rows, cols, spp, bits
    ds.PhotometricInterpretation = photometric
    if frames is not None:
        ds.NumberOfFrames = frames
    raw = dcmread(__import__("io").BytesIO(to_bytes(ds)))  # raw elements, as the stage sees them
    assert expected_native_length(raw) == get_expected_length(raw, unit="bytes")
    assert expected_native_length(ds) == get_expected_length(ds, unit="bytes")  # converted: pydicom's own


def test_structure_accepts_un_of_undefined_length_and_mismatched_encoding() -> None:
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    from copydicom.stages.structure import read_fast

    ds = ct_dataset(1, rows=8, cols=8)
    good = to_bytes(ds)
    # A private sequence as UN of undefined length: its items are implicit VR (PS3.5 6.2.2).
    un = (struct.pack("<HH2sH", 0x0009, 0x0010, b"LO", 6)
          + b"VENDOR" + struct.pack("<HH2s2xI", 0x0009, 0x1010, b"UN", 0xFFFFFFFF)
          + struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF) + struct.pack("<HHI", 0x0009, 0x1011, 4) + b"ABCD"
          + struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0))
    at = good.index(struct.pack("<HH", 0x0010, 0x0010))  # before Patient's Name: group 0009 sorts there
    with_un = good[:at] + un + good[at:]
    assert check_structure(with_un) is True
    assert read_fast(with_un) is None  # left to dcmread
    assert dcmread(__import__("io").BytesIO(with_un)).PatientID == ds.PatientID
    # Explicit VR declared, implicit VR written: read as written (pydicom does the same).
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = True
    write_dataset(fp, ds)
    from copydicom.stages.structure import _split_part10

    head = _split_part10(good)
    assert head is not None
    mismatched = good[: head[0]] + fp.getvalue()
    assert check_structure(mismatched) is True
    assert read_fast(mismatched) is None

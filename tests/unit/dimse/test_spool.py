"""The receive spool: durable entries, no partial file ever visible, removal only of what was delivered."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from copydicom.endpoints.dimse.spool import ReceiveSpool


def test_put_list_remove(tmp_path: Path) -> None:
    spool = ReceiveSpool(tmp_path / "s")
    os.utime(spool.put("b" * 8, b"first"), (1000, 1000))
    os.utime(spool.put("a" * 8, b"second"), (2000, 2000))
    entries = spool.entries()
    assert [e.key for e in entries] == ["b" * 8, "a" * 8]  # oldest first (then by name)
    assert entries[0].path.read_bytes() == b"first"
    assert oct((tmp_path / "s").stat().st_mode & 0o777) == "0o700"
    assert oct(entries[0].path.stat().st_mode & 0o777) == "0o600"
    assert spool.remove(entries[0]) and not entries[0].path.exists()
    assert spool.depth()[0] == 1


def test_full_disk_leaves_nothing_and_raises(tmp_path: Path) -> None:
    def full(fd: int, data: bytes) -> None:
        os.write(fd, data[:3])
        raise OSError(errno.ENOSPC, "No space left on device")

    spool = ReceiveSpool(tmp_path / "s", writer=full)
    with pytest.raises(OSError) as info:
        spool.put("k", b"0123456789")
    assert info.value.errno == errno.ENOSPC
    assert os.listdir(tmp_path / "s") == []  # no entry, no temporary file


def test_partial_files_of_a_dead_process_are_removed_at_start(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / ".tmp-abc-123").write_bytes(b"half")
    (folder / "done.dcm").write_bytes(b"whole")
    spool = ReceiveSpool(folder)
    assert spool.removed_temporary == 1
    assert [e.key for e in spool.entries()] == ["done"]


def test_a_new_copy_arriving_during_delivery_is_kept(tmp_path: Path) -> None:
    spool = ReceiveSpool(tmp_path / "s")
    spool.put("k", b"old")
    (listed,) = spool.entries()
    spool.put("k", b"new")  # the sender sent it again while the old copy was being delivered
    assert not spool.remove(listed)
    (again,) = spool.entries()
    assert again.path.read_bytes() == b"new"
    assert spool.remove(again) and spool.depth() == (0, None)


def test_a_copy_renamed_in_between_the_check_and_the_removal_is_kept(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The receiver (another process) renames a new copy over the entry just as the drain removes it."""
    spool = ReceiveSpool(tmp_path / "s")
    spool.put("k", b"old")
    (listed,) = spool.entries()
    real_rename = os.rename

    def rename_after_new_copy(src: object, dst: object) -> None:
        if str(dst).startswith(str(tmp_path / "s" / ".del-")):
            spool.put("k", b"new")  # lands between the listing and the removal
        real_rename(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "rename", rename_after_new_copy)
    assert not spool.remove(listed)
    monkeypatch.undo()
    (again,) = spool.entries()
    assert again.path.read_bytes() == b"new"
    assert not [p for p in os.listdir(tmp_path / "s") if p.startswith(".")]


def test_an_entry_set_aside_by_a_dead_process_is_put_back(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    folder.mkdir(mode=0o700)
    (folder / ".del-abc-123-4").write_bytes(b"was being removed")
    (folder / ".del-def-123-5").write_bytes(b"older")
    (folder / "def.dcm").write_bytes(b"newer")
    spool = ReceiveSpool(folder)
    assert {e.key: e.path.read_bytes() for e in spool.entries()} == {"abc": b"was being removed", "def": b"newer"}
    assert not [p for p in os.listdir(folder) if p.startswith(".")]

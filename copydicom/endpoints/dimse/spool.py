"""The receive spool: instances acknowledged to a sender and not yet delivered.

Durability before success (the C-STORE response, PS3.4 B.2.3, is the sender's
licence to delete its copy): each instance is written under a temporary name,
flushed (``fsync``), renamed to its final name, and the directory flushed,
and only then is Success returned.  A crash before the rename leaves a
temporary file that is removed at the next start (it was never
acknowledged); a crash after it leaves a complete entry that the next start
delivers.

Entry names are the instance's Orthanc ID (a SHA-1 digest of its UIDs, which
is also the pipeline's dedupe key), never patient data.  Written by hand
rather than with a queue library because the bytes must be the file the
sender sent (no re-encoding) and the rename protocol is the whole contract.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SUFFIX = ".dcm"
_TMP = ".tmp-"
_ASIDE = ".del-"


@dataclass(frozen=True)
class SpoolEntry:
    """One received instance waiting in the spool."""

    key: str
    path: Path
    inode: int
    mtime: float


Buffer = bytes | bytearray | memoryview


def _write_all(fd: int, data: Buffer) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class ReceiveSpool:
    """A directory of durable, acknowledged, undelivered instances.

    Parameters
    ----------
    folder
        The spool directory (created owner-only).
    fsync
        Flush file and directory before :meth:`put` returns.
    writer
        Writes bytes to an open file descriptor (tests inject a failing one).
    """

    def __init__(self, folder: Path, *, fsync: bool = True, writer: Callable[[int, Buffer], None] = _write_all) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        mode = self.folder.stat().st_mode
        if mode & 0o022:
            # Anyone who may write here can plant an instance that the route then delivers as received
            # (or remove acknowledged ones): refused like a key in a folder others may write to.
            from copydicom.errors import ConfigError

            raise ConfigError(f"receive spool {self.folder}: group or others may write to it "
                              f"(mode {mode & 0o777:04o}); run 'chmod 700 {self.folder}'")
        self.fsync = fsync
        self.writer = writer
        self._lock = threading.Lock()
        self._serial = itertools.count()  # unique temporary names (itertools.count is atomic under the GIL)
        self.removed_temporary = self._clean_temporary()

    def _clean_temporary(self) -> int:
        """Remove half-written files of a previous process (never acknowledged).

        An entry a previous process was removing (set aside, see :meth:`remove`) is put back if its
        name is free: it may be delivered once more, which dedupe recognises, rather than lost.
        """
        count = 0
        for entry in os.scandir(self.folder):
            if entry.name.startswith(_ASIDE):
                key = entry.name[len(_ASIDE):].rsplit("-", 2)[0]
                try:
                    os.link(entry.path, self.folder / f"{key}{SUFFIX}")
                except FileExistsError:
                    pass
                os.unlink(entry.path)
            elif entry.name.startswith(_TMP):
                try:
                    os.unlink(entry.path)
                    count += 1
                except FileNotFoundError:
                    pass
        if count:
            log.info("receive spool: removed %d unacknowledged partial file(s)", count)
        return count

    def _sync_folder(self) -> None:
        fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def put(self, key: str, data: Buffer | Sequence[Buffer]) -> Path:
        """Store one instance durably under ``key``; raise ``OSError`` if it could not be.

        ``data`` is the file's bytes, or its parts in order (the listener passes
        the file meta it built and the dataset as received, so that the
        dataset is never copied into one joined string).  The entry exists
        (complete) only once this returns: a reader never sees a partial file.
        """
        parts = (data,) if isinstance(data, (bytes, bytearray, memoryview)) else data
        target = self.folder / f"{key}{SUFFIX}"
        tmp = self.folder / f"{_TMP}{key}-{os.getpid()}-{next(self._serial)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            try:
                for part in parts:
                    self.writer(fd, part)
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, target)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        if self.fsync:
            self._sync_folder()
        return target

    def entries(self, limit: int | None = None) -> list[SpoolEntry]:
        """Complete entries, oldest first (at most ``limit``)."""
        found: list[SpoolEntry] = []
        for entry in os.scandir(self.folder):
            name = entry.name
            if name.startswith(".") or not name.endswith(SUFFIX):
                continue
            try:
                st = entry.stat()
            except FileNotFoundError:
                continue
            found.append(SpoolEntry(name[: -len(SUFFIX)], Path(entry.path), st.st_ino, st.st_mtime))
        found.sort(key=lambda e: (e.mtime, e.key))
        return found if limit is None else found[:limit]

    def path_of(self, key: str) -> Path:
        return self.folder / f"{key}{SUFFIX}"

    def remove(self, entry: SpoolEntry) -> bool:
        """Remove a delivered entry, unless a new copy of it arrived meanwhile (then keep that).

        A new copy has a new inode (the receiver renamed it over the old
        one, possibly from another process).  Checking the inode and then
        unlinking the name would lose a copy renamed in between, so the name
        is first renamed aside (atomic: whatever is there now is taken), and
        only the listed inode is unlinked; a newer copy taken by mistake is
        linked back (unless an even newer one has arrived since).
        """
        aside = self.folder / f"{_ASIDE}{entry.key}-{os.getpid()}-{next(self._serial)}"
        with self._lock:
            try:
                os.rename(entry.path, aside)
            except FileNotFoundError:
                return False
            if os.stat(aside).st_ino == entry.inode:
                os.unlink(aside)
                return True
            try:
                os.link(aside, entry.path)
            except FileExistsError:  # an even newer copy arrived: it supersedes this one
                pass
            os.unlink(aside)
        return False

    def depth(self) -> tuple[int, float | None]:
        """Number of waiting entries and the age in seconds of the oldest (``None`` when empty)."""
        entries = self.entries()
        if not entries:
            return 0, None
        return len(entries), max(0.0, time.time() - entries[0].mtime)

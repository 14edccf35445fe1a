"""A folder of DICOM files, read recursively: the source of ``copydicom import``.

A file is DICOM when bytes 128-131 are ``DICM`` (the Part 10 preamble and
prefix, PS3.10 §7.1), whatever its name; ``DICOMDIR`` files (the media
directory, PS3.10 §8.6) are skipped.  Other files are recorded in
:attr:`FolderSource.skipped` and logged by count, never an error.  Files are
visited in sorted order, one directory at a time (constant memory for wide
trees apart from one directory listing).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

from copydicom.errors import ConfigError, InvalidInstance
from copydicom.model import InstanceRef
from copydicom.stages.structure import check_structure

log = logging.getLogger(__name__)

_PREAMBLE = 128
_MAGIC = b"DICM"


def is_dicom_file(path: Path) -> bool:
    """True when ``path`` holds ``DICM`` at offset 128 (unreadable files are not DICOM)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(_PREAMBLE)
            return handle.read(4) == _MAGIC
    except OSError:
        return False


class FolderSource:
    """Every Part 10 file below ``root``.

    Parameters
    ----------
    root
        The folder.
    batch_size
        References per batch (one directory never mixes with another).
    """

    def __init__(self, root: Path, *, batch_size: int = 200) -> None:
        if not root.is_dir():
            raise ConfigError(f"{root}: not a directory")
        self.root = root
        self.name = f"folder:{root}"
        self.batch_size = max(1, batch_size)
        #: Paths of files that were not DICOM (or DICOMDIR), in visiting order.
        self.skipped: list[str] = []

    def _walk(self) -> Iterator[Path]:
        for directory, subdirs, files in os.walk(self.root, onerror=self._unreadable):
            subdirs.sort()
            for name in sorted(files):
                path = Path(directory) / name
                if not path.is_file():  # broken links, sockets...
                    self._skip(path, "not a regular file")
                elif name.upper() == "DICOMDIR":
                    self._skip(path, "DICOMDIR")
                elif not is_dicom_file(path):
                    self._skip(path, "not DICOM")
                else:
                    yield path

    def _unreadable(self, error: OSError) -> None:
        self._skip(Path(str(error.filename)), f"unreadable: {error.strerror}")

    def _skip(self, path: Path, why: str) -> None:
        self.skipped.append(str(path))
        log.info("skipping %s: %s", path, why)

    def batches(self) -> Iterator[list[InstanceRef]]:
        """References in batches of one directory (at most ``batch_size`` each)."""
        batch: list[InstanceRef] = []
        parent: Path | None = None
        for path in self._walk():
            if batch and (path.parent != parent or len(batch) >= self.batch_size):
                yield batch
                batch = []
            parent = path.parent
            batch.append(InstanceRef(source_id=str(path)))
        if batch:
            yield batch
        if self.skipped:
            log.warning("%d file(s) under %s were not DICOM and were skipped", len(self.skipped), self.root)

    def refs(self) -> Iterator[InstanceRef]:
        """Every reference (the :class:`~copydicom.model.Source` protocol)."""
        for batch in self.batches():
            yield from batch

    def fetch(self, ref: InstanceRef) -> bytes:
        """The file's bytes; a file that vanished or cannot be read is an invalid instance."""
        try:
            data = Path(ref.source_id).read_bytes()
        except OSError as exc:
            raise InvalidInstance(f"cannot read {ref.source_id}: {exc.strerror}") from None
        # Never forward what readers crash on (Orthanc 1.10.1 dies on deep nesting): nesting
        # beyond MAX_DEPTH, truncation and broken structure are quarantined here.
        check_structure(data)
        return data

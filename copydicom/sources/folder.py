"""A folder of DICOM files, read recursively: the source of ``copydicom import``.

A file is DICOM when bytes 128-131 are ``DICM`` (the Part 10 preamble and
prefix, PS3.10 §7.1), whatever its name; ``DICOMDIR`` files (the media
directory, PS3.10 §8.6) are skipped.  Other files are recorded in
:attr:`FolderSource.skipped` and logged by count, never an error.  Files are
visited in sorted order, one directory at a time (constant memory for wide
trees apart from one directory listing).

Each reference carries the instance's identity, read from the file's header
(no pixel data), so that dedupe asks destinations by the Orthanc ID of the
instance (:attr:`~copydicom.model.Identity.orthanc_id`), as for every other
source, and never by the file path: file names are often patient names and
MRNs, so paths appear in no request and no log line (a digest stands for them).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from copydicom.errors import ConfigError, InvalidInstance
from copydicom.model import Identity, InstanceRef

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


_IDENTITY_TAGS = ["PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"]


def path_digest(path: str | Path) -> str:
    """A short digest standing for a file path in logs and messages (paths are PHI)."""
    return "file:" + hashlib.sha256(str(path).encode("utf-8", "surrogateescape")).hexdigest()[:16]


def identity_of_file(path: Path) -> Identity | None:
    """The identity in a Part 10 file's header (PS3.10), read without its pixel data.

    Returns ``None`` when the header cannot be parsed or has no SOP Instance UID:
    the file is then fetched and judged by the pipeline (quarantined if invalid).
    """
    from pydicom import dcmread

    try:
        ds = dcmread(path, stop_before_pixels=True, specific_tags=_IDENTITY_TAGS)
        identity = Identity.from_dataset(ds)
    except Exception:  # any parse failure, including a RecursionError on hostile nesting
        return None
    return identity if identity.sop_uid else None


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
        log.info("skipping %s: %s", path_digest(path), why)

    def batches(self) -> Iterator[list[InstanceRef]]:
        """References in batches of one directory (at most ``batch_size`` each)."""
        batch: list[InstanceRef] = []
        parent: Path | None = None
        for path in self._walk():
            if batch and (path.parent != parent or len(batch) >= self.batch_size):
                yield batch
                batch = []
            parent = path.parent
            identity = identity_of_file(path)
            series = identity.series_orthanc_id if identity is not None else None
            batch.append(InstanceRef(source_id=str(path), identity=identity, series_id=series))
        if batch:
            yield batch
        if self.skipped:
            log.warning("%d file(s) were not DICOM and were skipped", len(self.skipped))

    def refs(self) -> Iterator[InstanceRef]:
        """Every reference (the :class:`~copydicom.model.Source` protocol)."""
        for batch in self.batches():
            yield from batch

    def fetch(self, ref: InstanceRef) -> bytes:
        """The file's bytes; a file that vanished or cannot be read is an invalid instance."""
        try:
            data = Path(ref.source_id).read_bytes()
        except OSError as exc:
            raise InvalidInstance(f"cannot read {path_digest(ref.source_id)}: {exc.strerror}") from None
        # The structure check (nesting beyond MAX_DEPTH, truncation: Orthanc 1.10.1 dies on deep
        # nesting) runs in every route's pipeline (copydicom.routes.fetched_check), which keeps the
        # refused bytes in quarantine: a console upload's folder is gone once its job ends.
        return data

    def close(self) -> None:
        """Nothing to release (the :class:`~copydicom.model.Source` protocol)."""

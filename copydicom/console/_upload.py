"""Receiving uploads safely: size limits, DICOM sniffing, zip-bomb and path-traversal protection.

Uploaded files and zip members are never written under their own names: each
accepted one is stored as ``NNNNNN.dcm`` in a private (0700) job folder, so a
member called ``../../etc/passwd`` or ``/root/x`` cannot escape it, and file
names (often patient names or MRNs) never reach a path, a log or a result.
A zip is refused whole when a member's name is absolute or climbs out
(``..``), when the declared expanded size passes ``max_expanded_bytes``, or
when a member's compression ratio passes ``max_ratio`` (a zip bomb declares
small sizes and expands hugely: members are read with a hard byte limit, so
a lying header cannot get past it either).
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Protocol

from copydicom.errors import InvalidInstance

_CHUNK = 1 << 20


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class UploadRejected(InvalidInstance):
    """The upload as a whole is refused (limits, traversal, not a zip)."""

    code = "upload-rejected"


@dataclass(frozen=True)
class Limits:
    """Upload limits (``console.upload`` in the configuration)."""

    max_upload_bytes: int = 2 << 30
    max_files: int = 20_000
    max_expanded_bytes: int = 4 << 30
    max_ratio: float = 200.0


@dataclass
class Received:
    """What an upload yielded: accepted files (by index) and refused items with reasons."""

    folder: Path
    accepted: list[Path] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (item digest, reason)
    total_bytes: int = 0


def item_label(name: str) -> str:
    """A label for an uploaded item that reveals nothing of its name (its SHA-256 prefix)."""
    return "item-" + hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:12]


def looks_like_dicom(head: bytes) -> bool:
    """Part 10 preamble check: 128 bytes then ``DICM`` (PS3.10 section 7.1)."""
    return len(head) >= 132 and head[128:132] == b"DICM"


def _safe_member(name: str) -> bool:
    path = PurePosixPath(name.replace("\\", "/"))
    return not path.is_absolute() and ".." not in path.parts and not name.startswith(("/", "\\")) and ":" not in name


class Receiver:
    """Writes one job's uploaded items into ``folder`` under the limits."""

    def __init__(self, folder: Path, limits: Limits) -> None:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(folder, 0o700)
        self.limits = limits
        self.received = Received(folder)

    def _next_path(self) -> Path:
        if len(self.received.accepted) >= self.limits.max_files:
            raise UploadRejected(f"more than {self.limits.max_files} files in one upload")
        return self.received.folder / f"{len(self.received.accepted):06d}.dcm"

    def _store(self, label: str, stream: Readable, limit: int) -> None:
        """Copy at most ``limit`` bytes; keep the file only if it is DICOM."""
        path = self._next_path()
        size = 0
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out:
            head = b""
            while True:
                chunk = stream.read(min(_CHUNK, limit - size + 1))
                if not chunk:
                    break
                size += len(chunk)
                if size > limit:
                    out.close()
                    path.unlink(missing_ok=True)
                    raise UploadRejected("upload larger than the configured limit")
                if len(head) < 132:
                    head += chunk[: 132 - len(head)]
                out.write(chunk)
        self.received.total_bytes += size
        if self.received.total_bytes > self.limits.max_upload_bytes:
            path.unlink(missing_ok=True)
            raise UploadRejected("upload larger than the configured limit")
        if not looks_like_dicom(head):
            path.unlink(missing_ok=True)
            self.received.refused.append((label, "not a DICOM Part 10 file (no DICM preamble)"))
            return
        self.received.accepted.append(path)

    def add_file(self, name: str, stream: Readable) -> None:
        """One uploaded file: a zip is expanded, anything else must be DICOM."""
        head = stream.read(4)
        rest = _Prefixed(head, stream)
        if head == b"PK\x03\x04":
            self.add_zip(name, rest)
        else:
            self._store(item_label(name), rest, self.limits.max_upload_bytes - self.received.total_bytes)

    def add_zip(self, name: str, stream: Readable) -> None:
        """Expand a zip member by member under the limits (refused whole on traversal or a bomb)."""
        spooled = self.received.folder / f".zip-{len(self.received.accepted):06d}"
        fd = os.open(spooled, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        size = 0
        with os.fdopen(fd, "wb") as out:
            while chunk := stream.read(_CHUNK):
                size += len(chunk)
                if size > self.limits.max_upload_bytes:
                    out.close()
                    spooled.unlink(missing_ok=True)
                    raise UploadRejected("upload larger than the configured limit")
                out.write(chunk)
        try:
            try:
                archive = zipfile.ZipFile(spooled)
            except zipfile.BadZipFile:
                raise UploadRejected("not a readable zip file") from None
            with archive:
                members = [m for m in archive.infolist() if not m.is_dir()]
                self._check_zip(members)
                for member in members:
                    with archive.open(member) as handle:
                        self._store(item_label(member.filename), handle, int(member.file_size))
        finally:
            spooled.unlink(missing_ok=True)

    def _check_zip(self, members: Iterable[zipfile.ZipInfo]) -> None:
        expanded = 0
        for member in members:
            if not _safe_member(member.filename):
                raise UploadRejected("zip member with an absolute or '..' path: refused")
            expanded += member.file_size
            ratio = member.file_size / max(member.compress_size, 1)
            if member.file_size > (1 << 20) and ratio > self.limits.max_ratio:
                raise UploadRejected(f"zip member expands {ratio:.0f}x: refused as a zip bomb")
        if expanded > self.limits.max_expanded_bytes:
            raise UploadRejected("zip expands beyond the configured limit")


class _Prefixed(io.RawIOBase):
    """A stream with some already-read bytes put back in front."""

    def __init__(self, head: bytes, stream: Readable) -> None:
        self._head = head
        self._stream = stream

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._head:
            if size < 0:
                out, self._head = self._head + self._stream.read(), b""
                return out
            out, self._head = self._head[:size], self._head[size:]
            if len(out) < size:
                out += self._stream.read(size - len(out))
            return out
        return self._stream.read(size)

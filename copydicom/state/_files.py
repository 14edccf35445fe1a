"""Owner-only files and PHI-free names for everything the state keeps on disk.

Every file copydicom creates that can hold PHI or secrets (the state database
and its ``-wal``/``-shm`` companions, SQLite indexes, quarantined bytes, mapping
exports, lock files) is created ``0600`` and every folder it creates ``0700``,
whatever the process umask: the mode is passed to ``open(2)``/``mkdir(2)`` *and*
set again with ``chmod``, because the umask only ever removes bits and a file
that already exists keeps the mode it had.
"""

from __future__ import annotations

import hashlib
import re
import os
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(path: str | Path) -> Path:
    """Create ``path`` (and missing parents) owner-only; an existing folder is left as it is.

    Parents created here are made ``0700`` too (``Path.mkdir(parents=True)`` would
    create them with the umask's default mode).
    """
    p = Path(path)
    missing: list[Path] = []
    cursor = p
    while not cursor.exists():
        missing.append(cursor)
        if cursor.parent == cursor:
            break
        cursor = cursor.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue
        os.chmod(folder, DIR_MODE)
    return p


def private_file(path: str | Path) -> Path:
    """Create ``path`` empty and owner-only if it is missing; make it owner-only if it exists.

    An existing file is never opened here, only ``chmod``-ed: closing a descriptor of a
    SQLite database releases every POSIX lock this process holds on it, including those of
    its open connections (fcntl semantics), which would let another process checkpoint and
    reset the WAL under them.
    """
    p = Path(path)
    if not p.exists():
        private_dir(p.parent)
        try:
            fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0), FILE_MODE)
            os.close(fd)
        except FileExistsError:
            pass
    os.chmod(p, FILE_MODE)
    return p


def restrict_sqlite_companions(path: str | Path) -> None:
    """Make a database's ``-wal``, ``-shm`` and ``-journal`` files owner-only when they exist.

    SQLite creates them with the database file's mode, so this is belt and braces
    for files made by an older release or another tool.
    """
    for suffix in ("-wal", "-shm", "-journal"):
        side = Path(str(path) + suffix)
        try:
            os.chmod(side, FILE_MODE)
        except FileNotFoundError:
            pass


def write_private_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` owner-only, never following a symlink planted at that name."""
    private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def digest(*parts: str, length: int = 32) -> str:
    """Hex SHA-256 of the parts joined by NUL (collision-free names; reveals nothing)."""
    return hashlib.sha256("\0".join(parts).encode("utf-8", "surrogateescape")).hexdigest()[:length]


def quarantine_file_name(route: str, source_id: str) -> str:
    """The quarantine file name of an instance: a digest of route and source ID (never the source path)."""
    return f"{digest(route, source_id)}.dcm"


def quarantine_folder_name(route: str) -> str:
    """The quarantine sub-folder of a route: its name when that is a plain word, else ``route-<digest>``.

    One-shot route names are built from endpoint names or URLs (``oneshot:http://host>dest``):
    slashes would nest folders and a URL could carry credentials into a directory name.
    """
    plain = route.replace("-", "").replace("_", "").replace(".", "")
    return route if plain.isascii() and plain.isalnum() and not route.startswith(".") else f"route-{digest(route, length=16)}"


def is_path_like(source_id: str) -> bool:
    """Whether a source ID is a file path (folder import): those are PHI (names, MRNs in file names)."""
    return "/" in source_id or "\\" in source_id or source_id.startswith(".")


_ORTHANC_ID = re.compile(r"^[0-9a-f]{8}(-[0-9a-f]{8}){4}$")


def display_source_id(source_id: str, *, show_paths: bool = False) -> str:
    """A source ID fit for logs and listings.

    Orthanc IDs (SHA-1 digests already) as they are; file paths (folder import: file names are
    often patient names and MRNs) as ``file:<digest>``; any other ID (S3 keys made of UIDs, DICOMweb
    UIDs) as ``sha256:<digest>``.  ``show_paths`` (``--show-paths``, owner-only output) shows them all.
    """
    if show_paths or _ORTHANC_ID.match(source_id):
        return source_id
    if is_path_like(source_id) and "://" not in source_id:
        return f"file:{digest(source_id, length=16)}"
    return f"sha256:{digest(source_id, length=16)}"


def mask_source_path(text: str, source_id: str) -> str:
    """``text`` with a file-path source ID replaced by its digest form (reasons often quote the path)."""
    shown = display_source_id(source_id)
    return text if shown == source_id else text.replace(source_id, shown)


def one_line(text: str, limit: int = 500) -> str:
    """``text`` on one line (a multi-line JSON body from a server becomes one line), at most ``limit`` chars."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"

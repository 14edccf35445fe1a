"""The console's private upload folder, and the removal of the ones earlier consoles left behind.

Each console receives uploads in its own ``copydicom-console-XXXXXXXX`` folder (0700) in the
state folder. A job deletes its files when it ends, but a console that stopped left its empty
folder, and one that crashed mid-upload left the uploaded files (PHI) there. So a starting
console removes the stale ones. A folder is ours and stale only when:

- its name is exactly the pattern :func:`tempfile.mkdtemp` makes with our prefix;
- it is a real directory (``lstat``: a symlink is never followed, nor removed) owned by this user;
- no running console holds its lock (``.lock``, ``flock``: released by the kernel when the
  process ends, even on SIGKILL); a folder without one (an older version's) must also be older
  than :data:`GRACE_SECONDS`, so a console that just made its folder is not raced.

Removal uses :func:`shutil.rmtree`, which on Linux walks by file descriptor and does not follow
symlinks inside the tree (``shutil.rmtree.avoids_symlink_attacks``); where it cannot, nothing is
removed.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import shutil
import stat
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

PREFIX = "copydicom-console-"
_NAME = re.compile(r"copydicom-console-[a-z0-9_]{8}")
LOCK_NAME = ".lock"
#: A folder without a lock file younger than this may be a console starting right now.
GRACE_SECONDS = 60.0

#: Lock file descriptors of this process's consoles, kept open for the process's life.
_HELD: dict[Path, int] = {}


def make_work_dir(parent: Path | None) -> Path:
    """A new private upload folder in ``parent`` (else the temp dir), locked; stale ones removed first.

    Stale folders are looked for only in an explicit ``parent`` (the state folder): the shared
    temp dir may hold other programs' folders.
    """
    if parent is not None:
        removed = remove_stale(parent)
        if removed:
            log.info("removed %d upload folder(s) left by an earlier console", removed)
    base = Path(tempfile.mkdtemp(prefix=PREFIX, dir=parent))
    fd = os.open(base / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    _HELD[base] = fd
    return base


def remove_stale(parent: Path) -> int:
    """Remove the stale upload folders of earlier consoles in ``parent`` (see the module); returns how many."""
    if not shutil.rmtree.avoids_symlink_attacks:  # pragma: no cover - Linux has it
        return 0
    try:
        names = [n for n in os.listdir(parent) if _NAME.fullmatch(n)]
    except OSError:
        return 0
    removed = 0
    for name in names:
        path = parent / name
        try:
            info = os.lstat(path)
        except OSError:
            continue
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
            continue
        fd = _try_lock(path, info)
        if fd is None:
            continue
        try:
            shutil.rmtree(path)
            removed += 1
        except OSError as exc:
            log.warning("cannot remove an earlier console's upload folder: %s", exc.strerror)
        finally:
            if fd >= 0:
                os.close(fd)
    return removed


def _try_lock(path: Path, info: os.stat_result) -> int | None:
    """The folder's lock, taken (``-1``: no lock file, and old enough); ``None`` if in use or suspicious."""
    try:
        fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_NOFOLLOW)
    except FileNotFoundError:
        return -1 if time.time() - info.st_mtime > GRACE_SECONDS else None
    except OSError:
        return None  # a symlink (ELOOP) or unreadable: not ours to judge
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            log.debug("cannot lock an upload folder: %s", exc.strerror)
        return None
    return fd

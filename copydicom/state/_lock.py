"""One process per route feed: an exclusive ``fcntl`` lock on a file next to the state database.

Two daemons following the same route on one state file both send every new
instance (the hardening review saw 114 and 138 duplicates per 400 instances).
The lock is ``flock(LOCK_EX | LOCK_NB)`` on ``<state>.locks/<digest of the route>.lock``,
taken at start-up and held for the life of the process: the kernel releases it
when the process ends, however it ends (SIGKILL included), so there is no stale
lock to clean up.  Read-only commands (``status``, ``quarantine list``) take no lock.

Why ``flock`` and not SQLite: a SQLite write lock cannot be held for hours
without blocking every other writer of the database; a lock file per route
costs nothing and names the holder (its PID is written into the file).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from copydicom.state._errors import RouteLocked
from copydicom.state._files import FILE_MODE, digest, private_dir


def lock_dir(state_path: Path) -> Path:
    """The folder of a state database's route locks."""
    return state_path.with_name(state_path.name + ".locks")


class RouteLock:
    """An exclusive lock on one route's feed, held until :meth:`release` or the process ends."""

    def __init__(self, state_path: Path, route: str) -> None:
        self.route = route
        self.path = private_dir(lock_dir(state_path)) / f"{digest(route)}.lock"
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR | getattr(os, "O_NOFOLLOW", 0), FILE_MODE)
        os.chmod(self.path, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.read(fd, 32).decode("ascii", "replace").strip() or "?"
            finally:
                os.close(fd)
            raise RouteLocked(
                f"route {route}: another copydicom process (pid {holder}) already follows this route "
                f"with the state {state_path}; refusing to start a second one (it would send every "
                "instance twice). Stop the other process, or give this one its own state file."
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Give the lock up (the file stays: removing it would race with a process opening it)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RouteLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

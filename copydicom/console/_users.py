"""Console users: a small owner-only file of argon2 password hashes and roles.

The file (``console.users_file``) is YAML::

    users:
      alice: {hash: "$argon2id$...", role: operator, phi: true}
      bob:   {hash: "$argon2id$...", role: viewer}

``viewer`` reads every page; ``operator`` may also retry, purge and upload;
``phi`` lets an operator reveal patient-identifying values (each reveal is
written to the audit log).  Hashes are argon2id (argon2-cffi, RFC 9106
parameters); the plain password is never stored or logged.
"""

from __future__ import annotations

import hmac
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from copydicom.errors import ConfigError

Role = Literal["viewer", "operator"]
ROLES: tuple[Role, ...] = ("viewer", "operator")


@dataclass(frozen=True)
class User:
    """An authenticated console user."""

    name: str
    role: Role
    phi: bool = False

    @property
    def can_operate(self) -> bool:
        return self.role == "operator"

    @property
    def can_reveal(self) -> bool:
        return self.phi


def _hasher() -> Any:
    from argon2 import PasswordHasher

    return PasswordHasher()


class UserStore:
    """Reads the users file at start-up and on change; verifies passwords.

    Parameters
    ----------
    path
        The users file. It is re-read when its modification time changes, so
        ``copydicom console add-user`` takes effect without a restart.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._mtime = -1.0
        self._users: dict[str, dict[str, Any]] = {}
        self._ph = _hasher()
        # Verified HTTP basic credentials, kept a few minutes as an HMAC under a per-process key: argon2 is
        # meant to cost ~50-100 ms, which a script calling /api/ on every request would pay every time
        # (measured: /api/routes 155 ms median with, vs a few ms without, benchmarks/console_bench.py).
        self._proof_key = os.urandom(32)
        self._verified: dict[str, tuple[float, str]] = {}
        # A hash to verify against for unknown names, so that a wrong name costs as much as a wrong password.
        self._dummy = self._ph.hash("copydicom-no-such-user")

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            return {}
        if mtime != self._mtime:
            data = yaml.safe_load(self.path.read_text(encoding="utf-8")) or {}
            users = data.get("users") if isinstance(data, dict) else None
            if not isinstance(users, dict):
                raise ConfigError(f"{self.path}: expected a mapping 'users:'")
            self._users = {str(k): dict(v) for k, v in users.items() if isinstance(v, dict)}
            self._mtime = mtime
        return self._users

    def get(self, name: str) -> User | None:
        """The user called ``name`` (for a reverse proxy's authenticated header), or None."""
        body = self._load().get(name)
        if body is None:
            return None
        role = body.get("role", "viewer")
        return User(name, role if role in ROLES else "viewer", bool(body.get("phi", False)))

    def verify(self, name: str, password: str, *, cache_seconds: float = 0.0) -> User | None:
        """The user if ``password`` matches its hash, else None (same cost either way).

        With ``cache_seconds``, a successful check is remembered that long (as an HMAC of the
        credentials under a random per-process key; a change of the users file forgets it).
        """
        from argon2.exceptions import InvalidHashError, VerificationError

        body = self._load().get(name)
        proof = hmac.new(self._proof_key, f"{name}\x00{password}\x00{self._mtime}".encode(), "sha256").hexdigest()
        remembered = self._verified.get(name)
        if cache_seconds and body and remembered and remembered[1] == proof and time.monotonic() < remembered[0]:
            return self.get(name)
        stored = str(body.get("hash", "")) if body else self._dummy
        try:
            self._ph.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return None
        if not body:
            return None
        if cache_seconds:
            self._verified[name] = (time.monotonic() + cache_seconds, proof)
        return self.get(name)

    def __len__(self) -> int:
        return len(self._load())


def add_user(path: str | Path, name: str, password: str, *, role: Role, phi: bool = False) -> None:
    """Add or replace a user in the users file, written atomically and owner-only (0600)."""
    if not name or any(c in name for c in ":\n\r\t "):
        raise ConfigError("user name: must be non-empty, without spaces or ':'")
    if len(password) < 12:
        raise ConfigError("password: at least 12 characters")
    if role not in ROLES:
        raise ConfigError(f"--role: one of {', '.join(ROLES)}")
    target = Path(path)
    data: dict[str, Any] = {}
    if target.exists():
        data = yaml.safe_load(target.read_text(encoding="utf-8")) or {}
    users = data.setdefault("users", {})
    users[name] = {"hash": _hasher().hash(password), "role": role, "phi": bool(phi)}
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=".users-", dir=target.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            yaml.safe_dump(data, handle, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

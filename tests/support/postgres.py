"""A private PostgreSQL 15 server for tests: ``initdb`` + ``pg_ctl`` in a temp dir, loopback, stopped by PID.

``initdb`` refuses to run as root, so as root the data directory is handed to
the ``postgres`` user and the tools run through ``runuser -u postgres --``.
The server listens on 127.0.0.1 only, on a free port, with its socket in the
data dir; the test role authenticates with a password (scram-sha-256).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.orthanc import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")


class PostgresServer:
    """One throw-away PostgreSQL server.

    Attributes
    ----------
    url
        ``postgresql://copydicom@127.0.0.1:PORT/copydicom`` (no password: it is in :attr:`password`).
    """

    def __init__(self) -> None:
        # Its own folder directly under the temp dir: the postgres user must be able to reach it, and
        # pytest's tmp_path lives under a root-only (0700) folder.
        self.workdir = Path(tempfile.mkdtemp(prefix="copydicom-pg-"))
        self.data = self.workdir / "data"
        self.port = free_port()
        self.user = "copydicom"
        self.password = secrets.token_urlsafe(16)
        self.database = "copydicom"
        self.pid: int | None = None

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.database}"

    @property
    def url_with_password(self) -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    def _as_owner(self, *argv: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        done = subprocess.run([*prefix, *argv], input=input, text=True, capture_output=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{Path(argv[0]).name} failed: {(done.stderr or done.stdout).strip()[-600:]}")
        return done

    def start(self, timeout: float = 60.0) -> PostgresServer:
        if not (PG_BIN / "initdb").exists():
            raise RuntimeError("PostgreSQL 15 is not installed (apt-get install postgresql-15; scripts/setup.sh)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.workdir, "postgres", "postgres")
            os.chmod(self.workdir, 0o700)
        pwfile = self.workdir / "pw"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            shutil.chown(pwfile, "postgres", "postgres")
        pwfile.chmod(0o600)
        self._as_owner(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", self.user, "--pwfile", str(pwfile),
                       "-A", "scram-sha-256", "-E", "UTF8", "--no-instructions")
        pwfile.unlink()
        self._as_owner(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.workdir / "server.log"), "-w",
            "-t", str(int(timeout)), "-o",
            f"-p {self.port} -k {self.workdir} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
            "start",
        )
        self.pid = int((self.data / "postmaster.pid").read_text().split()[0])
        env = dict(os.environ, PGPASSWORD=self.password)
        deadline = time.monotonic() + timeout
        while True:
            done = subprocess.run(
                [str(PG_BIN.parent / "bin" / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user,
                 self.database], env=env, capture_output=True, text=True, timeout=30)
            if done.returncode == 0 or "already exists" in done.stderr:
                return self
            if time.monotonic() > deadline:
                raise RuntimeError(f"createdb failed: {done.stderr.strip()}")
            time.sleep(0.2)

    def stop(self) -> None:
        """Fast shutdown by PID (SIGINT), then SIGKILL if it lingers."""
        if self.pid is None:
            return
        try:
            os.kill(self.pid, signal.SIGINT)
            for _ in range(100):
                os.kill(self.pid, 0)
                time.sleep(0.1)
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.pid = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PostgresServer:  # noqa: PYI034
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def fresh_database(server: PostgresServer, prefix: str = "t") -> str:
    """Create an empty database on ``server`` and return its URL (no password in it)."""
    import psycopg

    name = f"{prefix}_{secrets.token_hex(6)}"
    with psycopg.connect(server.url, password=server.password, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql://{server.user}@127.0.0.1:{server.port}/{name}"

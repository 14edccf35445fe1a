"""Fixtures for integration tests: two real Orthanc servers, synthetic CT, the daemon as a process.

The servers are started once per session on free loopback ports with
temporary storage (``tests.support.orthanc``) and stopped by PID.
Every test starts with both servers empty.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.support.orthanc import OrthancServer
from tests.support.synthetic import ct_study_files, upload_all

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def orthanc_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[OrthancServer, OrthancServer]]:
    """A source and a destination Orthanc; the destination overwrites re-sent instances.

    ``OverwriteInstances`` makes a re-sent instance produce a second ``NewInstance``
    change at the destination, so "none twice" can be counted.
    """
    base = tmp_path_factory.mktemp("orthanc")
    # entering starts a server, leaving stops it (by PID): the source is stopped also when the
    # destination fails to start
    with OrthancServer(name="SOURCE", workdir=base / "source") as source, \
            OrthancServer(name="DEST", workdir=base / "dest", extra={"OverwriteInstances": True}) as dest:
        yield source, dest


@pytest.fixture
def servers(orthanc_pair: tuple[OrthancServer, OrthancServer]) -> tuple[OrthancServer, OrthancServer]:
    """Both servers, emptied (and running) before the test."""
    for server in orthanc_pair:
        if server.process is None:
            server.start()
        server.clear()
        assert server.instance_ids() == []
    return orthanc_pair


def load_ct(server: OrthancServer, n: int, *, seed: str = "copydicom", rows: int = 64, series: int = 4) -> set[str]:
    """Upload ``n`` small synthetic CT instances; return their Orthanc IDs."""
    ids: set[str] = set()

    def upload(data: bytes) -> None:
        ids.add(server.upload(data)["ID"])

    upload_all(upload, ct_study_files(n, series_per_study=series, rows=rows, cols=rows, seed=seed))
    assert len(ids) == n
    return ids


def changes_of(server: OrthancServer, change_type: str, *, since: int = 0) -> list[dict[str, Any]]:
    """Every change of one type in a server's ``/changes`` feed after ``since``."""
    found: list[dict[str, Any]] = []
    while True:
        page = server.get("/changes", params={"since": since, "limit": 1000})
        found.extend(c for c in page["Changes"] if c["ChangeType"] == change_type)
        if page["Done"] or not page["Changes"]:
            return found
        since = page["Changes"][-1]["Seq"]


def wait_until(predicate: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.1) -> None:
    """Poll ``predicate`` until it is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def write_config(
    tmp_path: Path,
    source: OrthancServer,
    dest: OrthancServer,
    *,
    poll_seconds: float = 0.5,
    workers: int = 4,
    dest_retries: int = 4,
    route: str = "copy",
    wait_for: str = "instance",
    state: Any = None,
) -> Path:
    """A daemon configuration with one changes route from ``source`` to ``dest``.

    ``state``: the ``state:`` value (default ``tmp_path/state.db``; a :class:`LedgerState`'s ``config_value``).
    """
    data = {
        "state": state if state is not None else str(tmp_path / "state.db"),
        "quarantine_dir": str(tmp_path / "quarantine"),
        "workers": workers,
        "endpoints": {
            "src": {"type": "orthanc", "url": source.url, "user": source.user, "password": "${CD_TEST_SRC_PW}"},
            "dst": {
                "type": "orthanc", "url": dest.url, "user": dest.user, "password": "${CD_TEST_DST_PW}",
                "retries": dest_retries,
            },
        },
        "routes": [
            {
                "name": route,
                "source": "src",
                "trigger": {"changes": {"poll_seconds": poll_seconds, "wait_for": wait_for}},
                "destinations": ["dst"],
            }
        ],
    }
    path = tmp_path / "copydicom.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


class DaemonProcess:
    """``copydicom run`` as a child process, stopped by its PID."""

    def __init__(self, config: Path, env: dict[str, str], log_path: Path) -> None:
        self.config = config
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> DaemonProcess:
        assert self.proc is None or self.proc.poll() is not None
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "copydicom.cli", "run", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=str(REPO_ROOT),
            )
        return self

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.running():
            assert self.proc is not None
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def daemon_env(servers: tuple[OrthancServer, OrthancServer]) -> dict[str, str]:
    source, dest = servers
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["CD_TEST_SRC_PW"] = source.password
    env["CD_TEST_DST_PW"] = dest.password
    return env


@pytest.fixture
def daemon(tmp_path: Path, daemon_env: dict[str, str]) -> Iterator[Callable[[Path], DaemonProcess]]:
    """Factory: ``daemon(config_path)`` starts ``copydicom run``; every one is killed at teardown."""
    started: list[DaemonProcess] = []

    def start(config: Path) -> DaemonProcess:
        proc = DaemonProcess(config, daemon_env, tmp_path / "daemon.log").start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()


class LedgerState:
    """Where a daemon test keeps its state: the SQLite file, or a fresh PostgreSQL database (``postgresql``).

    The daemon's ledger-semantics tests run against both stores through the ``ledger_state`` fixture.
    """

    def __init__(self, backend: str, tmp_path: Path, postgres: Any = None) -> None:
        self.backend = backend
        self.path = tmp_path / "state.db"
        self.url: str | None = None
        self.password: str | None = None
        if backend == "postgresql":
            from tests.support.postgres import fresh_database

            self.url = fresh_database(postgres, "daemon")
            self.password = postgres.password

    @property
    def config_value(self) -> Any:
        if self.url is None:
            return str(self.path)
        return {"url": self.url, "password": "${CD_TEST_PG_PW}"}


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_state(request: pytest.FixtureRequest, tmp_path: Path, daemon_env: dict[str, str],
                 monkeypatch: pytest.MonkeyPatch) -> LedgerState:
    """The state of a daemon test, once per store (PostgreSQL: the session's private server)."""
    if request.param == "sqlite":
        return LedgerState("sqlite", tmp_path)
    made = LedgerState("postgresql", tmp_path, request.getfixturevalue("postgres"))
    assert made.password is not None
    daemon_env["CD_TEST_PG_PW"] = made.password  # the daemon's environment (the same dict)
    monkeypatch.setenv("CD_TEST_PG_PW", made.password)  # in-process commands (status)
    return made


def checkpoint_of(state: Path | LedgerState, route: str) -> int | None:
    """The route's checkpoint, read from the ledger (a separate read-only connection)."""
    import sqlite3

    if isinstance(state, LedgerState):
        if state.url is None:
            state = state.path
        else:
            import psycopg

            try:
                with psycopg.connect(state.url, password=state.password, autocommit=True) as conn:
                    row = conn.execute("SELECT seq FROM checkpoints WHERE route=%s", (route,)).fetchone()
            except psycopg.Error:
                return None
            return None if row is None else int(row[0])
    if not state.exists():
        return None
    db = sqlite3.connect(f"file:{state}?mode=ro", uri=True, timeout=10)
    try:
        row = db.execute("SELECT seq FROM checkpoints WHERE route=?", (route,)).fetchone()
    except sqlite3.OperationalError:
        return None
    finally:
        db.close()
    return None if row is None else int(row[0])


def last_seq(server: OrthancServer) -> int:
    return int(requests.get(server.url + "/changes", params={"last": ""}, auth=server.auth, timeout=10).json()["Last"])


def instance_count(server: OrthancServer) -> int:
    return int(server.statistics()["CountInstances"])

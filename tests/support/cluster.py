"""A cluster bench: planner and worker processes (``copydicom run --role ...``) on a private PostgreSQL and
RabbitMQ, between two Orthanc servers; used by the cluster fault tests and ``benchmarks/cluster_bench.py``.

Every process is started with ``subprocess.Popen`` and stopped by its PID.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import yaml

from tests.support.orthanc import OrthancServer
from tests.support.postgres import PostgresServer, fresh_database
from tests.support.rabbitmq import RabbitServer

REPO = Path(__file__).resolve().parents[2]

#: A worker whose source ``fetch`` SIGKILLs its own process for the Orthanc IDs in ``COPYDICOM_TEST_POISON``
#: (the way a decoder crash or the OOM killer ends a worker): the poison-batch test.
POISON_WORKER = """
import os, signal, sys
from copydicom.sources import orthanc as _orthanc
_poison = set(os.environ.get("COPYDICOM_TEST_POISON", "").split(","))
_fetch = _orthanc.OrthancSource.fetch
def fetch(self, ref):
    if ref.source_id in _poison:
        os.kill(os.getpid(), signal.SIGKILL)
    return _fetch(self, ref)
_orthanc.OrthancSource.fetch = fetch
from copydicom.cli import main
sys.exit(main(sys.argv[1:]))
"""


class Proc:
    """One ``copydicom`` process of the bench."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.argv, self.env, self.log_path = argv, env, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                         cwd=str(REPO), start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.running():
            assert self.proc is not None
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self, timeout: float = 15) -> int | None:
        if not self.running():
            return None if self.proc is None else self.proc.returncode
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class ClusterBench:
    """Configuration and processes of one test's cluster (its own database and queue)."""

    def __init__(self, workdir: Path, postgres: PostgresServer, rabbit: RabbitServer, source: OrthancServer,
                 dest: OrthancServer, *, batch_size: int = 25, queue_bound: int = 20, delivery_limit: int = 3,
                 workers: int = 4, route: str = "copy", dest_url: str | None = None,
                 max_concurrency: dict[str, int] | None = None, metrics_port: int | None = None) -> None:
        self.workdir = workdir
        self.postgres = postgres
        self.source, self.dest = source, dest
        self.route = route
        self.db_url = fresh_database(postgres, "cluster")
        self.queue = f"copydicom-{secrets.token_hex(4)}"
        self.procs: list[Proc] = []
        data: dict[str, Any] = {
            "state": {"url": self.db_url, "password": "${CD_TEST_PG_PW}"},
            "quarantine_dir": str(workdir / "quarantine"),
            "workers": workers,
            "cluster": {
                "broker": f"amqp://{rabbit.user}@127.0.0.1:{rabbit.port}//",
                "password": "${CD_TEST_MQ_PW}",
                "queue": self.queue, "batch_size": batch_size, "queue_bound": queue_bound,
                "delivery_limit": delivery_limit, "heartbeat": 1, "retry_cap": 5,
                **({"max_concurrency": max_concurrency} if max_concurrency else {}),
            },
            "endpoints": {
                "src": {"type": "orthanc", "url": source.url, "user": source.user, "password": "${CD_TEST_SRC_PW}"},
                "dst": {"type": "orthanc", "url": dest_url or dest.url, "user": dest.user,
                        "password": "${CD_TEST_DST_PW}"},
            },
            "routes": [{"name": route, "source": "src", "destinations": ["dst"],
                        "trigger": {"changes": {"poll_seconds": 0.5}}}],
        }
        if metrics_port is not None:  # worker i serves on metrics_port + i
            data["metrics"] = {"listen": f"127.0.0.1:{metrics_port}"}
        self.workers_started = 0
        self.config = workdir / "cluster.yaml"
        self.config.write_text(yaml.safe_dump(data))
        self.env = dict(os.environ, PYTHONPATH=str(REPO), CD_TEST_PG_PW=postgres.password,
                        CD_TEST_MQ_PW=rabbit.password, CD_TEST_SRC_PW=source.password,
                        CD_TEST_DST_PW=dest.password)

    def start(self, role: str, *, poison: set[str] | None = None) -> Proc:
        n = len(self.procs)
        env = dict(self.env)
        if role == "worker":
            self.workers_started += 1
            env["COPYDICOM_WORKER_INDEX"] = str(self.workers_started)
        if poison:
            env["COPYDICOM_TEST_POISON"] = ",".join(sorted(poison))
            argv = [sys.executable, "-c", POISON_WORKER]
        else:
            argv = [sys.executable, "-m", "copydicom.cli"]
        proc = Proc([*argv, "run", "--role", role, "--config", str(self.config)], env,
                    self.workdir / f"{role}-{n}.log").start()
        self.procs.append(proc)
        return proc

    def sql(self, query: str, params: Any = ()) -> list[Any]:
        with psycopg.connect(self.db_url, password=self.postgres.password, autocommit=True) as conn:
            return conn.execute(query, params).fetchall()

    def checkpoint(self) -> int | None:
        try:
            rows = self.sql("SELECT seq FROM checkpoints WHERE route = %s", (self.route,))
        except psycopg.Error:
            return None
        return int(rows[0][0]) if rows else None

    def quarantined(self) -> int | None:
        try:
            return int(self.sql("SELECT count(*) FROM quarantine")[0][0])
        except psycopg.Error:  # not created yet (the first process is still starting)
            return None

    def stop_all(self) -> None:
        for proc in self.procs:
            proc.kill()

    def logs(self) -> str:
        return "\n".join(f"--- {p.log_path.name}\n{p.log()[-3000:]}" for p in self.procs)

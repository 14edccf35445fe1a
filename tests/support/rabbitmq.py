"""A private RabbitMQ node for tests: the package's own server script, every path in a temp dir.

The node gets its own name, AMQP port, distribution port and a private
``epmd`` port (``ERL_EPMD_PORT``), so it never meets a system node. RabbitMQ
starts an ``epmd`` daemon on that port, which outlives the node: :meth:`stop`
stops the node by PID and then the ``epmd`` found listening on the private port.
A user with a random password is created; ``guest`` stays loopback-only as
RabbitMQ ships it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.orthanc import free_port

SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
CTL = Path("/usr/lib/rabbitmq/bin/rabbitmqctl")


def _pid_listening(port: int) -> list[int]:
    """PIDs with a TCP socket listening on ``port`` (from /proc, no external tools)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                link = os.readlink(fd)
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    pids.append(int(proc.name))
                    break
        except OSError:
            continue
    return pids


class RabbitServer:
    """One throw-away RabbitMQ node on loopback."""

    def __init__(self, workdir: Path | None = None) -> None:
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="copydicom-rabbit-"))
        self.port = free_port()
        self.dist_port = free_port()
        self.epmd_port = free_port()
        self.node = f"copydicom{self.port}@localhost"
        self.user = "copydicom"
        self.password = secrets.token_urlsafe(16)
        self.vhost = "/"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://{self.user}:{self.password}@127.0.0.1:{self.port}//"

    def env(self) -> dict[str, str]:
        return dict(
            os.environ,
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.workdir / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.workdir / "log"),
            RABBITMQ_PID_FILE=str(self.workdir / "rabbit.pid"),
            RABBITMQ_CONFIG_FILE=str(self.workdir / "rabbitmq"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.workdir / "enabled_plugins"),
            RABBITMQ_ENABLED_PLUGINS="",
            ERL_EPMD_PORT=str(self.epmd_port),
            ERL_EPMD_ADDRESS="127.0.0.1",
            HOME=str(self.workdir),
        )

    def _ctl(self, *args: str) -> str:
        done = subprocess.run([str(CTL), "-n", self.node, *args], env=self.env(), capture_output=True, text=True,
                              timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {args[0]} failed: {done.stderr.strip()[-400:]}")
        return done.stdout

    def start(self, timeout: float = 60.0) -> RabbitServer:
        if not SERVER.exists():
            raise RuntimeError("RabbitMQ is not installed (apt-get install rabbitmq-server; scripts/setup.sh)")
        for sub in ("mnesia", "log"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        (self.workdir / "rabbitmq.conf").write_text(
            "listeners.tcp.default = 127.0.0.1:%d\nloopback_users.guest = true\n"
            "log.console = false\nlog.file.level = warning\n" % self.port)
        (self.workdir / "enabled_plugins").write_text("[].\n")
        (self.workdir / ".erlang.cookie").write_text(secrets.token_hex(16))
        (self.workdir / ".erlang.cookie").chmod(0o400)
        log = open(self.workdir / "server.out", "ab")  # noqa: SIM115 - kept open for the child's life
        self.proc = subprocess.Popen([str(SERVER)], env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("rabbitmq-server exited: " + (self.workdir / "server.out").read_text()[-800:])
            try:
                self._ctl("await_startup", "--timeout", "5")
                break
            except (RuntimeError, subprocess.TimeoutExpired):
                time.sleep(0.5)
        else:
            raise RuntimeError("rabbitmq-server did not start in time")
        self._ctl("add_user", self.user, self.password)
        self._ctl("set_permissions", "-p", self.vhost, self.user, ".*", ".*", ".*")
        return self

    def reachable(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        """Stop the node (its process group, by PID) and then the private epmd."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(10)
        self.proc = None
        for pid in _pid_listening(self.epmd_port):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> RabbitServer:  # noqa: PYI034
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

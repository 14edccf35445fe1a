"""dcmtk peers for DIMSE tests and benchmarks: ``storescp`` as a process, ``storescu`` as a command.

dcmtk comes from the Debian package (``apt-get install dcmtk``); every
process runs with ``TCP_NODELAY=1`` (dcmtk's switch for Nagle's algorithm),
listens on a free loopback port in a temporary directory, and is stopped by
its PID.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.orthanc import free_port


def dcmtk_env() -> dict[str, str]:
    return dict(os.environ, TCP_NODELAY="1")


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise FileNotFoundError(f"{tool} is not installed: run 'apt-get update && apt-get install -y dcmtk'")
    return path


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """Wait until ``proc`` accepts connections on ``127.0.0.1:port``."""
    import socket
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port} after {timeout} s")


def _stop_group(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM a launcher's process group (``storescp --fork`` children too), SIGKILL after 10 s."""
    if proc is not None and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


@dataclass
class StoreSCP:
    """``storescp`` writing every received instance into ``folder``.

    ``accept_all`` makes it accept compressed transfer syntaxes too (``+xa``);
    by default it accepts only the uncompressed ones, like many old PACS.
    """

    aet: str = "STORESCP"
    accept_all: bool = False
    fork: bool = False
    port: int = 0
    folder: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    extra: list[str] = field(default_factory=list)

    def start(self) -> StoreSCP:
        self.port = self.port or free_port()
        self.folder = self.folder or Path(tempfile.mkdtemp(prefix="copydicom-storescp-"))
        self.folder.mkdir(parents=True, exist_ok=True)
        args = [need("storescp"), "-aet", self.aet, "-od", str(self.folder), "-uf"]
        if self.accept_all:
            args.append("+xa")
        if self.fork:
            args.append("--fork")
        args += self.extra + [str(self.port)]
        self.process = subprocess.Popen(args, env=dcmtk_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True)
        wait_listening(self.port, self.process)
        return self

    def files(self) -> list[Path]:
        assert self.folder is not None
        return sorted(p for p in self.folder.iterdir() if p.is_file())

    def stop(self) -> None:
        proc, self.process = self.process, None
        _stop_group(proc)

    def __enter__(self) -> StoreSCP:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def storescu(port: int, files: list[Path], *, calling: str = "STORESCU", called: str = "COPYDICOM",
             verbose: bool = False, propose: tuple[str, ...] = (),
             timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Push ``files`` in one association with ``storescu``.

    ``propose`` adds storescu's transfer syntax options (``-xr`` RLE, ``-xv``
    JPEG 2000 lossless, ``-xd`` deflated...); by default it proposes the
    uncompressed syntaxes only.
    """
    args = [need("storescu"), "-aet", calling, "-aec", called, "-R", *propose]
    if verbose:
        args.append("-v")
    args += ["127.0.0.1", str(port)] + [str(f) for f in files]
    return subprocess.run(args, env=dcmtk_env(), capture_output=True, text=True, timeout=timeout)


@dataclass
class DcmQRSCP:
    """``dcmqrscp``: a query/retrieve SCP (C-FIND, C-GET, C-MOVE) with one storage area, ``aet``.

    ``moves`` are ``{AE title: port}`` of C-MOVE destinations on 127.0.0.1
    (its ``HostTable``). Instances are loaded into it with ``storescu``.
    """

    aet: str = "QRSCP"
    port: int = 0
    folder: Path | None = None
    moves: dict[str, int] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> DcmQRSCP:
        self.port = self.port or free_port()
        self.folder = self.folder or Path(tempfile.mkdtemp(prefix="copydicom-dcmqrscp-"))
        (self.folder / "db").mkdir(parents=True, exist_ok=True)
        hosts = "\n".join(f"{name.lower()} = ({name}, 127.0.0.1, {port})" for name, port in self.moves.items())
        config = self.folder / "dcmqrscp.cfg"
        config.write_text(
            f"NetworkTCPPort = {self.port}\nMaxPDUSize = 16384\nMaxAssociations = 16\n"
            f"HostTable BEGIN\n{hosts}\nHostTable END\nVendorTable BEGIN\nVendorTable END\n"
            f"AETable BEGIN\n{self.aet} {self.folder / 'db'} RW (1000, 1024mb) ANY\nAETable END\n"
        )
        self.process = subprocess.Popen([need("dcmqrscp"), "-c", str(config)], env=dcmtk_env(), cwd=self.folder,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_listening(self.port, self.process)
        return self

    def load(self, files: list[Path]) -> None:
        done = storescu(self.port, files, calling="LOADER", called=self.aet)
        if done.returncode != 0:
            raise RuntimeError(f"storescu into dcmqrscp failed: {done.stderr[-300:]}")

    def stop(self) -> None:
        proc, self.process = self.process, None
        _stop_group(proc)

    def __enter__(self) -> DcmQRSCP:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

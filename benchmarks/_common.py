"""What several benchmarks share: a child process timed with its own peak RSS, and the private servers
plus work folder of one run (started, then stopped by PID and removed whatever happens).

Imported as ``_common`` (a benchmark runs as ``python benchmarks/NAME.py``, so this folder is first on
``sys.path``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def vm_hwm_kb(pid: int) -> int:
    """The process's own peak RSS (``VmHWM`` in ``/proc/PID/status``, kB), or 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return 0
    return 0


@dataclass
class Measured:
    """One child run: wall seconds, its own peak RSS (kB), exit status and output."""

    seconds: float
    peak_kb: int
    returncode: int
    stdout: str
    stderr: str

    @property
    def last_line(self) -> str:
        return self.stdout.strip().splitlines()[-1]


def run_measured(argv: list[str], env: dict[str, str], *, cwd: str | None = None) -> Measured:
    """Run ``python ARGV...`` as a child and sample its ``VmHWM`` every 20 ms while it runs.

    ``ru_maxrss`` of a child is no good here: Linux records the parent's high-water mark into
    it at exec, and a benchmark's parent holds test data.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, *argv], stdout=out, stderr=err, env=env, cwd=cwd)
        peak = 0
        while proc.poll() is None:
            peak = max(peak, vm_hwm_kb(proc.pid))
            time.sleep(0.02)
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode(errors="replace")
    return Measured(seconds, peak, int(proc.returncode), stdout, stderr)


@contextmanager
def running(work: Path, servers: Iterable[Any]) -> Iterator[None]:
    """Start ``servers`` in order; on exit stop and clean up every one and remove ``work``."""
    servers = list(servers)
    try:
        for server in servers:
            server.start()
        yield
    finally:
        for server in servers:
            server.cleanup()
        shutil.rmtree(work, ignore_errors=True)

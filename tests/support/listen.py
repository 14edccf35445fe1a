"""``copydicom listen`` as a process, for DIMSE integration tests and benchmarks (stopped by PID)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support.dcmtk import wait_listening

REPO_ROOT = Path(__file__).resolve().parents[2]


def listener_config(folder: Path, *, port: int, destinations: dict[str, dict[str, Any]],
                    allowed_calling: list[str], **listener: Any) -> Path:
    """Write a configuration with one listener route into ``folder``; return its path."""
    cfg = {
        "state": "state/state.db",
        "endpoints": {
            "rx": {"type": "dimse_listener", "port": port, "allowed_calling": allowed_calling, "spool": "spool",
                   **listener},
            **destinations,
        },
        "routes": [{"name": "received", "source": "rx", "destinations": list(destinations), "workers": 4}],
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "copydicom.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@dataclass
class ListenProcess:
    """One ``copydicom listen --config`` process; its log goes to ``listen.log`` next to the config."""

    config: Path
    port: int
    verbose: int = 0
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> ListenProcess:
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
        log = open(self.config.parent / "listen.log", "ab")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            [sys.executable, "-m", "copydicom", *(["-" + "v" * self.verbose] if self.verbose else []),
             "listen", "--config", str(self.config)],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.config.parent, start_new_session=True,
        )
        log.close()
        wait_listening(self.port, self.process, timeout=30)
        return self

    def kill(self) -> None:
        """SIGKILL: no clean-up at all."""
        proc, self.process = self.process, None
        if proc is not None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def stop(self, timeout: float = 20.0) -> int | None:
        proc, self.process = self.process, None
        if proc is None:
            return None
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                return proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)
                return None
        return proc.returncode

    def log(self) -> str:
        return (self.config.parent / "listen.log").read_text(errors="replace")

"""Console figures: page times with 10,000 quarantine entries, and the daemon's idle CPU with and without it.

Usage::

    python benchmarks/console_bench.py [--entries 10000] [--idle-seconds 20]

Prints, side by side from one run: the median and worst time of each page and
API call (target < 200 ms with 10,000 entries), and the CPU used by an idle
``copydicom run`` (one route whose source has no changes) with and without
``console:`` (target: the console adds < 5 % of one core).
"""

from __future__ import annotations

import argparse
import base64
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from copydicom.console import add_user  # noqa: E402
from copydicom.ledger import Ledger  # noqa: E402
from tests.support.orthanc import OrthancServer, free_port  # noqa: E402

PASSWORD = "benchmark password"


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _config(work: Path, source: OrthancServer, dest: OrthancServer, console_port: int | None) -> Path:
    data: dict[str, object] = {
        "state": str(work / "state.db"),
        "endpoints": {
            "src": {"type": "orthanc", "url": source.url, "user": source.user, "password": source.password},
            "dst": {"type": "orthanc", "url": dest.url, "user": dest.user, "password": dest.password},
        },
        "routes": [{"name": "copy", "source": "src", "destinations": ["dst"],
                    "trigger": {"changes": {"poll_seconds": 10}}}],
    }
    if console_port is not None:
        data["console"] = {"listen": f"127.0.0.1:{console_port}", "users_file": str(work / "users.yaml")}
    path = work / f"config-{console_port}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _idle_cpu(config: Path, seconds: float, console_port: int | None) -> float:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "copydicom.cli", "run", "--config", str(config)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(5)  # start-up and the first poll are not idle time
        if console_port is not None:
            requests.get(f"http://127.0.0.1:{console_port}/login", timeout=5)
        before = _cpu_seconds(proc.pid)
        time.sleep(seconds)
        return (_cpu_seconds(proc.pid) - before) / seconds
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="console-bench-"))
    source, dest = OrthancServer("BENCH_SRC", workdir=work / "src"), OrthancServer("BENCH_DST", workdir=work / "dst")
    source.start()
    dest.start()
    try:
        add_user(work / "users.yaml", "op", PASSWORD, role="operator")
        ledger = Ledger(work / "state.db")
        for i in range(args.entries):
            ledger.quarantine("copy", f"{i:08x}-0000-0000-0000-000000000000", "invalid" if i % 3 else "deid",
                              "InvalidInstance: not readable as DICOM", None)
        ledger.flush()
        ledger.close()
        port = free_port()
        config = _config(work, source, dest, port)
        env = dict(os.environ, PYTHONPATH=str(REPO))
        proc = subprocess.Popen([sys.executable, "-m", "copydicom.cli", "run", "--config", str(config)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        auth = {"Authorization": "Basic " + base64.b64encode(f"op:{PASSWORD}".encode()).decode()}
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(100):
                try:
                    requests.get(base + "/login", timeout=1)
                    break
                except requests.RequestException:
                    time.sleep(0.2)
            session = requests.Session()
            session.headers.update(auth)
            print(f"console pages with {args.entries} quarantine entries ({args.rounds} requests each; target < 200 ms)")
            print(f"  {'page':<28}{'median ms':>10}{'worst ms':>10}")
            for page in ("/", "/quarantine", "/quarantine?code=deid", "/api/routes", "/api/quarantine", "/dose"):
                times = []
                for _ in range(args.rounds):
                    started = time.perf_counter()
                    reply = session.get(base + page, timeout=10)
                    times.append((time.perf_counter() - started) * 1000)
                    assert reply.status_code == 200, (page, reply.status_code)
                print(f"  {page:<28}{statistics.median(times):>10.1f}{max(times):>10.1f}")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(20)
        plain = _idle_cpu(_config(work, source, dest, None), args.idle_seconds, None)
        port = free_port()
        with_console = _idle_cpu(_config(work, source, dest, port), args.idle_seconds, port)
        print(f"idle daemon CPU over {args.idle_seconds:.0f} s (share of one core; target: console adds < 5 %)")
        print(f"  without console {plain * 100:6.2f} %   with console {with_console * 100:6.2f} %   "
              f"added {(with_console - plain) * 100:+.2f} %")
    finally:
        source.cleanup()
        dest.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())

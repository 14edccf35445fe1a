"""Detached test bench for ``playbooks/testbench.yml``: start, load and stop servers by pid file.

``python -m tests.support <command> ...`` ensures one piece of the bench is in
the wanted state and prints one JSON object ``{"changed": bool, ...}`` on stdout, so
an Ansible task can report ``changed`` truthfully (a second run changes nothing).

Commands
--------
orthanc
    A private Orthanc (``OrthancServer``) on given loopback ports, its JSON config
    and storage in ``DIR/NAME``, its PID in ``DIR/NAME.pid``. Left alone if that PID
    runs this config and answers; restarted if the config differs.
s3
    A SeaweedFS S3 gateway (``SeaweedFSServer``) on a given loopback port, data in
    ``DIR/s3``, PID in ``DIR/s3.pid``, and a bucket.
load
    Synthetic CT instances (``synthetic.ct_study_files``) uploaded to an Orthanc
    until it holds them (deterministic UIDs: counted, not duplicated).
stop
    Every ``DIR/*.pid`` process stopped by its PID (SIGTERM, then SIGKILL).

The processes outlive this command (own session, output to a log file).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import requests

from tests.support.orthanc import OrthancServer
from tests.support.seaweedfs import SeaweedFSServer
from tests.support.synthetic import ct_study_files, upload_all


def pid_alive(pid: int) -> bool:
    """True if ``pid`` is a running process (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # Field 3, after the parenthesised command name, is the state letter.
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def running_pid(pid_file: Path, marker: str) -> int | None:
    """The PID in ``pid_file`` if it is alive and its command line contains ``marker``.

    The marker (a config path or working directory) guards against a recycled PID.
    """
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    if pid_alive(pid) and any(marker in arg for arg in _cmdline(pid)):
        return pid
    return None


def stop_pid(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM ``pid``, wait up to ``timeout`` s, then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return
            time.sleep(0.05)


def ensure_orthanc(directory: Path, name: str, http_port: int, dicom_port: int,
                   user: str, password: str, overwrite: bool) -> dict[str, Any]:
    """Ensure a private Orthanc runs with exactly this configuration."""
    server = OrthancServer(name=name, workdir=directory / name.lower(), user=user, password=password,
                           http_port=http_port, dicom_port=dicom_port,
                           extra={"OverwriteInstances": overwrite})
    assert server.workdir is not None
    config_path = server.workdir / "orthanc.json"
    pid_file = directory / f"{name.lower()}.pid"
    wanted = json.dumps(server.config(), indent=2)
    pid = running_pid(pid_file, str(config_path))
    changed = False
    if pid is not None and (not config_path.is_file() or config_path.read_text() != wanted
                            or not _answers(server)):
        stop_pid(pid)
        pid = None
    if pid is None:
        server.start()
        assert server.process is not None
        pid = server.process.pid
        pid_file.write_text(f"{pid}\n")
        changed = True
    return {"changed": changed, "name": name, "pid": pid, "url": server.url,
            "dicom_port": dicom_port, "config": str(config_path)}


def _answers(server: OrthancServer) -> bool:
    try:
        return requests.get(server.url + "/system", auth=server.auth, timeout=2).ok
    except requests.RequestException:
        return False


def ensure_s3(directory: Path, port: int, bucket: str, access_key: str, secret_key: str) -> dict[str, Any]:
    """Ensure a SeaweedFS S3 gateway runs on ``port`` and ``bucket`` exists."""
    workdir = directory / "s3"
    pid_file = directory / "s3.pid"
    state_file = directory / "s3.ports.json"
    pid = running_pid(pid_file, f"-s3.port={port}")
    ports: dict[str, int] = {"s3": port}
    if pid is not None and state_file.is_file():
        ports = {k: int(v) for k, v in json.loads(state_file.read_text()).items()}
    server = SeaweedFSServer(workdir=workdir, access_key=access_key, secret_key=secret_key, ports=ports)
    changed = False
    if pid is not None and not _s3_answers(server):
        stop_pid(pid)
        pid = None
        server.ports = {"s3": port}
    if pid is None:
        old = running_pid(pid_file, str(workdir))
        if old is not None:  # running on another port: replace it
            stop_pid(old)
        server.start()
        assert server.process is not None
        pid = server.process.pid
        pid_file.write_text(f"{pid}\n")
        state_file.write_text(json.dumps(server.ports))
        changed = True
    client = server.client()
    if bucket not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
        server.create_bucket(bucket)
        changed = True
    return {"changed": changed, "pid": pid, "url": server.endpoint_url, "bucket": bucket,
            "destination": server.url(bucket)}


def _s3_answers(server: SeaweedFSServer) -> bool:
    try:
        server.client().list_buckets()
        return True
    except Exception:  # noqa: BLE001 - connection refused, bad signature, ...: not our healthy server
        return False


def load_sample(url: str, user: str, password: str, count: int, patients: int) -> dict[str, Any]:
    """Upload ``count`` synthetic CT instances unless the server already holds that many."""
    auth = (user, password)
    held = len(requests.get(url + "/instances", auth=auth, timeout=30).json())
    changed = False
    if held < count:
        def upload(data: bytes) -> None:
            requests.post(url + "/instances", data=data, auth=auth, timeout=60,
                          headers={"Content-Type": "application/dicom"}).raise_for_status()
        upload_all(upload, ct_study_files(count, patients=patients, rows=64, cols=64))
        held = len(requests.get(url + "/instances", auth=auth, timeout=30).json())
        changed = True
    return {"changed": changed, "instances": held}


def stop_all(directory: Path) -> dict[str, Any]:
    """Stop every process with a pid file in ``directory`` and remove the pid files."""
    stopped: list[int] = []
    for pid_file in sorted(directory.glob("*.pid")):
        pid = running_pid(pid_file, str(directory))
        if pid is not None:  # SIGTERM all first, so they shut down in parallel
            os.kill(pid, signal.SIGTERM)
            stopped.append(pid)
    for pid_file in sorted(directory.glob("*.pid")):
        pid = running_pid(pid_file, str(directory))
        if pid is not None:  # weed's graceful stop waits 15 s for gRPC streams: throw-away data
            stop_pid(pid, timeout=2.0 if pid_file.stem == "s3" else 10.0)
        pid_file.unlink()
    if stopped:  # gRPC sockets weed leaves in the temp dir for its ports
        state_file = directory / "s3.ports.json"
        if state_file.is_file():
            for kind, port in json.loads(state_file.read_text()).items():
                if kind.endswith(".grpc"):
                    sock = Path(tempfile.gettempdir()) / f"seaweedfs-{kind[:-5]}-grpc-{port}.sock"
                    if sock.is_socket():
                        sock.unlink()
    return {"changed": bool(stopped), "stopped": stopped}


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``python -m tests.support``)."""
    parser = argparse.ArgumentParser(prog="python -m tests.support", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    o = sub.add_parser("orthanc", help="ensure a private Orthanc runs")
    o.add_argument("--dir", type=Path, required=True)
    o.add_argument("--name", required=True)
    o.add_argument("--http-port", type=int, required=True)
    o.add_argument("--dicom-port", type=int, required=True)
    o.add_argument("--user", default="orthanc")
    o.add_argument("--password", default="orthanc")
    o.add_argument("--overwrite", action="store_true", help="OverwriteInstances (destinations)")
    s = sub.add_parser("s3", help="ensure a SeaweedFS S3 gateway runs")
    s.add_argument("--dir", type=Path, required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--bucket", default="copydicom")
    s.add_argument("--access-key", default="copydicom-test")
    s.add_argument("--secret-key", default="copydicom-test-secret-0123456789")
    ld = sub.add_parser("load", help="load synthetic CT into an Orthanc")
    ld.add_argument("--url", required=True)
    ld.add_argument("--user", default="orthanc")
    ld.add_argument("--password", default="orthanc")
    ld.add_argument("--count", type=int, default=40)
    ld.add_argument("--patients", type=int, default=2)
    st = sub.add_parser("stop", help="stop every process with a pid file in DIR")
    st.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command in ("orthanc", "s3"):
        args.dir = args.dir.resolve()
        args.dir.mkdir(parents=True, exist_ok=True)
    if args.command == "orthanc":
        result = ensure_orthanc(args.dir, args.name, args.http_port, args.dicom_port,
                                args.user, args.password, args.overwrite)
    elif args.command == "s3":
        result = ensure_s3(args.dir, args.port, args.bucket, args.access_key, args.secret_key)
    elif args.command == "load":
        result = load_sample(args.url.rstrip("/"), args.user, args.password, args.count, args.patients)
    else:
        result = stop_all(args.dir.resolve()) if args.dir.is_dir() else {"changed": False, "stopped": []}
    print(json.dumps(result))
    return 0

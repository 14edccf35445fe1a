"""Listener routes under ``copydicom run`` (the daemon), ``status``, and one-shot ``replicate --src dicom://``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml
from pydicom import dcmread

from tests.integration.dimse.conftest import new_instance_changes, wait_until, write_files
from tests.integration.dimse.test_listener import expected_ids, orthanc_dest
from tests.support.dcmtk import storescu, wait_listening
from tests.support.listen import REPO_ROOT, listener_config
from tests.support.orthanc import OrthancServer, free_port

ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}


def copydicom(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "copydicom", *args], env=ENV, capture_output=True, text=True,
                          timeout=300)


def test_daemon_runs_a_listener_route(tmp_path: Path, dest: OrthancServer) -> None:
    files = write_files(tmp_path / "in", 16)
    port = free_port()
    config = listener_config(tmp_path / "rx", port=port, destinations=orthanc_dest(dest), allowed_calling=["STORESCU"])
    metrics_port = free_port()
    data = yaml.safe_load(config.read_text())
    data["metrics"] = {"listen": f"127.0.0.1:{metrics_port}"}
    config.write_text(yaml.safe_dump(data))
    checked = copydicom("check-config", str(config))
    assert checked.returncode == 0 and "driven by its source" in checked.stdout, checked.stderr
    daemon = subprocess.Popen([sys.executable, "-m", "copydicom", "run", "--config", str(config)], env=ENV,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_listening(port, daemon, timeout=60)  # type: ignore[arg-type]
        pushed = storescu(port, files)
        assert pushed.returncode == 0, pushed.stderr
        wait_until(lambda: len(dest.instance_ids()) == 16, what="16 instances at the destination")
        wait_until(lambda: not list((tmp_path / "rx" / "spool").glob("*.dcm")), what="an empty spool")
        import requests

        scraped = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
        assert 'copydicom_dimse_instances_received_total{listener="rx"} 16.0' in scraped
        assert 'copydicom_dimse_associations_total{listener="rx"} 1.0' in scraped
        assert 'copydicom_dimse_spool_depth{listener="rx"} 0.0' in scraped
        health = requests.get(f"http://127.0.0.1:{metrics_port}/healthz", timeout=30).json()
        assert health["sources"]["rx"] == {"ok": True}  # the listener's probe: its receiver runs
    finally:
        os.kill(daemon.pid, signal.SIGTERM)
        _, err = daemon.communicate(timeout=30)
    assert daemon.returncode == 0, err
    assert set(dest.instance_ids()) == expected_ids(files) and new_instance_changes(dest) == 16
    status = copydicom("status", "--config", str(config))
    assert status.returncode == 0 and "receive spool: 0 waiting" in status.stdout, status.stdout + status.stderr


def test_a_listener_route_takes_no_trigger(tmp_path: Path, dest: OrthancServer) -> None:
    config = listener_config(tmp_path / "rx", port=free_port(), destinations=orthanc_dest(dest), allowed_calling=["A"])
    data = yaml.safe_load(config.read_text())
    data["routes"][0]["trigger"] = "manual"
    config.write_text(yaml.safe_dump(data))
    checked = copydicom("check-config", str(config))
    assert checked.returncode == 2 and "routes[0].trigger" in checked.stderr and "no trigger" in checked.stderr


def test_a_port_in_use_is_a_configuration_error(tmp_path: Path, dest: OrthancServer) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = listener_config(tmp_path / "rx", port=port, destinations=orthanc_dest(dest), allowed_calling=["A"])
        listen = copydicom("listen", "--config", str(config))
    assert listen.returncode == 2 and "cannot listen on 127.0.0.1" in listen.stderr


def test_oneshot_replicate_from_a_dicom_node(tmp_path: Path, dest: OrthancServer) -> None:
    files = write_files(tmp_path / "in", 8, seed="oneshot")
    for f in files:
        dest.upload(f.read_bytes())
    target = OrthancServer(name="TARGET", workdir=tmp_path / "target")
    target.start()
    try:
        day = str(dcmread(files[0], stop_before_pixels=True).StudyDate)
        since = f"{day[:4]}-{day[4:6]}-{day[6:]}"
        args = ["replicate", "--src", f"dicom://DEST@127.0.0.1:{dest.dicom_port}?calling=COPYDICOM",
                "--dest", target.url_with_credentials, "--since", since, "--until", "2025-12-31",
                "--state", str(tmp_path / "state" / "state.db")]
        first = copydicom(*args)
        assert first.returncode == 0, first.stderr
        dates = {str(dcmread(f, stop_before_pixels=True).StudyDate) for f in files}
        wanted = [f for f in files if str(dcmread(f, stop_before_pixels=True).StudyDate) >= day]
        assert first.stdout.strip().splitlines()[-1].startswith(f"replicated={len(wanted)} skipped_existing=0 ")
        assert set(target.instance_ids()) == expected_ids(wanted) and dates
        again = copydicom(*args)
        assert again.stdout.strip().splitlines()[-1].startswith(f"replicated=0 skipped_existing={len(wanted)} ")
        bad = copydicom("replicate", "--src", f"dicom://DEST@127.0.0.1:{dest.dicom_port}", "--dest",
                        target.url_with_credentials, "--since", "yesterday")
        assert bad.returncode == 2 and "YYYY-MM-DD" in bad.stderr
        nodate = copydicom("replicate", "--src", f"dicom://DEST@127.0.0.1:{dest.dicom_port}", "--dest",
                           target.url_with_credentials, "--state", str(tmp_path / "s2" / "state.db"))
        assert nodate.returncode == 2 and "--since" in nodate.stderr
    finally:
        target.cleanup()

"""The Ansible playbooks: testbench.yml run for real (twice, then torn down); deploy.yml linted.

``playbooks/testbench.yml`` is run with ``ansible-playbook -i localhost, -c local`` on free
loopback ports and a temporary bench directory; ``playbooks/deploy.yml`` needs systemd
and root on a real host, so it is checked with ``--syntax-check`` and ``ansible-lint``
(profile production, offline).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import requests

from tests.support.bench import pid_alive
from tests.support.orthanc import free_port

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PLAYBOOKS = REPO_ROOT / "playbooks"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "LC_ALL": "C.UTF-8",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_LINT_OFFLINE": "1",
        "ANSIBLE_LOCALHOST_WARNING": "0",
        "PYTHONPATH": str(REPO_ROOT),
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
    })
    return env


def _playbook(name: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(PLAYBOOKS / name), *extra],
        check=False, cwd=REPO_ROOT, env=_env(), capture_output=True, text=True, timeout=300,
    )


def _recap(output: str) -> dict[str, int]:
    match = re.search(r"^localhost\s*:\s*(.*)$", output, re.MULTILINE)
    assert match, output
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(1))}


@pytest.fixture
def bench_vars(tmp_path: Path) -> Iterator[dict[str, str]]:
    """Free ports and a bench directory; whatever the test leaves running is stopped by PID."""
    values = {
        "bench_dir": str(tmp_path / "bench"),
        "source_http_port": str(free_port()),
        "source_dicom_port": str(free_port()),
        "dest_http_port": str(free_port()),
        "dest_dicom_port": str(free_port()),
        "s3_port": str(free_port()),
        "sample_instances": "12",
        "sample_patients": "2",
    }
    yield values
    subprocess.run([sys.executable, "-m", "tests.support", "stop", "--dir", values["bench_dir"]],
                   check=False, cwd=REPO_ROOT, env=_env(), capture_output=True, timeout=60)


def test_testbench_playbook_up_idempotent_down(bench_vars: dict[str, str]) -> None:
    extra = [arg for key, value in bench_vars.items() for arg in ("-e", f"{key}={value}")]
    first = _playbook("testbench.yml", *extra)
    assert first.returncode == 0, first.stdout + first.stderr
    recap = _recap(first.stdout)
    # directory, source, dest, S3, sample data, bench.json
    assert (recap["failed"], recap["changed"]) == (0, 6)
    src = f"http://127.0.0.1:{bench_vars['source_http_port']}"
    dst = f"http://127.0.0.1:{bench_vars['dest_http_port']}"
    s3 = f"http://127.0.0.1:{bench_vars['s3_port']}"
    assert f"source Orthanc: {src}" in first.stdout
    assert f"destination Orthanc: {dst}" in first.stdout

    auth = ("orthanc", "orthanc")
    assert len(requests.get(src + "/instances", auth=auth, timeout=10).json()) == 12
    assert len(requests.get(src + "/patients", auth=auth, timeout=10).json()) == 2
    assert requests.get(dst + "/instances", auth=auth, timeout=10).json() == []
    assert requests.get(src + "/instances", timeout=10).status_code == 401
    client = boto3.client("s3", endpoint_url=s3, region_name="us-east-1",
                          aws_access_key_id="copydicom-test",
                          aws_secret_access_key="copydicom-test-secret-0123456789")
    assert [b["Name"] for b in client.list_buckets()["Buckets"]] == ["copydicom"]

    bench_dir = Path(bench_vars["bench_dir"])
    described = json.loads((bench_dir / "bench.json").read_text())
    assert (described["source"]["url"], described["dest"]["url"], described["s3"]["url"]) == (src, dst, s3)
    pids = {name: int((bench_dir / f"{name}.pid").read_text()) for name in ("source", "dest", "s3")}
    assert pids == {"source": described["source"]["pid"], "dest": described["dest"]["pid"],
                    "s3": described["s3"]["pid"]}
    assert all(pid_alive(pid) for pid in pids.values())

    second = _playbook("testbench.yml", *extra)
    assert second.returncode == 0, second.stdout + second.stderr
    recap = _recap(second.stdout)
    assert (recap["failed"], recap["changed"]) == (0, 0)
    assert {name: int((bench_dir / f"{name}.pid").read_text()) for name in pids} == pids
    assert len(requests.get(src + "/instances", auth=auth, timeout=10).json()) == 12

    down = _playbook("testbench-down.yml", "-e", f"bench_dir={bench_dir}")
    assert down.returncode == 0, down.stdout + down.stderr
    assert _recap(down.stdout)["changed"] == 1
    assert [pid for pid in pids.values() if pid_alive(pid)] == []
    assert sorted(bench_dir.glob("*.pid")) == []
    with pytest.raises(requests.ConnectionError):
        requests.get(src + "/system", auth=auth, timeout=5)

    again = _playbook("testbench-down.yml", "-e", f"bench_dir={bench_dir}")
    assert again.returncode == 0 and _recap(again.stdout)["changed"] == 0


def test_playbooks_syntax_and_lint() -> None:
    check = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", "localhost,", "--syntax-check",
         *(str(PLAYBOOKS / name) for name in ("testbench.yml", "testbench-down.yml", "deploy.yml"))],
        check=False, cwd=REPO_ROOT, env=_env(), capture_output=True, text=True, timeout=120,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.count("playbook: ") == 3, check.stdout
    lint = subprocess.run(
        [str(BIN / "ansible-lint"), "--offline", "--profile", "production", "--nocolor", "playbooks/"],
        check=False, cwd=REPO_ROOT, env=_env(), capture_output=True, text=True, timeout=300,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert "0 failure(s), 0 warning(s)" in lint.stdout + lint.stderr


def test_deploy_playbook_writes_files_with_owner_only_permissions(tmp_path: Path) -> None:
    """deploy.yml without systemd, packages, user or pip: the files it writes, twice.

    The service user is the running user here (no ``useradd`` in a test); the
    rendered configuration must pass ``copydicom check-config``.
    """
    import getpass
    import stat

    etc = tmp_path / "etc"
    variables = {
        "ansible_python_interpreter": sys.executable,
        "copydicom_manage_service": False,
        "copydicom_user": getpass.getuser(),
        "copydicom_etc": str(etc),
        "copydicom_home": str(tmp_path / "home"),
        "copydicom_venv": str(tmp_path / "venv"),
        "copydicom_systemd_dir": str(tmp_path),
        "copydicom_secrets": {"research.pw": "research-secret"},
        "copydicom_environment": {"PACS_PASSWORD": 'pa"ss'},
    }
    args = ["--skip-tags", "packages,user,install", "-e", json.dumps(variables)]
    first = _playbook("deploy.yml", *args)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "research-secret" not in first.stdout and "pa\"ss" not in first.stdout
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in etc.iterdir()}
    assert modes == {"copydicom.yaml": 0o640, "deid.key": 0o600, "research.pw": 0o600, "environment": 0o600}
    assert stat.S_IMODE(etc.stat().st_mode) == 0o750
    assert (etc / "research.pw").read_text() == "research-secret\n"
    assert (etc / "environment").read_text().splitlines()[-1] == 'PACS_PASSWORD="pa\\"ss"'
    key = (etc / "deid.key").read_text()
    assert re.fullmatch(r"[A-Za-z0-9]{64}\n", key)
    assert (tmp_path / "copydicom.service").read_bytes() == (REPO_ROOT / "systemd/copydicom.service").read_bytes()
    check = subprocess.run(
        [sys.executable, "-m", "copydicom", "check-config", "--offline", str(etc / "copydicom.yaml")],
        check=False, cwd=REPO_ROOT, env={**_env(), "PACS_PASSWORD": "x"}, capture_output=True, text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stdout + check.stderr

    second = _playbook("deploy.yml", *args)
    assert second.returncode == 0, second.stdout + second.stderr
    assert _recap(second.stdout)["changed"] == 0
    assert (etc / "deid.key").read_text() == key


def test_deploy_playbook_installs_the_cluster_units_by_inventory_group(tmp_path: Path) -> None:
    """A host in copydicom_planners and copydicom_workers gets the planner unit and the worker template,
    not the single-process unit (files only: no systemd here)."""
    import getpass

    inventory = tmp_path / "hosts.ini"
    inventory.write_text("[copydicom_planners]\nlocalhost ansible_connection=local\n"
                         "[copydicom_workers]\nlocalhost ansible_connection=local\n")
    variables = {
        "ansible_python_interpreter": sys.executable,
        "copydicom_manage_service": False,
        "copydicom_user": getpass.getuser(),
        "copydicom_etc": str(tmp_path / "etc"),
        "copydicom_home": str(tmp_path / "home"),
        "copydicom_venv": str(tmp_path / "venv"),
        "copydicom_systemd_dir": str(tmp_path),
    }
    done = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(inventory), str(PLAYBOOKS / "deploy.yml"),
         "--skip-tags", "packages,user,install", "-e", json.dumps(variables)],
        check=False, cwd=REPO_ROOT, env=_env(), capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    units = sorted(p.name for p in tmp_path.glob("*.service"))
    assert units == ["copydicom-planner.service", "copydicom-worker@.service"]
    for name in units:
        assert (tmp_path / name).read_bytes() == (REPO_ROOT / "systemd" / name).read_bytes()

"""The console in a real headless Chromium, served by a real daemon between two real Orthanc servers.

Log in, see the overview, retry a quarantined instance, upload a zip with a
patient-map CSV and see the instances arrive at the destination under their
research IDs. Screenshots of each page are saved under the test's temp dir.
"""

from __future__ import annotations

import io
import os
import secrets
import shutil
import signal
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from copydicom.ledger import Ledger
from tests.integration.conftest import REPO_ROOT, DaemonProcess, load_ct, wait_until
from tests.support.orthanc import OrthancServer, free_port
from tests.support.synthetic import ct_dataset, to_bytes

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
PASSWORD = "operator password 1"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager look for a driver on the network
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--window-size=1400,900", f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _config(tmp_path: Path, source: OrthancServer, dest: OrthancServer, port: int) -> Path:
    key = tmp_path / "deid.key"
    key.write_bytes(secrets.token_bytes(32))
    key.chmod(0o600)
    data = {
        "state": str(tmp_path / "state.db"),
        "quarantine_dir": str(tmp_path / "quarantine"),
        "endpoints": {
            "src": {"type": "orthanc", "url": source.url, "user": source.user, "password": "${CD_TEST_SRC_PW}"},
            "dst": {"type": "orthanc", "url": dest.url, "user": dest.user, "password": "${CD_TEST_DST_PW}"},
        },
        "profiles": {"research": {"key_file": str(key)}},
        "routes": [{"name": "research", "source": "src", "destinations": ["dst"], "profile": "research",
                    "trigger": {"changes": {"poll_seconds": 0.5, "start_from": "now"}}}],
        "console": {"listen": f"127.0.0.1:{port}", "users_file": str(tmp_path / "users.yaml"),
                    "audit_log": str(tmp_path / "audit.log")},
    }
    path = tmp_path / "copydicom.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _add_user(config: Path, env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "copydicom.cli", "console", "add-user", "op", "--role", "operator", "--config",
         str(config)], input=PASSWORD + "\n", text=True, capture_output=True, env=env, cwd=str(REPO_ROOT), timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert (config.parent / "users.yaml").stat().st_mode & 0o077 == 0


def _upload_zip(tmp_path: Path) -> Path:
    out = tmp_path / "upload.zip"
    with zipfile.ZipFile(out, "w") as archive:
        for i in range(3):
            ds = ct_dataset(77, 0, 0, i, rows=32, cols=32, seed="upload")
            ds.PatientID = "MRN-UPLOAD-77"
            archive.writestr(f"Doe_Upload/IM{i:04d}", to_bytes(ds))
    return out


def test_console_in_a_browser(servers: tuple[OrthancServer, OrthancServer], tmp_path: Path,
                              daemon_env: dict[str, str], browser: Any) -> None:
    from selenium.webdriver.common.by import By

    source, dest = servers
    port = free_port()
    config = _config(tmp_path, source, dest, port)
    _add_user(config, daemon_env)
    # Four instances are already at the source (before the route's "now"); one of them was quarantined
    # by an earlier run: the operator retries it from the console.
    ids = sorted(load_ct(source, 4, seed="console", rows=32))
    ledger = Ledger(tmp_path / "state.db")
    ledger.quarantine("research", ids[0], "rejected", "RejectedByDestination: HTTP 400 (fixed since)", None)
    ledger.flush()
    ledger.close()
    proc = DaemonProcess(config, daemon_env, tmp_path / "daemon.log").start()
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: _answers(base), timeout=30, what="the console to listen")
        shots = tmp_path / "screenshots"
        shots.mkdir()

        browser.get(base + "/")
        assert browser.current_url.endswith("/login")
        browser.find_element(By.ID, "username").send_keys("op")
        browser.find_element(By.ID, "password").send_keys(PASSWORD)
        browser.find_element(By.ID, "login").click()
        wait_until(lambda: browser.find_elements(By.ID, "routes"), timeout=15, what="the overview")
        assert "research" in browser.find_element(By.ID, "routes").text
        browser.save_screenshot(str(shots / "overview.png"))

        browser.get(base + "/quarantine")
        rows = browser.find_elements(By.CSS_SELECTOR, "#quarantine tbody tr")
        assert len(rows) == 1 and ids[0] in rows[0].text
        browser.save_screenshot(str(shots / "quarantine.png"))
        rows[0].find_element(By.CSS_SELECTOR, "input[type=checkbox]").click()
        browser.find_element(By.ID, "retry").click()
        wait_until(lambda: browser.find_elements(By.ID, "result"), timeout=60, what="the retry result")
        assert "replicated=1" in browser.find_element(By.ID, "result").text
        assert len(dest.instance_ids()) == 1

        csv_path = tmp_path / "map.csv"
        csv_path.write_text("patient_id,research_id\nMRN-UPLOAD-77,RESEARCH-007\n")
        browser.get(base + "/upload")
        browser.find_element(By.ID, "files").send_keys(str(_upload_zip(tmp_path)))
        browser.find_element(By.ID, "csv").send_keys(str(csv_path))
        browser.save_screenshot(str(shots / "upload.png"))
        browser.find_element(By.ID, "send").click()
        wait_until(lambda: "/jobs/" in browser.current_url, timeout=30, what="the job page")

        def job_done() -> bool:
            browser.refresh()
            return browser.find_element(By.ID, "state").text in ("done", "failed")

        wait_until(job_done, timeout=60, what="the upload job", interval=0.5)
        browser.save_screenshot(str(shots / "job.png"))
        assert browser.find_element(By.ID, "state").text == "done"
        assert "replicated=3" in browser.find_element(By.ID, "counts").text
        patients = {source_tag(dest, i) for i in dest.instance_ids()}
        assert "RESEARCH-007" in patients and "MRN-UPLOAD-77" not in patients
        assert len(dest.instance_ids()) == 4
        for name in ("overview", "quarantine", "upload", "job"):
            assert (shots / f"{name}.png").stat().st_size > 5000
    finally:
        proc.signal(signal.SIGTERM)
        proc.wait(15)


def source_tag(server: OrthancServer, instance: str) -> str:
    return str(server.get(f"/instances/{instance}/simplified-tags")["PatientID"])


def _answers(base: str) -> bool:
    import requests

    try:
        return requests.get(base + "/login", timeout=2).status_code == 200
    except requests.RequestException:
        return False

"""A console over a real state database (quarantine entries with files) and three users."""

from __future__ import annotations

import base64
import io
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the console extra is installed by scripts/setup.sh")

from fastapi.testclient import TestClient  # noqa: E402
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402

from copydicom.console import ConsoleConfig, JobManager, StateBackend, add_user, create_app  # noqa: E402
from copydicom.ledger import Ledger  # noqa: E402

PASSWORD = "correct horse battery"
CANARY = "Doe^Canaryname"


def dicom_bytes(patient_name: str = CANARY, patient_id: str = "MRN-CANARY-1") -> bytes:
    ds = Dataset()
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.Modality = "OT"
    ds.StudyDate = "20240102"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


class Runner:
    """An upload runner that records what it was given (the pipeline itself is tested elsewhere)."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, files: list[Path], *, route: str, patient_csv: Path | None,
                 on_outcome: Callable[[int, str, str], None]) -> None:
        self.calls.append({"files": [f.read_bytes()[128:132] for f in files], "route": route,
                           "csv": patient_csv.read_text() if patient_csv else None})
        for i, _ in enumerate(files):
            on_outcome(i, "stored", "")
            if i == 0:  # as the wiring reports a destination that stored it with a warning
                on_outcome(i, "warning", "pacs: STOW-RS warning B000H (coercion of data elements)")


@pytest.fixture()
def env(tmp_path: Path) -> Iterator[dict[str, Any]]:
    users = tmp_path / "users.yaml"
    add_user(users, "viewer", PASSWORD, role="viewer")
    add_user(users, "operator", PASSWORD, role="operator")
    add_user(users, "phiop", PASSWORD, role="operator", phi=True)
    ledger = Ledger(tmp_path / "state.db")
    qdir = tmp_path / "quarantine"
    qdir.mkdir(mode=0o700)
    for i in range(3):
        path = qdir / f"q{i}.dcm"
        path.write_bytes(dicom_bytes())
        ledger.quarantine("research", f"0000000{i}-11111111-22222222-33333333-44444444", "deid",
                          "DeidentificationError: pixel risk", str(path))
    ledger.quarantine("clinical", "/data/import/Doe_Canaryname/IM0001", "invalid", "InvalidInstance: not DICOM", None)
    ledger.flush()
    retried: list[list[Any]] = []

    def retry(entries: list[Any]) -> dict[str, int]:
        retried.append(entries)
        return {"replicated": len(entries), "skipped_existing": 0, "quarantined": 0, "failed": 0}

    backend = StateBackend(ledger, lambda: ["research", "clinical"], retry_fn=retry)
    runner = Runner()
    config = ConsoleConfig(users_file=users, audit_log=tmp_path / "audit.log")
    app = create_app(config, backend, jobs=JobManager(runner), work_dir=tmp_path)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield {"client": client, "ledger": ledger, "retried": retried, "runner": runner, "tmp": tmp_path,
               "audit": tmp_path / "audit.log", "app": app}
    ledger.close()


def basic(user: str, password: str = PASSWORD) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "page has no CSRF token"
    return match.group(1)


def login(client: TestClient, user: str, password: str = PASSWORD) -> str:
    token = csrf_of(client.get("/login").text)
    response = client.post("/login", data={"username": user, "password": password, "csrf_token": token},
                           follow_redirects=False)
    assert response.status_code == 303, response.text
    return csrf_of(client.get("/").text)


def wait_job(client: TestClient, job: str, headers: dict[str, str]) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        body = client.get(f"/api/jobs/{job}", headers=headers).json()
        if body["state"] != "running":
            return dict(body)
        time.sleep(0.05)
    raise AssertionError("job did not finish")

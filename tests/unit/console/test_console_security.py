"""Authentication, CSRF, roles, rate limiting, PHI never shown unless revealed by a phi user."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

from tests.unit.console.conftest import CANARY, PASSWORD, basic, csrf_of, dicom_bytes, login, wait_job

PAGES = ["/", "/quarantine", "/dose", "/upload", "/jobs/x", "/quarantine/abc"]
APIS = ["/api/routes", "/api/quarantine", "/api/jobs/x"]


def test_every_page_without_a_session_redirects_to_login(env: dict[str, Any]) -> None:
    client = env["client"]
    for page in PAGES:
        response = client.get(page, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == "/login", page
    for api in APIS:
        response = client.get(api)
        assert response.status_code == 401, api
        assert response.headers["www-authenticate"].startswith("Basic")
    assert client.post("/api/quarantine/abc/retry").status_code == 401
    assert client.post("/api/uploads").status_code == 401


def test_wrong_password_then_rate_limited(env: dict[str, Any]) -> None:
    client = env["client"]
    token = csrf_of(client.get("/login").text)
    codes = [client.post("/login", data={"username": "operator", "password": "wrong", "csrf_token": token}).status_code
             for _ in range(6)]
    assert codes[:5] == [401] * 5 and codes[5] == 429
    # even the right password is refused while the limit holds
    ok = client.post("/login", data={"username": "operator", "password": PASSWORD, "csrf_token": token},
                     follow_redirects=False)
    assert ok.status_code == 429
    assert client.get("/api/routes", headers=basic("operator")).status_code == 429


def test_login_form_needs_its_csrf_token(env: dict[str, Any]) -> None:
    client = env["client"]
    client.get("/login")
    response = client.post("/login", data={"username": "operator", "password": PASSWORD})
    assert response.status_code == 403


def test_post_without_csrf_is_refused_and_with_it_accepted(env: dict[str, Any]) -> None:
    client = env["client"]
    token = login(client, "operator")
    items = client.get("/api/quarantine").json()["items"]
    ids = [i["id"] for i in items if i["route"] == "research"]
    refused = client.post("/quarantine/action", data={"action": "retry", "ids": ids[:1]})
    assert refused.status_code == 403
    wrong = client.post("/quarantine/action", data={"action": "retry", "ids": ids[:1], "csrf_token": "x" * 40})
    assert wrong.status_code == 403
    assert env["retried"] == []
    assert client.post(f"/api/quarantine/{ids[0]}/retry").status_code == 403  # cookie without X-CSRF-Token
    done = client.post("/quarantine/action", data={"action": "retry", "ids": ids[:2], "csrf_token": token})
    assert done.status_code == 200 and "replicated=2" in done.text
    assert len(env["retried"]) == 1 and len(env["retried"][0]) == 2
    ok = client.post(f"/api/quarantine/{ids[2]}/retry", headers={"X-CSRF-Token": token})
    assert ok.status_code == 200


def test_viewer_cannot_retry_purge_or_upload(env: dict[str, Any]) -> None:
    client = env["client"]
    token = login(client, "viewer")
    item = client.get("/api/quarantine").json()["items"][0]["id"]
    assert client.post("/quarantine/action", data={"action": "purge", "ids": [item], "csrf_token": token}).status_code == 403
    assert client.post(f"/api/quarantine/{item}/retry", headers=basic("viewer")).status_code == 403
    upload = client.post("/api/uploads", headers=basic("viewer"), data={"route": "research"},
                         files={"files": ("a.dcm", dicom_bytes(), "application/dicom")})
    assert upload.status_code == 403
    assert env["retried"] == [] and env["runner"].calls == []
    assert len(env["ledger"].quarantined(None)) == 4


def test_basic_auth_api_needs_no_csrf_and_reports_route_states(env: dict[str, Any]) -> None:
    client = env["client"]
    body = client.get("/api/routes", headers=basic("viewer")).json()
    assert {r["name"] for r in body["routes"]} == {"research", "clinical"}
    assert all(r["state"] in {"running", "idle", "waiting", "backing_off", "error", "stopped"} for r in body["routes"])
    assert all(set(r) >= {"name", "checkpoint", "backlog", "state"} for r in body["routes"])
    item = client.get("/api/quarantine", headers=basic("operator")).json()["items"][0]["id"]
    assert client.post(f"/api/quarantine/{item}/purge", headers=basic("operator")).json() == {"purged": 1}
    assert len(env["ledger"].quarantined(None)) == 3
    audit = [json.loads(line) for line in env["audit"].read_text().splitlines()]
    assert audit[-1]["action"] == "purge" and audit[-1]["user"] == "operator"


def _crawl(client: Any, headers: dict[str, str] | None = None) -> list[str]:
    bodies = []
    for path in ["/", "/quarantine", "/dose", "/upload", "/api/routes", "/api/quarantine"]:
        bodies.append(client.get(path, headers=headers).text)
    for item in client.get("/api/quarantine", headers=headers).json()["items"]:
        bodies.append(client.get(f"/quarantine/{item['id']}", headers=headers).text)
    return bodies


def test_no_patient_data_in_any_response_unless_revealed_by_a_phi_user(env: dict[str, Any]) -> None:
    client = env["client"]
    for user in ("viewer", "operator", "phiop"):
        client.cookies.clear()
        login(client, user)
        for body in _crawl(client):
            assert "Canaryname" not in body and "MRN-CANARY" not in body and "/data/import" not in body
            assert "20240102" not in body
    # the source path of a folder import is shown as a digest
    listing = client.get("/api/quarantine").json()["items"]
    assert any(i["source"].startswith("file:") for i in listing)
    # an operator without phi cannot reveal
    client.cookies.clear()
    token = login(client, "operator")
    item = next(i["id"] for i in listing if i["has_file"])
    assert client.post(f"/quarantine/{item}/reveal", data={"csrf_token": token}).status_code == 403
    client.cookies.clear()
    token = login(client, "phiop")
    shown = client.post(f"/quarantine/{item}/reveal", data={"csrf_token": token})
    assert shown.status_code == 200 and CANARY in shown.text
    audit = [json.loads(line) for line in env["audit"].read_text().splitlines()]
    assert any(a["action"] == "reveal" and a["user"] == "phiop" and a["entry"] == item for a in audit)


def _zip(entries: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return out.getvalue()


def test_zip_with_traversal_or_bomb_is_refused(env: dict[str, Any]) -> None:
    client = env["client"]
    op = basic("operator")
    evil = _zip({"ok.dcm": dicom_bytes(), "../../etc/cron.d/x": dicom_bytes()})
    response = client.post("/api/uploads", headers=op, data={"route": "research"},
                           files={"files": ("x.zip", evil, "application/zip")})
    assert response.status_code == 400 and "'..'" in response.json()["error"]
    absolute = _zip({"/tmp/abs.dcm": dicom_bytes()})
    assert client.post("/api/uploads", headers=op, data={"route": "research"},
                       files={"files": ("y.zip", absolute, "application/zip")}).status_code == 400
    bomb = _zip({"zeros.dcm": b"\0" * (64 << 20)})
    assert len(bomb) < (1 << 20)
    response = client.post("/api/uploads", headers=op, data={"route": "research"},
                           files={"files": ("bomb.zip", bomb, "application/zip")})
    assert response.status_code == 400 and "zip bomb" in response.json()["error"]
    assert env["runner"].calls == []
    leftovers = [p for p in env["tmp"].rglob("*.dcm") if "quarantine" not in p.parts]
    assert leftovers == []


def test_upload_sniffs_dicom_and_runs_a_job_with_the_csv(env: dict[str, Any]) -> None:
    client = env["client"]
    op = basic("operator")
    archive = _zip({"a/1.dcm": dicom_bytes(), "a/2.dcm": dicom_bytes(), "notes.txt": b"hello"})
    response = client.post(
        "/api/uploads", headers=op, data={"route": "research"},
        files=[("files", ("study.zip", archive, "application/zip")),
               ("files", ("loose.dcm", dicom_bytes(), "application/dicom")),
               ("csv", ("map.csv", b"patient_id,research_id\nMRN-CANARY-1,R001\n", "text/csv"))],
    )
    assert response.status_code == 202, response.text
    job = wait_job(client, response.json()["job"], op)
    assert job["state"] == "done"
    assert job["counts"] == {"replicated": 3, "skipped_existing": 0, "quarantined": 0, "failed": 0, "warnings": 1,
                             "refused": 1}
    call = env["runner"].calls[0]
    assert call["route"] == "research" and call["files"] == [b"DICM"] * 3 and "R001" in call["csv"]
    result = client.get(f"/jobs/{job['job']}/result.csv", headers=op).text
    assert "notes" not in result and "study" not in result and "loose" not in result
    assert result.count("replicated") == 3 and "refused" in result
    assert "file-000001,warnings,pacs: STOW-RS warning B000H" in result


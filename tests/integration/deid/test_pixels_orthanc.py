"""Clean Pixel Data through real Orthanc servers: a de-identifying route with ``clean_pixel_data``.

Ultrasound instances with names, IDs and dates burned into the pixels (native, RLE multi-frame, JPEG) go
from a source Orthanc to a destination Orthanc with ``copydicom replicate``; what arrives has no readable
text (Tesseract, for real), Burned In Annotation NO and the Clean Pixel Data code.  The same instances under
a verify-only profile (``ocr_redact: false``) are quarantined with the reason.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import pytest
import requests
import yaml
from pydicom import dcmread

from copydicom.cli import main
from copydicom.ledger import Ledger
from copydicom.stages.pixels._ocr import Ocr
from tests.support.orthanc import OrthancServer
from tests.support.ultrasound import PATIENT, us_dataset, us_frame

pytestmark = pytest.mark.integration

SUMMARY = re.compile(r"^replicated=(\d+) skipped_existing=(\d+) quarantined=(\d+) failed=(\d+) .*seconds=")
OPTIONS = ["retain_long_modified_dates", "clean_structured_content", "clean_pixel_data"]


def _upload(server: OrthancServer) -> None:
    a, _ = us_frame(seed=0)
    b, _ = us_frame(seed=1)
    for i, (frames, encoding) in enumerate([([a], "native"), ([a, b, a], "rle"), ([b], "jpeg")]):
        ds = us_dataset(frames, encoding=encoding, index=i)
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        server.upload(buf.getvalue())


def _config(tmp_path: Path, source: OrthancServer, dest: OrthancServer) -> Path:
    key = tmp_path / "deid.key"
    key.write_bytes(os.urandom(32).hex().encode())
    key.chmod(0o600)
    data = {
        "state": str(tmp_path / "state.db"),
        "quarantine_dir": str(tmp_path / "quarantine"),
        "endpoints": {
            "src": {"type": "orthanc", "url": source.url, "user": source.user, "password": "${CD_TEST_SRC_PW}"},
            "dst": {"type": "orthanc", "url": dest.url, "user": dest.user, "password": "${CD_TEST_DST_PW}"},
        },
        "profiles": {
            "us": {"options": OPTIONS, "key_file": str(key)},
            "verify": {"options": OPTIONS, "key_file": str(key), "ocr_redact": False},
        },
    }
    path = tmp_path / "copydicom.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _run(capsys: pytest.CaptureFixture[str], config: Path, profile: str, state: Path) -> tuple[int, ...]:
    status = main(["replicate", "--config", str(config), "--src", "src", "--dest", "dst", "--profile", profile,
                   "--state", str(state)])
    last = capsys.readouterr().out.rstrip().splitlines()[-1]
    match = SUMMARY.match(last)
    assert match is not None, last
    return (status, *(int(g) for g in match.groups()))


def test_route_with_clean_pixel_data_delivers_text_free_pixels(
    servers: tuple[OrthancServer, OrthancServer], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source, dest = servers
    _upload(source)
    monkeypatch.setenv("CD_TEST_SRC_PW", source.password)
    monkeypatch.setenv("CD_TEST_DST_PW", dest.password)
    config = _config(tmp_path, source, dest)

    # Verify-only: text is found and not masked, so every instance is quarantined with the reason.
    assert _run(capsys, config, "verify", tmp_path / "verify.db") == (1, 0, 0, 3, 0)
    assert dest.instance_ids() == []
    ledger = Ledger(tmp_path / "verify.db")
    try:
        reasons = [q.reason for q in ledger.quarantined()]
    finally:
        ledger.close()
    assert len(reasons) == 3 and all("ocr_redact is off" in r for r in reasons)

    # Cleaning: all three arrive, masked and verified.
    assert _run(capsys, config, "us", tmp_path / "us.db") == (0, 3, 0, 0, 0)
    ocr = Ocr()
    ids = dest.instance_ids()
    assert len(ids) == 3
    for orthanc_id in ids:
        reply = requests.get(f"{dest.url}/instances/{orthanc_id}/file", auth=dest.auth, timeout=30)
        reply.raise_for_status()
        for value in PATIENT.values():
            assert value.encode() not in reply.content
        ds = dcmread(io.BytesIO(reply.content))
        assert ds.BurnedInAnnotation == "NO" and ds.PatientIdentityRemoved == "YES"
        assert "113101" in [item.CodeValue for item in ds.DeidentificationMethodCodeSequence]
        arr = ds.pixel_array
        frames = arr if int(ds.get("NumberOfFrames", 1) or 1) > 1 else arr[None]
        for frame in frames:
            words = [w for w in ocr.read(frame, "MONOCHROME2") if sum(c.isalnum() for c in w.text) >= 2
                     and w.conf >= 50]
            assert words == []
        # Orthanc decodes the stored pixels too (it renders the first frame).
        png = requests.get(f"{dest.url}/instances/{orthanc_id}/preview", auth=dest.auth, timeout=30)
        assert png.status_code == 200 and png.content[:4] == b"\x89PNG"

"""Issue 7, item 9: bad inputs reaching the source, through a plain and a de-identifying route.

Every file of :data:`tests.faults.bad_inputs.BAD_INPUTS` is uploaded to the
source Orthanc (Orthanc may refuse some: that is recorded and the file is
skipped).  One daemon runs two routes from the source to the destination:
``plain`` (no stage) and ``deid`` (the default de-identification profile).
For each route and each accepted file the outcome is one of:

- replicated intact: the plain route's copy is byte-identical to the source
  file; the de-identified copy is at the destination with the keyed SOP
  Instance UID and the same pixel data bytes;
- quarantined with a readable reason (ledger, and ``copydicom quarantine list``).

The daemon never crashes or stalls: it is running at the end, both
checkpoints reach the source's ``Last``, and a good instance uploaded after
the bad ones is replicated by both routes.
"""

from __future__ import annotations

import io
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
import requests
import yaml

from copydicom.stages.deid import load_key
from copydicom.stages.deid._keyed import keyed_uid
from tests.support.orthanc import OrthancServer
from tests.faults.bad_inputs import BAD_INPUTS
from tests.faults.conftest import figure
from tests.integration.conftest import REPO_ROOT, DaemonProcess, checkpoint_of, last_seq, load_ct, wait_until

pytestmark = [
    pytest.mark.faults,
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:The (number of )?PN component:UserWarning"),
]


def _config(tmp_path: Path, source: OrthancServer, dest: OrthancServer, key: Path) -> Path:
    endpoint = {"type": "orthanc", "retries": 1}
    data = {
        "state": str(tmp_path / "state.db"),
        "quarantine_dir": str(tmp_path / "quarantine"),
        "workers": 2,
        "endpoints": {
            "src": {**endpoint, "url": source.url, "user": source.user, "password": "${CD_TEST_SRC_PW}"},
            "dst": {**endpoint, "url": dest.url, "user": dest.user, "password": "${CD_TEST_DST_PW}"},
        },
        "profiles": {"research": {"key_file": str(key)}},
        "routes": [
            {"name": "plain", "source": "src", "destinations": ["dst"],
             "trigger": {"changes": {"poll_seconds": 0.5}}},
            {"name": "deid", "source": "src", "destinations": ["dst"], "profile": "research",
             "trigger": {"changes": {"poll_seconds": 0.5}}},
        ],
    }
    path = tmp_path / "copydicom.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _file(server: OrthancServer, orthanc_id: str) -> bytes:
    reply = requests.get(f"{server.url}/instances/{orthanc_id}/file", auth=server.auth, timeout=120)
    reply.raise_for_status()
    return reply.content


def _pixels(data: bytes) -> bytes | None:
    ds = pydicom.dcmread(io.BytesIO(data), force=True)
    return bytes(ds["PixelData"].value or b"") if "PixelData" in ds else None


def test_bad_inputs_are_replicated_intact_or_quarantined_by_both_routes(
    servers: tuple[OrthancServer, OrthancServer], tmp_path: Path, deid_key: Path,
    daemon: Callable[[Path], DaemonProcess], daemon_env: dict[str, str],
) -> None:
    source, dest = servers
    uploaded: dict[str, tuple[str, bytes]] = {}
    refused: dict[str, str] = {}
    for name, build in BAD_INPUTS.items():
        data = build()
        reply = requests.post(source.url + "/instances", data=data, auth=source.auth, timeout=120,
                              headers={"Content-Type": "application/dicom"})
        if reply.ok:
            uploaded[name] = (reply.json()["ID"], data)
        else:
            refused[name] = f"HTTP {reply.status_code}"
    assert len(uploaded) + len(refused) == len(BAD_INPUTS)
    assert len(uploaded) >= 8, f"Orthanc refused most inputs: {refused}"

    config = _config(tmp_path, source, dest, deid_key)
    state = tmp_path / "state.db"
    proc = daemon(config)

    def both_caught_up() -> bool:
        last = last_seq(source)
        return checkpoint_of(state, "plain") == last and checkpoint_of(state, "deid") == last

    wait_until(both_caught_up, timeout=180, what="both routes to pass the bad inputs", interval=0.25)
    good = load_ct(source, 1, seed="after-bad", rows=32)
    wait_until(both_caught_up, timeout=60, what="a good instance after the bad ones", interval=0.25)
    assert proc.running(), proc.log()

    db = sqlite3.connect(f"file:{state}?mode=ro", uri=True)
    try:
        delivered = {(r, s): t for r, s, t in db.execute("SELECT route, source_id, target_id FROM delivered")}
        quarantined = {(r, s): (c, reason) for r, s, c, reason in
                       db.execute("SELECT route, source_id, code, reason FROM quarantine")}
    finally:
        db.close()
    (good_id,) = good
    assert ("plain", good_id) in delivered and ("deid", good_id) in delivered

    key = load_key(deid_key)
    at_dest = set(dest.instance_ids())
    outcomes: dict[str, dict[str, str]] = {}
    for name, (source_id, data) in uploaded.items():
        outcomes[name] = {}
        stored = _file(source, source_id)
        for route in ("plain", "deid"):
            if (route, source_id) in quarantined:
                code, reason = quarantined[(route, source_id)]
                assert code and len(reason) > 10 and ":" in reason, (name, route, reason)
                outcomes[name][route] = f"quarantined ({code})"
                continue
            assert (route, source_id) in delivered, f"{name} on route {route}: neither delivered nor quarantined"
            target = delivered[(route, source_id)]
            assert target in at_dest, (name, route)
            copy = _file(dest, target)
            if route == "plain":
                assert copy == stored, f"{name}: the plain copy differs from the source file"
            else:
                ds = pydicom.dcmread(io.BytesIO(copy), force=True)
                original = pydicom.dcmread(io.BytesIO(stored), force=True)
                assert ds.SOPInstanceUID == keyed_uid(key, original.SOPInstanceUID), name
                assert ds.DeidentificationMethodCodeSequence[0].CodeValue == "113100", name
                assert _pixels(copy) == _pixels(stored), f"{name}: pixel data changed by de-identification"
            outcomes[name][route] = "replicated"

    listing = subprocess.run(
        [sys.executable, "-m", "copydicom.cli", "quarantine", "list", "--config", str(config)],
        env=daemon_env, capture_output=True, text=True, timeout=60, cwd=str(REPO_ROOT), check=False,
    )
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.rstrip().splitlines()[-1] == f"{len(quarantined)} quarantined"
    for (route, source_id), (code, _) in quarantined.items():
        assert any(line.startswith(f"{route}\t{source_id}\t{code}\t") for line in listing.stdout.splitlines())

    proc.signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    log = proc.log()
    assert "Traceback" not in log
    for name, result in sorted(outcomes.items()):
        figure("bad-input", input=name, plain=result["plain"].replace(" ", ""), deid=result["deid"].replace(" ", ""))
    for name, why in sorted(refused.items()):
        figure("bad-input", input=name, refused_by_orthanc=why.replace(" ", ""))

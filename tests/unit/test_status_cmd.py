"""``copydicom status``: quarantine reasons grouped, index spool sizes, credentials masked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from copydicom.cli import main
from copydicom.ledger import Ledger
from copydicom.sinks.spool import Spool
from tests.unit.sinks.docs_helpers import instance_doc

ROUTE = "oneshot:http://alice:hunter2@127.0.0.1:8042>dst"


def _state(tmp_path: Path, *, spool_docs: int) -> Path:
    path = tmp_path / "state.db"
    ledger = Ledger(path)
    ledger.record_delivered("dst", "t1", "s1", ROUTE, "stored")
    ledger.record_delivered("dst", "t2", "s2", ROUTE, "stored")
    ledger.record_delivered("dst", "t3", "s3", ROUTE, "existing")
    ledger.flush()
    ledger.quarantine(ROUTE, "s4", "invalid_instance", "InvalidInstance: truncated", None)
    ledger.quarantine(ROUTE, "s5", "invalid_instance", "InvalidInstance: no pixel data", None)
    ledger.quarantine(ROUTE, "s6", "rejected", "RejectedByDestination: 400", None)
    ledger.close()
    if spool_docs:
        spool = Spool(path)  # the daemon keeps the spool in the ledger's database
        spool.enqueue("es", [instance_doc(i) for i in range(spool_docs)])
        spool.enqueue("splunk", [instance_doc(i) for i in range(2)])
        spool.close()
    return path


def test_text_shows_reasons_spool_and_masks_credentials(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = _state(tmp_path, spool_docs=3)
    assert main(["status", "--state", str(state)]) == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out
    assert out.splitlines() == [
        f"state: {state}",
        "route oneshot:http://alice:***@127.0.0.1:8042>dst",
        "  checkpoint: None",
        "  instances: stored: 2   already present: 1   quarantined: 3",
        "    image destination dst: stored 2, already present 1",
        "    quarantine invalid_instance: 2",
        "    quarantine rejected: 1",
        "quarantine: oldest entry 0s old",
        "index spool (documents waiting):",
        "  es: 3",
        "  splunk: 2",
    ]


def test_json_has_spool_sizes_and_masks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = _state(tmp_path, spool_docs=4)
    assert main(["status", "--state", str(state), "--json"]) == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out
    data: dict[str, Any] = json.loads(out)
    assert data["index_spool"] == {"es": 4, "splunk": 2}
    (row,) = data["routes"]
    assert row["route"] == "oneshot:http://alice:***@127.0.0.1:8042>dst"
    assert row["quarantine_reasons"] == {"invalid_instance": 2, "rejected": 1}


def test_no_spool_tables_means_empty(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = _state(tmp_path, spool_docs=0)
    assert main(["status", "--state", str(state)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "index spool: empty"

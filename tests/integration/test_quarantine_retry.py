"""``quarantine retry`` against real Orthanc servers: keeps the entry until delivered, keeps the
route's indexes, takes ``--key-file``."""

from __future__ import annotations

import base64
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from copydicom import app as app_module
from copydicom.cli import main
from copydicom.errors import DestinationUnavailable, RejectedByDestination
from copydicom.model import Destination, Instance, StoreOutcome
from tests.integration.conftest import load_ct
from tests.integration.test_replicate_oneshot import SUMMARY
from tests.support.orthanc import OrthancServer

pytestmark = pytest.mark.integration


class _Refuse:
    """Wraps a destination: ``error`` for the instance whose *source* ID is ``bad`` (None: pass)."""

    error: Exception | None = None

    def __init__(self, inner: Destination, bad: str) -> None:
        self.inner = inner
        self.name = inner.name
        self.bad = bad

    def has(self, target_ids: Any, *, series_hint: str | None = None) -> set[str]:
        return self.inner.has(target_ids, series_hint=series_hint)

    def store(self, instance: Instance) -> StoreOutcome:
        if instance.ref.source_id == self.bad and _Refuse.error is not None:
            raise _Refuse.error
        return self.inner.store(instance)

    def close(self) -> None:
        self.inner.close()


def _summary(capsys: pytest.CaptureFixture[str]) -> tuple[str, ...]:
    match = SUMMARY.match(capsys.readouterr().out.splitlines()[-1])
    assert match is not None
    return match.groups()


def test_retry_keeps_entry_until_delivered_with_indexes_and_key_file(
    servers: tuple[OrthancServer, OrthancServer], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source, dest = servers
    ids = sorted(load_ct(source, 4, series=1))
    bad = ids[1]
    real = app_module.make_destination
    monkeypatch.setattr(app_module, "make_destination",
                        lambda t, e, *, pool_size: _Refuse(real(t, e, pool_size=pool_size), bad))
    key = tmp_path / "deid.key"
    key.write_bytes(base64.b64encode(os.urandom(32)))
    key.chmod(0o600)
    monkeypatch.delenv("COPYDICOM_DEID_KEY_FILE", raising=False)
    state, index = tmp_path / "state.db", tmp_path / "index.db"
    endpoints = ["--src", source.url_with_credentials, "--dest", dest.url_with_credentials,
                 "--index", f"sqlite:///{index}", "--profile", "default", "--key-file", str(key)]
    route = ["--route", "research"]

    _Refuse.error = RejectedByDestination("HTTP 400: {\n \"Message\": \"refused\"\n}")
    assert main(["replicate", *endpoints, *route, "--state", str(state)]) == 1
    assert _summary(capsys) == ("3", "0", "1", "0")
    db = sqlite3.connect(state)
    ((path, reason),) = db.execute("SELECT path, reason FROM quarantine").fetchall()
    db.close()
    assert "\n" not in reason and Path(path).exists()

    retry = ["quarantine", "retry", "--state", str(state), *endpoints]
    # The destination is down: a retryable failure keeps the entry and its bytes.
    _Refuse.error = DestinationUnavailable("503 from the test")
    assert main(retry) == 1
    assert _summary(capsys) == ("0", "0", "0", "1")
    assert main(["quarantine", "list", "--state", str(state)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "1 quarantined"
    assert Path(path).exists()

    # Back: delivered to the destination AND indexed (the route keeps its index), entry and bytes gone.
    _Refuse.error = None
    assert main(retry) == 0
    assert _summary(capsys) == ("1", "0", "0", "0")
    assert len(dest.instance_ids()) == 4
    assert main(["quarantine", "list", "--state", str(state)]) == 0
    assert capsys.readouterr().out.splitlines() == ["0 quarantined"]
    assert not Path(path).exists()
    idx = sqlite3.connect(index)
    try:
        assert idx.execute("SELECT count(*) FROM instances").fetchone() == (4,)
    finally:
        idx.close()

"""Same SOP Instance UID, new content (issue 11 item 3), against real Orthanc servers.

The source runs with ``OverwriteInstances: true`` and receives a corrected version of an instance that
was already delivered. Regression: the destination kept the old bytes and the run said
``skipped_existing=1``. Now the change is noticed where the source tells (a new change on a delivered
instance whose MD5 attachment differs) and the route's ``on_changed_instance`` policy applies.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from copydicom.app import build_route
from copydicom.config import parse_config
from copydicom.ledger import Ledger
from copydicom.pipeline import Summary
from copydicom.runner import ChangesRunner
from copydicom.model import ChangeFeedSource
from tests.support.orthanc import OrthancServer
from tests.support.synthetic import ct_dataset, to_bytes

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def overwriting_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[OrthancServer, OrthancServer]]:
    """A source that overwrites re-sent instances, and a destination that does not (Orthanc's default)."""
    base = tmp_path_factory.mktemp("changed")
    with OrthancServer(name="OVSRC", workdir=base / "src", extra={"OverwriteInstances": True}) as source, \
            OrthancServer(name="OVDST", workdir=base / "dst") as dest:
        yield source, dest


def _route(source: OrthancServer, dest: OrthancServer, state: Path, policy: str | None) -> tuple[ChangesRunner, Ledger, object]:
    route = {"name": "feed", "source": "src", "destinations": ["dst"], "trigger": {"changes": {"poll_seconds": 1}}}
    if policy is not None:
        route["on_changed_instance"] = policy
    config = parse_config({
        "state": str(state),
        "endpoints": {
            "src": {"type": "orthanc", "url": source.url, "user": source.user, "password": source.password},
            "dst": {"type": "orthanc", "url": dest.url, "user": dest.user, "password": dest.password},
        },
        "routes": [route],
    })
    ledger = Ledger(config.state)
    runtime = build_route(config.routes[0], config, ledger)
    assert isinstance(runtime.source, ChangeFeedSource)
    return ChangesRunner("feed", runtime.source, runtime.pipeline, ledger), ledger, runtime


def _versions(seed: int) -> tuple[bytes, bytes]:
    ds = ct_dataset(seed, 0, 0, 0, rows=8, cols=8)
    first = to_bytes(ds)
    ds.StudyDescription = "CORRECTED REPORT"
    return first, to_bytes(ds)


def _dest_md5(dest: OrthancServer, instance_id: str) -> str:
    reply = requests.get(f"{dest.url}/instances/{instance_id}/attachments/dicom/md5", auth=dest.auth, timeout=30)
    reply.raise_for_status()
    return reply.text.strip().strip('"')


def _poll(runner: ChangesRunner) -> Summary:
    return runner.poll()


@pytest.mark.parametrize("policy", [None, "report"])
def test_report_counts_the_change_and_keeps_the_delivered_copy(
    overwriting_pair: tuple[OrthancServer, OrthancServer], tmp_path: Path, policy: str | None
) -> None:
    source, dest = overwriting_pair
    source.clear()
    dest.clear()
    first, corrected = _versions(31)
    runner, ledger, runtime = _route(source, dest, tmp_path / "state.db", policy)
    try:
        instance_id = source.upload(first)["ID"]
        assert _poll(runner).counts["stored"] == 1
        assert source.upload(corrected)["ID"] == instance_id  # same SOP Instance UID, new bytes
        summary = _poll(runner)
        assert (summary.changed, summary.counts["existing"], summary.counts["stored"]) == (1, 1, 0)
        assert " failed=0 changed=1 seconds=" in summary.line()
        assert not summary.ok  # the destination still differs from the source
        assert _dest_md5(dest, instance_id) == hashlib.md5(first).hexdigest()
        ledger.flush()
        assert ledger.counts()["feed"].get("changed") == 1  # what `status` shows
        assert _poll(runner).changed == 0  # no new change: nothing more to say
    finally:
        runtime.close()  # type: ignore[attr-defined]
        ledger.close()


def test_resend_replaces_the_instance_at_the_destination(
    overwriting_pair: tuple[OrthancServer, OrthancServer], tmp_path: Path
) -> None:
    source, dest = overwriting_pair
    source.clear()
    dest.clear()
    first, corrected = _versions(32)
    runner, ledger, runtime = _route(source, dest, tmp_path / "state.db", "resend")
    try:
        instance_id = source.upload(first)["ID"]
        assert _poll(runner).counts["stored"] == 1
        source.upload(corrected)
        summary = _poll(runner)
        assert (summary.changed, summary.counts["stored"]) == (1, 1) and summary.ok
        assert _dest_md5(dest, instance_id) == hashlib.md5(corrected).hexdigest()  # DELETE then POST
        assert dest.instance_ids() == [instance_id]
        again = _poll(runner)  # delivered MD5 now matches: nothing changed, nothing sent
        assert (again.changed, again.counts["stored"]) == (0, 0)
    finally:
        runtime.close()  # type: ignore[attr-defined]
        ledger.close()

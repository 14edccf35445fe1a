"""Issue 7, item 7: outages of the destination, the index and the source while the daemon runs.

One daemon (a real process) runs a route from the source Orthanc to the
destination Orthanc and a (fake, in-process) Elasticsearch index.  In turn:

1. the destination Orthanc is stopped for 30 s while instances arrive;
2. the index answers 503 to its next requests while instances arrive
   (documents wait in the durable spool);
3. the source Orthanc is stopped for a while, then started again.

After each, the daemon recovers by itself (it is never restarted): the
destination holds exactly the source's instances, none received twice, the
index holds one document per instance indexed once, and the checkpoint
never moved backwards.  Recovery seconds are printed.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.fake_elasticsearch import FakeElasticsearch
from tests.support.orthanc import OrthancServer
from tests.faults.conftest import figure, route_config
from tests.integration.conftest import (
    DaemonProcess,
    changes_of,
    checkpoint_of,
    last_seq,
    load_ct,
    wait_until,
)

pytestmark = [pytest.mark.faults, pytest.mark.integration]

OUTAGE_SECONDS = 30.0
#: Consecutive bulk requests answered 503 (the spool backs off with jitter below 5, 10, then 20 s, on the
#: suite's tenfold backoff clock: tests/faults/conftest.py TIME_SCALE).
INDEX_FAILURES = 2


def test_destination_index_and_source_outages_recover_by_themselves(
    servers: tuple[OrthancServer, OrthancServer], tmp_path: Path, daemon: Callable[[Path], DaemonProcess],
) -> None:
    source, dest = servers
    dest_start = last_seq(dest)
    state = tmp_path / "state.db"
    es = FakeElasticsearch()
    es.start()
    try:
        config = route_config(
            tmp_path, source, dest, workers=2,
            indexes={"es": {"type": "elasticsearch", "url": es.url, "index": "dicom", "max_retries": 0}},
        )
        seen: list[int] = []

        def caught_up() -> bool:
            cp = checkpoint_of(state, "copy")
            if cp is not None:
                seen.append(cp)
            src = set(source.instance_ids())
            return (cp == last_seq(source) and set(dest.instance_ids()) == src
                    and src <= set(es.docs("dicom")))

        expected = load_ct(source, 10, seed="outage-0", rows=32)
        proc = daemon(config)
        wait_until(caught_up, timeout=60, what="the first instances")

        # 1. The destination is down for 30 s while instances arrive.
        dest.stop()
        try:
            expected |= load_ct(source, 20, seed="outage-dest", rows=32)
            down_until = time.monotonic() + OUTAGE_SECONDS
            while time.monotonic() < down_until:
                assert proc.running(), proc.log()
                cp = checkpoint_of(state, "copy")
                if cp is not None:
                    seen.append(cp)
                time.sleep(0.5)
            assert "retrying in" in proc.log()
        finally:
            dest.start()
        back = time.monotonic()
        wait_until(caught_up, timeout=120, what="recovery after the destination outage", interval=0.2)
        dest_recovery = time.monotonic() - back

        # 2. The index answers 503 for a while: documents wait in the spool.
        es.fail_next(503, INDEX_FAILURES)
        expected |= load_ct(source, 20, seed="outage-index", rows=32)
        wait_until(lambda: not es._fail, timeout=120, what="the index to answer its 503s")
        back = time.monotonic()
        wait_until(caught_up, timeout=120, what="recovery after the index outage", interval=0.2)
        index_recovery = time.monotonic() - back

        # 3. The source is down for a while.
        source.stop()
        try:
            time.sleep(8)
            assert proc.running(), proc.log()
        finally:
            source.start()
        expected |= load_ct(source, 10, seed="outage-source", rows=32)
        back = time.monotonic()
        wait_until(caught_up, timeout=120, what="recovery after the source outage", interval=0.2)
        source_recovery = time.monotonic() - back

        proc.signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        log = proc.log()
        docs = es.docs("dicom")
        instance_docs = {k for k, v in docs.items() if v.get("doc_type") == "instance"}
        reindexed = sum(1 for (index, doc_id), n in es.versions.items() if index == "dicom" and n > 1)
    finally:
        es.stop()

    received = [c["ID"] for c in changes_of(dest, "NewInstance", since=dest_start)]
    resent = len(received) - len(set(received))
    figure(
        "outages", instances=len(expected), dest_outage_s=OUTAGE_SECONDS,
        dest_recovery_s=f"{dest_recovery:.1f}", index_503s=INDEX_FAILURES, index_recovery_s=f"{index_recovery:.1f}",
        source_outage_s=8, source_recovery_s=f"{source_recovery:.1f}", resends=resent, reindexed=reindexed,
    )
    assert set(dest.instance_ids()) == expected
    assert resent == 0 and sorted(received) == sorted(expected)
    assert instance_docs == expected
    assert reindexed == 0
    assert seen == sorted(seen), "the checkpoint moved backwards"
    assert "Traceback" not in log

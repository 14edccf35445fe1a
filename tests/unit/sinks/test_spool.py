from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from copydicom.errors import ConfigError, DocumentsRejected, IndexUnavailable
from copydicom.sinks.spool import Spool, SpooledIndex
from tests.unit.sinks.docs_helpers import instance_doc


class FlakySink:
    name = "flaky"

    def __init__(self) -> None:
        self.down = False
        self.received: list[str] = []
        self.reject: set[str] = set()
        self.config_error = False

    def send(self, documents: list[dict[str, Any]]) -> None:
        if self.config_error:
            raise ConfigError("bad token")
        if self.down:
            raise IndexUnavailable("down")
        bad = {d["_id"]: "mapper_parsing_exception" for d in documents if d["_id"] in self.reject}
        self.received.extend(d["_id"] for d in documents if d["_id"] not in bad)
        if bad:
            raise DocumentsRejected("refused", rejected=bad)

    def close(self) -> None:
        pass


@pytest.fixture()
def spool(tmp_path: Path) -> Spool:
    s = Spool(tmp_path / "spool.db")
    yield s  # type: ignore[misc]
    s.close()


def test_down_then_up_in_order_without_duplicates(spool: Spool, tmp_path: Path) -> None:
    sink = FlakySink()
    idx = SpooledIndex(sink, spool, batch_size=3)
    docs = [instance_doc(i) for i in range(10)]
    sink.down = True
    assert idx.submit(docs[:6]) == 6
    result = idx.flush()
    assert (result.delivered, result.pending, result.error) == (0, 6, "down")
    idx.submit(docs[6:])
    # the process restarts: a new Spool on the same file still holds everything
    spool.close()
    spool2 = Spool(tmp_path / "spool.db")
    idx2 = SpooledIndex(sink, spool2, batch_size=3)
    sink.down = False
    result = idx2.flush()
    assert (result.delivered, result.pending, result.error) == (10, 0, None)
    assert sink.received == [d["_id"] for d in docs]
    # re-running sends nothing new
    assert idx2.submit(docs) == 0
    assert idx2.flush().delivered == 0
    assert idx2.already_indexed([docs[0]["_id"], "other"]) == {docs[0]["_id"]}
    # changed content is sent again
    changed = dict(docs[0], SeriesDescription="Changed")
    assert idx2.submit([changed]) == 1
    assert idx2.flush().delivered == 1
    assert sink.received.count(docs[0]["_id"]) == 2
    spool2.close()


def test_rejected_documents_are_set_aside(spool: Spool) -> None:
    sink = FlakySink()
    idx = SpooledIndex(sink, spool, batch_size=5)
    docs = [instance_doc(i) for i in range(5)]
    sink.reject = {docs[1]["_id"]}
    idx.submit(docs)
    result = idx.flush()
    assert (result.delivered, result.rejected, result.pending) == (4, 1, 0)
    assert spool.rejected("flaky") == {docs[1]["_id"]: "mapper_parsing_exception"}
    # the others were sent twice (once with the refused one, once after): at-least-once
    assert sorted(set(sink.received)) == sorted(d["_id"] for i, d in enumerate(docs) if i != 1)


def test_config_error_propagates_and_keeps_documents(spool: Spool) -> None:
    sink = FlakySink()
    sink.config_error = True
    idx = SpooledIndex(sink, spool)
    idx.submit([instance_doc(1)])
    with pytest.raises(ConfigError):
        idx.flush()
    assert spool.pending("flaky") == 1


def test_send_never_raises_when_index_down(spool: Spool) -> None:
    sink = FlakySink()
    sink.down = True
    idx = SpooledIndex(sink, spool)
    idx.send([instance_doc(1)])
    assert spool.pending("flaky") == 1


def test_background_flusher(spool: Spool) -> None:
    import threading

    sink = FlakySink()
    done = threading.Event()
    original = sink.send

    def send(documents: list[dict[str, Any]]) -> None:
        original(documents)
        done.set()

    sink.send = send  # type: ignore[method-assign]
    idx = SpooledIndex(sink, spool)
    idx.submit([instance_doc(1)])
    idx.start(interval=0.01)
    assert done.wait(10)
    idx.close()
    assert sink.received == [instance_doc(1)["_id"]]
    assert spool.pending("flaky") == 0

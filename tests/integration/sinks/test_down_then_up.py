"""Index down then up through the real clients and the spool: no loss, no duplicates."""

from __future__ import annotations

from pathlib import Path

import pytest

from copydicom.sinks.elasticsearch import ElasticsearchConfig, ElasticsearchIndex
from copydicom.sinks.splunk import SplunkConfig, SplunkIndex
from copydicom.sinks.spool import Spool, SpooledIndex
from tests.support.fake_elasticsearch import FakeElasticsearch
from tests.support.fake_splunk import FakeSplunk
from tests.unit.sinks.docs_helpers import instance_doc

pytestmark = pytest.mark.integration


def test_elasticsearch_down_then_up(tmp_path: Path) -> None:
    fake = FakeElasticsearch().start()
    port = fake.port
    try:
        sink = ElasticsearchIndex(ElasticsearchConfig.from_url(f"es+http://127.0.0.1:{port}/dicom?max_retries=0"))
        idx = SpooledIndex(sink, Spool(tmp_path / "spool.db"), batch_size=4)
        docs = [instance_doc(i) for i in range(10)]
        idx.submit(docs[:5])
        assert idx.flush().delivered == 5
        fake.stop()
        idx.submit(docs[5:])
        result = idx.flush()
        assert (result.delivered, result.pending) == (0, 5)
        fake.start(port)
        result = idx.flush()
        assert (result.delivered, result.pending, result.error) == (5, 0, None)
        assert set(fake.docs("dicom")) == {d["_id"] for d in docs}
        bulk_before = fake.bulk_requests
        idx.submit(docs)
        assert idx.flush().delivered == 0
        assert fake.bulk_requests == bulk_before
    finally:
        fake.stop()


def test_splunk_busy_then_back(tmp_path: Path) -> None:
    fake = FakeSplunk(token="t").start()
    try:
        cfg = SplunkConfig(
            name="splunk", hec_url=fake.hec_url, hec_token="t", index="main", max_retries=1, backoff=0.01,
            batch_size=3)
        idx = SpooledIndex(SplunkIndex(cfg), Spool(tmp_path / "spool.db"), batch_size=3)
        docs = [instance_doc(i) for i in range(8)]
        fake.busy_next(100)
        idx.submit(docs)
        assert idx.flush().pending == 8
        fake.busy_next(-fake._busy)
        result = idx.flush()
        assert (result.delivered, result.pending) == (8, 0)
        assert [e["event"]["doc_id"] for e in fake.events] == [d["_id"] for d in docs]
        idx.submit(docs)
        idx.flush()
        assert len(fake.events) == 8
    finally:
        fake.stop()

#!/usr/bin/env python3
"""Index sink throughput: documents/s for 10,000 instance documents into each sink.

Sinks: the embedded SQLite index (direct and behind the durable spool), Elasticsearch
(official client, ``streaming_bulk``) and Splunk (HEC) against the protocol fakes on
loopback.  The fakes are in-process Python servers, so the ES/Splunk figures measure
the client side plus a slow server, not a real cluster.  The reference, measured in
the same run, is serialising the documents to JSON once (the least any sink must do).

Run: ``PYTHONPATH=. /work/venv/bin/python benchmarks/index_bench.py [N]``
"""

from __future__ import annotations

import copy
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from copydicom.model import Identity
from copydicom.sinks.documents import instance_document
from copydicom.sinks.elasticsearch import ElasticsearchConfig, ElasticsearchIndex
from copydicom.sinks.splunk import SplunkConfig, SplunkIndex
from copydicom.sinks.spool import Spool, SpooledIndex
from copydicom.sinks.sqlite_index import SqliteIndex, SqliteIndexConfig
from copydicom.stages.flatten import flatten
from tests.support.fake_elasticsearch import FakeElasticsearch
from tests.support.fake_splunk import FakeSplunk
from tests.support.synthetic import ct_dataset


def make_documents(n: int) -> list[dict[str, Any]]:
    """``n`` instance documents from the flattened tags of a synthetic CT, with unique UIDs."""
    base = flatten(ct_dataset(0, 0, 0, 0, rows=8, cols=8), scheme="keyword")
    docs = []
    for i in range(n):
        flat = copy.deepcopy(base)
        study, series = i // 400, i // 100
        flat["StudyInstanceUID"] = f"2.25.1000.{study}"
        flat["SeriesInstanceUID"] = f"2.25.1000.{study}.{series}"
        flat["SOPInstanceUID"] = f"2.25.1000.{study}.{series}.{i}"
        flat["StudyDate"] = f"2024-01-{1 + study % 28:02d}"
        ident = Identity(str(flat.get("PatientID", "")), flat["StudyInstanceUID"], flat["SeriesInstanceUID"],
                         flat["SOPInstanceUID"])
        docs.append(instance_document(flat, orthanc={"instance": ident.orthanc_id,
                                                     "series": ident.series_orthanc_id},
                                      route="bench", deidentified=False))
    return docs


def timed(label: str, fn: Callable[[], None], n: int) -> float:
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    rate = n / seconds
    print(f"{label:<42} {seconds:8.2f} s  {rate:10.0f} docs/s")
    return rate


def main(n: int = 10_000) -> None:
    docs = make_documents(n)
    size = sum(len(json.dumps(d)) for d in docs) / n
    print(f"{n} instance documents, mean {size:.0f} bytes of JSON each")
    tmp = Path(tempfile.mkdtemp(prefix="copydicom-index-bench-"))
    rates: dict[str, float] = {}
    rates["reference: json.dumps"] = timed("reference: json.dumps of every document",
                                           lambda: [json.dumps(d) for d in docs] and None, n)

    def batches(send: Callable[[list[dict[str, Any]]], None], size: int = 500) -> Callable[[], None]:
        return lambda: [send(docs[i: i + size]) for i in range(0, n, size)] and None

    sqlite = SqliteIndex(SqliteIndexConfig("bench", tmp / "index.db"))
    rates["sqlite"] = timed("sqlite index (batches of 500)", batches(sqlite.send), n)
    rates["sqlite resend"] = timed("sqlite index, same documents again (upsert)", batches(sqlite.send), n)
    sqlite.close()

    sqlite2 = SqliteIndex(SqliteIndexConfig("bench2", tmp / "index2.db"))
    spooled = SpooledIndex(sqlite2, Spool(tmp / "spool.db"))
    rates["spool submit"] = timed("spool: submit only (what replication waits for)", batches(spooled.submit), n)
    rates["spool flush"] = timed("spool: flush into sqlite", lambda: spooled.flush() and None, n)
    rates["spool resubmit"] = timed("spool: resubmit, all already indexed", batches(spooled.submit), n)
    spooled.close()

    es_fake = FakeElasticsearch().start()
    es = ElasticsearchIndex(ElasticsearchConfig.from_url(f"es+http://127.0.0.1:{es_fake.port}/bench"))
    es.ensure_template()
    rates["elasticsearch"] = timed("elasticsearch (fake), streaming_bulk 500", batches(es.send), n)
    assert len(es_fake.docs("bench")) == n
    es.close()
    es_fake.stop()

    sp_fake = FakeSplunk(token="t", indexes=("dicom",)).start()
    sp = SplunkIndex(SplunkConfig(name="s", hec_url=sp_fake.hec_url, hec_token="t", index="dicom"))
    rates["splunk"] = timed("splunk HEC (fake), batches of 200 events", batches(sp.send), n)
    assert len(sp_fake.events) == n
    sp.close()
    sp_fake.stop()

    ref = rates["reference: json.dumps"]
    print("\nratio to the reference (json.dumps) and to the sqlite index:")
    for name, rate in rates.items():
        print(f"  {name:<24} {rate / ref:6.3f} x reference   {rate / rates['sqlite']:6.2f} x sqlite")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)

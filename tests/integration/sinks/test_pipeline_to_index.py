"""The core pipeline with the index stage and a spooled SQLite index: images and documents both arrive."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from copydicom.clients.orthanc import OrthancClient, OrthancConfig
from copydicom.ledger import Ledger
from copydicom.pipeline import Pipeline
from copydicom.sinks.index_destination import IndexDestination
from copydicom.sinks.orthanc import OrthancDestination
from copydicom.sinks.spool import Spool, SpooledIndex
from copydicom.sinks.sqlite_index import SqliteIndex, SqliteIndexConfig
from copydicom.sources.orthanc import OrthancSource
from copydicom.stages.dose import DoseStage
from copydicom.stages.index_docs import IndexDocumentsStage
from tests.support.orthanc import OrthancServer
from tests.support.synthetic import ct_study_files
from tests.unit.dose import builder as b

pytestmark = pytest.mark.integration


class DownIndex:
    """An index that is down until told otherwise, in front of a real SQLite index."""

    def __init__(self, inner: SqliteIndex) -> None:
        self.inner = inner
        self.name = "local"
        self.down = True

    def send(self, documents: list[dict]) -> None:  # type: ignore[type-arg]
        from copydicom.errors import IndexUnavailable

        if self.down:
            raise IndexUnavailable("index down (test)")
        self.inner.send(documents)

    def close(self) -> None:
        self.inner.close()


def test_pipeline_images_and_index_with_index_down_then_up(tmp_path: Path) -> None:
    src = OrthancServer(name="IDXSRC").start()
    dst = OrthancServer(name="IDXDST").start()
    try:
        for data in ct_study_files(6, series_per_study=2, rows=8, cols=8):
            requests.post(f"{src.url}/instances", data=data, auth=src.auth, timeout=30).raise_for_status()
        report = b.reread(b.ct_report([b.ct_event("1.2.3.55", protocol="Chest low dose", ctdivol="3.1", dlp="110")]))
        requests.post(f"{src.url}/instances", data=b.to_bytes(report), auth=src.auth, timeout=30).raise_for_status()

        client = OrthancClient(OrthancConfig.from_url(src.url_with_credentials, name="src"), side="source")
        source = OrthancSource(client)
        dest = OrthancDestination(OrthancConfig.from_url(dst.url_with_credentials, name="dst"), pool_size=2)
        ledger = Ledger(tmp_path / "state.db")
        index = DownIndex(SqliteIndex(SqliteIndexConfig("local", tmp_path / "index.db")))
        spooled = SpooledIndex(index, Spool(tmp_path / "state.db"))
        pipeline = Pipeline("r1", source, [DoseStage(), IndexDocumentsStage("r1", deidentified=False)],
                            [dest, IndexDestination(spooled)], ledger, quarantine_dir=tmp_path / "q", workers=2)
        summary = pipeline.run(source.all_instances())
        assert summary.counts["stored"] == 7 and summary.ok
        assert dst.statistics()["CountInstances"] == 7
        # the index was down: every document is waiting, images were not held up
        assert spooled.flush().pending == 7 + 2  # 7 instance documents, 1 dose event, 1 dose summary
        index.down = False
        result = spooled.flush()
        assert (result.delivered, result.pending) == (9, 0)
        # A second run: images and documents are all known; nothing is downloaded or queued again.
        again = pipeline.run(source.all_instances())
        assert (again.counts["stored"], again.counts["existing"]) == (0, 7)
        assert spooled.flush().delivered == 0
        rows = {r[0]: r[1] for r in index.inner._conn.execute(
            "SELECT 'instances', count(*) FROM instances UNION ALL SELECT 'events', count(*) FROM dose_events")}
        assert rows == {"instances": 7, "events": 1}
        assert index.inner._conn.execute("SELECT protocol, dlp FROM dose_events").fetchall() == [
            ("Chest low dose", 110.0)]
        pipeline.close()
        dest.close()
        client.close()
        spooled.close()
        ledger.close()
    finally:
        src.stop()
        dst.stop()

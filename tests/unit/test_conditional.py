"""Conditional replication with fakes: result rows to batches, dedupe, errors, the daemon's cron job."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from copydicom.app import RouteRuntime
from copydicom.conditional import describe
from copydicom.config import parse_config
from copydicom.daemon import Daemon
from copydicom.errors import ConfigError
from copydicom.model import InstanceRef
from copydicom.pipeline import Pipeline
from copydicom.sinks.sqlite_index import SqliteIndex, SqliteIndexConfig
from copydicom.sources.index_query import IndexQuerySource, SeenSet, identifiers_of
from tests.unit.fakes import FakeDestination, FakeSource
from tests.unit.sinks.docs_helpers import instance_doc


class FakeIndex:
    name = "idx"

    def __init__(self, rows: list[dict[str, Any]], error: Exception | None = None) -> None:
        self.rows = rows
        self.error = error
        self.queries: list[str] = []

    def search(self, query: str) -> Iterator[dict[str, Any]]:
        self.queries.append(query)
        if self.error is not None:
            raise self.error
        yield from self.rows


class FakeResolver:
    """Instance IDs ``i*`` resolve to themselves, series ``s<k>`` to 3 instances, ``uid:X`` to instance X."""

    name = "src"

    def __init__(self) -> None:
        self.asked: list[str] = []

    def selected(self, identifiers: Iterable[str]) -> Iterator[list[InstanceRef]]:
        for ident in identifiers:
            self.asked.append(ident)
            if ident.startswith("i"):
                yield [InstanceRef(ident)]
            elif ident.startswith("uid:"):
                yield [InstanceRef(ident[4:])]
            elif ident.startswith("s"):
                yield [InstanceRef(f"{ident}-{n}", series_id=ident) for n in range(3)]


def test_identifiers_of_priority_aliases_and_lists() -> None:
    assert identifiers_of({"ID": "a", "SOPInstanceUID": "1.2"}) == ["a"]
    assert identifiers_of({"orthanc_id": "b"}) == ["b"]
    assert identifiers_of({"id": "", "sop_uid": "1.2.3"}) == ["1.2.3"]
    assert identifiers_of({"SeriesInstanceUID": " 1.2.4 "}) == ["1.2.4"]
    assert identifiers_of({"study_uid": "1.5"}) == ["1.5"]
    assert identifiers_of({"ID": ["x", "y", None]}) == ["x", "y"]
    assert identifiers_of({"Modality": "CT"}) == []


def test_seen_set_spills_to_disk_and_still_dedupes() -> None:
    seen = SeenSet(memory_limit=3)
    assert [seen.add(k) for k in ["a", "b", "a", "c"]] == [True, True, False, True]
    assert not seen.spilled
    assert seen.add("d") is True
    assert seen.spilled
    assert [seen.add(k) for k in ["a", "d", "e", "e"]] == [False, False, True, False]
    assert seen.size == 5
    seen.close()


@pytest.mark.parametrize("lookahead", [1, 3])
def test_batches_dedupe_group_and_count(lookahead: int) -> None:
    rows = [{"ID": "i1"}, {"ID": "i2"}, {"ID": "i1"}, {"SOPInstanceUID": "uid:i2"}, {"ID": "s7"},
            {"SeriesInstanceUID": "s7"}, {"ID": "gone"}, {"ID": "i3"}]
    resolver = FakeResolver()
    source = IndexQuerySource(FakeIndex(rows), resolver, "q", batch_size=2, memory_limit=2, lookahead=lookahead)
    batches = [[r.source_id for r in b] for b in source.batches()]
    assert batches == [["i1", "i2"], ["s7-0", "s7-1", "s7-2"], ["i3"]]  # result order, also when resolved in parallel
    assert sorted(resolver.asked) == sorted(["i1", "i2", "uid:i2", "s7", "gone", "i3"])
    s = source.stats
    assert (s.rows, s.identifiers, s.duplicates, s.unresolved, s.instances) == (8, 6, 2, 1, 6)
    assert describe(s) == ("query matched 8 row(s): 6 distinct identifier(s), 6 instance(s), "
                           "2 repeated identifier(s) ignored, 1 identifier(s) not found on the source")


def test_no_match_and_errors() -> None:
    empty = IndexQuerySource(FakeIndex([]), FakeResolver(), "q")
    assert list(empty.batches()) == []
    assert describe(empty.stats) == "query matched nothing"
    refused = IndexQuerySource(FakeIndex([], ConfigError("search: refused or invalid query: near \"SELEC\"")),
                               FakeResolver(), "SELEC 1")
    with pytest.raises(ConfigError, match='index idx refused the query: search: refused or invalid query: near "SELEC"'):
        list(refused.batches())
    no_ids = IndexQuerySource(FakeIndex([{"n": 3}]), FakeResolver(), "q")
    with pytest.raises(ConfigError, match="must name instances by ID.*got fields: n"):
        list(no_ids.batches())
    with pytest.raises(ConfigError, match="empty query"):
        IndexQuerySource(FakeIndex([]), FakeResolver(), "  ")


def _cron_daemon(tmp_path: Path, query: str) -> tuple[Daemon, FakeDestination, FakeSource]:
    db = tmp_path / "index.db"
    idx = SqliteIndex(SqliteIndexConfig("idx", db))
    idx.send([instance_doc(i, modality="SR" if i % 3 == 0 else "CT", study=i) for i in range(9)])
    idx.close()
    config = parse_config({
        "state": str(tmp_path / "state.db"),
        "endpoints": {
            "src": {"type": "orthanc", "url": "http://127.0.0.1:9"},
            "dst": {"type": "orthanc", "url": "http://127.0.0.1:10"},
            "idx": {"type": "sqlite", "path": str(db)},
        },
        "routes": [{"name": "nightly", "source": "src", "destinations": ["dst"],
                    "trigger": {"cron": {"schedule": "0 2 * * *", "query": query, "index": "idx"}}}],
    })
    daemon = Daemon(config)
    rows = list(SqliteIndex(SqliteIndexConfig("idx", db)).search("SELECT orthanc_id FROM instances"))
    files = {r["orthanc_id"]: b"DICM" for r in rows}
    source, dest = FakeSource(files), FakeDestination("dst")
    pipeline = Pipeline("nightly", source, [], [dest], daemon.ledger, quarantine_dir=tmp_path / "q")  # type: ignore[list-item]

    class Resolver(FakeResolver):
        client = None

        def selected(self, identifiers: Iterable[str]) -> Iterator[list[InstanceRef]]:
            for ident in identifiers:
                yield [InstanceRef(ident)]

    from copydicom.daemon import RouteState

    route = config.routes[0]
    daemon.routes["nightly"] = RouteState(route, RouteRuntime(route, Resolver(), pipeline, [dest]))  # type: ignore[arg-type]
    return daemon, dest, source


def test_daemon_cron_job_runs_the_query(tmp_path: Path) -> None:
    daemon, dest, source = _cron_daemon(
        tmp_path, "SELECT i.orthanc_id FROM instances i JOIN series s USING (series_uid) WHERE s.modality = 'SR'")
    sr_ids = {r["orthanc_id"] for r in SqliteIndex(SqliteIndexConfig("i", tmp_path / "index.db")).search(
        "SELECT i.orthanc_id FROM instances i JOIN series s USING (series_uid) WHERE s.modality = 'SR'")}
    assert len(sr_ids) == 3
    daemon._conditional("nightly")
    assert set(dest.stored) == sr_ids and len(dest.stored) == 3
    state = daemon.routes["nightly"]
    assert state.totals == {"stored": 3} and state.last_success is not None and state.last_error == ""
    daemon._conditional("nightly")  # second night: the ledger knows them, nothing fetched or sent again
    assert len(dest.stored) == 3 and len(source.fetched) == 3
    assert state.totals == {"stored": 3, "existing": 3}
    assert daemon.fatal is None
    daemon.routes["nightly"].runtime.pipeline.close()  # type: ignore[union-attr]
    daemon.ledger.close()


def test_daemon_cron_job_bad_query_fails_the_route_not_the_daemon(tmp_path: Path) -> None:
    daemon, dest, _ = _cron_daemon(tmp_path, "SELECT orthanc_id FROM no_such_table")
    daemon._conditional("nightly")
    state = daemon.routes["nightly"]
    assert dest.stored == []
    assert daemon.fatal is None and not daemon.stopping.is_set()
    assert state.failures == 1
    assert "refused the query" in state.last_error and "no such table: no_such_table" in state.last_error
    daemon.routes["nightly"].runtime.pipeline.close()  # type: ignore[union-attr]
    daemon.ledger.close()


def test_daemon_cron_job_failure_is_retried_after_the_backoff(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: a failed cron run logged "retrying in 5 s" but only ran again at its next schedule."""
    import threading

    from copydicom.daemon import RouteState
    from copydicom.errors import DestinationUnavailable

    monkeypatch.setattr(RouteState, "backoff", lambda self, policy=None: 0.05 * self.failures)  # tiny backoff
    daemon, dest, _ = _cron_daemon(tmp_path, "SELECT orthanc_id FROM instances")
    down = threading.Event()
    down.set()
    attempts: list[int] = []

    def fail(_instance: object) -> Exception | None:
        attempts.append(1)
        if len(attempts) >= 6:  # two full runs of three instances failed: the destination is back
            down.clear()
        return DestinationUnavailable("destination down") if down.is_set() else None

    dest.fail = fail  # type: ignore[assignment]
    state = daemon.routes["nightly"]
    daemon.scheduler.start()
    try:
        daemon._conditional("nightly")  # the scheduled run fails...
        assert state.failures == 1 and state.retryable
        assert daemon.scheduler.get_job("nightly#retry") is not None  # ...and a retry is scheduled
        finished = threading.Event()
        for _ in range(200):
            if state.failures == 0 and len(dest.stored) == 9:
                finished.set()
                break
            threading.Event().wait(0.05)
        assert finished.is_set(), f"not retried: failures={state.failures} stored={len(dest.stored)}"
        assert state.last_error == "" and state.totals.get("stored") == 9
        assert daemon.scheduler.get_job("nightly#retry") is None  # success: no more retries
    finally:
        daemon.scheduler.shutdown(wait=True)
        daemon.routes["nightly"].runtime.pipeline.close()  # type: ignore[union-attr]
        daemon.ledger.close()


def test_daemon_cron_job_bad_query_is_not_retried_before_its_schedule(tmp_path: Path) -> None:
    daemon, _, _ = _cron_daemon(tmp_path, "SELECT orthanc_id FROM no_such_table")
    daemon._conditional("nightly")
    assert daemon.routes["nightly"].failures == 1 and not daemon.routes["nightly"].retryable
    assert daemon.scheduler.get_job("nightly#retry") is None
    daemon.routes["nightly"].runtime.pipeline.close()  # type: ignore[union-attr]
    daemon.ledger.close()


def test_daemon_cron_job_before_anything_was_indexed_matches_nothing(tmp_path: Path) -> None:
    """Regression: a conditional route whose SQLite index does not exist yet failed instead of matching nothing."""
    daemon, dest, _ = _cron_daemon(tmp_path, "SELECT orthanc_id FROM instances")
    (tmp_path / "index.db").unlink()
    daemon._conditional("nightly")
    state = daemon.routes["nightly"]
    assert state.failures == 0 and state.last_error == "" and state.last_success is not None
    assert dest.stored == []
    daemon._conditional("nightly")
    daemon.routes["nightly"].runtime.pipeline.close()  # type: ignore[union-attr]
    daemon.ledger.close()
    # a wrong query is still refused when the database is missing: it is checked against the schema
    daemon, _, _ = _cron_daemon(tmp_path / "again", "SELECT orthanc_id FROM no_such_table")
    (tmp_path / "again" / "index.db").unlink()
    daemon._conditional("nightly")
    assert "no such table" in daemon.routes["nightly"].last_error
    daemon.routes["nightly"].runtime.pipeline.close()  # type: ignore[union-attr]
    daemon.ledger.close()

"""Conditional replication against two real Orthanc servers: SQLite index, ES and Splunk fakes, cron job."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from apscheduler.triggers.cron import CronTrigger

from copydicom.cli import main
from copydicom.config import parse_config
from copydicom.daemon import Daemon
from copydicom.sinks.elasticsearch import ElasticsearchConfig, ElasticsearchIndex
from copydicom.sinks.splunk import SplunkConfig, SplunkIndex
from tests.support.fake_elasticsearch import FakeElasticsearch
from tests.support.fake_splunk import FakeSplunk
from tests.support.orthanc import OrthancServer
from tests.integration.conftest import load_ct
from tests.unit.dose import builder as b

pytestmark = pytest.mark.integration


def _series_of(server: OrthancServer) -> dict[str, set[str]]:
    """SeriesDescription -> instance IDs."""
    out: dict[str, set[str]] = {}
    for series_id in server.get("/series"):
        series = server.get(f"/series/{series_id}")
        out.setdefault(series["MainDicomTags"].get("SeriesDescription", ""), set()).update(series["Instances"])
    return out


def _load(source: OrthancServer) -> tuple[dict[str, set[str]], str]:
    load_ct(source, 12, series=4, rows=16)
    report = b.reread(b.ct_report([b.ct_event("1.2.3.77", protocol="Abdomen", dlp="500")]))
    reply = requests.post(f"{source.url}/instances", data=b.to_bytes(report), auth=source.auth, timeout=30)
    reply.raise_for_status()
    return _series_of(source), reply.json()["ID"]


def _sqlite_index(tmp_path: Path, source: OrthancServer) -> str:
    db = tmp_path / "index.db"
    args = ["replicate-tags", "--src", source.url_with_credentials, "--index", f"sqlite://{db}",
            "--state", str(tmp_path / "tags-state.db")]
    assert main(args) == 0
    return f"sqlite://{db}"


def _conditional(source: OrthancServer, dest: OrthancServer, index: str, query: str, state: Path,
                 *extra: str) -> int:
    return main(["conditional-replicate", "--src", source.url_with_credentials, "--index", index,
                 "--query", query, "--dest", dest.url_with_credentials, "--state", str(state), *extra])


def test_sqlite_query_replicates_exactly_the_matches(
    servers: tuple[OrthancServer, OrthancServer], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, dest = servers
    by_series, sr_id = _load(source)
    index = _sqlite_index(tmp_path, source)
    capsys.readouterr()
    state = tmp_path / "state.db"

    sr = "SELECT i.orthanc_id AS ID FROM instances i JOIN series s USING (series_uid) WHERE s.modality = 'SR'"
    assert _conditional(source, dest, index, sr, state) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "query matched 1 row(s): 1 distinct identifier(s), 1 instance(s)"
    assert out[-1].startswith("replicated=1 skipped_existing=0 quarantined=0 failed=0 seconds=")
    assert set(dest.instance_ids()) == {sr_id}

    assert _conditional(source, dest, index, sr, state) == 0  # second run sends nothing
    assert capsys.readouterr().out.splitlines()[-1].startswith("replicated=0 skipped_existing=1 quarantined=0")
    assert set(dest.instance_ids()) == {sr_id}

    # Series-level Orthanc IDs and SOP Instance UIDs (resolved with /tools/lookup), overlapping on purpose.
    by_series_id = "SELECT orthanc_id FROM series WHERE series_description = 'AXIAL 2'"
    assert _conditional(source, dest, index, by_series_id, state) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("replicated=3 skipped_existing=0")
    by_uid = ("SELECT i.sop_uid AS SOPInstanceUID FROM instances i JOIN series s USING (series_uid) "
              "WHERE s.series_description IN ('AXIAL 2', 'AXIAL 3') UNION ALL "
              "SELECT i.sop_uid FROM instances i JOIN series s USING (series_uid) WHERE s.series_description = 'AXIAL 3'")
    assert _conditional(source, dest, index, by_uid, state) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == ("query matched 9 row(s): 6 distinct identifier(s), 6 instance(s), "
                      "3 repeated identifier(s) ignored")
    assert out[-1].startswith("replicated=3 skipped_existing=3 quarantined=0 failed=0")
    assert set(dest.instance_ids()) == {sr_id} | by_series["AXIAL 2"] | by_series["AXIAL 3"]

    # Nothing matches: exit 0 and say so.
    assert _conditional(source, dest, index, "SELECT orthanc_id FROM series WHERE modality = 'MR'", state) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "query matched nothing"
    assert out[-1].startswith("replicated=0 skipped_existing=0 quarantined=0 failed=0")

    # Invalid or writing queries: exit 2 with the index's message; nothing sent.
    assert _conditional(source, dest, index, "SELECT orthanc_id FROM no_such_table", state) == 2
    assert "no such table: no_such_table" in capsys.readouterr().err
    assert _conditional(source, dest, index, "DELETE FROM instances", state) == 2
    assert "refused the query" in capsys.readouterr().err
    assert _conditional(source, dest, index, "SELECT count(*) AS n FROM instances", state) == 2
    assert "must name instances by ID" in capsys.readouterr().err
    assert len(dest.instance_ids()) == 7


def test_sqlite_query_with_deidentification(
    servers: tuple[OrthancServer, OrthancServer], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, dest = servers
    by_series, _ = _load(source)
    index = _sqlite_index(tmp_path, source)
    key = tmp_path / "key"
    key.write_bytes(os.urandom(32))
    key.chmod(0o600)
    query = "SELECT orthanc_id AS ID FROM instances WHERE series_uid IN (SELECT series_uid FROM series " \
            "WHERE series_description = 'AXIAL 1')"
    extra = ("--profile", "default", "--key-file", str(key))
    assert _conditional(source, dest, index, query, tmp_path / "state.db", *extra) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("replicated=3 skipped_existing=0 quarantined=0")
    sent = dest.instance_ids()
    assert len(sent) == 3 and not set(sent) & by_series["AXIAL 1"]
    tags = dest.get(f"/instances/{sent[0]}/tags?simplify")
    assert tags["PatientIdentityRemoved"] == "YES"
    assert _conditional(source, dest, index, query, tmp_path / "state.db", *extra) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("replicated=0 skipped_existing=3")


def _docs_for(source: OrthancServer) -> tuple[list[dict[str, object]], set[str]]:
    """One document per source instance; ``selected`` on those of series AXIAL 2 and AXIAL 4."""
    by_series = _series_of(source)
    docs: list[dict[str, object]] = []
    wanted: set[str] = set()
    for description, ids in by_series.items():
        for instance_id in sorted(ids):
            chosen = description in ("AXIAL 2", "AXIAL 4")
            docs.append({"_id": instance_id, "doc_type": "instance", "ID": instance_id,
                         "SeriesDescription": description, "selected": "yes" if chosen else "no",
                         "timestamp": "2024-01-01T10:00:00"})
            if chosen:
                wanted.add(instance_id)
    return docs, wanted


@pytest.fixture()
def fake_es() -> Iterator[FakeElasticsearch]:
    server = FakeElasticsearch(basic=("elastic", "s3cret"))
    server.start()
    yield server
    server.stop()


@pytest.fixture()
def fake_splunk() -> Iterator[FakeSplunk]:
    server = FakeSplunk(token="tok-1", indexes=("main", "dicom"))
    server.start()
    yield server
    server.stop()


def test_elasticsearch_query_follows_every_page(
    servers: tuple[OrthancServer, OrthancServer], tmp_path: Path, fake_es: FakeElasticsearch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source, dest = servers
    _load(source)
    docs, wanted = _docs_for(source)
    assert len(wanted) == 6
    url = f"es+http://elastic:s3cret@127.0.0.1:{fake_es.port}/dicom?page_size=2"
    sink = ElasticsearchIndex(ElasticsearchConfig.from_url(url))
    sink.send(docs)
    sink.close()
    state = tmp_path / "state.db"
    assert _conditional(source, dest, url, "selected:yes", state) == 0  # Lucene query_string, 3 pages of 2 + 1 empty
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "query matched 6 row(s): 6 distinct identifier(s), 6 instance(s)"
    assert out[-1].startswith("replicated=6 skipped_existing=0 quarantined=0 failed=0")
    assert set(dest.instance_ids()) == wanted
    searches = [p for m, p in fake_es.requests if "_search" in p]
    assert len(searches) == 4
    assert _conditional(source, dest, url, '{"query": {"term": {"selected": "yes"}}}', state) == 0  # query DSL
    assert capsys.readouterr().out.splitlines()[-1].startswith("replicated=0 skipped_existing=6")
    assert _conditional(source, dest, url, '{"term": {"selected": "maybe"}}', state) == 0
    assert capsys.readouterr().out.splitlines()[0] == "query matched nothing"
    assert _conditional(source, dest, url, '{"query": {"no_such_query": {}}}', state) == 2
    err = capsys.readouterr().err
    assert "refused the query" in err
    assert "search: HTTP 400: parsing_exception: query type [no_such_query] is not supported" in err
    assert "orthanc:orthanc@" not in err  # credentials of the source URL never printed
    assert set(dest.instance_ids()) == wanted


def test_splunk_spl_query_follows_every_page(
    servers: tuple[OrthancServer, OrthancServer], tmp_path: Path, fake_splunk: FakeSplunk,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source, dest = servers
    _load(source)
    docs, wanted = _docs_for(source)
    url = (f"splunk+http://admin:changeme@127.0.0.1:{fake_splunk.mgmt.port}?hec={fake_splunk.hec_url}"
           f"&hec_token=tok-1&index=dicom&page_size=4")
    sink = SplunkIndex(SplunkConfig.from_url(url))
    sink.send(docs + docs[:2])  # a resend duplicates events in Splunk
    sink.close()
    state = tmp_path / "state.db"
    assert _conditional(source, dest, url, "search index=dicom selected=yes", state) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith("replicated=6 skipped_existing=0 quarantined=0 failed=0")
    assert set(dest.instance_ids()) == wanted
    results = [p for m, p in fake_splunk.mgmt.requests if p.endswith("/results")]
    # Every page is read: the matching events (6, plus the resent duplicates among docs[:2], whose series
    # depends on the source's listing order) in pages of 4, until a short page.
    matching = sum(1 for d in docs + docs[:2] if d["selected"] == "yes")
    assert len(results) == matching // 4 + 1
    assert _conditional(source, dest, url, 'SeriesDescription="AXIAL 1"', state) == 0  # index=dicom added
    assert capsys.readouterr().out.splitlines()[-1].startswith("replicated=3 skipped_existing=0")
    assert _conditional(source, dest, url, "search index=dicom selected=no | table ID", state) == 0  # rows without _raw
    out = capsys.readouterr().out.splitlines()
    assert ": 7 distinct identifier(s), 7 instance(s)" in out[0]  # AXIAL 1, AXIAL 3, the dose report
    assert out[-1].startswith("replicated=4 skipped_existing=3 quarantined=0 failed=0")
    assert _conditional(source, dest, url, "selected=never", state) == 0
    assert capsys.readouterr().out.splitlines()[0] == "query matched nothing"
    assert _conditional(source, dest, url, "search index=dicom selected=yes | frobnicate", state) == 2
    assert "HTTP 400" in capsys.readouterr().err
    assert len(dest.instance_ids()) == 13


def test_cron_route_job_against_real_servers(
    servers: tuple[OrthancServer, OrthancServer], tmp_path: Path
) -> None:
    source, dest = servers
    _, sr_id = _load(source)
    index = _sqlite_index(tmp_path, source)
    config = parse_config({
        "state": str(tmp_path / "state.db"),
        "endpoints": {
            "src": {"type": "orthanc", "url": source.url, "user": source.user, "password": source.password},
            "research": {"type": "orthanc", "url": dest.url, "user": dest.user, "password": dest.password},
            "idx": {"type": "sqlite", "path": index.removeprefix("sqlite://")},
        },
        "routes": [{
            "name": "nightly-dose", "source": "src", "destinations": ["research"],
            "trigger": {"cron": {"schedule": "0 2 * * *", "index": "idx", "query":
                                 "SELECT orthanc_id AS ID FROM instances WHERE series_uid IN "
                                 "(SELECT series_uid FROM series WHERE modality = 'SR')"}},
        }],
    })
    daemon = Daemon(config)
    try:
        daemon._build()
        job = daemon.scheduler.get_job("nightly-dose")
        assert isinstance(job.trigger, CronTrigger)
        assert str(job.trigger) == "cron[month='*', day='*', day_of_week='*', hour='2', minute='0']"
        job.func(*job.args)  # what the scheduler runs at 02:00
        assert set(dest.instance_ids()) == {sr_id}
        state = daemon.routes["nightly-dose"]
        assert state.totals == {"stored": 1} and state.last_error == ""
        job.func(*job.args)
        assert state.totals == {"stored": 1, "existing": 1}
        assert set(dest.instance_ids()) == {sr_id}
    finally:
        for route_state in daemon.routes.values():
            if route_state.runtime is not None:
                route_state.runtime.close()
        daemon.ledger.close()

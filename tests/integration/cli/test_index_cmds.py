"""``search``, ``report dose`` and ``replicate-tags`` through the CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from copydicom.cli import main
from copydicom.sinks.sqlite_index import SqliteIndex, SqliteIndexConfig
from tests.support.orthanc import OrthancServer
from tests.support.synthetic import ct_study_files
from tests.unit.dose import builder as b
from tests.unit.sinks.docs_helpers import dose_event, instance_doc

pytestmark = pytest.mark.integration


def _filled_index(path: Path) -> None:
    idx = SqliteIndex(SqliteIndexConfig("local", path))
    idx.send([instance_doc(i, day=1 + i % 3) for i in range(12)] + [instance_doc(50, modality="SR", study=9)]
             + [dose_event(1), dose_event(2, protocol="Chest <b>", ctdivol=10.0, dlp=300.0),
                {**dose_event(3), "event_kind": "fluoro", "dap": 0.0021, "procedure": "Cardiac cath"}])
    idx.close()


def test_search_and_refusal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "index.db"
    _filled_index(db)
    url = f"sqlite://{db}"
    assert main(["search", "--index", url, "SELECT modality, count(*) AS n FROM series GROUP BY 1 ORDER BY 1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ['{"modality": "CT", "n": 2}', '{"modality": "SR", "n": 1}']
    assert main(["search", "--index", url, "DELETE FROM instances"]) == 2
    assert main(["search", "--index", url, "--limit", "1", "SELECT _id FROM instances ORDER BY _id"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1


def test_report_dose(tmp_path: Path) -> None:
    db = tmp_path / "index.db"
    _filled_index(db)
    out = tmp_path / "report.html"
    assert main(["report", "dose", "--index", f"sqlite://{db}", "--out", str(out)]) == 0
    page = out.read_text()
    assert page.count("<svg") == 4
    assert "Chest &lt;b&gt;" in page and "Chest <b>" not in page
    assert "Cardiac cath" in page
    assert "2024-01-03" in page
    assert main(["report", "dose", "--index", "es+http://127.0.0.1:9/x", "--out", str(out)]) == 2


def test_replicate_tags_from_orthanc(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server = OrthancServer(name="TAGSRC").start()
    try:
        for data in ct_study_files(6, series_per_study=2, rows=8, cols=8):
            requests.post(f"{server.url}/instances", data=data, auth=server.auth, timeout=30).raise_for_status()
        report = b.reread(b.ct_report([b.ct_event("1.2.3.77", protocol="Abdomen", dlp="500")]))
        requests.post(f"{server.url}/instances", data=b.to_bytes(report), auth=server.auth,
                      timeout=30).raise_for_status()
        db = tmp_path / "index.db"
        state = tmp_path / "state.db"
        args = ["replicate-tags", "--src", server.url_with_credentials, "--index", f"sqlite://{db}",
                "--state", str(state)]
        assert main(args) == 0
        assert capsys.readouterr().out.splitlines()[-1].startswith("replicated=7 skipped_existing=0 quarantined=0")
        assert main(args) == 0
        assert capsys.readouterr().out.splitlines()[-1].startswith("replicated=0 skipped_existing=7 quarantined=0")
        main(["search", "--index", f"sqlite://{db}", "SELECT count(*) AS n FROM instances"])
        assert capsys.readouterr().out.splitlines() == ['{"n": 7}']
        main(["search", "--index", f"sqlite://{db}", "SELECT protocol, dlp FROM dose_events"])
        assert capsys.readouterr().out.splitlines() == ['{"dlp": 500.0, "protocol": "Abdomen"}']
    finally:
        server.cleanup()


def test_search_elasticsearch_and_splunk_urls(capsys: pytest.CaptureFixture[str]) -> None:
    from copydicom.sinks.elasticsearch import ElasticsearchConfig, ElasticsearchIndex
    from copydicom.sinks.splunk import SplunkConfig, SplunkIndex
    from tests.support.fake_elasticsearch import FakeElasticsearch
    from tests.support.fake_splunk import FakeSplunk

    docs = [instance_doc(i) for i in range(5)] + [instance_doc(60, modality="SR", study=8)]
    es = FakeElasticsearch().start()
    sp = FakeSplunk(token="t", indexes=("dicom",)).start()
    try:
        es_url = f"es+http://127.0.0.1:{es.port}/dicom"
        ElasticsearchIndex(ElasticsearchConfig.from_url(es_url)).send(docs)
        assert main(["search", "--index", es_url, "Modality:SR"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert [json.loads(x)["_id"] for x in lines] == [docs[-1]["_id"]]
        sp_url = f"splunk+http://admin:changeme@127.0.0.1:{sp.mgmt.port}?hec={sp.hec_url}&hec_token=t&index=dicom"
        SplunkIndex(SplunkConfig.from_url(sp_url)).send(docs)
        assert main(["search", "--index", sp_url, 'SeriesDescription="Dose Record"']) == 0
        lines = capsys.readouterr().out.splitlines()
        assert [json.loads(x)["_id"] for x in lines] == [docs[-1]["_id"]]
    finally:
        es.stop()
        sp.stop()

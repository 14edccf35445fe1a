"""The Elasticsearch sink driven through the official client against the protocol fake."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from copydicom.errors import ConfigError, DocumentsRejected, IndexUnavailable
from copydicom.sinks.elasticsearch import ElasticsearchConfig, ElasticsearchIndex
from tests.support.fake_elasticsearch import FakeElasticsearch
from tests.unit.sinks.docs_helpers import dose_event, instance_doc

pytestmark = pytest.mark.integration


@pytest.fixture()
def fake() -> Iterator[FakeElasticsearch]:
    server = FakeElasticsearch(basic=("elastic", "s3cret"))
    server.start()
    yield server
    server.stop()


def sink_for(fake: FakeElasticsearch, **kw: object) -> ElasticsearchIndex:
    url = f"es+http://elastic:s3cret@127.0.0.1:{fake.port}/dicom?backoff=0.01&max_retries=3"
    cfg = ElasticsearchConfig.from_url(url)
    if kw:
        cfg = ElasticsearchConfig(**{**cfg.__dict__, **kw})  # type: ignore[arg-type]
    return ElasticsearchIndex(cfg)


def test_bulk_index_template_and_idempotent_resend(fake: FakeElasticsearch) -> None:
    sink = sink_for(fake)
    docs = [instance_doc(i) for i in range(30)] + [dose_event(1)]
    sink.send(docs)
    sink.send(docs)
    stored = fake.docs("dicom")
    assert len(stored) == 31
    assert stored[docs[0]["_id"]]["Modality"] == "CT"
    assert "_id" not in stored[docs[0]["_id"]]
    assert stored[docs[0]["_id"]]["doc_id"] == docs[0]["_id"]
    template = fake.templates["copydicom-dicom"]
    assert template["template"]["mappings"]["properties"]["tags"]["type"] == "flattened"
    assert template["template"]["mappings"]["properties"]["dlp"] == {"type": "float"}
    assert any(m.startswith("application/vnd.elasticsearch+x-ndjson") for m in fake.media_types)
    sink.close()


def test_bulk_partial_failure_rejects_only_bad_items(fake: FakeElasticsearch) -> None:
    sink = sink_for(fake)
    docs = [instance_doc(i) for i in range(5)]
    fake.item_faults[docs[2]["_id"]] = 400
    with pytest.raises(DocumentsRejected) as info:
        sink.send(docs)
    assert info.value.rejected == {docs[2]["_id"]: "mapper_parsing_exception"}
    assert set(fake.docs("dicom")) == {d["_id"] for i, d in enumerate(docs) if i != 2}


def test_item_429_is_retried_then_succeeds(fake: FakeElasticsearch) -> None:
    sink = sink_for(fake)
    docs = [instance_doc(i) for i in range(4)]
    fake.item_faults[docs[1]["_id"]] = (429, 2)
    sink.send(docs)
    assert set(fake.docs("dicom")) == {d["_id"] for d in docs}


def test_item_429_forever_is_index_unavailable(fake: FakeElasticsearch) -> None:
    sink = sink_for(fake)
    docs = [instance_doc(i) for i in range(3)]
    fake.item_faults[docs[0]["_id"]] = 429
    with pytest.raises(IndexUnavailable):
        sink.send(docs)


def test_request_429_then_success(fake: FakeElasticsearch) -> None:
    sink = sink_for(fake)
    sink.ensure_template()
    fake.fail_next(429, 2)
    sink.send([instance_doc(1)])
    assert list(fake.docs("dicom")) == [instance_doc(1)["_id"]]


def test_503_beyond_retries_is_index_unavailable(fake: FakeElasticsearch) -> None:
    sink = sink_for(fake, max_retries=1)
    sink.ensure_template()
    fake.fail_next(503, 5)
    with pytest.raises(IndexUnavailable):
        sink.send([instance_doc(1)])


def test_wrong_password_is_config_error(fake: FakeElasticsearch) -> None:
    cfg = ElasticsearchConfig.from_url(f"es+http://elastic:wrong@127.0.0.1:{fake.port}/dicom")
    with pytest.raises(ConfigError):
        ElasticsearchIndex(cfg).send([instance_doc(1)])


def test_server_down_is_index_unavailable() -> None:
    server = FakeElasticsearch().start()
    port = server.port
    server.stop()
    cfg = ElasticsearchConfig.from_url(f"es+http://127.0.0.1:{port}/dicom?max_retries=0")
    with pytest.raises(IndexUnavailable):
        ElasticsearchIndex(cfg).send([instance_doc(1)])


def test_search_pages_lucene_and_dsl(fake: FakeElasticsearch) -> None:
    sink = sink_for(fake, page_size=7)
    docs = [instance_doc(i) for i in range(40)] + [instance_doc(100 + i, modality="SR", study=50) for i in range(9)]
    sink.send(docs)
    sr = list(sink.search("Modality:SR"))
    assert sorted(d["_id"] for d in sr) == sorted(d["_id"] for d in docs[40:])
    everything = list(sink.search('{"match_all": {}}'))
    assert len(everything) == 49 and len({d["_id"] for d in everything}) == 49
    dose = list(sink.search('SeriesDescription:"Dose Record" AND NOT Modality:CT'))
    assert len(dose) == 9
    assert fake.requests.count(("POST", "/dicom/_search")) >= 7 + 2
    with pytest.raises(ConfigError):
        list(sink.search("{not json"))


def test_url_parsing() -> None:
    cfg = ElasticsearchConfig.from_url("es+https://u%40x:p%2Fw@es.example:9243/dicom?ca_certs=/etc/ca.pem")
    assert (cfg.url, cfg.index, cfg.username, cfg.password, cfg.ca_certs) == (
        "https://es.example:9243", "dicom", "u@x", "p/w", "/etc/ca.pem")
    assert "p/w" not in repr(cfg)
    with pytest.raises(ConfigError):
        ElasticsearchConfig.from_url("es+https://es.example:9243/")


def test_api_key_auth() -> None:
    server = FakeElasticsearch(api_key="a2V5OnNlY3JldA==").start()
    try:
        good = ElasticsearchConfig.from_mapping("es", {"url": server.url, "index": "dicom",
                                                       "api_key": "a2V5OnNlY3JldA=="}, where="e.es")
        ElasticsearchIndex(good).send([instance_doc(1)])
        assert len(server.docs("dicom")) == 1
        bad = ElasticsearchConfig.from_mapping("es", {"url": server.url, "index": "dicom", "api_key": "bm9wZQ=="},
                                               where="e.es")
        with pytest.raises(ConfigError, match="HTTP 401"):
            ElasticsearchIndex(bad).send([instance_doc(2)])
    finally:
        server.stop()


def test_client_newer_than_cluster_is_a_config_error() -> None:
    import elasticsearch

    server = FakeElasticsearch(version="8.15.0").start()
    try:
        sink = ElasticsearchIndex(ElasticsearchConfig.from_url(f"es+http://127.0.0.1:{server.port}/dicom"))
        if int(elasticsearch.__versionstr__.split(".")[0]) >= 9:
            with pytest.raises(ConfigError, match="major version"):
                sink.send([instance_doc(1)])
        else:  # an 8.x client sends compatible-with=8, which an 8.x server accepts
            sink.send([instance_doc(1)])
    finally:
        server.stop()


def test_search_before_anything_was_indexed(fake: FakeElasticsearch) -> None:
    assert list(sink_for(fake).search("Modality:CT")) == []

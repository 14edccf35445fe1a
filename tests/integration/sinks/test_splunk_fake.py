"""The Splunk sink (HEC via requests, search via splunklib) against the protocol fake."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from copydicom.errors import ConfigError, DocumentsRejected, IndexUnavailable
from copydicom.sinks.splunk import SplunkConfig, SplunkIndex
from tests.support.fake_splunk import FakeSplunk
from tests.unit.sinks.docs_helpers import dose_event, instance_doc

pytestmark = pytest.mark.integration


@pytest.fixture()
def fake() -> Iterator[FakeSplunk]:
    server = FakeSplunk(token="tok-1", indexes=("main", "dicom"))
    server.start()
    yield server
    server.stop()


def sink_for(fake: FakeSplunk, *, token: str = "tok-1", index: str = "dicom", extra: str = "") -> SplunkIndex:
    url = (f"splunk+http://admin:changeme@127.0.0.1:{fake.mgmt.port}?hec={fake.hec_url}&hec_token={token}"
           f"&index={index}&backoff=0.01&host=testhost{extra}")
    return SplunkIndex(SplunkConfig.from_url(url))


def test_hec_batches_event_time_and_metadata(fake: FakeSplunk) -> None:
    sink = sink_for(fake, extra="&batch_size=7")
    docs = [instance_doc(i) for i in range(20)]
    sink.send(docs)
    assert fake.batches == 3
    assert len(fake.events) == 20
    ev = fake.events[0]
    assert (ev["index"], ev["sourcetype"], ev["host"], ev["source"]) == ("dicom", "_json", "testhost", "copydicom")
    assert ev["time"] == 1704104160.25  # 2024-01-01T10:16:00.25 UTC, the acquisition time
    assert ev["event"]["doc_id"] == docs[0]["_id"] and "_id" not in ev["event"]
    assert ev["event"]["Modality"] == "CT"


@pytest.mark.parametrize("token,index,exc,code", [
    ("wrong", "dicom", ConfigError, 4),
    ("tok-1", "nosuch", ConfigError, 7),
])
def test_hec_config_errors(fake: FakeSplunk, token: str, index: str, exc: type, code: int) -> None:
    with pytest.raises(exc) as info:
        sink_for(fake, token=token, index=index).send([instance_doc(1)])
    assert f"HEC code {code}" in str(info.value)
    assert fake.events == []


def test_disabled_token(fake: FakeSplunk) -> None:
    fake.disabled_tokens.add("tok-1")
    with pytest.raises(ConfigError, match="HEC code 1: Token disabled"):
        sink_for(fake).send([instance_doc(1)])


def test_busy_is_retried_then_succeeds(fake: FakeSplunk) -> None:
    fake.busy_next(2)
    sink_for(fake).send([instance_doc(1), instance_doc(2)])
    assert len(fake.events) == 2 and fake.batches == 1


def test_busy_beyond_retries_is_index_unavailable(fake: FakeSplunk) -> None:
    fake.busy_next(10)
    with pytest.raises(IndexUnavailable, match="HEC code 9: Server is busy"):
        sink_for(fake, extra="&max_retries=2").send([instance_doc(1)])
    assert fake.events == []


def test_hec_down_is_index_unavailable() -> None:
    server = FakeSplunk().start()
    url = server.hec_url
    server.stop()
    cfg = SplunkConfig.from_mapping("s", {"hec_url": url, "hec_token": "${HOME}", "index": "main",
                                          "max_retries": 0}, where="t")
    with pytest.raises(IndexUnavailable):
        SplunkIndex(cfg).send([instance_doc(1)])


def test_indexer_acknowledgement(fake: FakeSplunk) -> None:
    fake.ack = True
    sink = sink_for(fake, extra="&ack=1&batch_size=2&ack_timeout=0.3")
    sink.send([instance_doc(i) for i in range(5)])
    assert len(fake.events) == 5
    fake.make_acks_pending(sink.channel)
    with pytest.raises(IndexUnavailable, match="not acknowledged"):
        sink.send([instance_doc(9)])


def test_ack_required_but_disabled_on_token(fake: FakeSplunk) -> None:
    with pytest.raises(ConfigError, match="ackId"):
        sink_for(fake, extra="&ack=1").send([instance_doc(1)])


def test_search_through_splunklib_with_paging(fake: FakeSplunk) -> None:
    sink = sink_for(fake, extra="&page_size=4")
    docs = [instance_doc(i) for i in range(10)] + [instance_doc(100 + i, modality="SR", study=60) for i in range(6)]
    sink.send(docs + docs[:3] + [dose_event(1)])  # a resend duplicates events in Splunk
    found = list(sink.search('SeriesDescription="Dose Record"'))
    assert sorted(d["_id"] for d in found) == sorted(d["_id"] for d in docs[10:])
    assert found[0]["tags"]["Modality"] == "SR"
    everything = list(sink.search("doc_type=instance"))
    assert sorted(d["_id"] for d in everything) == sorted(d["_id"] for d in docs)
    assert len(list(sink.search("Modality=CT OR Modality=SR NOT SeriesNumber=1"))) == 0
    result_calls = [p for m, p in fake.mgmt.requests if p.endswith("/results")]
    assert len(result_calls) == 2 + 5 + 1  # 6 rows, 19 rows (3 duplicates), 0 rows; pages of 4


def test_search_bad_password_is_config_error(fake: FakeSplunk) -> None:
    url = (f"splunk+http://admin:bad@127.0.0.1:{fake.mgmt.port}?hec={fake.hec_url}&hec_token=tok-1&index=dicom")
    with pytest.raises(ConfigError, match="login"):
        list(SplunkIndex(SplunkConfig.from_url(url)).search("*"))


def test_invalid_event_is_rejected_by_number(fake: FakeSplunk) -> None:
    sink = sink_for(fake)
    docs = [instance_doc(1), instance_doc(2)]
    docs[1] = {**docs[1]}
    original = sink._event

    def bad_event(doc: dict) -> bytes:  # type: ignore[type-arg]
        return b'{"event": ' if doc is docs[1] else original(doc)

    sink._event = bad_event  # type: ignore[method-assign]
    with pytest.raises(DocumentsRejected) as info:
        sink.send(docs)
    assert info.value.rejected == {docs[1]["_id"]: "Invalid data format"}


def test_url_parsing_and_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COPYDICOM_SPLUNK_HEC_TOKEN", "from-env")
    cfg = SplunkConfig.from_url("splunk+https://admin:p%40ss@splunk.example:8089?hec=https://splunk.example:8088"
                                "&index=dicom&ack=true&ca_certs=/etc/ca.pem")
    assert (cfg.url, cfg.username, cfg.password, cfg.hec_url, cfg.hec_token, cfg.index, cfg.ack, cfg.ca_certs) == (
        "https://splunk.example:8089", "admin", "p@ss", "https://splunk.example:8088", "from-env", "dicom", True,
        "/etc/ca.pem")
    assert "from-env" not in repr(cfg) and "p@ss" not in repr(cfg)
    monkeypatch.delenv("COPYDICOM_SPLUNK_HEC_TOKEN")
    with pytest.raises(ConfigError, match="hec_token"):
        SplunkConfig.from_url("splunk+https://splunk.example:8089?hec=https://splunk.example:8088")
    assert json.dumps(cfg.timezone) == '"UTC"'

"""HEC replies mapped to errors, with ``responses`` standing in for the collector."""

from __future__ import annotations

import pytest
import requests
import responses

from copydicom.errors import ConfigError, DocumentsRejected, IndexUnavailable
from copydicom.sinks.splunk import SplunkConfig, SplunkIndex, hec_error
from tests.unit.sinks.docs_helpers import instance_doc

HEC = "https://splunk.invalid:8088/services/collector/event"


def sink(**kw: object) -> SplunkIndex:
    cfg = SplunkConfig(name="s", hec_url="https://splunk.invalid:8088", hec_token="tok", index="dicom",
                       backoff=0.0, host="h", **kw)  # type: ignore[arg-type]
    return SplunkIndex(cfg)


@pytest.mark.parametrize("status,code,text,exc", [
    (403, 1, "Token disabled", ConfigError),
    (401, 2, "Token is required", ConfigError),
    (401, 3, "Invalid authorization", ConfigError),
    (403, 4, "Invalid token", ConfigError),
    (400, 7, "Incorrect index", ConfigError),
    (400, 10, "Data channel is missing", ConfigError),
    (400, 14, "ACK is disabled", ConfigError),
    (500, 8, "Internal server error", IndexUnavailable),
    (503, 9, "Server is busy", IndexUnavailable),
    (503, 18, "HEC is unhealthy, queues are full", IndexUnavailable),
    (400, 5, "No data", DocumentsRejected),
    (400, 6, "Invalid data format", DocumentsRejected),
    (400, 12, "Event field is required", DocumentsRejected),
])
def test_hec_codes(status: int, code: int, text: str, exc: type) -> None:
    err = hec_error(status, {"text": text, "code": code}, what="HEC POST", event_ids=["a", "b"])
    assert isinstance(err, exc)
    assert f"HEC code {code}: {text}" in str(err)


def test_success_and_non_json_bodies() -> None:
    assert hec_error(200, {"text": "Success", "code": 0}, what="x") is None
    assert isinstance(hec_error(502, "<html>Bad gateway</html>", what="x"), IndexUnavailable)
    assert isinstance(hec_error(401, "<html>proxy says no</html>", what="x"), ConfigError)
    err = hec_error(400, {"text": "Invalid data format", "code": 6, "invalid-event-number": 1}, what="x",
                    event_ids=["a", "b", "c"])
    assert isinstance(err, DocumentsRejected) and err.rejected == {"b": "Invalid data format"}


@responses.activate
def test_busy_then_success_with_retry_after() -> None:
    responses.post(HEC, status=503, json={"text": "Server is busy", "code": 9}, headers={"Retry-After": "0"})
    responses.post(HEC, status=200, json={"text": "Success", "code": 0})
    s = sink()
    s.send([instance_doc(1)])
    assert len(responses.calls) == 2
    assert responses.calls[1].request.headers["Authorization"] == "Splunk tok"


@responses.activate
def test_connection_error_is_index_unavailable() -> None:
    responses.post(HEC, body=requests.ConnectionError("refused"))
    with pytest.raises(IndexUnavailable, match="ConnectionError"):
        sink(max_retries=1).send([instance_doc(1)])
    assert len(responses.calls) == 2


@responses.activate
def test_invalid_token_is_not_retried() -> None:
    responses.post(HEC, status=403, json={"text": "Invalid token", "code": 4})
    with pytest.raises(ConfigError, match="Invalid token"):
        sink().send([instance_doc(1)])
    assert len(responses.calls) == 1


@responses.activate
def test_event_time_in_configured_zone() -> None:
    responses.post(HEC, status=200, json={"text": "Success", "code": 0})
    sink(timezone="Europe/Paris").send([instance_doc(1)])
    body = responses.calls[0].request.body
    assert b'"time":1704100560.25' in body  # 2024-01-01T10:16:00.25 in Paris is 09:16:00.25 UTC
    with pytest.raises(ConfigError, match="timezone"):
        SplunkConfig.from_mapping("s", {"hec_url": "https://h:8088", "hec_token": "${HOME}", "index": "i",
                                        "timezone": "Mars/Olympus"}, where="e.s")

"""The DICOMweb client over HTTP (the ``responses`` mock): paging, retries, status mapping."""

from __future__ import annotations

from typing import Any

import pytest
import responses

from copydicom.endpoints.dicomweb import DicomwebConfig
from copydicom.endpoints.dicomweb._client import DicomwebClient
from copydicom.endpoints.dicomweb._destination import StowDestination
from copydicom.errors import ConfigError, DestinationUnavailable, SourceUnavailable
from copydicom.model import Identity, Instance, InstanceRef

BASE = "http://dw.test/dicom-web"


def client(side: str = "source", **update: Any) -> DicomwebClient:
    cfg = DicomwebConfig.from_url("dicomweb+http://u:p@dw.test/dicom-web", name="dw").model_copy(
        update={"page_size": 2, "retries": 2, **update})
    return DicomwebClient(cfg, side=side)


def study(uid: str) -> dict[str, Any]:
    return {"0020000D": {"vr": "UI", "Value": [uid]}}


@responses.activate
def test_qido_pages_with_limit_and_offset_until_a_short_page() -> None:
    pages = [[study("1"), study("2")], [study("3"), study("4")], [study("5")]]
    for page in pages:
        responses.get(f"{BASE}/studies", json=page)
    got = [s["0020000D"]["Value"][0] for s in client().qido(("studies",), {"StudyDate": "20240101-"})]
    assert got == ["1", "2", "3", "4", "5"]
    offsets = [c.request.url.split("offset=")[1].split("&")[0] for c in responses.calls]
    assert offsets == ["0", "2", "4"]
    assert all("limit=2" in c.request.url and "StudyDate=20240101-" in c.request.url for c in responses.calls)
    assert responses.calls[0].request.headers["Authorization"].startswith("Basic ")


@responses.activate
def test_qido_empty_204_and_404_mean_no_matches() -> None:
    responses.get(f"{BASE}/studies", status=204)  # a 404 here is a wrong base URL: test_review_round2
    assert list(client().qido(("studies",))) == []
    responses.get(f"{BASE}/studies/9/series", status=404)
    assert list(client().qido(("studies", "9", "series"))) == []


@responses.activate
def test_retries_5xx_and_429_honouring_retry_after_then_gives_up() -> None:
    responses.get(f"{BASE}/studies", status=503, headers={"Retry-After": "0"})
    responses.get(f"{BASE}/studies", status=429, headers={"Retry-After": "0"})
    responses.get(f"{BASE}/studies", json=[study("1")])
    assert len(list(client().qido(("studies",)))) == 1
    assert len(responses.calls) == 3
    responses.reset()
    responses.get(f"{BASE}/studies", status=502, headers={"Retry-After": "0"})
    with pytest.raises(SourceUnavailable, match="HTTP 502"):
        list(client().qido(("studies",)))
    assert len(responses.calls) == 3  # first try + 2 retries


@responses.activate
def test_credentials_errors_are_config_errors_and_bearer_token_is_sent() -> None:
    responses.get(f"{BASE}/studies", status=401)
    with pytest.raises(ConfigError, match="credentials"):
        list(client().qido(("studies",)))
    responses.reset()
    responses.get(f"{BASE}/studies", json=[])
    cfg = DicomwebConfig(name="dw", url=BASE, token="t0k")
    list(DicomwebClient(cfg).qido(("studies",)))
    assert responses.calls[0].request.headers["Authorization"] == "Bearer t0k"


def _stow_ok(uid: str) -> dict[str, Any]:
    return {"00081199": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": [uid]}}]}}


@responses.activate
def test_stow_retries_503_then_reads_the_outcome() -> None:
    responses.post(f"{BASE}/studies", status=503, headers={"Retry-After": "0"})
    responses.post(f"{BASE}/studies", json=_stow_ok("1.2.3"))
    dest = StowDestination(client("destination", stow_linger=0), concurrency=1)
    identity = Identity("P", "1", "2", "1.2.3")
    assert dest.store(Instance(InstanceRef("x"), b"DICM-bytes", identity=identity)) == "stored"
    body = responses.calls[1].request.body
    data = body if isinstance(body, bytes) else b"".join(body)  # the iterable body, re-read for the retry
    assert data.count(b"DICM-bytes") == 1 and data.endswith(b"--\r\n")
    content_type = responses.calls[1].request.headers["Content-Type"]
    assert content_type.startswith('multipart/related; type="application/dicom"; boundary=')


@responses.activate
def test_stow_that_stays_unavailable_fails_the_instance_as_retryable() -> None:
    responses.post(f"{BASE}/studies", status=500, headers={"Retry-After": "0"})
    dest = StowDestination(client("destination", stow_linger=0), concurrency=1)
    with pytest.raises(DestinationUnavailable):
        dest.store(Instance(InstanceRef("x"), b"x", identity=Identity("P", "1", "2", "1.2.3")))


@responses.activate
def test_has_identities_asks_once_per_series_and_pages() -> None:
    def inst(uid: str) -> dict[str, Any]:
        return {"00080018": {"vr": "UI", "Value": [uid]}}

    responses.get(f"{BASE}/studies/S/series/A/instances", json=[inst("a1"), inst("a2")])
    responses.get(f"{BASE}/studies/S/series/A/instances", json=[inst("a3")])
    responses.get(f"{BASE}/studies/S/series/B/instances", json=[inst("b1")])
    dest = StowDestination(client("destination"), concurrency=2)
    ids = [Identity("P", "S", "A", u) for u in ("a1", "a3", "a9")] + [Identity("P", "S", "B", "b1")]
    present = dest.has_identities(ids)
    assert present == {ids[0].orthanc_id, ids[1].orthanc_id, ids[3].orthanc_id}
    urls = [c.request.url for c in responses.calls]
    assert sum("/series/A/" in u for u in urls) == 2 and sum("/series/B/" in u for u in urls) == 1
    assert "SOPInstanceUID=b1" in urls[-1]  # a lone instance is matched directly

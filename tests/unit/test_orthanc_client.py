"""OrthancClient: status mapping, retries, downloads, changes paging (with ``responses``)."""

from __future__ import annotations

import base64
from typing import Iterator

import pytest
import responses

from copydicom.clients.orthanc import OrthancClient, OrthancConfig
from copydicom.errors import (
    ConfigError,
    DestinationUnavailable,
    RejectedByDestination,
    SourceUnavailable,
)
from copydicom.sources.orthanc import ChangesFeed, OrthancSource
from tests.unit.scripted_http import Scripted, ScriptedServer

URL = "http://orthanc.test:8042"


def client(side: str = "source", retries: int = 2) -> OrthancClient:
    cfg = OrthancConfig(name="pacs", url=URL, user="u", password="p", retries=retries, backoff_base=0.0)
    return OrthancClient(cfg, side=side)


@responses.activate
@pytest.mark.parametrize("status", [401, 403])
def test_auth_failures_are_config_errors_without_retry(status: int) -> None:
    responses.get(f"{URL}/system", status=status, body="Unauthorized")
    with pytest.raises(ConfigError, match=f"GET /system on pacs: HTTP {status}"):
        client().system()
    assert len(responses.calls) == 1


@responses.activate
@pytest.mark.parametrize("status", [429, 503])
def test_transient_statuses_are_retried_then_succeed(status: int) -> None:
    responses.get(f"{URL}/system", status=status)
    responses.get(f"{URL}/system", status=status)
    responses.get(f"{URL}/system", json={"Version": "1.10.1"})
    assert client(retries=2).system() == {"Version": "1.10.1"}
    assert len(responses.calls) == 3


@responses.activate
def test_retries_exhausted_source_side() -> None:
    for _ in range(3):
        responses.get(f"{URL}/system", status=503)
    with pytest.raises(SourceUnavailable, match="HTTP 503"):
        client(retries=2).system()
    assert len(responses.calls) == 3


@responses.activate
def test_connection_error_is_retryable() -> None:
    import requests

    responses.get(f"{URL}/system", body=requests.ConnectionError("refused"))
    responses.get(f"{URL}/system", json={"Version": "x"})
    assert client(retries=1).system() == {"Version": "x"}
    responses.get(f"{URL}/changes", body=requests.ConnectionError("refused"))
    with pytest.raises(SourceUnavailable, match="ConnectionError"):
        client(retries=0).changes(0)


@responses.activate
def test_retry_after_header_is_honoured() -> None:
    responses.get(f"{URL}/system", status=429, headers={"Retry-After": "0"})
    responses.get(f"{URL}/system", json={})
    assert client(retries=1).system() == {}
    assert len(responses.calls) == 2


@responses.activate
def test_has_instance_404_is_false() -> None:
    responses.get(f"{URL}/instances/abc/metadata", json=[])
    responses.get(f"{URL}/instances/def/metadata", status=404)
    c = client("destination")
    assert c.has_instance("abc") is True
    assert c.has_instance("def") is False


@responses.activate
def test_changes_page_since_is_exclusive_and_reports_done_and_last() -> None:
    responses.get(
        f"{URL}/changes",
        match=[responses.matchers.query_param_matcher({"since": "7", "limit": "3"})],
        json={
            "Changes": [
                {"Seq": 8, "ChangeType": "NewInstance", "ID": "i8"},
                {"Seq": 9, "ChangeType": "NewSeries", "ID": "s1"},
                {"Seq": 10, "ChangeType": "NewInstance", "ID": "i10"},
            ],
            "Done": False,
            "Last": 10,
        },
    )
    feed = ChangesFeed(OrthancSource(client()), page_size=3)
    page = feed.page(7)
    assert page.seqs == [8, 9, 10]
    assert [[(r.source_id, r.seq) for r in b] for b in page.batches] == [[("i8", 8)], [("i10", 10)]]
    assert (page.last, page.done) == (10, False)


@responses.activate
def test_changes_page_end_of_feed() -> None:
    responses.get(f"{URL}/changes", json={"Changes": [], "Done": True, "Last": 10})
    page = ChangesFeed(OrthancSource(client())).page(10)
    assert (page.seqs, page.batches, page.last, page.done) == ([], [], 10, True)


@responses.activate
def test_last_change() -> None:
    responses.get(
        f"{URL}/changes", match=[responses.matchers.query_param_matcher({"last": ""})],
        json={"Changes": [], "Done": True, "Last": 42},
    )
    assert client().last_change() == 42


def test_from_url_parses_credentials_and_strips_them() -> None:
    cfg = OrthancConfig.from_url("http://orthanc:s%40cret@127.0.0.1:8042/")
    assert (cfg.url, cfg.user, cfg.password, cfg.name) == ("http://127.0.0.1:8042", "orthanc", "s@cret", "127.0.0.1:8042")
    assert "s@cret" not in repr(cfg)
    with pytest.raises(ConfigError, match="not an Orthanc URL"):
        OrthancConfig.from_url("ftp://host")


# -- data plane (file bodies over http.client): a real loopback server -------------------


@pytest.fixture
def scripted() -> Iterator[ScriptedServer]:
    with ScriptedServer() as server:
        yield server


def loopback_client(server: ScriptedServer, side: str = "source", retries: int = 2) -> OrthancClient:
    cfg = OrthancConfig(name="pacs", url=server.url, user="u", password="p", retries=retries, backoff_base=0.0)
    return OrthancClient(cfg, side=side)


def test_retries_exhausted_destination_side(scripted: ScriptedServer) -> None:
    scripted.script("POST", "/instances", Scripted(500), Scripted(500))
    with pytest.raises(DestinationUnavailable, match="POST /instances on pacs: HTTP 500"):
        loopback_client(scripted, "destination", retries=1).upload(b"DICM")
    assert len(scripted.requests) == 2


def test_upload_503_then_success_is_retried(scripted: ScriptedServer) -> None:
    scripted.script("POST", "/instances", Scripted(503), Scripted(200, b'{"ID": "a", "Status": "Success"}'))
    assert loopback_client(scripted, "destination").upload(b"DICM")["Status"] == "Success"
    assert [r.body for r in scripted.requests] == [b"DICM", b"DICM"]


def test_bad_request_on_upload_is_a_permanent_rejection(scripted: ScriptedServer) -> None:
    scripted.script("POST", "/instances", Scripted(400, b"Bad file format"))
    with pytest.raises(RejectedByDestination, match="HTTP 400: Bad file format"):
        loopback_client(scripted, "destination").upload(b"not dicom")
    assert len(scripted.requests) == 1


def test_conflict_on_upload_means_already_stored(scripted: ScriptedServer) -> None:
    scripted.script("POST", "/instances", Scripted(409))
    assert loopback_client(scripted, "destination").upload(b"DICM") == {"Status": "AlreadyStored"}


def test_upload_sends_dicom_with_basic_auth(scripted: ScriptedServer) -> None:
    scripted.script("POST", "/instances", Scripted(200, b'{"ID": "a", "Status": "AlreadyStored"}'))
    assert loopback_client(scripted, "destination").upload(b"DICM")["Status"] == "AlreadyStored"
    sent = scripted.requests[0]
    assert sent.headers["Content-Type"] == "application/dicom"
    assert sent.headers["Authorization"] == "Basic " + base64.b64encode(b"u:p").decode()
    assert sent.body == b"DICM"


def test_download_asks_for_identity_encoding(scripted: ScriptedServer) -> None:
    body = b"\0" * 128 + b"DICM" + b"x" * 100_000
    scripted.script("GET", "/instances/abc/file", Scripted(200, body))
    assert loopback_client(scripted).download("abc") == body
    assert scripted.requests[0].headers["Accept-Encoding"] == "identity"


def test_download_cut_short_is_retryable(scripted: ScriptedServer) -> None:
    scripted.script("GET", "/instances/abc/file", Scripted(200, b"short", claim_length=5000))
    with pytest.raises(SourceUnavailable, match="download of abc from pacs"):
        loopback_client(scripted, retries=0).download("abc")
    assert len(scripted.requests) == 1


def test_download_keeps_the_connection_alive(scripted: ScriptedServer) -> None:
    for _ in range(3):
        scripted.script("GET", "/instances/abc/file", Scripted(200, b"DICM"))
    c = loopback_client(scripted)
    assert [c.download("abc") for _ in range(3)] == [b"DICM"] * 3
    assert len(c._keepalive._all) == 1

"""One status table for every endpoint type (issue 10): the same outcome, the same error class.

Before, a 425 was retryable for two of the five mappings, and another 4xx was a
RejectedByDestination for two and a ConfigError for the others.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from copydicom.errors import (
    ConfigError,
    CopyDicomError,
    DestinationUnavailable,
    DocumentsRejected,
    IndexUnavailable,
    InvalidInstance,
    RejectedByDestination,
    SourceUnavailable,
    classify_exception,
    classify_http_status,
)
from copydicom.sinks.s3 import map_s3_error
from copydicom.sinks.splunk import hec_error

RETRYABLE = {"source": SourceUnavailable, "destination": DestinationUnavailable, "index": IndexUnavailable}
REJECTED = {"source": InvalidInstance, "destination": RejectedByDestination, "index": DocumentsRejected}
SIDES = ("source", "destination", "index")


def _client_error(status: int, code: str = "") -> ClientError:
    return ClientError({"Error": {"Code": code or str(status), "Message": "m"},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")


def _es_api_error(status: int, error: str = "some_exception") -> Exception:
    import elasticsearch
    from elastic_transport import ApiResponseMeta, HttpHeaders

    meta = ApiResponseMeta(status=status, http_version="1.1", headers=HttpHeaders(), duration=0.0, node=None)  # type: ignore[arg-type]
    return elasticsearch.ApiError(error, meta=meta, body={"error": {"type": error, "reason": "r"}})


def _splunk_http_error(status: int) -> Exception:
    import io

    import splunklib.binding

    response: Any = type("R", (), {"status": status, "reason": "x", "headers": [],
                                    "body": io.BytesIO(b"<response/>")})()
    return splunklib.binding.HTTPError(response)


def _everywhere(status: int, side: str) -> list[CopyDicomError | None]:
    """The same status through each mapping that can see that side."""
    found: list[CopyDicomError | None] = [classify_http_status(status, what="x", side=side)]  # type: ignore[arg-type]
    if side in ("source", "destination"):
        found.append(map_s3_error(_client_error(status), what="x", retryable=RETRYABLE[side]))
    if side == "index":
        found.append(classify_exception(_es_api_error(status), what="x", side="index"))
        found.append(classify_exception(_splunk_http_error(status), what="x", side="index"))
        found.append(hec_error(status, {"text": "?", "code": 99}, what="x", event_ids=["a"]))
    return found


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504])
def test_transient_statuses_are_retryable_everywhere(side: str, status: int) -> None:
    for error in _everywhere(status, side):
        assert type(error) is RETRYABLE[side], (status, side, error)


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("status", [401, 403])
def test_credentials_are_configuration_errors_everywhere(side: str, status: int) -> None:
    for error in _everywhere(status, side):
        assert type(error) is ConfigError, (status, side, error)


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("status", [400, 404, 413, 422])
def test_other_4xx_reject_this_request_by_side(side: str, status: int) -> None:
    for error in _everywhere(status, side):
        assert type(error) is REJECTED[side], (status, side, error)


def test_success_and_409_are_not_errors() -> None:
    for status in (200, 201, 204, 409):
        assert classify_http_status(status, what="x", side="destination") is None


def test_the_old_retryable_keyword_still_picks_the_side() -> None:
    assert type(classify_http_status(404, what="x", retryable=DestinationUnavailable)) is RejectedByDestination
    assert type(classify_http_status(404, what="x", retryable=SourceUnavailable)) is InvalidInstance
    error = classify_http_status(503, what="x", retryable=IndexUnavailable, retry_after=4.0)
    assert type(error) is IndexUnavailable and error.retry_after == 4.0


def test_a_refused_search_query_can_be_a_usage_error() -> None:
    error = classify_exception(_es_api_error(400, "parsing_exception"), what="search", side="index",
                               reject=ConfigError)
    assert type(error) is ConfigError and "parsing_exception" in str(error)


@pytest.mark.parametrize("side", SIDES)
def test_connection_errors_and_timeouts_are_retryable(side: str) -> None:
    import elasticsearch

    for exc in (ConnectionRefusedError(), TimeoutError(), requests.ConnectionError(), requests.ReadTimeout(),
                EndpointConnectionError(endpoint_url="http://x"), ReadTimeoutError(endpoint_url="http://x"),
                elasticsearch.ConnectionError("refused"), elasticsearch.ConnectionTimeout("slow")):
        assert type(classify_exception(exc, what="x", side=side)) is RETRYABLE[side], exc  # type: ignore[arg-type]


def test_tls_failures_are_configuration_errors() -> None:
    import ssl

    for exc in (ssl.SSLCertVerificationError("bad cert"), requests.exceptions.SSLError("bad cert")):
        error = classify_exception(exc, what="x", side="destination")
        assert type(error) is ConfigError and "TLS verification failed" in str(error)


def test_unknown_exceptions_are_left_to_the_caller() -> None:
    assert classify_exception(ZeroDivisionError(), what="x", side="source") is None

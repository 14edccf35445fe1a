"""Every S3 failure maps to the copydicom error that says what happens next."""

from __future__ import annotations

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from copydicom.errors import (
    ConfigError,
    DestinationUnavailable,
    InvalidInstance,
    RejectedByDestination,
    SourceUnavailable,
)
from copydicom.sinks.s3 import map_s3_error


def _client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "msg"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject"
    )


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("SlowDown", 503, DestinationUnavailable),
        ("Throttling", 400, DestinationUnavailable),
        ("InternalError", 500, DestinationUnavailable),
        ("502", 502, DestinationUnavailable),
        ("RequestTimeout", 400, DestinationUnavailable),
        ("TooManyRequests", 429, DestinationUnavailable),
        ("BadDigest", 400, DestinationUnavailable),
        ("XAmzContentSHA256Mismatch", 400, DestinationUnavailable),
        ("AccessDenied", 403, ConfigError),
        ("InvalidAccessKeyId", 403, ConfigError),
        ("SignatureDoesNotMatch", 403, ConfigError),
        ("403", 403, ConfigError),
        ("NoSuchBucket", 404, ConfigError),
        ("EntityTooLarge", 400, RejectedByDestination),
        ("InvalidArgument", 400, RejectedByDestination),
        ("KeyTooLongError", 400, RejectedByDestination),
    ],
)
def test_client_errors_when_writing(code: str, status: int, expected: type[Exception]) -> None:
    error = map_s3_error(_client_error(code, status), what="PUT x")
    assert type(error) is expected
    assert str(error).startswith(f"PUT x: {code}: msg")


def test_client_errors_when_reading_use_the_source_classes() -> None:
    assert type(map_s3_error(_client_error("SlowDown", 503), what="GET", retryable=SourceUnavailable)) is (
        SourceUnavailable
    )
    assert type(map_s3_error(_client_error("NoSuchKey", 404), what="GET", retryable=SourceUnavailable)) is (
        InvalidInstance
    )


def test_transport_errors_are_retryable_and_missing_credentials_are_config() -> None:
    assert type(map_s3_error(EndpointConnectionError(endpoint_url="http://x"), what="PUT")) is (
        DestinationUnavailable
    )
    assert type(map_s3_error(ConnectTimeoutError(endpoint_url="http://x"), what="PUT")) is DestinationUnavailable
    assert type(map_s3_error(ReadTimeoutError(endpoint_url="http://x"), what="PUT")) is DestinationUnavailable
    assert type(map_s3_error(ConnectionResetError(), what="PUT")) is DestinationUnavailable
    error = map_s3_error(NoCredentialsError(), what="PUT")
    assert type(error) is ConfigError
    assert "AWS_ACCESS_KEY_ID" in str(error)


def test_unexpected_exceptions_are_not_swallowed() -> None:
    with pytest.raises(ZeroDivisionError):
        map_s3_error(ZeroDivisionError(), what="PUT")

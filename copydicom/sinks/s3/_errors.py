"""The one place where S3 and botocore failures become copydicom errors.

=========================================================== =========================
What the client saw                                          copydicom error
=========================================================== =========================
connection refused/reset/closed, timeouts                    ``retryable`` (Destination-
                                                             or SourceUnavailable)
HTTP 5xx, 408, 429, ``SlowDown``, ``Throttling``...          ``retryable``
``BadDigest``, ``XAmzContentSHA256Mismatch``... (bytes        ``retryable`` (the payload
changed in transit; the server's checksum check refused it)  is sent again)
``AccessDenied``, ``InvalidAccessKeyId``,                    :class:`ConfigError`
``SignatureDoesNotMatch``, any 401/403, ``NoSuchBucket``,
``RequestTimeTooSkewed``, missing credentials, bad parameters
any other 4xx                                                :class:`RejectedByDestination`
                                                             (or :class:`InvalidInstance`
                                                             when reading)
=========================================================== =========================

The rules themselves are part of the one table in :mod:`copydicom.errors`
(:func:`~copydicom.errors.classify_exception`); this module keeps the S3 names.
botocore's "standard" retry mode has already retried transient failures
(with back-off) before anything reaches this mapping.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from botocore.exceptions import BotoCoreError, ClientError

from copydicom.errors import (
    CopyDicomError,
    DestinationUnavailable,
    IndexUnavailable,
    RetryableError,
    S3_CONFIG_CODES,
    S3_RETRYABLE_CODES,
    Side,
    classify_exception,
)

# The code sets live in the one table of copydicom.errors; re-exported for readers of this module.
_RETRYABLE_CODES = S3_RETRYABLE_CODES
_CONFIG_CODES = S3_CONFIG_CODES


def error_code(exc: ClientError) -> str:
    """The S3 error code of a client error (``"404"`` for a bodiless HEAD reply)."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def http_status(exc: ClientError) -> int:
    """The HTTP status of a client error (0 if unknown)."""
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def map_s3_error(
    exc: BaseException,
    *,
    what: str,
    retryable: type[RetryableError] = DestinationUnavailable,
) -> CopyDicomError:
    """Return the copydicom error for a botocore/boto3 failure (through :func:`copydicom.errors.classify_exception`).

    Parameters
    ----------
    exc
        What boto3 raised.
    what
        A description free of patient data (``"PUT s3://bucket/prefix/... (orthanc id)"``).
    retryable
        :class:`DestinationUnavailable` when writing, :class:`SourceUnavailable` when reading.
    """
    side: Side = ("index" if issubclass(retryable, IndexUnavailable)
                  else "destination" if issubclass(retryable, DestinationUnavailable) else "source")
    mapped = classify_exception(exc, what=what, side=side)
    if mapped is None:
        raise exc
    return mapped


@contextmanager
def s3_errors(what: str, *, retryable: type[RetryableError] = DestinationUnavailable) -> Iterator[None]:
    """Translate boto3 failures inside the block with :func:`map_s3_error`."""
    try:
        yield
    except (BotoCoreError, ClientError, OSError) as exc:
        raise map_s3_error(exc, what=what, retryable=retryable) from exc

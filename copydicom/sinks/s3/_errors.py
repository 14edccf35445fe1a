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

botocore's "standard" retry mode has already retried transient failures
(with back-off) before anything reaches this mapping.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from copydicom.errors import (
    ConfigError,
    CopyDicomError,
    DestinationUnavailable,
    InvalidInstance,
    RejectedByDestination,
    RetryableError,
)

_RETRYABLE_CODES = frozenset(
    {
        "SlowDown", "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled",
        "RequestThrottledException", "TooManyRequestsException", "ProvisionedThroughputExceededException",
        "RequestLimitExceeded", "BandwidthLimitExceeded", "RequestTimeout", "RequestTimeoutException",
        "InternalError", "ServiceUnavailable", "PriorRequestNotComplete", "OperationAborted",
        "BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch", "IncompleteBody",
        "ConditionalRequestConflict",
    }
)
_CONFIG_CODES = frozenset(
    {
        "AccessDenied", "AllAccessDisabled", "AccountProblem", "InvalidAccessKeyId",
        "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "TokenRefreshRequired",
        "NoSuchBucket", "InvalidBucketName", "PermanentRedirect", "AuthorizationHeaderMalformed",
        "RequestTimeTooSkewed", "InvalidRequest.KMS", "KMS.NotFoundException", "KMS.DisabledException",
        "NotImplemented", "UnauthorizedAccess",
    }
)


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
    """Return the copydicom error for a botocore/boto3 failure.

    Parameters
    ----------
    exc
        What boto3 raised.
    what
        A description free of patient data (``"PUT s3://bucket/prefix/... (orthanc id)"``).
    retryable
        :class:`DestinationUnavailable` when writing, :class:`SourceUnavailable` when reading.
    """
    if isinstance(exc, CopyDicomError):
        return exc
    if isinstance(exc, ClientError):
        code, status = error_code(exc), http_status(exc)
        message = str(exc.response.get("Error", {}).get("Message", "") or "")
        detail = f"{what}: {code or 'HTTP ' + str(status)}" + (f": {message}" if message else "")
        if code == "NoSuchBucket":
            return ConfigError(f"{detail} (create the bucket first; copydicom never creates buckets)")
        if code in _CONFIG_CODES or status in (401, 403):
            return ConfigError(f"{detail} (check the credentials and permissions of this endpoint)")
        if code in _RETRYABLE_CODES or status in (408, 425, 429) or status >= 500:
            return retryable(detail)
        if status == 0:  # no HTTP reply at all
            return retryable(detail)
        if retryable is DestinationUnavailable:
            return RejectedByDestination(detail)
        return InvalidInstance(detail)
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return ConfigError(f"{what}: no usable S3 credentials ({type(exc).__name__}); set "
                           "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the endpoint's credentials")
    if isinstance(exc, ParamValidationError):
        return ConfigError(f"{what}: invalid request parameters: {exc}")
    if isinstance(exc, (BotoConnectionError, HTTPClientError)):
        return retryable(f"{what}: {type(exc).__name__}: {exc}")
    if isinstance(exc, BotoCoreError):
        return retryable(f"{what}: {type(exc).__name__}: {exc}")
    if isinstance(exc, OSError):
        return retryable(f"{what}: {type(exc).__name__}: {exc}")
    raise exc


@contextmanager
def s3_errors(what: str, *, retryable: type[RetryableError] = DestinationUnavailable) -> Iterator[None]:
    """Translate boto3 failures inside the block with :func:`map_s3_error`."""
    try:
        yield
    except (BotoCoreError, ClientError, OSError) as exc:
        raise map_s3_error(exc, what=what, retryable=retryable) from exc

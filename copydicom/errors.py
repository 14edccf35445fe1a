"""The one exception hierarchy of copydicom: every error says what happens next.

::

    CopyDicomError
     ├── ConfigError ............ stop at start-up; exit status 2; fix the config
     ├── RetryableError ......... back off and retry; the checkpoint never advances past it
     │    ├── SourceUnavailable ....... the source server cannot be reached or answered 5xx/429
     │    ├── DestinationUnavailable .. a destination cannot be reached or answered 5xx/429
     │    └── IndexUnavailable ........ an index sink is down; its documents stay in the spool
     ├── SkippableError ......... quarantine this one instance, with the reason; carry on
     │    ├── InvalidInstance ......... not readable as DICOM, or fails validation
     │    ├── RejectedByDestination ... a destination refused it permanently (4xx)
     │    ├── DeidentificationError ... the de-identification stage could not make it safe
     │    ├── PixelRiskError .......... pixels may carry burned-in identity (PS3.15 E.1.1)
     │    └── DocumentsRejected ....... an index refused some documents permanently (HTTP 400)
     └── FatalError ............. stop the daemon (non-zero exit): nothing sensible to retry
          └── LedgerError ............. the state database cannot be written

Every transport outcome (an HTTP status seen from the source, a destination
or an index; a connection error or a timeout; a botocore, elasticsearch or
splunklib exception) maps to these classes through one table in this module
(:func:`classify_http_status` for a status, :func:`classify_exception` for an
exception), so callers decide by class, never by status, and every endpoint
type follows the same rules.
"""

from __future__ import annotations

import http.client
import re
import ssl
import sys
from typing import Any, Literal


class CopyDicomError(Exception):
    """Base class of every error raised by copydicom on purpose."""

    #: Process exit status when this error ends a command.
    exit_status: int = 1


class ConfigError(CopyDicomError):
    """The configuration is invalid; raised at start-up, never mid-run.

    The message names the key (``routes[0].destinations``) and what is wrong.
    """

    exit_status = 2


class RetryableError(CopyDicomError):
    """A transient failure: back off and try again later.

    Parameters
    ----------
    message
        What failed, with Orthanc IDs or endpoint names only (never patient data).
    retry_after
        Seconds the server asked us to wait (``Retry-After``), if it said.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SourceUnavailable(RetryableError):
    """The source server is down, timed out, or answered 5xx/429."""


class DestinationUnavailable(RetryableError):
    """A destination is down, timed out, or answered 5xx/429."""


class IndexUnavailable(RetryableError):
    """An index sink is down; documents stay in the durable spool."""


class SkippableError(CopyDicomError):
    """This one instance cannot be processed: quarantine it with the reason."""

    #: Short machine-readable reason code stored in the ledger (grouped by ``status``).
    code: str = "skipped"


class InvalidInstance(SkippableError):
    """The bytes are not readable DICOM, or the output failed validation."""

    code = "invalid"


class RejectedByDestination(SkippableError):
    """A destination refused the instance permanently (HTTP 4xx other than 409/429)."""

    code = "rejected"


class DeidentificationError(SkippableError):
    """De-identification could not produce a safe output for this instance."""

    code = "deid"


class PixelRiskError(SkippableError):
    """Pixel data may show identity (Burned In Annotation, US, secondary capture...)."""

    code = "pixel-risk"


class DocumentsRejected(SkippableError):
    """An index sink refused some documents permanently (e.g. a mapping error, HTTP 400).

    Attributes
    ----------
    rejected
        ``{document _id: reason}`` of the refused documents; the others were indexed.
    """

    code = "index-rejected"

    def __init__(self, message: str, *, rejected: dict[str, str] | None = None) -> None:
        super().__init__(message)
        #: Empty when the index refused the whole request: the spool keeps every document pending.
        self.rejected = dict(rejected or {})


class FatalError(CopyDicomError):
    """Nothing sensible to retry: stop the daemon with a non-zero status."""


class LedgerError(FatalError):
    """The state database cannot be read or written (disk full, corrupt, read-only)."""




# ---------------------------------------------------------------------------------------------
# The one status classifier
# ---------------------------------------------------------------------------------------------

#: Which end of a transfer answered: it picks the class of a retryable or a permanent failure.
Side = Literal["source", "destination", "index"]

#: Retryable class per side (the server is down, busy, or timed out).
RETRYABLE: dict[str, type[RetryableError]] = {
    "source": SourceUnavailable, "destination": DestinationUnavailable, "index": IndexUnavailable,
}
#: Permanent refusal of this one request, per side: the source's bytes are unusable, a destination
#: refuses the instance, an index refuses the documents.
REJECTED: dict[str, type[SkippableError]] = {
    "source": InvalidInstance, "destination": RejectedByDestination, "index": DocumentsRejected,
}

#: The table: HTTP status -> what happens next.  Rows are read in order, first match wins.
#: ``ok``: success; ``config``: wrong credentials or permissions do not heal by retrying;
#: ``retry``: transient (RFC 9110 408 Request Timeout, RFC 8470 425 Too Early, RFC 6585 429,
#: every 5xx); ``reject``: any other 4xx refuses this request permanently.
#: 409 is success: Orthanc and S3 conditional writes use it for "already there".
STATUS_TABLE: tuple[tuple[str, Any], ...] = (
    ("ok", lambda s: 200 <= s < 300 or s == 409),
    ("config", lambda s: s in (401, 403)),
    ("retry", lambda s: s in (408, 425, 429) or s >= 500 or s == 0),
    ("reject", lambda s: 400 <= s < 500),
    ("retry", lambda s: True),  # 1xx/3xx where a final reply was expected: a confused proxy, try again
)

#: Service error codes (S3 and AWS APIs, as botocore reports them) that decide before the status.
S3_RETRYABLE_CODES = frozenset(
    {
        "SlowDown", "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled",
        "RequestThrottledException", "TooManyRequestsException", "ProvisionedThroughputExceededException",
        "RequestLimitExceeded", "BandwidthLimitExceeded", "RequestTimeout", "RequestTimeoutException",
        "InternalError", "ServiceUnavailable", "PriorRequestNotComplete", "OperationAborted",
        "BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch", "IncompleteBody",
        "ConditionalRequestConflict",
    }
)
S3_CONFIG_CODES = frozenset(
    {
        "AccessDenied", "AllAccessDisabled", "AccountProblem", "InvalidAccessKeyId",
        "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "TokenRefreshRequired",
        "NoSuchBucket", "InvalidBucketName", "PermanentRedirect", "AuthorizationHeaderMalformed",
        "RequestTimeTooSkewed", "InvalidRequest.KMS", "KMS.NotFoundException", "KMS.DisabledException",
        "NotImplemented", "UnauthorizedAccess",
    }
)

_CONFIG_HINT = " (check the credentials of this endpoint)"


def status_verdict(status: int) -> str:
    """``"ok"``, ``"config"``, ``"retry"`` or ``"reject"`` for an HTTP status (see :data:`STATUS_TABLE`)."""
    for verdict, matches in STATUS_TABLE:
        if matches(status):
            return str(verdict)
    raise AssertionError("unreachable: the table ends with a catch-all row")  # pragma: no cover


def _side_of(retryable: type[RetryableError] | None, side: Side | None) -> Side:
    if side is not None:
        return side
    if retryable is not None and issubclass(retryable, IndexUnavailable):
        return "index"
    if retryable is not None and issubclass(retryable, DestinationUnavailable):
        return "destination"
    return "source"


def make_error(
    verdict: str,
    detail: str,
    *,
    side: Side,
    retry_after: float | None = None,
    reject: type[CopyDicomError] | None = None,
    config_hint: str = _CONFIG_HINT,
) -> CopyDicomError:
    """The error of class ``verdict`` (``config``/``retry``/``reject``) for ``side``, with ``detail``."""
    if verdict == "config":
        return ConfigError(detail + config_hint)
    if verdict == "retry":
        return RETRYABLE[side](detail, retry_after=retry_after)
    return (reject or REJECTED[side])(detail)


def classify_http_status(
    status: int,
    *,
    what: str,
    retryable: type[RetryableError] | None = None,
    side: Side | None = None,
    body: str = "",
    retry_after: float | None = None,
    reject: type[CopyDicomError] | None = None,
) -> CopyDicomError | None:
    """Map an HTTP status to the error class that says what happens next.

    Parameters
    ----------
    status
        The HTTP status code of the reply (0: no reply at all).
    what
        A short description of the request (``"POST /instances on research"``),
        free of patient data; it becomes the message.
    retryable
        The :class:`RetryableError` subclass of this side (kept for older callers; ``side`` is preferred).
    side
        ``"source"``, ``"destination"`` or ``"index"``: who answered.
    body
        The first bytes of the reply, for the message (servers' error text).
    retry_after
        The parsed ``Retry-After`` header, if any (see :func:`copydicom.retry.parse_retry_after`).
    reject
        Class of a permanent 4xx instead of the side's default (a search query that the index
        refuses is a usage error, :class:`ConfigError`).

    Returns
    -------
    CopyDicomError or None
        ``None`` for success (2xx and 409); otherwise the error to raise.

    Notes
    -----
    The rules are :data:`STATUS_TABLE`, the same for every endpoint type: 401 and
    403 are configuration errors; 408, 425, 429 and 5xx are retryable; other 4xx
    reject this request (:class:`InvalidInstance` from a source,
    :class:`RejectedByDestination` at a destination, :class:`DocumentsRejected`
    at an index).
    """
    verdict = status_verdict(status)
    if verdict == "ok":
        return None
    detail = f"{what}: HTTP {status}"
    if body:
        detail += f": {_redacted_body(body)}"
    return make_error(verdict, detail, side=_side_of(retryable, side), retry_after=retry_after, reject=reject)


#: A DICOM UID (PS3.5 9.1: a root of 0, 1 or 2, then at least four more components, or a UUID-derived
#: ``2.25.<integer>`` of PS3.5 B.2); IP addresses (three dots) are not matched.
_UID_RE = re.compile(r"(?<![\d.])(?:[0-2](?:\.\d+){4,}|2\.25\.\d{6,})(?![\d.])")


def _redacted_body(body: str) -> str:
    """A server's error text on one line, without UIDs.

    Servers echo the request in their errors (Orthanc's ``"Uri"``: ``/dicom-web/studies/<Study
    Instance UID>/...``), and the message goes to logs and quarantine reasons, which never carry
    UIDs of the source (they identify the patient's study before de-identification).
    """
    return _UID_RE.sub("<uid>", " ".join(body[:300].split()))


def _module(name: str) -> Any:
    """An already imported module, or ``None``: an exception of a library is only seen once it is loaded."""
    return sys.modules.get(name)


def classify_exception(
    exc: BaseException,
    *,
    what: str,
    side: Side,
    reject: type[CopyDicomError] | None = None,
) -> CopyDicomError | None:
    """Map a transport exception to the error tree (``None``: not a transport failure we know).

    ============================================================= =====================
    What the client raised                                          copydicom error
    ============================================================= =====================
    a :class:`CopyDicomError`                                       itself
    TLS failure (``ssl.SSLError``, requests ``SSLError``,           :class:`ConfigError`
    elasticsearch ``SSLError``)
    connection refused/reset/closed, timeouts, cut replies          retryable of the side
    (``OSError``, ``http.client.HTTPException``, requests
    ``ConnectionError``/``Timeout``, botocore
    ``EndpointConnectionError``/``ConnectionError``/``HTTPClientError``,
    elasticsearch ``ConnectionError``/``ConnectionTimeout``)
    botocore ``ClientError``: its code (:data:`S3_RETRYABLE_CODES`, table by code, then
    :data:`S3_CONFIG_CODES`), then its HTTP status                 :data:`STATUS_TABLE`
    botocore missing credentials, bad parameters                    :class:`ConfigError`
    elasticsearch ``ApiError``: its status                          :data:`STATUS_TABLE`
    elasticsearch ``UnsupportedProductError``                       :class:`ConfigError`
    splunklib ``AuthenticationError``                               :class:`ConfigError`
    splunklib ``HTTPError``: its status                             :data:`STATUS_TABLE`
    ============================================================= =====================
    """
    if isinstance(exc, CopyDicomError):
        return exc
    name = type(exc).__name__
    botocore = _module("botocore.exceptions")
    if botocore is not None:
        if isinstance(exc, botocore.ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            message = str(error.get("Message", "") or "")
            detail = f"{what}: {code or 'HTTP ' + str(status)}" + (f": {message}" if message else "")
            if code == "NoSuchBucket":
                return ConfigError(f"{detail} (create the bucket first; copydicom never creates buckets)")
            hint = " (check the credentials and permissions of this endpoint)"
            if code in S3_CONFIG_CODES:
                return make_error("config", detail, side=side, config_hint=hint)
            if code in S3_RETRYABLE_CODES:
                return make_error("retry", detail, side=side)
            verdict = status_verdict(status)
            return make_error("retry" if verdict == "ok" else verdict, detail, side=side, reject=reject,
                              config_hint=hint)
        if isinstance(exc, (botocore.NoCredentialsError, botocore.PartialCredentialsError)):
            return ConfigError(f"{what}: no usable S3 credentials ({name}); set "
                               "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the endpoint's credentials")
        if isinstance(exc, botocore.ParamValidationError):
            return ConfigError(f"{what}: invalid request parameters: {exc}")
        if isinstance(exc, botocore.BotoCoreError):  # EndpointConnectionError, timeouts, HTTPClientError...
            return make_error("retry", f"{what}: {name}: {exc}", side=side)
    elastic = _module("elasticsearch")
    if elastic is not None:
        if isinstance(exc, elastic.ApiError):
            status = int(exc.meta.status)
            if exc.error == "media_type_header_exception":
                return ConfigError(f"{what}: the cluster refuses this client's major version "
                                   f"(elasticsearch-py {elastic.__versionstr__}); install the client "
                                   "of the cluster's major version, e.g. 'elasticsearch>=8,<9' for 8.x")
            verdict = status_verdict(status)
            detail = f"{what}: HTTP {status}" + (f": {exc.error}{_es_reason(exc.body)}" if verdict == "reject" else "")
            return make_error("retry" if verdict == "ok" else verdict, detail, side=side, reject=reject)
        if isinstance(exc, elastic.SSLError):  # elastic_transport.TlsError: certificate refused
            return ConfigError(f"{what}: TLS verification failed ({name}); check ca_certs")
        if isinstance(exc, elastic.TransportError):  # connection refused, timeout
            return make_error("retry", f"{what}: {name}", side=side)
        if isinstance(exc, elastic.UnsupportedProductError):
            return ConfigError(f"{what}: the server is not Elasticsearch")
    splunk = _module("splunklib.binding")
    if splunk is not None:
        if isinstance(exc, splunk.AuthenticationError):
            return ConfigError(f"{what}: login failed (username/password)")
        if isinstance(exc, splunk.HTTPError):
            status = int(getattr(exc, "status", 0))
            verdict = status_verdict(status)
            detail = f"{what}: HTTP {status}" + (f": {str(exc)[:300]}" if verdict == "reject" else "")
            return make_error("retry" if verdict == "ok" else verdict, detail, side=side, reject=reject,
                              config_hint=" (check the credentials)")
    requests_exc = _module("requests.exceptions")
    if requests_exc is not None:
        if isinstance(exc, requests_exc.SSLError):
            return ConfigError(f"{what}: TLS verification failed: {exc}")
        if isinstance(exc, requests_exc.RequestException):  # ConnectionError, Timeout, ChunkedEncodingError...
            return make_error("retry", f"{what}: {name}", side=side)
    if isinstance(exc, ssl.SSLError):
        return ConfigError(f"{what}: TLS verification failed: {exc}")
    if isinstance(exc, (OSError, http.client.HTTPException)):
        return make_error("retry", f"{what}: {name}", side=side)
    return None


def _es_reason(body: Any) -> str:
    """``": <reason>"`` of an Elasticsearch error body (its first root cause), or ``""``."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return ""
    causes = error.get("root_cause")
    cause = causes[0] if isinstance(causes, list) and causes and isinstance(causes[0], dict) else error
    reason = cause.get("reason")
    return f": {str(reason)[:300]}" if reason else ""

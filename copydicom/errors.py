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

Each HTTP client maps status codes to these classes in one place
(:func:`classify_http_status`), so callers decide by class, never by status.
"""

from __future__ import annotations


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

    def __init__(self, message: str, *, rejected: dict[str, str]) -> None:
        super().__init__(message)
        self.rejected = rejected


class FatalError(CopyDicomError):
    """Nothing sensible to retry: stop the daemon with a non-zero status."""


class LedgerError(FatalError):
    """The state database cannot be read or written (disk full, corrupt, read-only)."""


def classify_http_status(
    status: int,
    *,
    what: str,
    retryable: type[RetryableError],
    body: str = "",
    retry_after: float | None = None,
) -> CopyDicomError | None:
    """Map an HTTP status to the error class that says what happens next.

    Parameters
    ----------
    status
        The HTTP status code of the reply.
    what
        A short description of the request (``"POST /instances on research"``),
        free of patient data; it becomes the message.
    retryable
        The :class:`RetryableError` subclass for this side (source or destination).
    body
        The first bytes of the reply, for the message (servers' error text).
    retry_after
        The parsed ``Retry-After`` header, if any.

    Returns
    -------
    CopyDicomError or None
        ``None`` for success (2xx and 409, which Orthanc and S3 use for
        "already there"); otherwise the error to raise.

    Notes
    -----
    401 and 403 are configuration errors (wrong credentials do not heal by
    retrying); 408, 429 and 5xx are retryable; other 4xx reject this request.
    """
    if 200 <= status < 300 or status == 409:
        return None
    detail = f"{what}: HTTP {status}"
    if body:
        detail += f": {body[:300].strip()}"
    if status in (401, 403):
        return ConfigError(detail + " (check the credentials of this endpoint)")
    if status in (408, 425, 429) or status >= 500:
        return retryable(detail, retry_after=retry_after)
    return RejectedByDestination(detail) if retryable is DestinationUnavailable else InvalidInstance(detail)

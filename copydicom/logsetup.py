"""Logging: one line per event, plain or JSON, with credentials masked.

Log Orthanc IDs, endpoint names and counts; never patient names, IDs, dates,
or UIDs before de-identification, and never secrets.  As a safety net every
record passes through :func:`mask_secrets`, which hides the password of any
URL (``http://user:secret@host`` becomes ``http://user:***@host``) and
``token=``/``password=`` query values.
"""

from __future__ import annotations

import collections
import json
import logging
import re
import sys
import time
import warnings

_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]*)@")
_SECRET_PARAMS = re.compile(
    r"(?P<key>(?:hec_token|token|password|api_key|apikey|secret|aws_secret_access_key)=)(?P<value>[^&\s\"']+)",
    re.IGNORECASE,
)


def mask_secrets(text: str) -> str:
    """Hide passwords in URLs and secret-looking query parameters."""
    text = _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    return _SECRET_PARAMS.sub(lambda m: f"{m['key']}***", text)


class _MaskingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return mask_secrets(super().format(record))


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in getattr(record, "fields", {}).items():
            payload[key] = value
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return mask_secrets(json.dumps(payload, default=str))


class _NoValueMessages(logging.Filter):
    """Drop pydicom messages that quote element values (they may be patient data)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Invalid value for VR" not in record.getMessage()


def quiet_pydicom_values() -> None:
    """Keep pydicom's "Invalid value for VR XX: '<value>'" out of logs and warnings (idempotent)."""
    pylog = logging.getLogger("pydicom")
    if not any(isinstance(f, _NoValueMessages) for f in pylog.filters):
        pylog.addFilter(_NoValueMessages())
        warnings.filterwarnings("ignore", message="Invalid value for VR")


_warnings_log = logging.getLogger("py.warnings")


class _RecentMessages(logging.Filter):
    """Remember the last messages of a logger (pydicom's ``warn_and_log`` logs and warns the same text)."""

    def __init__(self) -> None:
        super().__init__()
        self.recent: collections.deque[str] = collections.deque(maxlen=64)

    def filter(self, record: logging.LogRecord) -> bool:
        self.recent.append(record.getMessage())
        return True


_pydicom_recent = _RecentMessages()


def _log_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: object = None, line: str | None = None) -> None:
    """``warnings.showwarning`` replacement: one log record, one line, no source line.

    The standard :func:`logging.captureWarnings` formats a warning with
    :func:`warnings.formatwarning`, which appends the offending source line on a
    second line (a plain-text log would then hold two lines per warning); here the
    record is ``"<Category>: <message>"`` on the ``py.warnings`` logger, so it goes
    through the same formatter (JSON with ``--log-json``) and the same masking.
    """
    if str(message) in _pydicom_recent.recent:
        return  # pydicom's warn_and_log already logged this very message
    text = " ".join(str(message).split())
    _warnings_log.warning("%s: %s", category.__name__, text)


def capture_warnings() -> None:
    """Route every Python warning (pydicom's ``UserWarning``s among them) through logging (idempotent)."""
    if not any(isinstance(f, _NoValueMessages) for f in _warnings_log.filters):
        _warnings_log.addFilter(_NoValueMessages())
    pylog = logging.getLogger("pydicom")
    if _pydicom_recent not in pylog.filters:
        pylog.addFilter(_pydicom_recent)
    warnings.showwarning = _log_warning


def configure_logging(*, json_lines: bool = False, verbose: int = 0) -> None:
    """Set up the root logger for a command or the daemon (stderr, one line per event).

    Python warnings are logged too (:func:`capture_warnings`): nothing else writes to
    stderr, so ``--log-json`` output stays one JSON object per line.
    """
    quiet_pydicom_values()
    capture_warnings()
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(_MaskingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose > 1 else logging.INFO if verbose == 1 else logging.WARNING)
    logging.getLogger("copydicom").setLevel(logging.DEBUG if verbose > 1 else logging.INFO)
    for noisy in ("urllib3", "apscheduler", "botocore", "boto3", "elastic_transport"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

"""HEC replies mapped to copydicom errors, in one place.

Splunk's HEC answers ``{"text": ..., "code": N}``; the code, not only the HTTP
status, says what happens next ("Troubleshoot HTTP Event Collector", status codes).
"""

from __future__ import annotations

from typing import Any

from copydicom.errors import ConfigError, CopyDicomError, DocumentsRejected, IndexUnavailable, status_verdict

#: Token or index problems: fix the configuration (1 disabled, 2 missing, 3 bad auth, 4 invalid, 7 index,
#: 10/11 channel, 14 ack disabled on the token, 16 query-string auth).
_CONFIG_CODES = {1, 2, 3, 4, 7, 10, 11, 14, 16}
#: Transient: 8 internal error, 9 server busy, 18-20 unhealthy.
_RETRY_CODES = {8, 9, 18, 19, 20}
#: One event is bad: 5 no data, 6 invalid data format, 12 event field required, 13 event blank, 15 indexed fields.
_EVENT_CODES = {5, 6, 12, 13, 15}


def hec_error(status: int, body: Any, *, what: str, event_ids: list[str] | None = None,
              retry_after: float | None = None) -> CopyDicomError | None:
    """Return the error for a HEC reply, or ``None`` on success (code 0, HTTP 200).

    Parameters
    ----------
    status
        The HTTP status.
    body
        The parsed JSON reply (or text when the reply was not JSON, e.g. a proxy page).
    what
        Short description for the message (``"HEC POST to dicom"``), no patient data.
    event_ids
        The ``_id`` of each event in the batch, to name the one ``invalid-event-number`` points at.
    """
    code = body.get("code") if isinstance(body, dict) else None
    text = body.get("text", "") if isinstance(body, dict) else str(body)[:200]
    if status == 200 and code in (0, None, 17):
        return None
    detail = f"{what}: HTTP {status}, HEC code {code}: {text}"
    # HEC's own code decides first; without a known code, the one status table of copydicom.errors.
    verdict = ("config" if code in _CONFIG_CODES else "retry" if code in _RETRY_CODES
               else "reject" if code in _EVENT_CODES else status_verdict(status))
    if verdict == "config":
        return ConfigError(detail + " (check the HEC token, its allowed indexes and acknowledgement setting)")
    if verdict in ("retry", "ok"):  # "ok": an HTTP 200 with a failure code, e.g. a confused proxy
        return IndexUnavailable(detail, retry_after=retry_after)
    number = body.get("invalid-event-number") if isinstance(body, dict) else None
    ids = event_ids or []
    bad = ids[number] if isinstance(number, int) and 0 <= number < len(ids) else None
    return DocumentsRejected(detail, rejected={bad: text} if bad else {i: text for i in ids})

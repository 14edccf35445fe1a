"""A small DICOMweb client over :mod:`requests`: paged QIDO-RS, streamed WADO-RS, STOW-RS.

Why not dicomweb-client: its retrieve methods decode instances into pydicom
Datasets and its store method builds the request body in memory from
Datasets, so bytes would be re-encoded (breaking dedupe, de-identification
and ``--verify``, which rely on the source's own bytes) and memory would grow
with the study.  What it would save here is URL building, which is a few
lines; the multipart handling is in :mod:`._multipart`.

Status codes go through :func:`copydicom.errors.classify_http_status`; transient
failures (connection errors, timeouts, 408/425/429/5xx) are retried with
tenacity (exponential backoff, full jitter, ``Retry-After`` honoured and capped).
TODO(foundation): switch to ``copydicom.retry`` (stop-aware, injectable clock) once it lands.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.parse import quote

import requests

from copydicom.clients._session import endpoint_session
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from copydicom.endpoints.dicomweb._config import DicomwebConfig
from copydicom.endpoints.dicomweb._multipart import MultipartBody, MultipartReader, Part, boundary_of
from copydicom.errors import (
    ConfigError,
    CopyDicomError,
    DestinationUnavailable,
    InvalidInstance,
    RetryableError,
    SourceUnavailable,
    classify_http_status,
)

log = logging.getLogger(__name__)
_T = TypeVar("_T")
_DICOM_JSON = "application/dicom+json"
_MAX_RETRY_AFTER = 60.0


def _retry_after(reply: requests.Response) -> float | None:
    value = reply.headers.get("Retry-After", "")
    try:
        return min(float(value), _MAX_RETRY_AFTER)
    except ValueError:
        return None


class DicomwebClient:
    """HTTP access to one DICOMweb service.

    Parameters
    ----------
    config
        Where and how to connect.
    pool_size
        Connections kept open (workers + 2).
    side
        ``"source"`` or ``"destination"``: which retryable error to raise.

    Attributes
    ----------
    counters
        Requests per kind (``qido``, ``wado``, ``metadata``, ``stow``): tests use
        them to show that an index feed downloads no pixel data.
    """

    def __init__(self, config: DicomwebConfig, *, pool_size: int = 6, side: str = "source") -> None:
        self.config = config
        self.name = config.name
        self.base = config.url.rstrip("/")
        self._retryable: type[RetryableError] = SourceUnavailable if side == "source" else DestinationUnavailable
        self.session = endpoint_session(config, pool_size=pool_size)
        if config.token:  # a bearer token instead of basic auth
            self.session.auth = None
            self.session.headers["Authorization"] = f"Bearer {config.token}"
        self.timeout = (config.connect_timeout, config.read_timeout)
        self.counters: dict[str, int] = {}
        self._count_lock = threading.Lock()

    # -- transport ---------------------------------------------------------------------

    def _count(self, kind: str) -> None:
        with self._count_lock:
            self.counters[kind] = self.counters.get(kind, 0) + 1

    def retrying(self, what: str, attempt: Callable[[], _T]) -> _T:
        """Run ``attempt`` until it succeeds or a non-retryable error, backing off in between."""
        jitter = wait_random_exponential(multiplier=0.5, max=20)

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome is not None else None
            if isinstance(exc, RetryableError) and exc.retry_after is not None:
                return exc.retry_after
            return float(jitter(state))

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome is not None else None
            log.info("%s; retry %d/%d", exc, state.attempt_number, self.config.retries)

        retrying = Retrying(
            stop=stop_after_attempt(self.config.retries + 1),
            wait=wait,
            retry=retry_if_exception_type(RetryableError),
            before_sleep=before_sleep,
            reraise=True,
        )
        return retrying(attempt)

    def _send(self, method: str, url: str, what: str, *, stream: bool = False, **kwargs: Any) -> requests.Response:
        try:
            reply = self.session.request(method, url, timeout=self.timeout, stream=stream, **kwargs)
        except requests.Timeout as exc:
            raise self._retryable(f"{what}: timed out ({type(exc).__name__})") from None
        except requests.ConnectionError as exc:
            raise self._retryable(f"{what}: cannot connect ({type(exc).__name__})") from None
        except requests.RequestException as exc:
            raise self._retryable(f"{what}: {type(exc).__name__}") from None
        return reply

    def _check(self, reply: requests.Response, what: str, *, ok_404: bool = False) -> None:
        if reply.status_code == 404 and ok_404:
            return
        error = classify_http_status(
            reply.status_code, what=what, retryable=self._retryable,
            body=reply.text[:300] if not reply.raw or not reply.raw.closed else "",
            retry_after=_retry_after(reply),
        )
        if error is not None:
            raise error

    def url(self, *segments: str) -> str:
        return self.base + "".join("/" + quote(s, safe="") for s in segments)

    # -- QIDO-RS -----------------------------------------------------------------------

    def qido(self, path: tuple[str, ...], params: Mapping[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Every match of a QIDO-RS search, paged with ``limit``/``offset`` (PS3.18 8.3.4.4).

        Only one page is held at a time. A page shorter than ``limit`` ends
        the listing (servers that cap ``limit`` below ``page_size`` need a
        smaller ``page_size``).
        """
        limit = self.config.page_size
        offset = 0
        what = f"QIDO-RS {'/'.join(p if len(p) < 20 else '…' for p in path)} on {self.name}"
        while True:
            query = dict(params or {})
            query.update(limit=limit, offset=offset)

            def attempt() -> list[dict[str, Any]]:
                self._count("qido")
                reply = self._send("GET", self.url(*path), what, params=query, headers={"Accept": _DICOM_JSON})
                # 404 on a search below a study or series means "no such study/series", i.e. no
                # match; 404 on a top-level search means the base URL is not a DICOMweb service,
                # which must not read as "nothing to copy".
                if reply.status_code == 404 and len(path) == 1:
                    raise ConfigError(f"{what}: HTTP 404: the url is not the base of a DICOMweb service "
                                      "(for Orthanc: .../dicom-web)")
                self._check(reply, what, ok_404=True)
                if reply.status_code in (204, 404) or not reply.content.strip():
                    return []
                try:
                    page = reply.json()
                except ValueError:
                    raise self._retryable(f"{what}: the reply is not JSON") from None
                if not isinstance(page, list):
                    raise self._retryable(f"{what}: the reply is not a JSON array")
                return page

            page = self.retrying(what, attempt)
            yield from page
            if len(page) < limit:
                return
            offset += len(page)

    def ping(self) -> None:
        """One QIDO-RS study search (``limit=1``), for health probes; raises like any request."""
        what = f"QIDO-RS probe of {self.name}"
        reply = self._send("GET", self.url("studies"), what, params={"limit": 1}, headers={"Accept": _DICOM_JSON})
        self._check(reply, what)

    def check_base(self) -> str | None:
        """Tell a wrong base URL from a right one without writing anything (``check-config``, start-up).

        Returns
        -------
        str or None
            ``None`` when a DICOMweb service answered at the base URL; a short note when the
            server answered but could not be verified (it refuses QIDO-RS but serves STOW-RS).

        Raises
        ------
        ConfigError
            Credentials refused (401/403), or nothing DICOMweb at the url: QIDO-RS
            (PS3.18 10.6) and STOW-RS (PS3.18 10.5) both answer 404/405, or the
            search answers a JSON array of IDs (Orthanc's own REST API, not ``/dicom-web``).
        RetryableError
            The server cannot be reached or answers 408/425/429/5xx.

        Notes
        -----
        First ``GET {base}/studies?limit=1``: a DICOM JSON array (PS3.18 F.2) or 204 is a
        DICOMweb service. Only when that is not conclusive (404/405, another 4xx, or an
        empty array without ``application/dicom+json``), one STOW-RS request with zero parts
        (an empty multipart/related body): it stores nothing, and Orthanc's plugin answers it
        200 at the right base, 404 at a wrong path and 405 at Orthanc's root. A server that
        refuses both in another way is reported as "could not verify", never as wrong.
        Messages carry the endpoint's name and status codes only (no URL, no credentials).
        """
        where = f"endpoints.{self.name}.url"
        wrong = f"{where}: not the base of a DICOMweb service (for Orthanc: .../dicom-web)"
        what = f"QIDO-RS probe of {self.name}"
        reply = self._send("GET", self.url("studies"), what, params={"limit": 1}, headers={"Accept": _DICOM_JSON})
        qido = reply.status_code
        if qido in (401, 403):
            raise ConfigError(f"{what}: HTTP {qido} (check the credentials of this endpoint)")
        if qido in (408, 425, 429) or qido >= 500:
            raise self._retryable(f"{what}: HTTP {qido}", retry_after=_retry_after(reply))
        if qido == 204:
            return None
        if 200 <= qido < 300:
            try:
                page = reply.json() if reply.content.strip() else []
            except ValueError:
                page = None
            if isinstance(page, list) and page and all(isinstance(item, dict) for item in page):
                return None
            if isinstance(page, list) and page:  # ["<orthanc id>", ...]: Orthanc's REST API
                raise ConfigError(f"{wrong}: the study search answers a list of IDs, not DICOM JSON")
            if page == [] and "dicom+json" in reply.headers.get("Content-Type", "").lower():
                return None
        return self._check_stow(qido, wrong)

    def _check_stow(self, qido: int, wrong: str) -> str | None:
        """The second half of :meth:`check_base`: one STOW-RS POST with no instance in it."""
        what = f"STOW-RS probe of {self.name}"
        body = MultipartBody([])
        reply = self._send("POST", self.url("studies"), what, data=body,
                           headers={"Content-Type": body.content_type, "Accept": _DICOM_JSON})
        stow = reply.status_code
        reply.close()
        if stow in (401, 403):
            raise ConfigError(f"{what}: HTTP {stow} (check the credentials of this endpoint)")
        if stow in (408, 425, 429) or stow >= 500:
            raise self._retryable(f"{what}: HTTP {stow}", retry_after=_retry_after(reply))
        if stow in (404, 405) and qido in (400, 404, 405):
            raise ConfigError(f"{wrong}: QIDO-RS answered HTTP {qido} and STOW-RS HTTP {stow}")
        return (f"could not verify the url: QIDO-RS answered HTTP {qido}, "
                f"{'STOW-RS answers' if stow < 300 else f'STOW-RS HTTP {stow}'}")

    def metadata(self, study: str, series: str) -> list[dict[str, Any]]:
        """``GET .../studies/{s}/series/{se}/metadata``: every instance's header as DICOM JSON."""
        what = f"WADO-RS series metadata on {self.name}"

        def attempt() -> list[dict[str, Any]]:
            self._count("metadata")
            reply = self._send("GET", self.url("studies", study, "series", series, "metadata"), what,
                               headers={"Accept": _DICOM_JSON})
            self._check(reply, what, ok_404=True)
            if reply.status_code == 404:
                return []
            data = reply.json()
            return data if isinstance(data, list) else []

        return self.retrying(what, attempt)

    # -- WADO-RS -----------------------------------------------------------------------

    def accept(self, ts: str | None = None) -> str:
        ts = self.config.transfer_syntax if ts is None else ts
        return f'multipart/related; type="application/dicom"; transfer-syntax={ts}'

    @contextmanager
    def retrieve(self, *segments: str) -> Iterator[Iterator[Part]]:
        """Stream the parts of a WADO-RS retrieval (``studies/{s}/series/{se}[/instances/{i}]``).

        The connection is held until the ``with`` block ends; parts are read
        one at a time.  Only establishing the response is retried: a stream
        that breaks mid-way raises :class:`RetryableError` to the caller.
        """
        what = f"WADO-RS {'series' if len(segments) == 4 else 'instance'} on {self.name}"

        def attempt() -> requests.Response:
            self._count("wado")
            # Accept-Encoding: identity: instances are mostly pixel data, and servers that honour
            # gzip (Orthanc does) compress every file on the fly: measured 20x slower per instance.
            reply = self._send("GET", self.url(*segments), what, stream=True,
                               headers={"Accept": self.accept(), "Accept-Encoding": "identity"})
            if reply.status_code >= 300:
                try:
                    body = reply.text[:300]
                except requests.RequestException:
                    body = ""
                finally:
                    reply.close()
                refused = self._syntax_refused(segments, reply.status_code, body, what)
                if refused is not None:
                    raise refused
                error = classify_http_status(reply.status_code, what=what, retryable=self._retryable, body=body,
                                             retry_after=_retry_after(reply))
                raise error if error is not None else self._retryable(f"{what}: HTTP {reply.status_code}")
            return reply

        reply = self.retrying(what, attempt)
        try:
            try:
                boundary = boundary_of(reply.headers.get("Content-Type", ""))
            except ValueError:
                raise self._retryable(f"{what}: the reply is not multipart/related") from None

            def parts() -> Iterator[Part]:
                try:
                    yield from MultipartReader(self._reader(reply), boundary)
                except (requests.RequestException, ValueError) as exc:
                    raise self._retryable(f"{what}: the stream broke ({type(exc).__name__})") from None

            yield parts()
        finally:
            reply.close()

    def _syntax_refused(self, segments: tuple[str, ...], status: int, body: str, what: str) -> CopyDicomError | None:
        """The error when a failed retrieval was the configured transfer syntax's fault, else ``None``.

        A server that cannot send an instance in the asked transfer syntax says so in many ways:
        406 (PS3.18 8.7.3), 400 "Unsupported transfer syntax", or, for Orthanc asked for JPEG
        Baseline of a 16-bit image, a bare 500. Retrying that cannot help (it was retried 4 times
        per instance and counted failed, so a daemon never got past it). One request for the
        same resource as stored (``*``, headers only) tells: if the server serves that, the
        syntax is the cause. A refusal of the syntax itself (400/406/415 naming it) is the
        endpoint's configuration (stop, exit 2); anything else is this instance (quarantine).
        """
        ts = self.config.transfer_syntax
        if ts == "*" or status in (401, 403, 404, 408, 425, 429) or status < 400:
            return None
        self._count("wado")
        try:
            probe = self._send("GET", self.url(*segments), what, stream=True,
                               headers={"Accept": self.accept("*"), "Accept-Encoding": "identity"})
        except RetryableError:
            return None
        try:
            served = probe.status_code < 300
        finally:
            probe.close()
        if not served:
            return None
        if status in (400, 406, 415) and "transfer" in body.lower():
            return ConfigError(f"endpoints.{self.name}.transfer_syntax: {what}: HTTP {status}: the server does not "
                               f"serve transfer syntax {ts} (it serves instances as stored: transfer_syntax '*')")
        return InvalidInstance(f"{what}: HTTP {status}: the server cannot send this instance in transfer syntax "
                               f"{ts} (it can as stored: transfer_syntax '*')")

    @staticmethod
    def _reader(reply: requests.Response) -> Callable[[int], bytes]:
        """``read(n)`` over the response body, decoding a Content-Encoding the server used anyway."""

        def read(n: int) -> bytes:
            data: bytes = reply.raw.read(n, decode_content=True)
            return data

        return read

    # -- STOW-RS -----------------------------------------------------------------------

    def stow(self, parts: list[bytes]) -> tuple[int, Any]:
        """POST ``/studies`` with the instances as one multipart/related body (PS3.18 10.5).

        Returns ``(status, parsed JSON body or None)`` for the caller to read the
        per-instance outcome; retries only 408/425/429/5xx and transport errors.
        """
        what = f"STOW-RS of {len(parts)} instance(s) to {self.name}"
        body = MultipartBody(parts)

        def attempt() -> tuple[int, Any]:
            self._count("stow")
            reply = self._send(
                "POST", self.url("studies"), what, data=body,
                headers={"Content-Type": body.content_type, "Accept": _DICOM_JSON},
            )
            status = reply.status_code
            if status in (401, 403):
                raise ConfigError(f"{what}: HTTP {status} (check the credentials of this endpoint)")
            if status in (404, 405):
                # POST to the service's /studies has no instance-level 404 or 405 (PS3.18 10.5.3: failures
                # are 400/409/415 with a Failure Reason): the url does not name a STOW-RS service. Without
                # this every instance was quarantined as refused, instead of one clear stop at start.
                raise ConfigError(f"endpoints.{self.name}.url: {what}: HTTP {status}: the url is not the base "
                                  "of a DICOMweb service (for Orthanc: .../dicom-web)")
            if status in (408, 425, 429) or status >= 500:
                raise self._retryable(f"{what}: HTTP {status}", retry_after=_retry_after(reply))
            try:
                parsed = reply.json() if reply.content.strip() else None
            except ValueError:
                parsed = None
            return status, parsed

        return self.retrying(what, attempt)

    def close(self) -> None:
        self.session.close()

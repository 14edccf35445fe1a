"""Write documents to Splunk HEC in batches; search through splunklib jobs.

Event time comes from the instance (acquisition, content, series or study
date/time; PS3.3 C.7.6.1/C.7.3.1), never from the wall clock.  Splunk cannot
overwrite an event, so a resend would duplicate: the spool remembers what was
delivered, and :meth:`SplunkIndex.search` drops repeated ``doc_id`` values.
"""

from __future__ import annotations

import json
import logging
import ssl
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlparse
from zoneinfo import ZoneInfo

import requests

from copydicom.errors import ConfigError, CopyDicomError, IndexUnavailable, classify_exception
from copydicom.retry import Backoff, parse_retry_after
from copydicom.sinks.documents import document_time
from copydicom.sinks.splunk._config import SplunkConfig
from copydicom.sinks.splunk._hec import hec_error

log = logging.getLogger(__name__)


#: Results kept by a search job (Splunk's default max_count of 10000 would silently cut longer result sets).
SEARCH_MAX_COUNT = 10_000_000

class SplunkIndex:
    """An :class:`~copydicom.model.IndexSink` on Splunk (HEC for writes, REST search jobs for reads)."""

    def __init__(self, config: SplunkConfig) -> None:
        self.config = config
        self.name = config.name
        self._zone = ZoneInfo(config.timezone)
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Splunk {config.hec_token}"
        # Passed on every request: a session-level ``verify`` loses to REQUESTS_CA_BUNDLE in requests.
        self._verify: bool | str = config.ca_certs if (config.verify and config.ca_certs) else config.verify
        self.channel = str(uuid.uuid4())
        if config.ack:
            self.session.headers["X-Splunk-Request-Channel"] = self.channel
        #: The one retry policy (copydicom.retry): HEC busy/5xx/connection errors, ``Retry-After`` capped.
        self.backoff = Backoff(retries=config.max_retries, base=config.backoff, cap=30.0)

    # -- writing ---------------------------------------------------------------------------------
    def event_time(self, doc: dict[str, Any]) -> float | None:
        """Epoch seconds of the document's own time, in the configured zone."""
        iso = document_time(doc)
        if not iso:
            return None
        try:
            dt = datetime.fromisoformat(iso)
        except ValueError:
            return None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=self._zone)
        return round(dt.astimezone(timezone.utc).timestamp(), 6)

    def _event(self, doc: dict[str, Any]) -> bytes:
        # doc_id and the top-level fields first, the tag tree last: Splunk's automatic JSON field
        # extraction stops at limits.conf [kv] maxchars (10240 by default).
        body: dict[str, Any] = {"doc_id": doc["_id"]}
        body.update((k, v) for k, v in doc.items() if k not in ("_id", "tags"))
        if "tags" in doc:
            body["tags"] = doc["tags"]
        event: dict[str, Any] = {"host": self.config.host, "source": self.config.source,
                                 "sourcetype": self.config.sourcetype, "index": self.config.index, "event": body}
        t = self.event_time(doc)
        if t is not None:
            event["time"] = t
        return json.dumps(event, separators=(",", ":"), default=str).encode("utf-8")

    def _batches(self, documents: list[dict[str, Any]]) -> Iterator[tuple[list[str], bytes]]:
        ids: list[str] = []
        chunks: list[bytes] = []
        size = 0
        for doc in documents:
            data = self._event(doc)
            if chunks and (len(chunks) >= self.config.batch_size or size + len(data) > self.config.batch_bytes):
                yield ids, b"\n".join(chunks)
                ids, chunks, size = [], [], 0
            ids.append(str(doc["_id"]))
            chunks.append(data)
            size += len(data) + 1
        if chunks:
            yield ids, b"\n".join(chunks)

    def send(self, documents: list[dict[str, Any]]) -> None:
        """Post the documents in batches (concatenated JSON events); wait for acks if enabled.

        Raises
        ------
        ConfigError
            Invalid or disabled token, an index the token may not write to.
        IndexUnavailable
            Server busy, unreachable or 5xx after ``max_retries`` retries, or acks not confirmed
            within ``ack_timeout``.
        DocumentsRejected
            An event was refused (invalid data); the earlier batches were delivered.
        """
        if not self.config.hec_url:
            raise ConfigError(f"index {self.name}: no hec_url/hec_token: this Splunk endpoint can be searched, "
                              "not written to")
        pending: list[int] = []
        for ids, payload in self._batches(documents):
            reply = self._post(ids, payload)
            if self.config.ack:
                ack_id = reply.get("ackId")
                if not isinstance(ack_id, int):
                    raise ConfigError(f"splunk {self.name}: HEC did not return an ackId; is indexer "
                                      "acknowledgement enabled on the token?")
                pending.append(ack_id)
        if pending:
            self._wait_acks(pending)

    def _post(self, ids: list[str], payload: bytes) -> dict[str, Any]:
        url = f"{self.config.hec_url}/services/collector/event"
        what = f"splunk {self.name}: HEC POST ({len(ids)} events)"

        def once() -> dict[str, Any]:
            try:
                resp = self.session.post(url, data=payload, timeout=self.config.timeout, verify=self._verify)
            except requests.RequestException as exc:
                raise self._map(exc, "HEC POST") from None
            try:
                body: Any = resp.json()
            except ValueError:
                body = resp.text
            error = hec_error(resp.status_code, body, what=what, event_ids=ids,
                              retry_after=parse_retry_after(resp.headers.get("Retry-After")))
            if error is not None:
                raise error
            return body if isinstance(body, dict) else {}

        return self.backoff.call(once, what=what)

    def _wait_acks(self, ack_ids: list[int]) -> None:
        url = f"{self.config.hec_url}/services/collector/ack"
        deadline = time.monotonic() + self.config.ack_timeout
        waiting = set(ack_ids)
        delay = 0.05
        while waiting:
            try:
                resp = self.session.post(url, json={"acks": sorted(waiting)}, timeout=self.config.timeout,
                                         verify=self._verify)
                body = resp.json()
            except (requests.RequestException, ValueError) as exc:
                if isinstance(exc, requests.exceptions.SSLError):
                    raise self._map(exc, "ack poll") from None
                raise IndexUnavailable(f"splunk {self.name}: ack poll failed: {type(exc).__name__}") from None
            error = hec_error(resp.status_code, body, what=f"splunk {self.name}: ack poll")
            if error is not None:
                raise error
            acks = body.get("acks", {})
            waiting -= {i for i in waiting if acks.get(str(i)) is True}
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise IndexUnavailable(f"splunk {self.name}: {len(waiting)} batches not acknowledged within "
                                       f"{self.config.ack_timeout:g}s")
            if self.backoff.sleep_for(delay):
                raise IndexUnavailable(f"splunk {self.name}: stop requested while waiting for acknowledgements")
            delay = min(delay * 2, 2.0)

    # -- reading ---------------------------------------------------------------------------------
    def _service(self) -> Any:
        import splunklib.binding
        import splunklib.client

        cfg = self.config
        if not cfg.url:
            raise ConfigError(f"splunk {self.name}: searching needs the management url, username and password")
        parsed = urlparse(cfg.url)
        kwargs: dict[str, Any] = {"host": parsed.hostname, "port": parsed.port or 8089, "scheme": parsed.scheme,
                                  "username": cfg.username, "password": cfg.password, "autologin": True}
        if parsed.scheme == "https" and cfg.verify:
            kwargs["verify"] = True
            kwargs["context"] = ssl.create_default_context(cafile=cfg.ca_certs)
        try:
            return splunklib.client.connect(**kwargs)
        except splunklib.binding.AuthenticationError:
            raise ConfigError(f"splunk {self.name}: login to {cfg.url} failed (username/password)") from None
        except ssl.SSLError as exc:
            raise self._map(exc, f"login to {cfg.url}") from None
        except splunklib.binding.HTTPError as exc:
            raise self._http_error(exc, "login") from None
        except OSError as exc:
            raise IndexUnavailable(f"splunk {self.name}: cannot reach {cfg.url}: {type(exc).__name__}") from None

    def _map(self, exc: BaseException, what: str, *, reject: type[CopyDicomError] | None = None) -> Exception:
        """The copydicom error for a transport or splunklib exception (the one table, copydicom.errors)."""
        mapped = classify_exception(exc, what=f"splunk {self.name}: {what}", side="index", reject=reject)
        return exc if mapped is None else mapped  # type: ignore[return-value]

    def _http_error(self, exc: Any, what: str) -> Exception:
        """A splunklib ``HTTPError`` of a search or login (a refused query is a usage error)."""
        return self._map(exc, what, reject=ConfigError)

    def search(self, query: str) -> Iterator[dict[str, Any]]:
        """Run an SPL search over the index and yield each document once, all result pages.

        ``query`` is SPL: ``SeriesDescription="Dose Record"`` becomes
        ``search index=<index> SeriesDescription="Dose Record"``; a query starting with ``search``
        or ``|`` is sent as written.
        """
        import splunklib.binding
        import splunklib.results

        text = query.strip()
        if not text.startswith(("search ", "|")):
            text = f"search index={self.config.index} {text}".rstrip()
        service = self._service()
        seen: set[str] = set()
        try:
            # max_count: Splunk keeps only max_count results per job (default 10000, and
            # offset + count <= max_count on every results call); raise it so every page is reachable.
            job = service.jobs.create(text, exec_mode="blocking", max_count=SEARCH_MAX_COUNT)
            offset = 0
            while True:
                rows = [r for r in splunklib.results.JSONResultsReader(
                    job.results(output_mode="json", count=self.config.page_size, offset=offset))
                    if isinstance(r, dict)]
                for row in rows:
                    doc = self._document(row)
                    if doc.get("_id") in seen:
                        continue
                    if doc.get("_id"):
                        seen.add(str(doc["_id"]))
                    yield doc
                if len(rows) < self.config.page_size:
                    break
                offset += len(rows)
        except splunklib.binding.HTTPError as exc:
            raise self._http_error(exc, "search") from None
        except OSError as exc:
            raise IndexUnavailable(f"splunk {self.name}: search: {type(exc).__name__}") from None

    @staticmethod
    def _document(row: dict[str, Any]) -> dict[str, Any]:
        raw = row.get("_raw")
        if isinstance(raw, str):
            try:
                doc = json.loads(raw)
            except ValueError:
                doc = None
            if isinstance(doc, dict):
                if "doc_id" in doc:
                    doc["_id"] = doc.pop("doc_id")
                return doc
        return dict(row)

    def close(self) -> None:
        self.session.close()

"""What the console shows and does, behind one small interface.

:class:`Backend` is all the web layer knows: the daemon gives it its live
route states; tests give it a state database alone.  Quarantine entries are
addressed by an opaque ID (a digest of route and source ID), so no source ID
(a file path may be a patient's name) ever appears in a URL.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

log = logging.getLogger(__name__)

RouteStateName = Literal["running", "idle", "waiting", "backing_off", "error", "stopped"]

#: Tags shown to everyone: they describe the image, not the person.
SAFE_TAGS = (
    "Modality", "SOPClassUID", "Rows", "Columns", "NumberOfFrames", "BitsAllocated", "PhotometricInterpretation",
    "Manufacturer", "ManufacturerModelName", "BodyPartExamined", "ImageType", "BurnedInAnnotation",
)
#: Tags shown only to users with the ``phi`` permission, after an explicit reveal (audited).
PHI_TAGS = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyDate", "StudyTime",
    "StudyDescription", "SeriesDescription", "InstitutionName", "ReferringPhysicianName", "StudyInstanceUID",
    "SeriesInstanceUID", "SOPInstanceUID",
)


def entry_id(route: str, source_id: str) -> str:
    """The opaque ID of a quarantine entry (URL-safe; reveals nothing)."""
    return hashlib.sha256(f"{route}\x00{source_id}".encode()).hexdigest()[:24]


def shown_source(source_id: str) -> str:
    """A source ID as shown: an Orthanc ID as it is, a file path or any other ID as a digest."""
    from copydicom.state import display_source_id

    return display_source_id(source_id)


@dataclass(frozen=True)
class RouteView:
    """One route on the overview and in ``GET /api/routes``."""

    name: str
    state: RouteStateName
    checkpoint: int | None = None
    source_last: int | None = None
    backlog: int | None = None
    last_error: str = ""
    last_success: float | None = None
    last_reconcile: str = ""
    throughput: tuple[int, ...] = ()  # instances finished per 5 minutes, oldest first, last hour

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "state": self.state, "checkpoint": self.checkpoint, "source_last": self.source_last,
            "backlog": self.backlog, "last_error": self.last_error, "last_success": self.last_success,
            "last_reconcile": self.last_reconcile, "throughput_per_5min": list(self.throughput),
        }


@dataclass(frozen=True)
class QuarantineItem:
    """One quarantine entry as shown (no patient data)."""

    id: str
    route: str
    source: str
    code: str
    reason: str
    at: float
    has_file: bool

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "route": self.route, "source": self.source, "code": self.code,
                "reason": self.reason, "at": self.at, "has_file": self.has_file}


class Backend(Protocol):
    """The console's view of copydicom."""

    def routes(self) -> list[RouteView]: ...

    def route_names(self) -> list[str]: ...

    def spool_depth(self) -> dict[str, int]: ...

    def quarantine(self, *, route: str | None = None, code: str | None = None, since: float | None = None,
                   limit: int = 500, offset: int = 0) -> tuple[list[QuarantineItem], int]: ...

    def tag_summary(self, item_id: str, *, reveal: bool) -> list[tuple[str, str]] | None: ...

    def retry(self, item_ids: Iterable[str]) -> dict[str, int]: ...

    def purge(self, item_ids: Iterable[str]) -> int: ...

    def dose_report(self) -> str | None: ...


RetryFn = Callable[[list[Any]], dict[str, int]]


@dataclass
class StateBackend:
    """A :class:`Backend` over the state database, optionally with the daemon's live route states.

    Parameters
    ----------
    ledger
        The state store's ledger (quarantine, checkpoints, deliveries).
    route_names_fn
        The configured routes' names.
    live
        The daemon's route states (``name``, ``last_error``, ``last_success``,
        ``failures``, ``backoff_until``, ``runner``...), when the console runs in the daemon.
    retry_fn
        Re-processes quarantine entries through their route (the assembly path); returns counts.
    dose_index
        A SQLite index file for the dose page, if the configuration has one.
    """

    ledger: Any
    route_names_fn: Callable[[], list[str]]
    live: Callable[[], list[Any]] | None = None
    retry_fn: RetryFn | None = None
    dose_index: Path | None = None
    spool_fn: Callable[[], dict[str, int]] | None = None
    _cache: dict[str, tuple[float, Any]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- routes --------------------------------------------------------------------------

    def route_names(self) -> list[str]:
        return self.route_names_fn()

    def _throughput(self) -> dict[str, tuple[int, ...]]:
        """Instances finished per route per 5 minutes over the last hour (one query, cached 10 s)."""
        now = time.time()
        cached = self._cache.get("throughput")
        if cached and now - cached[0] < 10:
            return dict(cached[1])
        since = now - 3600
        rows = self.ledger.store.delivered_per_slot(since, 300)  # either state backend
        out: dict[str, list[int]] = {}
        for route, slot, n in rows:
            out.setdefault(route, [0] * 12)[min(max(int(slot), 0), 11)] += int(n)
        result = {k: tuple(v) for k, v in out.items()}
        self._cache["throughput"] = (now, result)
        return result

    def routes(self) -> list[RouteView]:
        throughput = self._throughput()
        live = {getattr(s, "name", ""): s for s in (self.live() if self.live else [])}
        views = []
        for name in self.route_names():
            checkpoint = self.ledger.checkpoint(name)
            state = live.get(name)
            if state is None:
                views.append(RouteView(name, "stopped", checkpoint, throughput=throughput.get(name, (0,) * 12)))
                continue
            runner = getattr(state, "runner", None)
            last = getattr(runner, "last_seen", None)
            backlog = None if last is None or checkpoint is None else max(0, last - checkpoint)
            views.append(RouteView(
                name, _state_of(state), checkpoint, last, backlog, str(getattr(state, "last_error", "") or ""),
                getattr(state, "last_success", None), str(getattr(state, "last_reconcile", "") or ""),
                throughput.get(name, (0,) * 12),
            ))
        return views

    def spool_depth(self) -> dict[str, int]:
        return dict(self.spool_fn()) if self.spool_fn else {}

    # -- quarantine ----------------------------------------------------------------------

    def _entries(self) -> list[Any]:
        return list(self.ledger.quarantined(None))

    def quarantine(self, *, route: str | None = None, code: str | None = None, since: float | None = None,
                   limit: int = 500, offset: int = 0) -> tuple[list[QuarantineItem], int]:
        """One page of entries, newest first, filtered in SQL (10,000 entries must not slow a page)."""
        where: list[str] = ["1=1"]
        params: list[Any] = []
        for column, value in (("route", route), ("code", code)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if since is not None:
            where.append("at >= ?")
            params.append(since)
        clause = " AND ".join(where)
        from copydicom.state import SqliteStore

        if not isinstance(self.ledger.store, SqliteStore):  # PostgreSQL state: filter the entries in Python
            chosen = [e for e in self._entries() if (route is None or e.route == route)
                      and (code is None or e.code == code) and (since is None or e.at >= since)]
            chosen.sort(key=lambda e: e.at, reverse=True)
            return [QuarantineItem(entry_id(e.route, e.source_id), e.route, shown_source(e.source_id), e.code,
                                   " ".join(str(e.reason).split())[:500], e.at, bool(e.path and Path(e.path).exists()))
                    for e in chosen[offset: offset + limit]], len(chosen)
        conn = self.ledger.connection
        total = int(conn.execute(f"SELECT count(*) FROM quarantine WHERE {clause}", params).fetchone()[0])
        rows = conn.execute(
            f"SELECT route, source_id, code, reason, path, at FROM quarantine WHERE {clause} "
            "ORDER BY at DESC LIMIT ? OFFSET ?", [*params, limit, offset]).fetchall()
        return [
            QuarantineItem(entry_id(r, s), r, shown_source(s), s_code, " ".join(str(reason).split())[:500], at,
                           bool(path and Path(path).exists()))
            for r, s, s_code, reason, path, at in rows
        ], total

    def _find(self, item_ids: Iterable[str]) -> list[Any]:
        wanted = set(item_ids)
        return [e for e in self._entries() if entry_id(e.route, e.source_id) in wanted]

    def tag_summary(self, item_id: str, *, reveal: bool) -> list[tuple[str, str]] | None:
        found = self._find([item_id])
        if not found:
            return None
        path = found[0].path
        if not path or not Path(path).exists():
            return []
        try:
            import pydicom

            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        except Exception:  # noqa: BLE001 - a quarantined file may be anything
            return [("(file)", "not readable as DICOM")]
        rows: list[tuple[str, str]] = []
        for keyword in SAFE_TAGS + (PHI_TAGS if reveal else ()):
            value = ds.get(keyword)
            if value is None:
                continue
            if keyword == "SOPClassUID":
                shown = getattr(value, "name", str(value))
            else:
                shown = str(value)[:120]
            rows.append((keyword, shown))
        if not reveal:
            hidden = sum(1 for k in PHI_TAGS if k in ds)
            if hidden:
                rows.append(("(hidden)", f"{hidden} patient-identifying attribute(s)"))
        return rows

    def retry(self, item_ids: Iterable[str]) -> dict[str, int]:
        entries = self._find(item_ids)
        if not entries:
            return {}
        if self.retry_fn is None:
            raise RuntimeError("retry is not available in this console")
        return self.retry_fn(entries)

    def purge(self, item_ids: Iterable[str]) -> int:
        from copydicom.quarantine import purge_entries

        return purge_entries(self.ledger, self._find(item_ids))

    # -- dose ----------------------------------------------------------------------------

    def dose_report(self) -> str | None:
        if self.dose_index is None or not Path(self.dose_index).exists():
            return None
        from copydicom.sinks.sqlite_index._report import dose_report_html

        page = dose_report_html(self.dose_index, title="Dose")
        start, end = page.find("<body>"), page.rfind("</body>")
        return page[start + 6: end] if start >= 0 and end > start else page


def _state_of(state: Any) -> RouteStateName:
    now = time.time()
    if getattr(state, "stopped", False):
        return "stopped"
    if getattr(state, "waiting", False):
        return "waiting"
    if getattr(state, "running", False):
        return "running"
    if getattr(state, "backoff_until", 0.0) > now:
        return "backing_off"
    if getattr(state, "failures", 0) or getattr(state, "last_error", ""):
        return "error"
    return "idle"


class AuditLog:
    """Append-only JSON lines of PHI reveals and state-changing actions (owner-only file)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()

    def write(self, user: str, action: str, **details: Any) -> None:
        line = json.dumps({"at": time.time(), "user": user, "action": action, **details}, sort_keys=True)
        log.info("console audit: %s by %s", action, user)
        if self.path is None:
            return
        import os

        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as handle:
                handle.write(line + "\n")

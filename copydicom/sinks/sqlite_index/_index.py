"""SQLite schema, idempotent upserts and read-only search.

Tables follow the DICOM information model (PS3.3 A.1.2): patients, studies,
series and instances, plus dose events and summaries from Radiation Dose SR
(PS3.16 TID 10011 CT, TID 10001 projection X-ray).  Every write is an upsert
keyed by the document's ``_id`` so resending a document never duplicates it.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from copydicom.errors import ConfigError, DocumentsRejected, IndexUnavailable, InvalidInstance
from copydicom.sinks.documents import document_time, scalar
from copydicom.sinks.sqlite_index._config import SqliteIndexConfig
from copydicom.state import private_file, restrict_sqlite_companions

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS patients (
    patient_key TEXT PRIMARY KEY,          -- Orthanc patient ID, else PatientID
    patient_id  TEXT
);
CREATE TABLE IF NOT EXISTS studies (
    study_uid     TEXT PRIMARY KEY,
    orthanc_id    TEXT,
    patient_key   TEXT,
    study_date    TEXT,                     -- ISO day YYYY-MM-DD
    study_description TEXT,
    accession_number  TEXT
);
CREATE TABLE IF NOT EXISTS series (
    series_uid    TEXT PRIMARY KEY,
    orthanc_id    TEXT,
    study_uid     TEXT,
    modality      TEXT,
    series_description TEXT,
    series_number INTEGER,
    body_part     TEXT,
    manufacturer  TEXT,
    protocol_name TEXT
);
CREATE TABLE IF NOT EXISTS instances (
    _id          TEXT PRIMARY KEY,
    orthanc_id   TEXT,
    sop_uid      TEXT,
    series_uid   TEXT,
    study_uid    TEXT,
    route        TEXT,
    deidentified INTEGER,
    timestamp    TEXT,
    tags         TEXT,                      -- flattened tag tree, JSON
    document     TEXT                       -- the document without "tags", JSON
);
CREATE TABLE IF NOT EXISTS dose_events (
    _id        TEXT PRIMARY KEY,            -- Irradiation Event UID based
    orthanc_id TEXT,
    study_uid  TEXT,
    route      TEXT,
    event_kind TEXT,                        -- CT / fluoro / projection...
    protocol   TEXT,
    procedure  TEXT,
    ctdivol    REAL,                        -- mGy
    dlp        REAL,                        -- mGy.cm
    dap        REAL,                        -- Gy.m2
    timestamp  TEXT,
    document   TEXT
);
CREATE TABLE IF NOT EXISTS dose_summaries (
    _id        TEXT PRIMARY KEY,
    orthanc_id TEXT,
    study_uid  TEXT,
    route      TEXT,
    procedure  TEXT,
    total_dlp  REAL,
    total_dap  REAL,
    timestamp  TEXT,
    document   TEXT
);
CREATE TABLE IF NOT EXISTS other_documents (
    _id        TEXT PRIMARY KEY,            -- dose screens and any other document type
    doc_type   TEXT,
    orthanc_id TEXT,
    route      TEXT,
    timestamp  TEXT,
    document   TEXT
);
CREATE INDEX IF NOT EXISTS studies_by_day ON studies(study_date);
CREATE INDEX IF NOT EXISTS series_by_modality ON series(modality, study_uid);
CREATE INDEX IF NOT EXISTS series_by_study ON series(study_uid);
CREATE INDEX IF NOT EXISTS instances_by_series ON instances(series_uid);
CREATE INDEX IF NOT EXISTS instances_by_orthanc ON instances(orthanc_id);
CREATE INDEX IF NOT EXISTS dose_by_protocol ON dose_events(protocol, event_kind);
CREATE INDEX IF NOT EXISTS dose_by_procedure ON dose_events(procedure, event_kind);
CREATE INDEX IF NOT EXISTS dose_summary_by_study ON dose_summaries(study_uid);
"""

#: Field names tried in order on dose documents (the extractor's names first, then DICOM concept names).
_FIELDS: dict[str, tuple[str, ...]] = {
    "protocol": ("protocol", "AcquisitionProtocol", "ProtocolName"),
    "procedure": ("procedure", "ProcedureReported", "StudyDescription", "RequestedProcedureDescription"),
    "ctdivol": ("ctdivol", "CTDIvol", "MeanCTDIvol"),
    "dlp": ("dlp", "DLP"),
    "dap": ("dap", "DAP", "DoseAreaProduct"),
    "kind": ("event_kind", "event_type", "IrradiationEventType", "modality", "Modality", "CTAcquisitionType"),
    "total_dlp": ("total_dlp", "CTDoseLengthProductTotal", "DoseLengthProductTotal"),
    "total_dap": ("total_dap", "DoseAreaProductTotal", "FluoroDoseAreaProductTotal"),
}


def _pick(doc: Mapping[str, Any], field: str) -> Any:
    for key in _FIELDS[field]:
        if key in doc and doc[key] is not None:
            value = doc[key]
            if isinstance(value, Mapping):  # {"value": 12.3, "unit": "mGy"}
                value = value.get("value", value.get("Value"))
            return scalar(value)
    return None


def _number(value: Any) -> float | None:
    try:
        return float(value) if value is not None and value != "" else None
    except (TypeError, ValueError):
        return None


def _iso_day(value: Any) -> str | None:
    text = str(scalar(value) or "").replace("-", "")
    return f"{text[0:4]}-{text[4:6]}-{text[6:8]}" if len(text) >= 8 and text[:8].isdigit() else None


class SqliteIndex:
    """An :class:`~copydicom.model.IndexSink` writing to a local SQLite file.

    Thread-safe: one connection guarded by a lock; WAL so readers never block the writer.
    The writing connection (and the schema) is created on the first write or look-up, so
    :meth:`search` alone never opens the file for writing.
    """

    def __init__(self, config: SqliteIndexConfig) -> None:
        self.config = config
        self.name = config.name
        self._lock = threading.Lock()
        self._writer: sqlite3.Connection | None = None

    @property
    def _conn(self) -> sqlite3.Connection:
        """The writing connection, opened (with the schema created) on first use."""
        if self._writer is None:
            try:
                # Owner-only whatever the umask: a plain route's index holds raw tags (PHI).
                private_file(self.config.path)
                conn = sqlite3.connect(str(self.config.path), check_same_thread=False, isolation_level=None)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.executescript(SCHEMA)
                restrict_sqlite_companions(self.config.path)
            except OSError as exc:
                raise IndexUnavailable(f"sqlite index {self.name}: cannot create {self.config.path}: "
                                       f"{exc.strerror}") from None
            except sqlite3.Error as exc:
                raise IndexUnavailable(f"sqlite index {self.name}: cannot open {self.config.path}: {exc}") from None
            self._writer = conn
        return self._writer

    def open(self) -> None:
        """Create the file and the schema now (otherwise the first write or look-up does)."""
        with self._lock:
            self._conn  # noqa: B018 - the property opens the connection

    # -- writing -----------------------------------------------------------------------------------
    def send(self, documents: list[dict[str, Any]]) -> None:
        """Upsert the documents in one transaction (idempotent by ``_id``).

        Raises
        ------
        DocumentsRejected
            For documents without a string ``_id`` or ``doc_type``, or with values SQLite cannot
            store; the others are committed.
        IndexUnavailable
            The database is locked, read-only or the disk is full.
        """
        rejected: dict[str, str] = {}
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                for doc in documents:
                    self._conn.execute("SAVEPOINT doc")
                    try:
                        self._upsert(doc)
                    except (InvalidInstance, sqlite3.InterfaceError, sqlite3.ProgrammingError,
                            sqlite3.IntegrityError) as exc:
                        self._conn.execute("ROLLBACK TO doc")  # no half-written document
                        rejected[str(doc.get("_id"))] = str(exc)[:200]
                    self._conn.execute("RELEASE doc")
                self._conn.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                self._rollback()
                raise IndexUnavailable(f"sqlite index {self.name}: {exc}") from None
            except BaseException:
                self._rollback()
                raise
        if rejected:
            raise DocumentsRejected(f"sqlite index {self.name}: {len(rejected)} documents refused", rejected=rejected)

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def _upsert(self, doc: Mapping[str, Any]) -> None:
        doc_id = doc.get("_id")
        if not isinstance(doc_id, str) or not doc_id:
            raise InvalidInstance("index document without a string _id")
        kind = doc.get("doc_type")
        ts = document_time(doc)
        c = self._conn
        if kind == "instance":
            body = json.dumps({k: v for k, v in doc.items() if k != "tags"}, sort_keys=True, default=str)
            patient_key = doc.get("ParentPatient") or doc.get("PatientID")
            study_uid = doc.get("StudyInstanceUID")
            series_uid = doc.get("SeriesInstanceUID")
            if patient_key:
                c.execute(
                    "INSERT INTO patients VALUES (?, ?) ON CONFLICT(patient_key) DO UPDATE SET "
                    "patient_id = coalesce(excluded.patient_id, patient_id)",
                    (patient_key, doc.get("PatientID")),
                )
            if study_uid:
                c.execute(
                    "INSERT INTO studies VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(study_uid) DO UPDATE SET "
                    "orthanc_id = coalesce(excluded.orthanc_id, orthanc_id), "
                    "patient_key = coalesce(excluded.patient_key, patient_key), "
                    "study_date = coalesce(excluded.study_date, study_date), "
                    "study_description = coalesce(excluded.study_description, study_description), "
                    "accession_number = coalesce(excluded.accession_number, accession_number)",
                    (study_uid, doc.get("ParentStudy"), patient_key, _iso_day(doc.get("StudyDate")),
                     doc.get("StudyDescription"), doc.get("AccessionNumber")),
                )
            if series_uid:
                c.execute(
                    "INSERT INTO series VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(series_uid) DO UPDATE SET "
                    "orthanc_id = coalesce(excluded.orthanc_id, orthanc_id), "
                    "study_uid = coalesce(excluded.study_uid, study_uid), "
                    "modality = coalesce(excluded.modality, modality), "
                    "series_description = coalesce(excluded.series_description, series_description), "
                    "series_number = coalesce(excluded.series_number, series_number), "
                    "body_part = coalesce(excluded.body_part, body_part), "
                    "manufacturer = coalesce(excluded.manufacturer, manufacturer), "
                    "protocol_name = coalesce(excluded.protocol_name, protocol_name)",
                    (series_uid, doc.get("ParentSeries"), study_uid, doc.get("Modality"),
                     doc.get("SeriesDescription"), doc.get("SeriesNumber"), doc.get("BodyPartExamined"),
                     doc.get("Manufacturer"), doc.get("ProtocolName")),
                )
            c.execute(
                "INSERT OR REPLACE INTO instances VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (doc_id, doc.get("ID"), doc.get("SOPInstanceUID"), series_uid, study_uid, doc.get("route"),
                 int(bool(doc.get("deidentified"))), ts,
                 json.dumps(doc.get("tags", {}), sort_keys=True, default=str), body),
            )
            return
        body = json.dumps(doc, sort_keys=True, default=str)
        if kind == "dose_summary":
            c.execute(
                "INSERT OR REPLACE INTO dose_summaries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (doc_id, doc.get("ID"), scalar(doc.get("StudyInstanceUID")), doc.get("route"),
                 _pick(doc, "procedure"), _number(_pick(doc, "total_dlp")), _number(_pick(doc, "total_dap")),
                 ts, body),
            )
        elif kind in ("irradiation_event", "dose_event"):
            c.execute(
                "INSERT OR REPLACE INTO dose_events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (doc_id, doc.get("ID"), scalar(doc.get("StudyInstanceUID")), doc.get("route"),
                 _pick(doc, "kind"), _pick(doc, "protocol"), _pick(doc, "procedure"),
                 _number(_pick(doc, "ctdivol")), _number(_pick(doc, "dlp")), _number(_pick(doc, "dap")),
                 ts, body),
            )
        elif isinstance(kind, str) and kind:
            c.execute("INSERT OR REPLACE INTO other_documents VALUES (?, ?, ?, ?, ?, ?)",
                      (doc_id, kind, doc.get("ID"), doc.get("route"), ts, body))
        else:
            raise InvalidInstance(f"index document {doc_id}: no doc_type")

    # -- reading -----------------------------------------------------------------------------------
    def has(self, doc_ids: list[str]) -> set[str]:
        """Return the subset of ``doc_ids`` present in any document table."""
        found: set[str] = set()
        with self._lock:
            for table in ("instances", "dose_events", "dose_summaries", "other_documents"):
                for i in range(0, len(doc_ids), 500):
                    chunk = doc_ids[i : i + 500]
                    marks = ",".join("?" * len(chunk))
                    rows = self._conn.execute(f"SELECT _id FROM {table} WHERE _id IN ({marks})", chunk)
                    found.update(r[0] for r in rows)
        return found

    def search(self, query: str) -> Iterator[dict[str, Any]]:
        """Run one read-only SELECT on a separate read-only connection; yields rows as dicts."""
        return readonly_query(self.config.path, query)

    def close(self) -> None:
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None


_ALLOWED_ACTIONS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION}
_ALLOWED_ACTIONS.add(getattr(sqlite3, "SQLITE_RECURSIVE", 33))


def _authorizer(action: int, arg1: str | None, arg2: str | None, db: str | None, trigger: str | None) -> int:
    return sqlite3.SQLITE_OK if action in _ALLOWED_ACTIONS else sqlite3.SQLITE_DENY


def readonly_query(path: Path | str, query: str, *, missing_ok: bool = False) -> Iterator[dict[str, Any]]:
    """Run a single SELECT against ``path`` opened read-only, yielding each row as a dict.

    Three guards: the file is opened with ``mode=ro``; an authorizer denies every
    action but SELECT/READ/FUNCTION (so PRAGMA, ATTACH, writes are refused even
    inside a CTE); and exactly one complete statement is accepted.

    With ``missing_ok`` a database that does not exist yet (nothing indexed so far) is an
    empty index: the query is checked against an empty in-memory copy of the schema (a
    wrong query is still refused) and yields no row.

    Raises
    ------
    ConfigError
        If the query is not a single SELECT, or the database does not exist (without ``missing_ok``).
    """
    text = query.strip()
    if not sqlite3.complete_statement(text if text.endswith(";") else text + ";"):
        raise ConfigError("search: the query is not a complete SQL statement")
    p = Path(path)
    if not p.exists() and not missing_ok:
        raise ConfigError(f"search: index database {p} does not exist")
    if p.exists():
        conn = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True)
    else:
        log.info("index database %s does not exist yet: an empty index", p)
        conn = sqlite3.connect(":memory:")
        conn.executescript(SCHEMA)
    try:
        conn.set_authorizer(_authorizer)
        try:
            cur = conn.execute(text)
        except sqlite3.DatabaseError as exc:
            # "not authorized", "You can only execute one statement at a time", syntax errors
            raise ConfigError(f"search: refused or invalid query: {exc}") from None
        except sqlite3.Warning as exc:
            raise ConfigError(f"search: refused query: {exc}") from None
        if cur.description is None:
            raise ConfigError("search: only a single SELECT is allowed")
        names = [d[0] for d in cur.description]
        for row in cur:
            yield dict(zip(names, row))
    finally:
        conn.close()

"""A DICOMweb server as a source: QIDO-RS listings, WADO-RS retrieval, a polling trigger.

Listing is studies -> series -> instances, each paged (constant memory); one
batch per series.  References carry the identity that QIDO-RS returned
(PatientID from the study level, the three UIDs), so dedupe and
identity-addressed destinations need no download, and their ``source_id`` is
Orthanc's instance ID of that identity (a digest: safe to log, and the same
key an Orthanc destination answers to).

Retrieval asks WADO-RS for ``application/dicom`` with ``transfer-syntax=*``
(as stored; PS3.18 8.7.3.5.2), a whole series per request by default: the
parts are written to a private spool file as they stream in and handed to the
workers as soon as each has arrived, so memory holds one instance per worker
whatever the series size.  A part missing from the series response is
fetched alone.
"""

from __future__ import annotations

import datetime as _dt
import io
import logging
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from copydicom.endpoints.dicomweb import _json as J
from copydicom.endpoints.dicomweb._client import DicomwebClient
from copydicom.errors import InvalidInstance, RetryableError
from copydicom.model import Identity, InstanceRef, orthanc_id
from copydicom.stages.filters import DescribedRef

log = logging.getLogger(__name__)

#: Attributes asked at each level beyond the server's defaults (PS3.18 Table 6.7.1-2).  Study and series
#: levels cost one request per study or series; at instance level only what a filter reads is asked
#: (a server may have to open every file for an attribute outside its index: Orthanc does).
STUDY_FIELDS = ("00100020", "00080020", "00080030", "00081030", "00080061")
SERIES_FIELDS = ("00080060", "0008103E", "00180015", "00080070", "00080021")
INSTANCE_FIELDS: tuple[str, ...] = ()


def _tag_hex(keyword: str) -> str | None:
    from pydicom import datadict

    if len(keyword) == 8 and all(c in "0123456789ABCDEF" for c in keyword):
        return keyword
    tag = datadict.tag_for_keyword(keyword)
    return None if tag is None else f"{tag:08X}"


def _sop_uid_of(data: bytes) -> str:
    """The SOP Instance UID of Part 10 bytes (header only; used to place series parts)."""
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True, specific_tags=["SOPInstanceUID"])
    return str(ds.get("SOPInstanceUID", "") or "")


def _identity_of_file(path: Path) -> Identity | None:
    """The identity in a Part 10 file's header (``None`` if unreadable or incomplete)."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True, specific_tags=[
            "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"])
    except (OSError, ValueError, EOFError, TypeError, AttributeError):
        return None
    uids = [str(ds.get(k, "") or "") for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")]
    if not all(uids):
        return None
    return Identity(str(ds.get("PatientID", "") or ""), *uids)


@dataclass
class _SeriesSpool:
    """One series being retrieved: parts appended to a private file, indexed by SOP Instance UID."""

    path: str
    fd: int
    index: dict[str, tuple[int, int]] = field(default_factory=dict)
    done: bool = False
    cancelled: bool = False
    size: int = 0
    cond: threading.Condition = field(default_factory=threading.Condition)


class DicomwebSource:
    """Read instances from a DICOMweb server.

    Parameters
    ----------
    client
        The server's client.
    include
        Extra attributes (keywords or tags) to request from QIDO-RS at instance
        level, e.g. those a route's filter reads.
    studies
        Restrict listings to these Study Instance UIDs (``--study``).
    query
        Extra QIDO-RS matching keys for the study listing (``{"StudyDate": "20240101-"}``).
    """

    def __init__(
        self,
        client: DicomwebClient,
        *,
        include: Iterable[str] = (),
        query: Mapping[str, str] | None = None,
        spools: int = 3,
        poll_window: float = 7200.0,
    ) -> None:
        self.client = client
        self.name = client.name
        self.config = client.config
        self.query = dict(query or {})
        self.poll_window = poll_window
        extra = {t for t in (_tag_hex(k) for k in include) if t}
        self.instance_fields = sorted(set(INSTANCE_FIELDS) | extra)
        self._spool_dir = self.config.spool_dir
        self._spools: OrderedDict[tuple[str, str], _SeriesSpool] = OrderedDict()
        self._max_spools = max(1, spools)
        self._lock = threading.Lock()
        self._listed: OrderedDict[tuple[str, str], int] = OrderedDict()  # instances listed per series
        self._sparse: dict[tuple[str, str], bool] = {}
        self._metadata: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()
        self._meta_lock = threading.Lock()

    # -- listings ------------------------------------------------------------------------

    def _studies(self, params: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        return self.client.qido(("studies",), {**params, "includefield": ",".join(STUDY_FIELDS)})

    def _series_batches(self, study: Mapping[str, Any]) -> Iterator[list[InstanceRef]]:
        study_uid = J.first(study, J.STUDY_UID)
        patient_id = J.first(study, J.PATIENT_ID)
        for series in self.client.qido(("studies", study_uid, "series"), {"includefield": ",".join(SERIES_FIELDS)}):
            series_uid = J.first(series, J.SERIES_UID)
            yield self._instances(study, series, patient_id, study_uid, series_uid)

    def _instances(self, study: Mapping[str, Any], series: Mapping[str, Any], patient_id: str,
                   study_uid: str, series_uid: str) -> list[InstanceRef]:
        series_id = orthanc_id(patient_id, study_uid, series_uid)
        shared = {**study, **series}
        batch: list[InstanceRef] = []
        path = ("studies", study_uid, "series", series_uid, "instances")
        params = {"includefield": ",".join(self.instance_fields)} if self.instance_fields else {}
        for inst in self.client.qido(path, params):
            identity = Identity(patient_id, study_uid, series_uid, J.first(inst, J.SOP_UID))
            batch.append(DescribedRef(identity.orthanc_id, None, identity, series_id, attributes={**shared, **inst}))
        with self._lock:
            self._listed[(study_uid, series_uid)] = len(batch)
            while len(self._listed) > 1024:
                self._listed.popitem(last=False)
        return batch

    def batches(self) -> Iterator[list[InstanceRef]]:
        """Every instance of the server (or of ``query``), one batch per series."""
        for study in self._studies(self.query):
            yield from self._series_batches(study)

    def selected(self, identifiers: Iterable[str]) -> Iterator[list[InstanceRef]]:
        """Batches for Study Instance UIDs (``--study``); Series Instance UIDs are also accepted."""
        for uid in identifiers:
            uid = uid.strip()
            found = False
            for study in self._studies({"StudyInstanceUID": uid}):
                found = True
                yield from self._series_batches(study)
            if not found:
                for series in self.client.qido(("series",), {"SeriesInstanceUID": uid,
                                                             "includefield": ",".join(SERIES_FIELDS + STUDY_FIELDS)}):
                    found = True
                    study_uid = J.first(series, J.STUDY_UID)
                    yield self._instances(series, series, J.first(series, J.PATIENT_ID), study_uid, uid)
            if not found:
                log.info("an identifier of the selection matched nothing on %s", self.name)

    def studies_between(self, first: _dt.date, last: _dt.date) -> Iterator[list[InstanceRef]]:
        """Batches of the studies whose StudyDate is in ``[first, last]`` (the polling trigger)."""
        span = f"{first:%Y%m%d}-{last:%Y%m%d}"
        for study in self._studies({**self.query, "StudyDate": span}):
            yield from self._series_batches(study)

    # -- retrieval -----------------------------------------------------------------------

    def will_fetch(self, refs: list[InstanceRef]) -> None:
        """Hint from the pipeline: the references of a batch it is about to fetch (after dedupe).

        A series is retrieved whole only when at least half of its listed instances
        are wanted; a top-up of a few new instances in a large series asks for them
        one by one instead of downloading the series again.
        """
        wanted: dict[tuple[str, str], int] = {}
        for ref in refs:
            if ref.identity is not None:
                key = (ref.identity.study_uid, ref.identity.series_uid)
                wanted[key] = wanted.get(key, 0) + 1
        with self._lock:
            for key, count in wanted.items():
                listed = self._listed.get(key, count)
                self._sparse[key] = count * 2 < listed
                while len(self._sparse) > 1024:
                    self._sparse.pop(next(iter(self._sparse)))
                # Start the series retrieval now: it overlaps the previous series' last instances.
                if (self.config.retrieve == "series" and self.config.mode == "images" and not self._sparse[key]
                        and key not in self._spools):
                    self._open_spool(key)

    def complete(self, ref: InstanceRef) -> InstanceRef:
        """References are complete when listed; one rebuilt from an ID alone cannot be completed."""
        return ref

    def requeue(self, source_id: str, saved: Path | None) -> InstanceRef:
        """A fetchable reference for a quarantine entry (:class:`~copydicom.model.RequeueableSource`).

        The source ID is Orthanc's ID of the identity (a SHA-1 digest: it cannot be turned back
        into UIDs). The UIDs come from the owner-only quarantine file the entry kept (the
        source's bytes as fetched: PatientID, Study, Series and SOP Instance UIDs, header only),
        and are used only if their digest is ``source_id``. The instance is then fetched again
        from the server, alone (WADO-RS at instance level, not its whole series).
        """
        identity = _identity_of_file(saved) if saved is not None else None
        if identity is None or identity.orthanc_id != source_id:
            if saved is not None:
                log.info("quarantine entry %s: its saved file does not name this instance; cannot re-fetch it",
                         source_id)
            return InstanceRef(source_id)
        with self._lock:
            self._sparse[(identity.study_uid, identity.series_uid)] = True  # one instance: no series download
        return InstanceRef(source_id, None, identity,
                           orthanc_id(identity.patient_id, identity.study_uid, identity.series_uid))

    def fetch(self, ref: InstanceRef) -> bytes:
        """The instance's bytes as stored (or, in ``metadata`` mode, its header as a Part 10 file)."""
        identity = ref.identity
        if identity is None:
            raise InvalidInstance(f"instance {ref.source_id}: a DICOMweb source fetches by UIDs, and this reference "
                                  "has none (no quarantined file names it: re-list it with replicate --study)")
        if self.config.mode == "metadata":
            return self._header_file(identity)
        if self.config.retrieve == "series" and not self._sparse.get((identity.study_uid, identity.series_uid)):
            data = self._from_series(identity)
            if data is not None:
                return data
        return self._fetch_one(identity)

    def _fetch_one(self, identity: Identity) -> bytes:
        segments = ("studies", identity.study_uid, "series", identity.series_uid, "instances", identity.sop_uid)
        with self.client.retrieve(*segments) as parts:
            for part in parts:
                return part.body
        raise InvalidInstance(f"instance {identity.orthanc_id}: the WADO-RS reply holds no instance")

    def _from_series(self, identity: Identity) -> bytes | None:
        key = (identity.study_uid, identity.series_uid)
        with self._lock:
            spool = self._spools.get(key)
            if spool is None:
                spool = self._open_spool(key)
        with spool.cond:
            while identity.sop_uid not in spool.index and not spool.done:
                spool.cond.wait(1.0)
            where = spool.index.get(identity.sop_uid)
            if where is None or spool.cancelled:
                return None  # not in the series reply, or evicted: fetch it alone
            # Read under the lock: _discard closes the descriptor under it, and a closed
            # descriptor's number may already name another file.
            data = os.pread(spool.fd, where[1], where[0])
        return data if len(data) == where[1] else None

    def _open_spool(self, key: tuple[str, str]) -> _SeriesSpool:
        while len(self._spools) >= self._max_spools:
            _, old = self._spools.popitem(last=False)
            self._discard(old)
        fd, path = tempfile.mkstemp(prefix="copydicom-wado-", suffix=".spool", dir=self._spool_dir)
        os.unlink(path)  # private and anonymous: gone when closed, even after a crash
        spool = _SeriesSpool(path, fd)
        self._spools[key] = spool
        threading.Thread(target=self._download, args=(key, spool), daemon=True,
                         name=f"copydicom-wado-{self.name}").start()
        return spool

    def _download(self, key: tuple[str, str], spool: _SeriesSpool) -> None:
        try:
            with self.client.retrieve("studies", key[0], "series", key[1]) as parts:
                for part in parts:
                    if spool.cancelled:
                        break
                    sop = _sop_uid_of(part.body)
                    with spool.cond:
                        if spool.cancelled:
                            break
                        os.pwrite(spool.fd, part.body, spool.size)
                        spool.index[sop] = (spool.size, len(part.body))
                        spool.size += len(part.body)
                        spool.cond.notify_all()
        except (RetryableError, Exception) as exc:  # the waiters fall back to one request per instance
            log.info("series retrieval on %s stopped (%s); fetching its instances one by one", self.name,
                     type(exc).__name__)
        finally:
            with spool.cond:
                spool.done = True
                spool.cond.notify_all()

    def _discard(self, spool: _SeriesSpool) -> None:
        with spool.cond:
            spool.cancelled = True
            spool.done = True
            spool.cond.notify_all()
            try:
                os.close(spool.fd)
            except OSError:
                pass

    # -- metadata mode (index feed) ------------------------------------------------------

    def _series_metadata(self, study: str, series: str) -> dict[str, Any]:
        """One series' ``/metadata``, fetched once for all workers (single flight), two series cached."""
        key = (study, series)
        with self._meta_lock:
            entry = self._metadata.get(key)
            if entry is None:
                entry = {"lock": threading.Lock(), "data": None}
                self._metadata[key] = entry
                while len(self._metadata) > 4:
                    self._metadata.popitem(last=False)
            self._metadata.move_to_end(key)
        with entry["lock"]:
            if entry["data"] is None:
                entry["data"] = {J.first(obj, J.SOP_UID): obj for obj in self.client.metadata(study, series)}
            data: dict[str, Any] = entry["data"]
        return data

    def _header_file(self, identity: Identity) -> bytes:
        """A Part 10 file holding the instance's header from ``/metadata`` (no pixel data).

        Only for index routes: the bytes are built here, not the source's.
        """
        from pydicom import Dataset
        from pydicom.dataset import FileMetaDataset
        from pydicom.uid import ExplicitVRLittleEndian

        obj = self._series_metadata(identity.study_uid, identity.series_uid).get(identity.sop_uid)
        if obj is None:
            raise InvalidInstance(f"instance {identity.orthanc_id}: not in its series' metadata")
        ds = Dataset.from_json(J.strip_bulk(obj))
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.get("SOPClassUID", "")
        meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID", "")
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
        return out.getvalue()

    # -- polling trigger -----------------------------------------------------------------

    def runner(self, route: str, pipeline: Any, state: Any) -> QidoPoller:
        """The :class:`~copydicom.model.RouteDriver` capability: a QIDO-RS polling runner."""
        return QidoPoller(self, pipeline, window=self.poll_window)

    def close(self) -> None:
        with self._lock:
            spools, self._spools = list(self._spools.values()), OrderedDict()
        for spool in spools:
            self._discard(spool)
        self.client.close()


class QidoPoller:
    """``trigger: {qido: {poll_seconds: 60, window: 2h}}``: each poll sends the studies whose
    StudyDate falls in the sliding window ``[now - window, now]`` (whole days, local time).

    Nothing is remembered between polls: what was already sent is recognised by
    the ledger and the destinations (dedupe), so a poll costs QIDO-RS listings
    of the window's studies.  It misses what the window does not cover: a study
    whose StudyDate is older than the window (a prior imported late, a wrong
    date), or anything that arrives while the daemon is down for longer than
    the window.  ``reconcile`` (or a one-shot ``replicate``) covers those.
    """

    def __init__(self, source: DicomwebSource, pipeline: Any, *, window: float = 7200.0,
                 clock: Callable[[], _dt.datetime] = _dt.datetime.now) -> None:
        self.source = source
        self.pipeline = pipeline
        self.window = window
        self.clock = clock
        #: No feed position nor feed reset (the daemon reads these from change-feed runners).
        self.last_seen: int | None = None
        self.feed_reset: Any = None

    def poll(self) -> Any:
        now = self.clock()
        first = (now - _dt.timedelta(seconds=self.window)).date()
        return self.pipeline.run(self.source.studies_between(first, now.date()))

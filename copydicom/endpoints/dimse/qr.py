"""Query/retrieve source (``type: dimse`` as a source): C-FIND by study date, C-GET per instance.

Listing (PS3.4 C.4.1, Study Root): one C-FIND at STUDY level over the
StudyDate range; when the peer refuses or truncates the answer (a failure
status such as 0xA700, or as many answers as ``find_limit``), the range is
halved until single days are asked (most PACS cap the answers of one query).
Each study's instances are then listed with a C-FIND at IMAGE level (with
their SOP Class, so that retrieval can propose exactly those storage classes).

Retrieval (PS3.4 C.4.3): one C-GET per instance at IMAGE level on a per-thread
association that proposes the storage classes with the SCP role (PS3.7
D.3.3.4, role selection); the peer's C-STORE sub-operation delivers the
instance on the same association and its bytes are kept as received
(``encoded_dataset``), never re-encoded.

By default (``retrieve_level: series``) retrieval is per series: the
pipeline tells the source which instances of a batch (one series) it will
fetch (``will_fetch``); the first fetch starts one C-GET (or C-MOVE) at
SERIES level on a retriever thread, whose C-STORE sub-operations are written
to a temporary spool on disk (private folder, deleted on close) and handed
to the waiting fetches as they arrive, each file removed once read.  The
spool is bounded (``retrieve_spool_limit`` bytes): a sub-operation that
finds it full waits for the workers to drain it, then fails with 0xA702
(out of resources) rather than hold the peer.  Nothing is silently missed:
an instance listed by C-FIND but not received by the series retrieval
(failed sub-operations, final status 0xB000 warning or a failure, with the
peer's counts logged) is retrieved again on its own with an IMAGE-level
request, and what that does not return either is quarantined with the
reason (or retried later when the peer is out of resources or away).
Series of one planned instance, or ``retrieve_level: image``, use the
IMAGE-level request directly.

With ``retrieve: move`` (PS3.4 C.4.2) the source runs its own C-STORE SCP
on ``move_host:move_port`` (loopback), accepting only the peer's AE title;
each fetch sends a C-MOVE at IMAGE level naming ``move_destination``, and
the peer pushes the instance there before its final C-MOVE response.  The
peer must know ``move_destination`` at that address (Orthanc's
``DicomModalities``, dcmqrscp's ``HostTable``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import shutil
import tempfile
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from copydicom.endpoints.dimse._log import quiet_pynetdicom
from copydicom.endpoints.dimse._config import DimseConfig
from copydicom.endpoints.dimse.scu import EXPLICIT_LE, IMPLICIT_LE, associate, make_ae, no_delay
from copydicom.errors import ConfigError, InvalidInstance, SourceUnavailable
from copydicom.model import Identity, InstanceRef

if TYPE_CHECKING:
    from pydicom import Dataset

log = logging.getLogger(__name__)
quiet_pynetdicom()

STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"  # the storage class proposed when the listing gave none
_PENDING = (0xFF00, 0xFF01)
#: How long a C-STORE sub-operation waits for room in a full spool before it fails with 0xA702.
SPACE_WAIT_SECONDS = 10.0
#: Finished series whose never-fetched leftovers are kept (newest first) before they are removed.
KEEP_FINISHED_SERIES = 4


@dataclass
class _SeriesJob:
    """One series retrieval: what the pipeline will fetch, what arrived (spool files), how it ended."""

    study_uid: str
    series_uid: str
    expected: set[str]  # SOP Instance UIDs the pipeline will fetch
    classes: set[str]
    arrived: dict[str, tuple[Path, int]] = field(default_factory=dict)  # SOP UID -> (file, size)
    taken: set[str] = field(default_factory=set)
    started: bool = False
    done: bool = False
    outcome: str = ""  # final status and counts, for the log (no UIDs)
    full: bool = False


def _day(value: str | dt.date) -> dt.date:
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{value!r}: dates are written YYYY-MM-DD") from None


class QueryRetrieveSource:
    """A DICOM node as a source: studies by date with C-FIND, instances with C-GET.

    Parameters
    ----------
    config
        The peer.
    since, until
        StudyDate range (``YYYY-MM-DD``, inclusive); ``until`` defaults to today.
    find_limit
        The peer's answer limit, if known: a range answered with this many
        studies is split (Orthanc's ``LimitFindResults``, dcmqrscp's ``MaxStudies``...).
    """

    def __init__(self, config: DimseConfig, *, since: str | None = None, until: str | None = None,
                 find_limit: int | None = None) -> None:
        if since is None:
            raise ConfigError(f"source {config.name}: a DICOM node is listed by study date: give --since YYYY-MM-DD")
        self.config = config
        self.name = config.name
        self.since = _day(since)
        self.until = _day(until) if until else dt.date.today()
        self.find_limit = find_limit
        self._local = threading.local()
        self._lock = threading.Lock()
        self._assocs: list[Any] = []
        self._classes: dict[str, str] = {}  # SOP Instance UID -> SOP Class UID, from the listing
        self._received: dict[str, bytes] = {}
        self._receiver: Any = None
        self.finds = 0
        self.splits = 0
        # Series retrieval (see the module docstring): jobs by SOP Instance UID, one retriever thread.
        self._cond = threading.Condition(self._lock)
        self._jobs: dict[str, _SeriesJob] = {}
        self._finished: deque[_SeriesJob] = deque()
        self._spool: Path | None = None
        self._spool_bytes = 0
        self._retriever: ThreadPoolExecutor | None = None
        self.series_retrievals = 0
        self.spool_peak = 0  # most bytes the spool held at once
        self.instance_retrievals = 0
        self.retried = 0

    # -- C-FIND --------------------------------------------------------------------------

    def _find_assoc(self) -> Any:
        assoc = getattr(self._local, "find", None)
        if assoc is None or not assoc.is_established:
            ae = make_ae(self.config)
            ae.add_requested_context(STUDY_ROOT_FIND, [EXPLICIT_LE, IMPLICIT_LE])
            assoc = associate(ae, self.config)
            self._local.find = assoc
            with self._lock:
                self._assocs.append(assoc)
        return assoc

    def _find(self, query: Dataset) -> tuple[list[Dataset], int]:
        """Every answer and the final status (0x0000 when complete)."""
        assoc = self._find_assoc()
        answers: list[Dataset] = []
        self.finds += 1
        try:
            for status, ident in assoc.send_c_find(query, STUDY_ROOT_FIND):
                if not status or "Status" not in status:
                    assoc.abort()
                    raise SourceUnavailable(f"{self.config.display_url}: C-FIND got no answer")
                code = int(status.Status)
                if code in _PENDING:
                    if ident is not None:
                        answers.append(ident)
                else:
                    return answers, code
        except (RuntimeError, ValueError) as exc:
            raise SourceUnavailable(f"{self.config.display_url}: C-FIND failed: {exc}") from None
        return answers, 0

    def _studies_between(self, first: dt.date, last: dt.date) -> Iterator[Dataset]:
        from pydicom import Dataset

        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyDate = first.strftime("%Y%m%d") if first == last else \
            f"{first.strftime('%Y%m%d')}-{last.strftime('%Y%m%d')}"
        query.StudyInstanceUID = ""
        query.PatientID = ""
        query.NumberOfStudyRelatedInstances = ""
        answers, code = self._find(query)
        truncated = code != 0 or (self.find_limit is not None and len(answers) >= self.find_limit)
        if truncated and first < last:
            self.splits += 1
            middle = first + (last - first) // 2
            log.info("source %s: C-FIND over %d days answered status 0x%04X with %d studies: asking by halves",
                     self.name, (last - first).days + 1, code, len(answers))
            yield from self._studies_between(first, middle)
            yield from self._studies_between(middle + dt.timedelta(days=1), last)
            return
        if code != 0:
            raise SourceUnavailable(f"{self.config.display_url}: C-FIND for one day failed with status 0x{code:04X}")
        yield from answers

    def studies(self) -> Iterator[Dataset]:
        """The studies in the date range (STUDY level answers)."""
        return self._studies_between(self.since, self.until)

    def instance_refs(self, study_uid: str) -> list[InstanceRef]:
        from pydicom import Dataset

        query = Dataset()
        query.QueryRetrieveLevel = "IMAGE"
        query.StudyInstanceUID = study_uid
        query.SeriesInstanceUID = ""
        query.SOPInstanceUID = ""
        query.SOPClassUID = ""
        query.PatientID = ""
        answers, code = self._find(query)
        if code != 0:
            raise SourceUnavailable(f"{self.config.display_url}: C-FIND of a study's instances: status 0x{code:04X}")
        refs = []
        for ans in answers:
            identity = Identity(str(ans.get("PatientID", "") or ""), study_uid,
                                str(ans.get("SeriesInstanceUID", "") or ""), str(ans.get("SOPInstanceUID", "") or ""))
            if not identity.sop_uid:
                continue
            with self._lock:
                self._classes[identity.sop_uid] = str(ans.get("SOPClassUID", "") or "")
            refs.append(InstanceRef(identity.orthanc_id, identity=identity, series_id=identity.series_orthanc_id))
        return refs

    def batches(self) -> Iterator[list[InstanceRef]]:
        """One batch per series of every study in the date range."""
        for study in self.studies():
            by_series: dict[str | None, list[InstanceRef]] = {}
            for ref in self.instance_refs(str(study.StudyInstanceUID)):
                by_series.setdefault(ref.series_id, []).append(ref)
            yield from by_series.values()

    # -- C-GET ---------------------------------------------------------------------------

    def _get_assoc(self, sop_classes: set[str]) -> Any:
        """This thread's C-GET association, proposing ``sop_classes`` with the SCP role."""
        from pynetdicom import ALL_TRANSFER_SYNTAXES, build_role, evt

        link = getattr(self._local, "get", None)
        if link is not None and link[0].is_established and sop_classes <= link[1]:
            return link[0]
        classes = set(link[1]) if link is not None else set()
        classes |= sop_classes
        if link is not None and link[0].is_established:
            link[0].release()
        ae = make_ae(self.config)
        ae.add_requested_context(STUDY_ROOT_GET, [EXPLICIT_LE, IMPLICIT_LE])
        roles = []
        for uid in sorted(classes)[:100]:
            ae.add_requested_context(uid, ALL_TRANSFER_SYNTAXES[:16])
            roles.append(build_role(uid, scp_role=True))
        assoc = associate(ae, self.config, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, self._on_store)])
        self._local.get = (assoc, frozenset(classes))
        with self._lock:
            self._assocs.append(assoc)
        return assoc

    def _on_store(self, event: Any) -> int:
        """A C-STORE sub-operation (on the association's own thread).

        An instance of a running series retrieval goes to the spool on disk;
        one asked for alone is kept in memory until its fetch takes it.
        """
        sop = str(event.request.AffectedSOPInstanceUID)
        with self._lock:
            job = self._jobs.get(sop)
            if job is not None and not (job.started and not job.done and sop not in job.taken):
                job = None
        if job is None:
            data = event.encoded_dataset(include_meta=True)
            with self._lock:
                self._received[sop] = data
            return 0x0000
        return self._spool_store(job, sop, event.encoded_dataset(include_meta=True))

    def _spool_store(self, job: _SeriesJob, sop: str, data: bytes) -> int:
        """Write one sub-operation's instance to the spool (waiting for room), or 0xA702 if it stays full."""
        limit = self.config.retrieve_spool_limit
        with self._cond:
            while self._spool_bytes > 0 and self._spool_bytes + len(data) > limit:
                if job.full or not self._cond.wait(SPACE_WAIT_SECONDS):
                    job.full = True  # later sub-operations of this series fail at once while it stays full
                    return 0xA702
            self._spool_bytes += len(data)  # reserved before the write, so that writers cannot overshoot
            self.spool_peak = max(self.spool_peak, self._spool_bytes)
            spool = self._spool_dir()
        path = spool / hashlib.sha256(sop.encode()).hexdigest()
        try:
            path.write_bytes(data)
        except OSError:
            with self._cond:
                self._spool_bytes -= len(data)
                self._cond.notify_all()
            return 0xA700  # out of resources: the instance is then retrieved on its own
        with self._cond:
            job.arrived[sop] = (path, len(data))
            self._cond.notify_all()
        return 0x0000

    @property
    def spool_folder(self) -> Path | None:
        """The temporary spool of series retrievals, once created (removed by :meth:`close`)."""
        return self._spool

    def _spool_dir(self) -> Path:
        """The private temporary spool (created 0700 on first use; called with the lock held)."""
        if self._spool is None:
            parent = self.config.retrieve_spool
            if parent is not None:
                parent.mkdir(parents=True, exist_ok=True)
            self._spool = Path(tempfile.mkdtemp(prefix="copydicom-qr-", dir=parent))
        return self._spool

    # -- series retrieval ----------------------------------------------------------------

    def will_fetch(self, refs: list[InstanceRef]) -> None:
        """The instances of a batch the pipeline is about to fetch: plan one retrieval per series."""
        if self.config.retrieve_level != "series":
            return
        by_series: dict[tuple[str, str], list[str]] = {}
        for ref in refs:
            if ref.identity is not None and ref.identity.sop_uid:
                key = (ref.identity.study_uid, ref.identity.series_uid)
                by_series.setdefault(key, []).append(ref.identity.sop_uid)
        with self._lock:
            for (study, series), sops in by_series.items():
                if len(sops) < 2 or not series:
                    continue  # one instance: the IMAGE-level request is as good
                classes = {self._classes.get(sop) or CT_IMAGE for sop in sops}
                job = _SeriesJob(study, series, set(sops), classes)
                for sop in sops:
                    self._jobs[sop] = job

    def _take(self, sop: str) -> bytes | None:
        """The instance from its series retrieval (starting it, waiting for it), or ``None`` to ask alone."""
        with self._cond:
            job = self._jobs.get(sop)
            if job is None:
                return None
            if not job.started:
                job.started = True
                if self._retriever is None:
                    self._retriever = ThreadPoolExecutor(1, thread_name_prefix=f"copydicom-qr-{self.name}")
                self._retriever.submit(self._run_series, job)
            while sop not in job.arrived and not job.done:
                self._cond.wait(1.0)
            found = job.arrived.pop(sop, None)
            job.taken.add(sop)
            if self._jobs.get(sop) is job:
                del self._jobs[sop]
        if found is None:
            return None
        path, size = found
        try:
            return path.read_bytes()
        finally:
            path.unlink(missing_ok=True)
            with self._cond:
                self._spool_bytes -= size
                self._cond.notify_all()

    def _run_series(self, job: _SeriesJob) -> None:
        """The retriever thread: one SERIES-level C-GET/C-MOVE; fetches wait on its arrivals."""
        from pydicom import Dataset

        query = Dataset()
        query.QueryRetrieveLevel = "SERIES"
        query.StudyInstanceUID = job.study_uid
        query.SeriesInstanceUID = job.series_uid
        status: Any = None
        try:
            self.series_retrievals += 1
            status = self._retrieve(query, job.classes)
        except Exception as exc:  # fetches fall back to one request per instance, which reports the error
            job.outcome = f"failed: {type(exc).__name__}"
        finally:
            with self._cond:
                job.done = True
                missing = len(job.expected - job.taken - set(job.arrived))
                self._cond.notify_all()
                self._finished.append(job)
                stale = list(self._finished)[:-KEEP_FINISHED_SERIES]
                for old in stale:
                    self._finished.remove(old)
            if status is not None:
                job.outcome = _counts(status)
            if missing or (status is not None and int(status.get("Status", 0)) != 0):
                log.warning("source %s: series retrieval %s; %d of %d planned instances missing: each is "
                            "asked for again on its own", self.name, job.outcome or "ended", missing,
                            len(job.expected))
            for old in stale:
                self._forget(old)

    def _forget(self, job: _SeriesJob) -> None:
        """Remove a finished series' spool files that no fetch took (their batch no longer needs them)."""
        with self._cond:
            left = list(job.arrived.values())
            job.arrived.clear()
            for sop in job.expected:
                if self._jobs.get(sop) is job:
                    del self._jobs[sop]
        for path, size in left:
            path.unlink(missing_ok=True)
            with self._cond:
                self._spool_bytes -= size
                self._cond.notify_all()

    # -- C-MOVE --------------------------------------------------------------------------

    def _move_receiver(self) -> None:
        """Start the C-STORE SCP that receives the C-MOVE sub-operations (once)."""
        from pynetdicom import ALL_TRANSFER_SYNTAXES, AE, AllStoragePresentationContexts, evt

        with self._lock:
            if self._receiver is not None:
                return
            cfg = self.config
            ae = AE(ae_title=cfg.move_destination or "COPYDICOM")
            for context in AllStoragePresentationContexts:
                assert context.abstract_syntax is not None
                ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
            ae.require_calling_aet = [cfg.called_aet]
            ae.network_timeout = ae.acse_timeout = ae.dimse_timeout = cfg.timeout
            ae.maximum_pdu_size = cfg.max_pdu
            assert cfg.move_port is not None
            ae.start_server((cfg.move_host, cfg.move_port), block=False,
                            evt_handlers=[(evt.EVT_C_STORE, self._on_store),
                                          (evt.EVT_CONN_OPEN, lambda event: no_delay(event.assoc))])
            self._receiver = ae

    def _move_assoc(self) -> Any:
        assoc = getattr(self._local, "move", None)
        if assoc is None or not assoc.is_established:
            ae = make_ae(self.config)
            ae.add_requested_context(STUDY_ROOT_MOVE, [EXPLICIT_LE, IMPLICIT_LE])
            assoc = associate(ae, self.config)
            self._local.move = assoc
            with self._lock:
                self._assocs.append(assoc)
        return assoc

    def _retrieve(self, query: Dataset, classes: set[str]) -> Dataset | None:
        """Send the C-GET or C-MOVE; return the final response's status dataset (status and counts)."""
        final = None
        if self.config.retrieve == "move":
            self._move_receiver()
            assoc = self._move_assoc()
            responses = assoc.send_c_move(query, self.config.move_destination, STUDY_ROOT_MOVE)
        else:
            assoc = self._get_assoc(classes)
            responses = assoc.send_c_get(query, STUDY_ROOT_GET)
        what = "C-MOVE" if self.config.retrieve == "move" else "C-GET"
        try:
            for status, _ in responses:
                if not status or "Status" not in status:
                    assoc.abort()
                    raise SourceUnavailable(f"{self.config.display_url}: {what} got no answer")
                final = status
        except (RuntimeError, ValueError) as exc:
            raise SourceUnavailable(f"{self.config.display_url}: {what} failed: {exc}") from None
        return final

    def fetch(self, ref: InstanceRef) -> bytes:
        from pydicom import Dataset

        identity = ref.identity
        if identity is None:
            raise InvalidInstance(f"instance {ref.source_id}: no identity to retrieve it by")
        with self._lock:
            in_series = identity.sop_uid in self._jobs
        if in_series:
            data = self._take(identity.sop_uid)
            if data is not None:
                return data
            with self._lock:
                self.retried += 1  # listed, planned, not received by its series retrieval: ask for it alone
        query = Dataset()
        query.QueryRetrieveLevel = "IMAGE"
        query.StudyInstanceUID = identity.study_uid
        query.SeriesInstanceUID = identity.series_uid
        query.SOPInstanceUID = identity.sop_uid
        with self._lock:
            self.instance_retrievals += 1
        status = self._retrieve(query, {self._classes.get(identity.sop_uid) or CT_IMAGE})
        final = None if status is None else int(status.Status)
        with self._lock:
            data = self._received.pop(identity.sop_uid, None)
        if data is None:
            code = "none" if final is None else f"0x{final:04X}"
            if final is not None and 0xA700 <= final <= 0xA7FF:
                raise SourceUnavailable(f"{self.config.display_url}: retrieving {ref.source_id}: status {code}")
            raise InvalidInstance(f"{self.config.display_url}: retrieving {ref.source_id} returned no instance "
                                  f"(status {code})")
        return data

    def close(self) -> None:
        with self._lock:
            retriever, self._retriever = self._retriever, None
        if retriever is not None:
            retriever.shutdown(wait=True)
        with self._lock:
            assocs, self._assocs = self._assocs, []
            receiver, self._receiver = self._receiver, None
            spool, self._spool = self._spool, None
            self._jobs.clear()
            self._finished.clear()
            self._spool_bytes = 0
        if receiver is not None:
            receiver.shutdown()
        if spool is not None:
            shutil.rmtree(spool, ignore_errors=True)
        for assoc in assocs:
            try:
                if assoc.is_established:
                    assoc.release()
            except Exception:
                pass


def _counts(status: Dataset) -> str:
    """A final C-GET/C-MOVE response as text: status and sub-operation counts (PS3.7 C.4.2/C.4.3)."""
    parts = [f"status 0x{int(status.Status):04X}"]
    for keyword, label in (("NumberOfCompletedSuboperations", "completed"),
                           ("NumberOfFailedSuboperations", "failed"),
                           ("NumberOfWarningSuboperations", "warning")):
        value = status.get(keyword)
        if value is not None:
            parts.append(f"{label} {int(value)}")
    return ", ".join(parts)

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

With ``retrieve: move`` (PS3.4 C.4.2) the source runs its own C-STORE SCP
on ``move_host:move_port`` (loopback), accepting only the peer's AE title;
each fetch sends a C-MOVE at IMAGE level naming ``move_destination``, and
the peer pushes the instance there before its final C-MOVE response.  The
peer must know ``move_destination`` at that address (Orthanc's
``DicomModalities``, dcmqrscp's ``HostTable``).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from copydicom.endpoints.dimse._log import quiet_pynetdicom
from copydicom.endpoints.dimse._config import DimseConfig
from copydicom.endpoints.dimse.scu import EXPLICIT_LE, IMPLICIT_LE, associate, make_ae
from copydicom.errors import ConfigError, InvalidInstance, SourceUnavailable
from copydicom.model import Identity, InstanceRef

if TYPE_CHECKING:
    from pydicom import Dataset

log = logging.getLogger(__name__)
quiet_pynetdicom()

STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
_PENDING = (0xFF00, 0xFF01)


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

    def _get_assoc(self, sop_class: str) -> Any:
        """This thread's C-GET association, proposing ``sop_class`` with the SCP role."""
        from pynetdicom import ALL_TRANSFER_SYNTAXES, build_role, evt

        link = getattr(self._local, "get", None)
        if link is not None and link[0].is_established and sop_class in link[1]:
            return link[0]
        classes = set(link[1]) if link is not None else set()
        classes.add(sop_class)
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
        """The C-STORE sub-operation (on the association's own thread): keep the bytes by SOP Instance UID."""
        data = event.encoded_dataset(include_meta=True)
        with self._lock:
            self._received[str(event.request.AffectedSOPInstanceUID)] = data
        return 0x0000

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
                            evt_handlers=[(evt.EVT_C_STORE, self._on_store)])
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

    def _retrieve(self, ref: InstanceRef, query: Dataset) -> int | None:
        """Send the C-GET or C-MOVE; return the final status."""
        assert ref.identity is not None
        final = None
        if self.config.retrieve == "move":
            self._move_receiver()
            assoc = self._move_assoc()
            responses = assoc.send_c_move(query, self.config.move_destination, STUDY_ROOT_MOVE)
        else:
            sop_class = self._classes.get(ref.identity.sop_uid) or "1.2.840.10008.5.1.4.1.1.2"
            assoc = self._get_assoc(sop_class)
            responses = assoc.send_c_get(query, STUDY_ROOT_GET)
        what = "C-MOVE" if self.config.retrieve == "move" else "C-GET"
        try:
            for status, _ in responses:
                if not status or "Status" not in status:
                    assoc.abort()
                    raise SourceUnavailable(f"{self.config.display_url}: {what} got no answer")
                final = int(status.Status)
        except (RuntimeError, ValueError) as exc:
            raise SourceUnavailable(f"{self.config.display_url}: {what} failed: {exc}") from None
        return final

    def fetch(self, ref: InstanceRef) -> bytes:
        from pydicom import Dataset

        identity = ref.identity
        if identity is None:
            raise InvalidInstance(f"instance {ref.source_id}: no identity to retrieve it by")
        query = Dataset()
        query.QueryRetrieveLevel = "IMAGE"
        query.StudyInstanceUID = identity.study_uid
        query.SeriesInstanceUID = identity.series_uid
        query.SOPInstanceUID = identity.sop_uid
        final = self._retrieve(ref, query)
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
            assocs, self._assocs = self._assocs, []
            receiver, self._receiver = self._receiver, None
        if receiver is not None:
            receiver.shutdown()
        for assoc in assocs:
            try:
                if assoc.is_established:
                    assoc.release()
            except Exception:
                pass

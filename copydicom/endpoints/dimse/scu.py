"""copydicom as a DIMSE service user: C-STORE destination, C-ECHO, C-FIND dedupe.

One association per worker thread, reused for many instances (PS3.8 7.1:
an association carries any number of DIMSE operations); it is re-negotiated
only when an instance needs an abstract syntax / transfer syntax pair that
was not proposed.  Each pair seen is proposed in its own presentation context,
so the peer's answer says exactly whether it accepts the original encoding,
plus one fallback context per SOP class with the uncompressed little-endian
syntaxes.  The original bytes are sent unless the peer accepts none of the
original transfer syntax (nor, for uncompressed data, a convertible one):
only then is the dataset decompressed with pydicom, and what pydicom cannot
decompress is quarantined with that reason.

Sending does not decode the instance when the peer accepted its own
transfer syntax: only the File Meta Information (group 0002, PS3.10 7.1) is
parsed, for the SOP class, SOP instance and transfer syntax, and pynetdicom
sends the data set's bytes as they are, from a per-thread in-memory file
(``memfd``) through its supported file path mode
(``_config.STORE_SEND_CHUNKED_DATASET``).  A full ``dcmread`` followed by
pynetdicom's re-encoding cost about a third of the sender's CPU per instance
(see notes/dimse-send.md).  pydicom decodes only when pynetdicom must convert
the encoding (explicit to implicit VR) or when transcoding.

C-STORE statuses (PS3.4 Table B.2-1, PS3.7 Annex C) map to the error tree:
warnings (0xB000 coercion, 0xB006 elements discarded, 0xB007 data set does
not match SOP class) are deliveries with a warning counted; 0xA7xx "out of
resources" and the transient general failures are retryable; 0xA9xx, 0xCxxx
and the permanent general failures quarantine the instance.  A refused or
aborted association, or no answer, is retryable.
"""

from __future__ import annotations

import io
import logging
import os
import socket
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from copydicom.endpoints.dimse._log import quiet_pynetdicom
from copydicom.endpoints.dimse._config import DimseConfig
from copydicom.errors import (
    CopyDicomError,
    DestinationUnavailable,
    InvalidInstance,
    RejectedByDestination,
    RetryableError,
)
from copydicom.model import Identity, Instance, StoreOutcome

if TYPE_CHECKING:
    from pydicom import Dataset
    from pynetdicom.association import Association

log = logging.getLogger(__name__)
quiet_pynetdicom()

EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
VERIFICATION = "1.2.840.10008.1.1"

#: PS3.4 Table B.2-1 and PS3.7 C.4.2.1.4: warnings; the instance is stored.
WARNING_STATUSES = frozenset({0x0001, 0x0107, 0x0116, 0xB000, 0xB006, 0xB007})
#: What a warning status means (for the reason recorded with :meth:`Instance.warn`; no patient data).
WARNING_MEANINGS = {0xB000: "coercion of data elements", 0xB006: "elements discarded",
                    0xB007: "data set does not match SOP class", 0x0001: "requested optional attributes "
                    "not supported", 0x0107: "attribute list error", 0x0116: "attribute value out of range"}
#: PS3.7 Annex C general failures that may heal: processing failure, duplicate invocation, resource limitation.
TRANSIENT_STATUSES = frozenset({0x0110, 0x0210, 0x0213})
#: How many instances answered by C-FIND are remembered, so that a C-STORE does not ask about them again.
ASKED_MEMORY = 50_000
_IDENTITY_TAGS = ["PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"]
#: Whether original bytes can be handed to pynetdicom as a file without a disk write (Linux ``memfd``).
RAW_SEND = hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd")


@dataclass(frozen=True)
class FileMeta:
    """What a C-STORE needs from a Part 10 file, read from its File Meta Information alone (PS3.10 7.1)."""

    sop_class: str
    sop_instance: str
    transfer_syntax: str
    offset: int  # where the data set starts


def identity_of(data: bytes) -> Identity:
    """The identity of a Part 10 byte string, reading only the header elements it needs."""
    from pydicom import dcmread

    try:
        ds = dcmread(io.BytesIO(data), stop_before_pixels=True, specific_tags=_IDENTITY_TAGS)
    except Exception as exc:
        raise InvalidInstance(f"not a DICOM file ({type(exc).__name__})") from None
    return Identity.from_dataset(ds)


def read_file_meta(data: bytes) -> FileMeta:
    """The File Meta Information of a Part 10 file: a bounded parse (the 128-byte preamble, ``DICM``, group 0002).

    The SOP class and instance are ``""`` when the meta lacks them (the caller then decodes).

    Raises
    ------
    InvalidInstance
        Not a Part 10 file, or its meta has no transfer syntax.
    """
    from pydicom.filereader import read_dataset, read_preamble

    fp = io.BytesIO(data)
    try:
        read_preamble(fp, False)
        meta = read_dataset(fp, is_implicit_VR=False, is_little_endian=True,
                            stop_when=lambda tag, vr, length: tag.group != 2)
        found = FileMeta(str(meta.get("MediaStorageSOPClassUID", "") or ""),
                         str(meta.get("MediaStorageSOPInstanceUID", "") or ""),
                         str(meta.TransferSyntaxUID), fp.tell())
    except Exception as exc:
        raise InvalidInstance(f"not a DICOM file with file meta information ({type(exc).__name__})") from None
    if not found.transfer_syntax:
        raise InvalidInstance("not a DICOM file with a transfer syntax in its file meta information")
    return found


def classify_store_status(status: int, *, what: str) -> str | CopyDicomError:
    """``"success"``, ``"warning"`` or the error a C-STORE status means.

    Parameters
    ----------
    status
        The (0000,0900) Status of the C-STORE response.
    what
        Which peer (for the message; no patient data).
    """
    if status == 0x0000:
        return "success"
    if status in WARNING_STATUSES:
        return "warning"
    detail = f"{what}: C-STORE status 0x{status:04X}"
    if 0xA700 <= status <= 0xA7FF:
        return DestinationUnavailable(detail + " (out of resources)")
    if status in TRANSIENT_STATUSES:
        return DestinationUnavailable(detail + " (transient failure)")
    if 0xA900 <= status <= 0xA9FF:
        return RejectedByDestination(detail + " (data set does not match SOP class)")
    if 0xC000 <= status <= 0xCFFF:
        return RejectedByDestination(detail + " (cannot understand)")
    return RejectedByDestination(detail + " (refused)")


def client_ssl_context(cfg: DimseConfig) -> ssl.SSLContext | None:
    """TLS towards the peer (PS3.15 B.1), verifying it against ``tls.ca``."""
    if cfg.tls is None:
        return None
    ctx = ssl.create_default_context(cafile=str(cfg.tls.ca) if cfg.tls.ca else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cfg.tls.cert is not None and cfg.tls.key is not None:
        ctx.load_cert_chain(str(cfg.tls.cert), str(cfg.tls.key))
    return ctx


def make_ae(cfg: DimseConfig) -> Any:
    """A pynetdicom AE with our calling AE title and the endpoint's limits."""
    from pynetdicom import AE

    ae = AE(ae_title=cfg.calling_aet)
    ae.acse_timeout = cfg.timeout
    ae.dimse_timeout = cfg.timeout
    ae.network_timeout = cfg.timeout
    ae.connection_timeout = cfg.timeout
    ae.maximum_pdu_size = cfg.max_pdu
    return ae


def no_delay(assoc: Association) -> None:
    """Turn off Nagle's algorithm on the association's socket (pynetdicom leaves it on).

    A C-STORE request ends with a PDU shorter than the others: with Nagle on, it
    waits until the peer acknowledges what precedes it, and the peer delays its
    ACK (up to 40 ms on Linux), so each instance paid up to 40 ms per round trip
    while both ends sat idle.  dcmtk does the same with ``TCP_NODELAY=1``.  See
    notes/dimse-send.md for the figures.
    """
    transport = getattr(getattr(assoc, "dul", None), "socket", None)
    sock = getattr(transport, "socket", None)
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # not TCP (or already closed): nothing to tune
            pass


def associate(ae: Any, cfg: DimseConfig, **kwargs: Any) -> Association:
    """Open an association or raise :class:`DestinationUnavailable` (refused, aborted, unreachable)."""
    ctx = client_ssl_context(cfg)
    tls_args = (ctx, cfg.host) if ctx is not None else None
    assoc = ae.associate(cfg.host, cfg.port, ae_title=cfg.called_aet, max_pdu=cfg.max_pdu, tls_args=tls_args,
                         **kwargs)
    if assoc.is_established:
        no_delay(assoc)
        return assoc
    if assoc.is_rejected:
        rj = assoc.acceptor.primitive
        why = f"rejected (result 0x{rj.result:02X}, source 0x{rj.result_source:02X}, reason 0x{rj.diagnostic:02X})" \
            if rj is not None and rj.result is not None else "rejected"
    else:  # pynetdicom reports a refused connection as an abort too
        why = "could not be opened or was aborted (refused, unreachable or timed out)"
    raise DestinationUnavailable(f"{cfg.display_url}: association {why}")


def echo(cfg: DimseConfig) -> tuple[int, float]:
    """C-ECHO (PS3.4 A.4): the status and the round trip in seconds, association included."""
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    started = time.monotonic()
    ae = make_ae(cfg)
    ae.add_requested_context(Verification)
    assoc = associate(ae, cfg)
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    if not status or "Status" not in status:
        raise DestinationUnavailable(f"{cfg.display_url}: no C-ECHO response")
    return int(status.Status), time.monotonic() - started


@dataclass
class _Link:
    """One worker's association and the (SOP class, transfer syntax) pairs it proposed."""

    assoc: Association
    proposed: frozenset[tuple[str, str]]
    msg_id: int = 0

    def next_id(self) -> int:
        self.msg_id = self.msg_id % 65535 + 1
        return self.msg_id


class DimseDestination:
    """A C-STORE destination (``type: dimse``).

    Parameters
    ----------
    config
        The peer.
    """

    def __init__(self, config: DimseConfig) -> None:
        self.config = config
        self.name = config.name
        self._local = threading.local()
        self._lock = threading.Lock()
        self._links: list[_Link] = []
        self._seen: dict[tuple[str, str], None] = {}  # insertion-ordered set of pairs sent so far
        self.warnings = 0
        self.transcoded = 0
        self.associations = 0
        self._find_refused = False
        self._memfds: list[int] = []
        self._asked: OrderedDict[str, None] = OrderedDict()  # Orthanc IDs the peer was asked about

    # -- associations --------------------------------------------------------------------

    def _contexts(self, pair: tuple[str, str] | None) -> tuple[list[tuple[str, list[str]]], frozenset[tuple[str, str]]]:
        """Presentation contexts to propose: the pairs seen (newest first), fallbacks, C-FIND."""
        with self._lock:
            if pair is not None:
                self._seen.pop(pair, None)
                self._seen[pair] = None
            pairs = list(reversed(self._seen))
        budget = self.config.max_contexts - (2 if self.config.dedupe == "cfind" else 0)
        contexts: list[tuple[str, list[str]]] = []
        proposed: set[tuple[str, str]] = set()
        fallback_for: set[str] = set()
        for sop, ts in pairs:
            need = 1 + (sop not in fallback_for)
            if len(contexts) + need > budget:
                break
            contexts.append((sop, [ts]))
            proposed.add((sop, ts))
            if sop not in fallback_for:
                fallback_for.add(sop)
                contexts.append((sop, [EXPLICIT_LE, IMPLICIT_LE]))
        if self.config.dedupe == "cfind":
            contexts.append((STUDY_ROOT_FIND, [EXPLICIT_LE, IMPLICIT_LE]))
            # Verification, which every SCP accepts (PS3.4 A.1), keeps a C-FIND-only association
            # open at a peer that refuses C-FIND, so that refusal is told apart from an outage.
            contexts.append((VERIFICATION, [IMPLICIT_LE]))
        return contexts, frozenset(proposed)

    def _link(self, pair: tuple[str, str] | None) -> _Link:
        link: _Link | None = getattr(self._local, "link", None)
        if link is not None and link.assoc.is_established and (pair is None or pair in link.proposed):
            return link
        if link is not None:
            self._drop(link, release=True)
        contexts, proposed = self._contexts(pair)
        ae = make_ae(self.config)
        for abstract, syntaxes in contexts:
            ae.add_requested_context(abstract, syntaxes)
        assoc = associate(ae, self.config)
        link = _Link(assoc, proposed)
        with self._lock:
            self._links.append(link)
            self.associations += 1
        self._local.link = link
        return link

    def _drop(self, link: _Link, *, release: bool) -> None:
        if getattr(self._local, "link", None) is link:
            self._local.link = None
        with self._lock:
            if link in self._links:
                self._links.remove(link)
        try:
            if link.assoc.is_established:
                link.assoc.release() if release else link.assoc.abort()
        except Exception:  # the peer is gone already
            pass

    # -- dedupe --------------------------------------------------------------------------

    def has(self, target_ids: Iterable[str], *, series_hint: str | None = None) -> set[str]:
        """Nothing is known by Orthanc ID at a DIMSE peer: dedupe is by the ledger (and C-FIND)."""
        return set()

    def has_identities(self, identities: Iterable[Identity]) -> set[str]:
        """With ``dedupe: cfind``, the Orthanc IDs of the identities the peer reports holding.

        One C-FIND at IMAGE level per instance, Study Root, with the study,
        series and SOP Instance UIDs as unique keys (PS3.4 C.4.1.2.1).  A peer
        that refuses C-FIND leaves the ledger as the only dedupe (logged once).
        """
        wanted = list(identities)
        if self.config.dedupe != "cfind" or self._find_refused or not wanted:
            return set()
        link = self._link(None)
        found: set[str] = set()
        for identity in wanted:
            held = self._find_one(link, identity)
            if held is None:
                return set()
            if held:
                found.add(identity.orthanc_id)
        return found

    def _find_one(self, link: _Link, identity: Identity) -> bool | None:
        """Whether the peer holds ``identity`` (C-FIND IMAGE); ``None`` once the peer refused C-FIND."""
        from pydicom import Dataset

        query = Dataset()
        query.QueryRetrieveLevel = "IMAGE"
        query.StudyInstanceUID = identity.study_uid
        query.SeriesInstanceUID = identity.series_uid
        query.SOPInstanceUID = identity.sop_uid
        try:
            responses = list(link.assoc.send_c_find(query, STUDY_ROOT_FIND, msg_id=link.next_id()))
        except ValueError:  # no accepted C-FIND context
            self._no_find("the peer accepts no C-FIND context")
            return None
        except RuntimeError:
            self._drop(link, release=False)
            self._no_find("the association ended")
            return None
        held = False
        for status, ident in responses:
            if not status or "Status" not in status:
                # Orthanc, for one, aborts a C-FIND from a calling AE it does not know or may not query.
                self._drop(link, release=False)
                self._no_find("no C-FIND answer (aborted)")
                return None
            code = int(status.Status)
            if code in (0xFF00, 0xFF01) and ident is not None:
                held = True
            elif code not in (0x0000, 0xFF00, 0xFF01):
                self._no_find(f"C-FIND status 0x{code:04X}")
                return None
        with self._lock:
            self._asked[identity.orthanc_id] = None
            while len(self._asked) > ASKED_MEMORY:
                self._asked.popitem(last=False)
        return held

    def _held_at_peer(self, instance: Instance, pair: tuple[str, str]) -> bool:
        """The C-FIND of :meth:`has_identities` for an instance the pipeline could not ask about before
        the download (a source that lists no UIDs, such as Orthanc by ID): asked on this worker's
        association just before the C-STORE, so that ``dedupe: cfind`` holds for every source."""
        if self.config.dedupe != "cfind" or self._find_refused:
            return False
        with self._lock:
            if instance.target_id in self._asked:
                return False  # asked when the batch was planned
        identity = instance.identity or identity_of(instance.data)
        if not (identity.study_uid and identity.series_uid and identity.sop_uid):
            return False
        return bool(self._find_one(self._link(pair), identity))

    def _no_find(self, why: str) -> None:
        """Fall back to the ledger alone (safe: dedupe only avoids re-sending; a C-STORE is idempotent)."""
        with self._lock:
            first, self._find_refused = not self._find_refused, True
        if first:
            log.warning("%s: dedupe by C-FIND unavailable (%s); the ledger alone decides what was sent",
                        self.name, why)

    # -- C-STORE -------------------------------------------------------------------------

    def store(self, instance: Instance) -> StoreOutcome:
        from pydicom.uid import UID

        meta = read_file_meta(instance.data)
        if self._held_at_peer(instance, (meta.sop_class, meta.transfer_syntax)):
            return "existing"
        ds: Dataset | None = None
        if not (meta.sop_class and meta.sop_instance):  # incomplete meta: the data set says
            ds = self._decode(instance.data)
            sop = UID(str(ds.get("SOPClassUID", "") or ""))
        else:
            sop = UID(meta.sop_class)
        ts = UID(meta.transfer_syntax)
        link = self._link((str(sop), str(ts)))
        accepted = [UID(str(cx.transfer_syntax[0])) for cx in link.assoc.accepted_contexts
                    if cx.abstract_syntax == sop]
        if not accepted:
            raise RejectedByDestination(f"{self.config.display_url}: the peer accepts no context for {sop.name}")
        try:
            if RAW_SEND and ds is None and ts in accepted:
                status = self._send_raw(link, instance.data)
            else:
                ds = ds if ds is not None else self._decode(instance.data)
                if not self._sendable(ts, accepted):
                    ds = self._transcode(ds, ts, sop)
                status = link.assoc.send_c_store(ds, msg_id=link.next_id())
        except (RuntimeError, OSError) as exc:
            self._drop(link, release=False)
            raise DestinationUnavailable(f"{self.config.display_url}: C-STORE failed: {type(exc).__name__}") from None
        except ValueError as exc:
            raise RejectedByDestination(f"{self.config.display_url}: cannot send: {exc}") from None
        if not status or "Status" not in status:
            self._drop(link, release=False)
            raise DestinationUnavailable(f"{self.config.display_url}: no C-STORE response (aborted or timed out)")
        result = classify_store_status(int(status.Status), what=self.config.display_url)
        if isinstance(result, CopyDicomError):
            if isinstance(result, RetryableError):
                self._drop(link, release=True)
            raise result
        if result == "warning":
            with self._lock:
                self.warnings += 1
            code = int(status.Status)
            log.info("%s: C-STORE warning 0x%04X for instance %s", self.name, code, instance.target_id)
            instance.warn(self.name, f"C-STORE warning 0x{code:04X} ({WARNING_MEANINGS.get(code, 'warning')})")
        return "stored"

    def _send_raw(self, link: _Link, data: bytes) -> Dataset:
        """C-STORE of the original bytes, unparsed: pynetdicom's file mode reading this thread's memfd.

        pynetdicom encodes the whole message into P-DATA PDUs before
        :meth:`send_c_store` waits for the response, so the memfd is free
        again when it returns; it is emptied then to hold no instance idle.
        """
        from pynetdicom import _config

        # Process-wide, but it changes only send_c_store given a path, which nothing else in copydicom does.
        _config.STORE_SEND_CHUNKED_DATASET = True
        fd: int | None = getattr(self._local, "memfd", None)
        if fd is None:
            fd = os.memfd_create("copydicom-cstore", os.MFD_CLOEXEC)
            self._local.memfd = fd
            with self._lock:
                self._memfds.append(fd)
        try:
            view = memoryview(data)
            written = 0
            while written < len(view):
                written += os.pwrite(fd, view[written:], written)
            return link.assoc.send_c_store(f"/proc/self/fd/{fd}", msg_id=link.next_id())
        finally:
            os.ftruncate(fd, 0)

    @staticmethod
    def _decode(data: bytes) -> Dataset:
        from pydicom import dcmread

        try:
            return dcmread(io.BytesIO(data))
        except Exception as exc:
            raise InvalidInstance(f"not a decodable DICOM data set ({type(exc).__name__})") from None

    @staticmethod
    def _sendable(ts: Any, accepted: list[Any]) -> bool:
        """Whether pynetdicom can send ``ts`` as is on one of the accepted syntaxes (exact, or
        uncompressed of the same endianness: explicit/implicit VR and deflate are converted on the fly)."""
        if ts in accepted:
            return True
        if ts.is_compressed:
            return False
        return any(not a.is_compressed and a.is_little_endian == ts.is_little_endian for a in accepted)

    def _transcode(self, ds: Dataset, ts: Any, sop: Any) -> Dataset:
        """Decompress for a peer that accepts none of the original transfer syntax (or quarantine)."""
        if not ts.is_compressed:
            raise RejectedByDestination(
                f"{self.config.display_url}: the peer accepts no transfer syntax {ts.name} converts to for {sop.name}"
            )
        try:
            ds.decompress(generate_instance_uid=False)
        except Exception as exc:
            raise RejectedByDestination(
                f"{self.config.display_url}: the peer does not accept {ts.name} for {sop.name} and pydicom "
                f"cannot decompress it ({type(exc).__name__})"
            ) from None
        with self._lock:
            self.transcoded += 1
        return ds

    def close(self) -> None:
        with self._lock:
            links = list(self._links)
            memfds, self._memfds = self._memfds, []
        for link in links:
            self._drop(link, release=True)
        for fd in memfds:
            os.close(fd)
        self._local = threading.local()

"""Plain values passed between sources, stages and sinks, and the plugin protocols.

Plugins (everything under ``sources/``, ``stages/`` and ``sinks/``) import this
module and :mod:`copydicom.errors`, never the pipeline.  Events are plain
values, in the manner of pynetdicom's ``Event``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:  # pydicom (and numpy behind it) is not needed to move bytes
    from pydicom import Dataset


def orthanc_id(*parts: str) -> str:
    """Return Orthanc's deterministic resource ID for the given identifiers.

    Orthanc hashes ``PatientID|StudyInstanceUID|SeriesInstanceUID|SOPInstanceUID``
    (one, two, three or four parts for the patient, study, series and instance
    levels) with SHA-1 and groups the 40 hex digits by 8 with dashes
    (Orthanc Book, "Orthanc identifiers").
    """
    digest = hashlib.sha1("|".join(parts).encode("utf-8")).hexdigest()
    return "-".join(digest[i : i + 8] for i in range(0, 40, 8))


@dataclass(frozen=True)
class Identity:
    """The four identifiers that place an instance in the DICOM hierarchy.

    These are patient-identifying values: never log them, log :attr:`orthanc_id`.
    """

    patient_id: str
    study_uid: str
    series_uid: str
    sop_uid: str

    @property
    def orthanc_id(self) -> str:
        """Orthanc's instance ID for this identity."""
        return orthanc_id(self.patient_id, self.study_uid, self.series_uid, self.sop_uid)

    @property
    def series_orthanc_id(self) -> str:
        """Orthanc's series ID for this identity."""
        return orthanc_id(self.patient_id, self.study_uid, self.series_uid)

    @classmethod
    def from_dataset(cls, ds: Dataset) -> Identity:
        """Read the identity from a dataset (missing values become ``""``)."""
        return cls(
            str(ds.get("PatientID", "") or ""),
            str(ds.get("StudyInstanceUID", "") or ""),
            str(ds.get("SeriesInstanceUID", "") or ""),
            str(ds.get("SOPInstanceUID", "") or ""),
        )


@dataclass(frozen=True)
class InstanceRef:
    """A pointer to one instance at a source, before any bytes are fetched.

    Attributes
    ----------
    source_id
        The source's ID: the Orthanc instance ID, or a file path for folder sources.
    seq
        The changes-feed sequence number that announced it (``None`` for listings).
    identity
        The identity at the source, when the source knows it without a download.
    series_id
        The source's series ID, used to batch destination look-ups per series.
    """

    source_id: str
    seq: int | None = None
    identity: Identity | None = None
    series_id: str | None = None


@dataclass
class Instance:
    """One instance in flight: its bytes and what the stages learned about it.

    Attributes
    ----------
    ref
        Where it came from.
    data
        The DICOM Part 10 file, as it will be sent (stages replace it).
    dataset
        The parsed dataset, when a stage parsed it (``None`` on the fast path,
        where bytes go through untouched).
    identity
        The identity of what will be sent (after de-identification).
    audit
        Per-stage notes for the ledger: ``{"deid": [["(0010,0010)", "Z"], ...]}``.
        Tags and actions only, never values.
    documents
        Index documents produced by stages (flattened tags, dose events), each a
        JSON-able dict with a deterministic ``"_id"`` and a ``"doc_type"``.
    warnings
        Destinations that stored the instance *with a warning*: destination name ->
        a short reason without PHI (a status code and its meaning). A destination's
        :meth:`Destination.store` records one with :meth:`warn` and still returns
        ``"stored"``: the delivery counts as delivered and as a warning (``warnings=N``
        in the summary line). This side channel keeps :data:`StoreOutcome` a plain
        literal, so destinations that never warn are untouched. Examples: a DIMSE
        C-STORE answered 0xB000/0xB006/0xB007 (PS3.4 Table B.2-1), a STOW-RS response
        whose Referenced SOP Sequence item carries a Warning Reason (0008,1196)
        (PS3.18 Table 10.5.3-1).
    """

    ref: InstanceRef
    data: bytes
    dataset: Dataset | None = None
    identity: Identity | None = None
    audit: dict[str, Any] = field(default_factory=dict)
    documents: list[dict[str, Any]] = field(default_factory=list)
    warnings: dict[str, str] = field(default_factory=dict)

    def warn(self, destination: str, reason: str) -> None:
        """Record that ``destination`` stored this instance with a warning (``reason``: no PHI)."""
        self.warnings[destination] = reason

    @property
    def target_id(self) -> str:
        """Orthanc ID of what will be sent: the dedupe key at every destination."""
        if self.identity is not None:
            return self.identity.orthanc_id
        return self.ref.source_id


StoreOutcome = Literal["stored", "existing"]


@runtime_checkable
class Stage(Protocol):
    """A step between source and destinations (de-identify, flatten, dose...).

    ``process`` returns the instance to pass on (possibly a new one) or raises
    :class:`~copydicom.errors.SkippableError` to quarantine it.
    """

    name: str

    def process(self, instance: Instance) -> Instance: ...


@runtime_checkable
class IdentityTransform(Protocol):
    """A stage that changes identity can predict it without the bytes.

    The dedupe stage uses this to compute the key of what *will* be sent, so
    a second run asks the destination about the de-identified instance.
    """

    def transform_identity(self, identity: Identity) -> Identity: ...


@runtime_checkable
class Destination(Protocol):
    """An image destination (Orthanc, S3...)."""

    name: str

    def has(self, target_ids: Iterable[str], *, series_hint: str | None = None) -> set[str]:
        """Return the subset of ``target_ids`` that the destination already holds."""
        ...

    def store(self, instance: Instance) -> StoreOutcome:
        """Store one instance; ``"existing"`` if it was already there.

        Stored with a warning: call ``instance.warn(self.name, reason)`` and return
        ``"stored"`` (see :attr:`Instance.warnings`).
        """
        ...

    def close(self) -> None: ...


@runtime_checkable
class IdentityAddressed(Protocol):
    """A destination whose storage address needs the identity (S3 keys by UIDs).

    The pipeline asks it with the identities of what will be sent, so that a
    run with an empty ledger still sends nothing the destination holds.
    """

    def has_identities(self, identities: Iterable[Identity]) -> set[str]:
        """Orthanc IDs of the identities already stored."""
        ...


@runtime_checkable
class IndexSink(Protocol):
    """A document index (Splunk, Elasticsearch, SQLite)."""

    name: str

    def send(self, documents: list[dict[str, Any]]) -> None:
        """Index the documents (each carries its deterministic ``_id``); idempotent."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Source(Protocol):
    """Where a route's instances come from: listed in batches, fetched by reference.

    Every source implements this; the optional capabilities below are separate
    protocols that a source implements when its system allows it (checked with
    ``isinstance``). A batch is a unit of acknowledgement and of destination
    look-ups: one series where the source knows series, otherwise up to a few
    hundred instances.
    """

    name: str

    def batches(self) -> Iterator[list[InstanceRef]]:
        """Everything the source holds (or was asked for), in batches."""
        ...

    def fetch(self, ref: InstanceRef) -> bytes:
        """The Part 10 bytes of one instance, as stored (never re-encoded)."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class FeedPosition:
    """A change feed's checkpoint: a sequence number and what it named.

    ``resource`` is the source's ID of the change at ``seq`` (the instance of a
    ``NewInstance`` change), kept so that a source whose feed was reset (its
    database rebuilt) is noticed even when its sequence numbers have passed the
    checkpoint again.
    """

    seq: int
    resource: str | None = None


@runtime_checkable
class ChangeFeedSource(Protocol):
    """Capability: the source has an ordered change feed (Orthanc ``/changes``)."""

    def last_change(self) -> int:
        """The feed's newest sequence number."""
        ...

    def changes_page(self, since: int) -> Any:
        """The next page of changes after ``since`` (see ``copydicom.sources.orthanc.ChangesPage``)."""
        ...

    def names_change(self, position: FeedPosition) -> bool | None:
        """Whether ``position.seq`` still names ``position.resource`` (``None``: cannot tell)."""
        ...


@runtime_checkable
class SelectableSource(Protocol):
    """Capability: batches for given identifiers (source IDs or DICOM UIDs), for index queries."""

    def selected(self, identifiers: Iterable[str]) -> Iterator[list[InstanceRef]]: ...


@runtime_checkable
class RequeueableSource(Protocol):
    """Capability: rebuild a fetchable reference for a quarantine entry (``quarantine retry``).

    For sources whose stored source ID cannot be fetched by itself: a DICOMweb
    source's ID is a digest (Orthanc's ID of the identity), and WADO-RS needs the
    Study, Series and SOP Instance UIDs. The UIDs are read from the owner-only
    state: the bytes the quarantine kept (``saved``, the entry's file), checked
    against ``source_id`` so that a wrong file cannot redirect the retry. Without a
    usable file the reference stays bare and :meth:`Source.fetch` says so (the entry
    is kept).
    """

    def requeue(self, source_id: str, saved: Path | None) -> InstanceRef: ...


@runtime_checkable
class CountableSource(Protocol):
    """Capability: how many instances :meth:`Source.batches` will yield, known cheaply (progress totals)."""

    def count(self) -> int | None: ...


@dataclass(frozen=True)
class StudyCount:
    """One study in an inventory: its identity and how many instances it holds."""

    study_uid: str
    instances: int
    study_date: str = ""
    source_id: str | None = None


@runtime_checkable
class InventorySource(Protocol):
    """Capability: cheap per-study / per-series / per-instance listings, for reconcile.

    Implementations stream (constant memory) and never download instance bytes.
    """

    def studies(self, *, since: str | None = None) -> Iterator[StudyCount]: ...

    def series_counts(self, study_uid: str) -> dict[str, int]:
        """``{SeriesInstanceUID: instance count}`` of one study."""
        ...

    def instance_refs(self, study_uid: str, series_uid: str) -> list[InstanceRef]:
        """Every instance of one series, with identities."""
        ...


@runtime_checkable
class RouteDriver(Protocol):
    """Capability: the source drives its route itself (a push listener, a poller).

    The daemon calls :meth:`runner` once at start-up, then the runner's
    ``poll() -> Summary`` on the route's schedule, like the change-feed runner.
    """

    def runner(self, route: str, pipeline: Any, state: Any) -> Any: ...

"""The inventory capabilities reconcile asks of sources and destinations.

Source side: an Orthanc source (``copydicom/endpoints/orthanc/_inventory.py``).
Destination side: Orthanc and S3 (``copydicom/endpoints/{orthanc,s3}/_inventory.py``).
Every listing streams or is bounded by one study; none downloads instance bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from copydicom.model import Identity


@dataclass(frozen=True)
class SourceStudy:
    """One study at the source: its Orthanc ID and the identifiers de-identification transforms."""

    source_id: str
    patient_id: str
    study_uid: str
    study_date: str = ""


@dataclass(frozen=True)
class SourceSeries:
    """One series at the source and its instance count."""

    source_id: str
    series_uid: str
    count: int


@dataclass
class StudyListing:
    """What a destination holds of one (sent) study: ``{series ID: {instance ID}}`` (Orthanc IDs of what was sent).

    ``unknown`` counts objects whose identity cannot be read back from their address (an S3 key
    that the template cannot be parsed back from): they are reported, never deleted.
    """

    series: dict[str, set[str]] = field(default_factory=dict)
    unknown: int = 0
    #: Identities of what is held, where the address had to be read back (S3 keys).
    identities: dict[str, Identity] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return sum(len(s) for s in self.series.values()) + self.unknown


@dataclass(frozen=True)
class Digest:
    """A destination's record of an instance's content: algorithm (``md5``/``sha256``), hex value, size."""

    algorithm: str
    value: str | None
    size: int | None = None


class SourceInventory(Protocol):
    """Cheap listings of a source (no instance bytes)."""

    def study_counts(self) -> Iterator[tuple[str, int]]:
        """``(study source ID, instances)`` for every study, possibly several times per study (sum them)."""
        ...

    def studies(self, *, since: str | None = None, uids: list[str] | None = None) -> Iterator[SourceStudy]:
        """Every study (or those with StudyDate on or after ``since`` YYYYMMDD, or of the given UIDs)."""
        ...

    def series_of(self, study: SourceStudy) -> list[SourceSeries]: ...

    def instances_of(self, series: SourceSeries) -> list[tuple[str, str]]:
        """``(instance source ID, SOP Instance UID)`` of one series."""
        ...


class DestinationInventory(Protocol):
    """Cheap listings of a destination and the two writes reconcile needs."""

    name: str

    def study_counts(self) -> Iterator[tuple[str, int]] | None:
        """``(sent study Orthanc ID, instances)`` for everything held, or ``None`` when only per-study listings are cheap."""
        ...

    def study(self, sent: Identity) -> StudyListing:
        """What the destination holds of the study of ``sent`` (patient ID and study UID used)."""
        ...

    def study_ids_of_counts(self) -> bool:
        """Whether :meth:`study_counts` keys can be listed back (extra studies found by a full scan)."""
        ...

    def listing_by_id(self, study_id: str) -> StudyListing:
        """What the destination holds under a study ID it reported in :meth:`study_counts`."""
        ...

    def digest(self, target_id: str, sent: Identity | None) -> Digest:
        """The destination's recorded digest of one instance (``value`` ``None``: none recorded)."""
        ...

    def delete(self, target_id: str, sent: Identity | None) -> bool:
        """Delete one instance (``False``: it was not there)."""
        ...

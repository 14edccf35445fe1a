"""Sources that read a source Orthanc: its changes feed, and listings of its content.

Both yield *batches* of :class:`~copydicom.model.InstanceRef`: a listing
batches by series (so the destination can be asked once per series whether
it already has them), the changes feed by page.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

from copydicom.clients.orthanc import OrthancClient
from copydicom.errors import ConfigError
from copydicom.feedcheck import names_change
from copydicom.model import FeedPosition, Identity, InstanceRef

log = logging.getLogger(__name__)

WaitFor = Literal["instance", "stable_series", "stable_study"]

_CHANGE_FOR: dict[str, str] = {
    "instance": "NewInstance",
    "stable_series": "StableSeries",
    "stable_study": "StableStudy",
}


class OrthancSource:
    """Read instances from a source Orthanc: a :class:`~copydicom.model.Source` with the
    :class:`~copydicom.model.ChangeFeedSource` and :class:`~copydicom.model.SelectableSource`
    capabilities.

    Parameters
    ----------
    client
        The source's REST client.
    want_identity
        Fill :attr:`InstanceRef.identity` (needed when a stage changes identity,
        so that dedupe can predict what will be sent).
    wait_for
        Which change of the feed a route acts on (see :class:`ChangesFeed`).
    page_size
        Changes per ``/changes`` request.
    """

    def __init__(
        self,
        client: OrthancClient,
        *,
        want_identity: bool = False,
        wait_for: WaitFor = "instance",
        page_size: int = 500,
    ) -> None:
        if wait_for not in _CHANGE_FOR:
            raise ConfigError(f"trigger.changes.wait_for: one of {', '.join(_CHANGE_FOR)}")
        self.client = client
        self.name = client.name
        self.want_identity = want_identity
        self.wait_for: WaitFor = wait_for
        self.page_size = page_size
        self._study = lru_cache(maxsize=256)(self._study_uncached)
        self._series = lru_cache(maxsize=1024)(self._series_uncached)

    # -- identity ------------------------------------------------------------------------

    def _study_uncached(self, study_id: str) -> tuple[str, str]:
        study = self.client.resource("studies", study_id) or {}
        return (
            str(study.get("PatientMainDicomTags", {}).get("PatientID", "")),
            str(study.get("MainDicomTags", {}).get("StudyInstanceUID", "")),
        )

    def _series_uncached(self, series_id: str) -> tuple[str, str, str]:
        series = self.client.resource("series", series_id) or {}
        patient_id, study_uid = self._study(series.get("ParentStudy", ""))
        return patient_id, study_uid, str(series.get("MainDicomTags", {}).get("SeriesInstanceUID", ""))

    def identity_of(self, instance_id: str) -> tuple[Identity, str] | None:
        """Identity and series ID of an instance, from Orthanc's index (no download)."""
        instance = self.client.resource("instances", instance_id)
        if instance is None:
            return None
        series_id = str(instance.get("ParentSeries", ""))
        patient_id, study_uid, series_uid = self._series(series_id)
        sop_uid = str(instance.get("MainDicomTags", {}).get("SOPInstanceUID", ""))
        return Identity(patient_id, study_uid, series_uid, sop_uid), series_id

    def complete(self, ref: InstanceRef) -> InstanceRef:
        """Return ``ref`` with identity and series filled in, if they are wanted and missing."""
        if not self.want_identity or ref.identity is not None:
            return ref
        found = self.identity_of(ref.source_id)
        if found is None:
            return ref
        return InstanceRef(ref.source_id, ref.seq, found[0], found[1])

    # -- listings ------------------------------------------------------------------------

    def _series_batch(self, series: dict, seq: int | None = None) -> list[InstanceRef]:
        series_id = str(series["ID"])
        if not self.want_identity:
            return [InstanceRef(i, seq, None, series_id) for i in series.get("Instances", [])]
        patient_id, study_uid = self._study(str(series.get("ParentStudy", "")))
        series_uid = str(series.get("MainDicomTags", {}).get("SeriesInstanceUID", ""))
        return [
            InstanceRef(
                str(inst["ID"]),
                seq,
                Identity(patient_id, study_uid, series_uid, str(inst.get("MainDicomTags", {}).get("SOPInstanceUID", ""))),
                series_id,
            )
            for inst in self.client.series_instances(series_id)
        ]

    def all_instances(self) -> Iterator[list[InstanceRef]]:
        """Every instance of the source, one batch per series, in constant memory."""
        for series in self.client.iter_series():
            yield self._series_batch(series)

    def series_batch(self, series_id: str, seq: int | None = None) -> list[InstanceRef]:
        series = self.client.resource("series", series_id)
        return [] if series is None else self._series_batch(series, seq)

    def selected(self, identifiers: Iterable[str]) -> Iterator[list[InstanceRef]]:
        """Instances named by Orthanc IDs (any level) or DICOM UIDs (Study/Series/SOP Instance UID).

        Identifiers that match nothing are skipped (:mod:`copydicom.selection` counts them).
        """
        for ident in identifiers:
            resolved = self._resolve(ident.strip())
            if not resolved:
                log.info("an identifier of the selection matched nothing on %s", self.name)
            for level, orthanc_id in resolved:
                if level == "instances":
                    ref = self.complete(InstanceRef(orthanc_id))
                    yield [ref]
                elif level == "series":
                    yield self.series_batch(orthanc_id)
                else:
                    for series_id in self._children_series(level, orthanc_id):
                        yield self.series_batch(series_id)

    def _children_series(self, level: str, orthanc_id: str) -> list[str]:
        resource = self.client.resource(level, orthanc_id) or {}
        if level == "studies":
            return list(resource.get("Series", []))
        out: list[str] = []
        for study in resource.get("Studies", []):
            out.extend(self._children_series("studies", study))
        return out

    def _resolve(self, ident: str) -> list[tuple[str, str]]:
        if len(ident) == 44 and ident.count("-") == 4:
            for level in ("instances", "series", "studies", "patients"):
                if self.client.resource(level, ident) is not None:
                    return [(level, ident)]
            return []
        levels = {"Instance": "instances", "Series": "series", "Study": "studies", "Patient": "patients"}
        return [(levels[r["Type"]], r["ID"]) for r in self.client.lookup(ident) if r.get("Type") in levels]

    def batches(self) -> Iterator[list[InstanceRef]]:
        """Everything the source holds (the :class:`~copydicom.model.Source` protocol)."""
        return self.all_instances()

    def fetch(self, ref: InstanceRef) -> bytes:
        return self.client.download(ref.source_id)

    def count(self) -> int | None:
        """Instances in the whole archive (``/statistics``): the total of a full listing (progress)."""
        stats = self.client.get_json("/statistics")
        return int(stats["CountInstances"]) if isinstance(stats, dict) and "CountInstances" in stats else None

    def close(self) -> None:
        self.client.close()

    # -- change feed (ChangeFeedSource) --------------------------------------------------

    def last_change(self) -> int:
        """The feed's newest sequence number (``Last`` of ``/changes?last``)."""
        return self.client.last_change()

    def changes_page(self, since: int) -> ChangesPage:
        """The page of changes after ``since``, reduced to what the route acts on (:attr:`wait_for`)."""
        return ChangesFeed(self, wait_for=self.wait_for, page_size=self.page_size).page(since)

    def names_change(self, position: FeedPosition) -> bool | None:
        """Whether the change at ``position.seq`` still names ``position.resource`` (feed-reset check)."""
        return names_change(self.client, position)

    def content_md5(self, ref: InstanceRef) -> str | None:
        """MD5 of the instance's file as the source stores it (to notice new content under the same ID)."""
        return self.client.instance_md5(ref.source_id)


@dataclass(frozen=True)
class ChangesPage:
    """One page of the changes feed, reduced to what a route acts on.

    Attributes
    ----------
    seqs
        Every sequence number of the page, relevant or not, in order.
    batches
        Batches of references to process; each reference carries its ``seq``.
    last
        The feed's newest sequence number (``Last``).
    done
        True when this page reached the end of the feed.
    resources
        The resource ID of every change of the page (the checkpoint keeps it).
    """

    seqs: list[int]
    batches: list[list[InstanceRef]]
    last: int
    done: bool
    resources: dict[int, str] = field(default_factory=dict)


class ChangesFeed:
    """``GET /changes?since=N&limit=M`` of a source Orthanc (Orthanc Book, "Changes").

    ``since`` is exclusive. With ``wait_for="instance"`` every ``NewInstance``
    becomes one reference; with ``stable_series``/``stable_study`` each such
    change expands to every instance of that series or study, so nothing is sent
    until the series or study has stopped receiving instances for Orthanc's
    ``StableAge`` seconds.
    """

    def __init__(self, source: OrthancSource, *, wait_for: WaitFor = "instance", page_size: int = 500) -> None:
        if wait_for not in _CHANGE_FOR:
            raise ConfigError(f"trigger.changes.wait_for: one of {', '.join(_CHANGE_FOR)}")
        self.source = source
        self.wait_for = wait_for
        self.change_type = _CHANGE_FOR[wait_for]
        self.page_size = page_size

    def page(self, since: int) -> ChangesPage:
        reply = self.source.client.changes(since, self.page_size)
        seqs: list[int] = []
        batches: list[list[InstanceRef]] = []
        resources: dict[int, str] = {}
        for change in reply.get("Changes", []):
            seq = int(change["Seq"])
            seqs.append(seq)
            resources[seq] = str(change.get("ID", ""))
            if change.get("ChangeType") != self.change_type:
                continue
            resource_id = str(change["ID"])
            if self.wait_for == "instance":
                batches.append([self.source.complete(InstanceRef(resource_id, seq))])
            elif self.wait_for == "stable_series":
                batches.append(self.source.series_batch(resource_id, seq))
            else:
                for series_id in self.source._children_series("studies", resource_id):
                    batches.append(self.source.series_batch(series_id, seq))
        return ChangesPage(seqs, batches, int(reply.get("Last", since)), bool(reply.get("Done", True)), resources)

    def names_change(self, position: FeedPosition) -> bool | None:
        """Feed-reset check (see :mod:`copydicom.feedcheck`)."""
        return self.source.names_change(position)

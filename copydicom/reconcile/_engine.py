"""Compare a route's source with its destinations top-down, and repair the difference.

Order of the comparison (nothing downloads instance bytes unless ``--verify`` needs them):

1. studies with their instance counts (source: paged ``/series?expand`` summed per
   study; an Orthanc destination the same; an S3 destination: one prefix listing per study);
2. series, only in a study whose counts differ;
3. instance lists, only in a series whose counts differ.

A de-identifying route compares against the *predicted* identities of what it sends
(:meth:`~copydicom.model.IdentityTransform.transform_identity` is a deterministic keyed
transform; Orthanc IDs are SHA-1 of the identifiers), so a replica in sync is found to be
in sync without a download.

Repairs go through the route's own pipeline (:meth:`~copydicom.pipeline.Pipeline.force_stream`):
fetch, stages (de-identification), validity check, store, ledger and audit are the same as
for ``replicate``.  Extra instances (held at a destination, gone at the source) follow the
deletion policy, and only those the ledger says this route delivered are ever deleted.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from copydicom.errors import ConfigError, RetryableError, SkippableError
from copydicom.ledger import Ledger
from copydicom.model import Destination, Identity, Instance, InstanceRef, orthanc_id
from copydicom.reconcile import _store
from copydicom.reconcile._countmap import CountMap
from copydicom.reconcile._types import (
    DestinationInventory,
    SourceInventory,
    SourceSeries,
    SourceStudy,
    StudyListing,
)
from copydicom.routes import RouteRuntime
from copydicom.sources.index_query import SeenSet

log = logging.getLogger(__name__)

DeletionPolicy = Literal["ignore", "report", "propagate"]



@dataclass(frozen=True)
class Options:
    """What one reconcile does.

    ``since`` is ``YYYYMMDD`` (StudyDate on or after); ``studies`` are Study Instance UIDs.
    """

    since: str | None = None
    studies: tuple[str, ...] = ()
    dry_run: bool = False
    verify: bool = False
    deletions: DeletionPolicy = "ignore"
    on_changed: str = "report"

    @property
    def scoped(self) -> bool:
        return self.since is not None or bool(self.studies)


@dataclass
class Report:
    """What one reconcile found and did; :meth:`line` is the command's last line."""

    missing: int = 0
    repaired: int = 0
    extra: int = 0
    deleted: int = 0
    mismatched: int = 0
    replaced: int = 0
    unknown: int = 0
    failed: int = 0
    downloads: int = 0
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None

    @property
    def seconds(self) -> float:
        return (self.ended if self.ended is not None else time.monotonic()) - self.started

    def remaining(self, options: Options) -> int:
        """Differences still there after the run (exit status 1 when above zero)."""
        left = (self.missing - self.repaired) + (self.mismatched - self.replaced)
        if options.deletions != "ignore":
            left += self.extra - self.deleted
        return left

    def line(self) -> str:
        return (f"missing={self.missing} repaired={self.repaired} extra={self.extra} deleted={self.deleted} "
                f"mismatched={self.mismatched} seconds={self.seconds:.1f}")


@dataclass
class _StudyDiff:
    missing: dict[str, int] = field(default_factory=dict)
    extra: dict[str, list[str]] = field(default_factory=dict)
    mismatched: dict[str, int] = field(default_factory=dict)
    unknown: dict[str, int] = field(default_factory=dict)

    def any(self) -> bool:
        return any(self.missing.values()) or any(self.extra.values()) or any(self.mismatched.values()) or any(
            self.unknown.values())


def source_inventory(runtime: RouteRuntime) -> SourceInventory:
    """The inventory of the route's source (Orthanc sources have one)."""
    from copydicom.sources.orthanc import OrthancSource

    if isinstance(runtime.source, OrthancSource):
        from copydicom.endpoints.orthanc._inventory import OrthancSourceInventory

        return OrthancSourceInventory(runtime.source.client)
    raise ConfigError(f"route {runtime.route.name}: reconcile needs a source with listings (an Orthanc source)")


def index_inventory(dest: Destination) -> Any | None:
    """The inventory of an index destination (SQLite only; other index types are not reconciled)."""
    sink = getattr(getattr(dest, "spooled", None), "sink", None)
    if type(sink).__name__ == "SqliteIndex":
        from copydicom.endpoints.sqlite._inventory import SqliteIndexInventory

        return SqliteIndexInventory(dest)
    log.info("index %s: not reconciled (only SQLite indexes can be listed)", dest.name)
    return None


def destination_inventory(dest: Destination) -> DestinationInventory:
    """The inventory of an image destination (Orthanc or S3)."""
    from copydicom.sinks.orthanc import OrthancDestination

    if isinstance(dest, OrthancDestination):
        from copydicom.endpoints.orthanc._inventory import OrthancDestinationInventory

        return OrthancDestinationInventory(dest.client, dest.name)
    if type(dest).__name__ == "S3Destination":
        from copydicom.endpoints.s3._inventory import S3DestinationInventory

        return S3DestinationInventory(dest)
    raise ConfigError(f"destination {dest.name}: reconcile cannot list this destination type")


class Reconciler:
    """One reconcile of one route.

    Parameters
    ----------
    runtime
        The route, built by :func:`copydicom.routes.build_route` (its pipeline does the repairs).
    ledger
        The route's state (tells what this route delivered).
    options
        Scope, dry run, verify, deletion policy, changed-instance policy.
    out
        Called with one line per study that differs (``print`` for the command).
    memory_limit
        Studies kept in memory per count map before it spills to a temporary SQLite table.
    """

    def __init__(
        self,
        runtime: RouteRuntime,
        ledger: Ledger,
        options: Options,
        *,
        out: Callable[[str], None] | None = None,
        memory_limit: int = 100_000,
    ) -> None:
        self.runtime = runtime
        self.ledger = ledger
        self.options = options
        self.out = out or (lambda line: log.info("%s", line))
        self.memory_limit = memory_limit
        self.pipeline = runtime.pipeline
        self.transform = runtime.pipeline.transform
        self.source = source_inventory(runtime)
        image = [d for d in runtime.destinations if d.name in runtime.route.destinations]
        self.dests: list[tuple[Destination, DestinationInventory]] = [(d, destination_inventory(d)) for d in image]
        self.indexes: list[tuple[Destination, Any]] = [
            (d, inv) for d in runtime.destinations
            if d.name in runtime.route.indexes and (inv := index_inventory(d)) is not None
        ]
        self.report = Report()
        self.workers = max(1, runtime.route.workers)
        self._count_lock = threading.Lock()
        #: A study whose sent identity could not be predicted: destination studies not matched to a
        #: source study may be its, so they are reported but never deleted in this run.
        self._unmatched_unsafe = False
        #: The full scan found no instance at the source: deletions are reported, never propagated.
        self._source_empty = False

    # -- identities ----------------------------------------------------------------------

    def _sent(self, identity: Identity) -> Identity:
        return identity if self.transform is None else self.transform.transform_identity(identity)

    # -- driving -------------------------------------------------------------------------

    def run(self) -> Report:
        src_counts: CountMap | None = None
        dst_counts: dict[str, CountMap] = {}
        seen: dict[str, SeenSet] = {}
        try:
            if not self.options.scoped:
                src_counts = CountMap(self.memory_limit)
                held = 0
                for study_id, n in self.source.study_counts():
                    src_counts.add(study_id, n)
                    held += n
                if held == 0 and self.options.deletions == "propagate":
                    # An empty source is far more often a rebuilt or wrong one than an archive whose
                    # every study was deleted on purpose: never empty the replica to follow it (the
                    # daemon's feed-reset repair lowers propagate to report for the same reason).
                    self._source_empty = True
                    log.error("reconcile: the source holds no instance; deletions are reported, not propagated")
                for dest, inv in self.dests:
                    listed = inv.study_counts()
                    if listed is not None:
                        dst_counts[dest.name] = CountMap(self.memory_limit)
                        for study_id, n in listed:
                            dst_counts[dest.name].add(study_id, n)
                        seen[dest.name] = SeenSet(self.memory_limit)
            studies = self.source.studies(
                since=self.options.since, uids=list(self.options.studies) if self.options.studies else None
            )
            for study in studies:
                if self.pipeline.stop_event.is_set():
                    break
                self._study(study, src_counts, dst_counts, seen)
            if not self.options.scoped and not self.pipeline.stop_event.is_set():
                for dest, inv in self.dests:
                    if dest.name in dst_counts and inv.study_ids_of_counts():
                        self._extra_studies(dest, inv, dst_counts[dest.name], seen[dest.name])
        finally:
            for count_map in [src_counts, *dst_counts.values()]:
                if count_map is not None:
                    count_map.close()
            for s in seen.values():
                s.close()
        self.ledger.flush()
        self.report.ended = time.monotonic()
        return self.report

    def _study(
        self, study: SourceStudy, src_counts: CountMap | None, dst_counts: dict[str, CountMap],
        seen: dict[str, SeenSet],
    ) -> None:
        try:
            sent_study = self._sent(Identity(study.patient_id, study.study_uid, "", ""))
        except SkippableError:
            self._unmatched_unsafe = True
            self._unpredictable(study)
            return
        sent_id = orthanc_id(sent_study.patient_id, sent_study.study_uid)
        to_compare: list[tuple[Destination, DestinationInventory]] = []
        for dest, inv in self.dests:
            if dest.name in seen:
                seen[dest.name].add(sent_id)
            if src_counts is not None and dest.name in dst_counts and not self.options.verify:
                if src_counts.get(study.source_id) == dst_counts[dest.name].get(sent_id):
                    continue  # same count: in sync at the study level
            to_compare.append((dest, inv))
        if to_compare:
            self._compare_study(study, sent_study, to_compare)
        if self.indexes:
            self._index_study(study, sent_study, src_counts)

    def _unpredictable(self, study: SourceStudy) -> None:
        """A study whose sent identity cannot be predicted (a patient-map policy): the pipeline's dedupe decides."""
        log.warning("study %s: de-identified identity not predictable; replicating through the dedupe", study.source_id)
        if self.options.dry_run:
            return
        for series in self.source.series_of(study):
            refs = [InstanceRef(i, None, Identity(study.patient_id, study.study_uid, series.series_uid, sop),
                                series.source_id) for i, sop in self.source.instances_of(series)]
            for outcome in self.pipeline.stream([refs]):
                if outcome.kind == "stored":
                    self.report.missing += 1
                    self.report.repaired += 1
                elif outcome.kind in ("failed", "quarantined"):
                    self.report.failed += 1

    # -- one study -----------------------------------------------------------------------

    def _compare_study(
        self, study: SourceStudy, sent_study: Identity, dests: list[tuple[Destination, DestinationInventory]]
    ) -> None:
        src_series = self.source.series_of(study)
        total = sum(s.count for s in src_series)
        listings: dict[str, StudyListing] = {}
        for dest, inv in dests:
            listing = inv.study(sent_study)
            if listing.count == total and not self.options.verify:
                continue
            listings[dest.name] = listing
        active = [(d, inv) for d, inv in dests if d.name in listings]
        if not active:
            return
        diff = _StudyDiff()
        missing: dict[str, tuple[InstanceRef, list[Destination]]] = {}
        matched: set[str] = set()
        for series in src_series:
            sent_series = self._sent(Identity(study.patient_id, study.study_uid, series.series_uid, ""))
            series_id = orthanc_id(sent_series.patient_id, sent_series.study_uid, sent_series.series_uid)
            matched.add(series_id)
            held = {d.name: listings[d.name].series.get(series_id, set()) for d, _ in active}
            if not self.options.verify and all(len(h) == series.count for h in held.values()):
                continue
            self._compare_series(study, series, active, held, diff, missing)
        for dest, inv in active:
            listing = listings[dest.name]
            for series_id, ids in listing.series.items():
                if series_id not in matched and ids:
                    diff.extra.setdefault(dest.name, []).extend(sorted(ids))
            if listing.unknown:
                diff.unknown[dest.name] = listing.unknown
        self._repair_missing(missing)
        for dest, inv in active:
            extras = diff.extra.get(dest.name, [])
            if extras:
                self._extras(dest, inv, extras, listings[dest.name])
        self.report.unknown += sum(diff.unknown.values())
        if diff.any():
            self._print(study.source_id, diff)

    def _compare_series(
        self,
        study: SourceStudy,
        series: SourceSeries,
        active: list[tuple[Destination, DestinationInventory]],
        held: dict[str, set[str]],
        diff: _StudyDiff,
        missing: dict[str, tuple[InstanceRef, list[Destination]]],
    ) -> None:
        refs: list[tuple[InstanceRef, Identity]] = []
        for instance_id, sop in self.source.instances_of(series):
            identity = Identity(study.patient_id, study.study_uid, series.series_uid, sop)
            refs.append((InstanceRef(instance_id, None, identity, series.source_id), self._sent(identity)))
        targets = {sent.orthanc_id for _, sent in refs}
        for dest, _inv in active:
            have = held[dest.name]
            for ref, sent in refs:
                if sent.orthanc_id not in have:
                    diff.missing[dest.name] = diff.missing.get(dest.name, 0) + 1
                    self.report.missing += 1
                    missing.setdefault(sent.orthanc_id, (ref, []))[1].append(dest)
            extra = sorted(have - targets)
            if extra:
                diff.extra.setdefault(dest.name, []).extend(extra)
        if self.options.verify:
            present = [(ref, sent) for ref, sent in refs if any(sent.orthanc_id in held[d.name] for d, _ in active)]
            self._verify(present, active, held, diff)

    # -- indexes -------------------------------------------------------------------------

    def _index_study(self, study: SourceStudy, sent_study: Identity, src_counts: CountMap | None) -> None:
        """Re-index instances missing from the route's indexes (from the source; no image is re-sent)."""
        series_list: list[SourceSeries] | None = None
        for dest, inv in self.indexes:
            if src_counts is not None and src_counts.get(study.source_id) == inv.study_count(sent_study.study_uid):
                continue
            if series_list is None:
                series_list = self.source.series_of(study)
            if sum(s.count for s in series_list) == inv.study_count(sent_study.study_uid):
                continue
            missing: dict[str, tuple[InstanceRef, list[Destination]]] = {}
            expected: set[str] = set()
            for series in series_list:
                refs = []
                for instance_id, sop in self.source.instances_of(series):
                    identity = Identity(study.patient_id, study.study_uid, series.series_uid, sop)
                    refs.append((InstanceRef(instance_id, None, identity, series.source_id), self._sent(identity)))
                held = inv.has([sent.orthanc_id for _, sent in refs])
                for ref, sent in refs:
                    expected.add(sent.orthanc_id)
                    if sent.orthanc_id not in held:
                        missing[sent.orthanc_id] = (ref, [dest])
            # Documents this route wrote for instances the source no longer holds: the deletion policy.
            orphans = sorted(inv.study_documents(sent_study.study_uid, self.runtime.route.name) - expected)
            if not missing and not orphans:
                continue
            self.report.missing += len(missing)
            self.report.extra += len(orphans)
            self.out(f"study {study.source_id} at {dest.name}: missing={len(missing)} extra={len(orphans)} "
                     "(index documents)")
            if self.options.deletions == "report":
                for target in orphans:
                    self.out(f"  extra at {dest.name}: {target}")
            if self.options.dry_run:
                continue
            if missing:
                inv.forget_delivered(list(missing))
                self._repair_missing(missing)
            if orphans and self.options.deletions == "propagate":
                inv.delete(orphans)
                self.report.deleted += len(orphans)

    # -- repairs -------------------------------------------------------------------------

    def _repair_missing(self, missing: dict[str, tuple[InstanceRef, list[Destination]]]) -> None:
        if not missing or self.options.dry_run:
            return
        needed = {ref.source_id: {d.name for d in dests} for ref, dests in missing.values()}
        items = ((ref, target, dests, False) for target, (ref, dests) in missing.items())
        for outcome in self.pipeline.force_stream(items):
            wanted = needed.get(outcome.ref.source_id, set())
            done = sum(1 for name, kind in outcome.destinations if name in wanted and kind in ("stored", "existing"))
            self.report.repaired += done
            if outcome.kind == "stored":
                self.report.downloads += 1
            if done < len(wanted):
                self.report.failed += 1

    def _extras(
        self, dest: Destination, inv: DestinationInventory, extras: list[str], listing: StudyListing,
        *, may_delete: bool = True,
    ) -> None:
        ours = _store.routed_among(self.ledger, dest.name, self.runtime.route.name, extras)
        self.report.extra += len(ours)
        self.report.unknown += len(extras) - len(ours)
        if self.options.deletions == "report":
            for target in sorted(ours):
                self.out(f"  extra at {dest.name}: {target}")
        if self.options.deletions != "propagate" or self.options.dry_run or not may_delete or self._source_empty:
            return
        gone: list[str] = []
        for target in sorted(ours):
            try:
                inv.delete(target, listing.identities.get(target))
            except RetryableError as exc:
                log.warning("deletion of %s at %s failed: %s", target, dest.name, exc)
                self.report.failed += 1
                continue
            gone.append(target)
            self.report.deleted += 1
            log.info("deleted %s at %s (gone at the source; deletions: propagate)", target, dest.name)
        _store.forget(self.ledger, dest.name, gone)

    def _extra_studies(self, dest: Destination, inv: DestinationInventory, counts: CountMap, seen: SeenSet) -> None:
        """Studies held at the destination that the source no longer has (full scans only)."""
        for study_id in counts.keys():
            if not seen.add(study_id):
                continue
            listing = inv.listing_by_id(study_id)
            extras = sorted(i for ids in listing.series.values() for i in ids)
            if extras:
                diff = _StudyDiff(extra={dest.name: extras})
                self._extras(dest, inv, extras, listing, may_delete=not self._unmatched_unsafe)
                self._print(f"(destination study {study_id})", diff)

    # -- verify --------------------------------------------------------------------------

    def _expected(self, ref: InstanceRef, algorithm: str) -> tuple[str, int] | None:
        """Digest and size of the bytes this route would send for ``ref`` (downloads unless the source tells)."""
        if algorithm == "md5" and self.transform is None:
            md5 = self.runtime.source.content_md5(ref) if hasattr(self.runtime.source, "content_md5") else None
            if md5 is not None:
                return str(md5), -1
        data = self.runtime.source.fetch(ref)
        with self._count_lock:
            self.report.downloads += 1
        instance = Instance(ref, data, identity=ref.identity)
        for stage in self.pipeline.stages:
            instance = stage.process(instance)
        digest = hashlib.md5(instance.data, usedforsecurity=False) if algorithm == "md5" else hashlib.sha256(
            instance.data)
        return digest.hexdigest(), len(instance.data)

    def _verify(
        self,
        present: list[tuple[InstanceRef, Identity]],
        active: list[tuple[Destination, DestinationInventory]],
        held: dict[str, set[str]],
        diff: _StudyDiff,
    ) -> None:
        def check(pair: tuple[InstanceRef, Identity]) -> list[Destination]:
            ref, sent = pair
            bad: list[Destination] = []
            expected: dict[str, tuple[str, int] | None] = {}
            for dest, inv in active:
                if sent.orthanc_id not in held[dest.name]:
                    continue
                recorded = inv.digest(sent.orthanc_id, sent)
                if recorded.algorithm not in expected:
                    try:
                        expected[recorded.algorithm] = self._expected(ref, recorded.algorithm)
                    except (SkippableError, RetryableError) as exc:
                        log.warning("verify of %s: %s", ref.source_id, exc)
                        expected[recorded.algorithm] = None
                want = expected[recorded.algorithm]
                if want is None:
                    continue
                if recorded.value != want[0] or (recorded.size is not None and want[1] >= 0
                                                 and recorded.size != want[1]):
                    bad.append(dest)
            return bad

        with ThreadPoolExecutor(self.workers, thread_name_prefix="copydicom-verify") as pool:
            results = list(pool.map(check, present))
        replace: list[tuple[InstanceRef, str, list[Destination], bool]] = []
        for (ref, sent), bad in zip(present, results):
            for dest in bad:
                diff.mismatched[dest.name] = diff.mismatched.get(dest.name, 0) + 1
                self.report.mismatched += 1
                log.warning("instance %s at %s differs from what the route would send (on_changed_instance: %s)",
                            sent.orthanc_id, dest.name, self.options.on_changed)
            if bad:
                replace.append((ref, sent.orthanc_id, bad, True))
        if replace and self.options.on_changed == "resend" and not self.options.dry_run:
            for outcome in self.pipeline.force_stream(replace):
                if outcome.kind in ("stored", "existing"):
                    self.report.replaced += sum(1 for _, k in outcome.destinations if k == "stored")
                else:
                    self.report.failed += 1

    # -- output --------------------------------------------------------------------------

    def _print(self, study: str, diff: _StudyDiff) -> None:
        for dest, _ in self.dests:
            parts = [
                f"missing={diff.missing.get(dest.name, 0)}",
                f"extra={len(diff.extra.get(dest.name, []))}",
                f"mismatched={diff.mismatched.get(dest.name, 0)}",
            ]
            if diff.unknown.get(dest.name):
                parts.append(f"unknown={diff.unknown[dest.name]}")
            if any(p.split("=")[1] != "0" for p in parts):
                self.out(f"study {study} at {dest.name}: {' '.join(parts)}")


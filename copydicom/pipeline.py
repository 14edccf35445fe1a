"""The pipeline: batches of references -> dedupe -> fetch -> stages -> destinations and indexes.

A :class:`Pipeline` is one route at run time. It is fed batches of
:class:`~copydicom.model.InstanceRef` by a source and reports, for every
reference, one :class:`Outcome`.  It knows nothing of where references come
from; the daemon and the one-shot commands drive it.

Per instance::

    dedupe (ledger, then destination)  -- all destinations have it --> "existing"
      | fetch bytes from the source
      | stages in order (de-identify, dose, tags...)  -- SkippableError --> quarantine
      | store at each destination that lacks it       -- SkippableError --> quarantine
      |   (an index is a destination whose store() only writes its durable spool)
      v
    "stored"                                           -- RetryableError --> "failed"

Same SOP Instance UID, new content: when the source announces again (a change
feed reference) an instance already delivered, and the source can tell the MD5
of its bytes, that MD5 is compared with the one recorded at delivery. If they
differ, the route's ``on_changed_instance`` policy applies: ``report`` counts it
(``changed=N`` in the summary, a metric, ``status``) and keeps the delivered
copy; ``resend`` replaces it at every destination (Orthanc: DELETE then POST,
since a plain POST keeps the old bytes; S3: an unconditional PUT).

Work runs on a bounded pool (``workers`` threads, at most ``2 * workers``
instances in flight: back-pressure on the source).  ``stop`` lets in-flight
instances finish and submits no more.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from copydicom.errors import (
    ConfigError,
    FatalError,
    InvalidInstance,
    RetryableError,
    SkippableError,
)
from copydicom.ledger import Ledger
from copydicom.state import (
    display_source_id,
    mask_source_path,
    one_line,
    private_dir,
    quarantine_file_name,
    quarantine_folder_name,
    write_private_bytes,
)
from copydicom.model import (
    Destination,
    Identity,
    IdentityAddressed,
    IdentityTransform,
    Instance,
    InstanceRef,
    Source,
    Stage,
    StoreOutcome,
)

if TYPE_CHECKING:
    from copydicom.politeness import RateLimiter, TimeWindow
    from copydicom.stages.filters import Filter

log = logging.getLogger(__name__)

#: ``filtered``: the route's filter excluded it (not sent, not recorded; the checkpoint passes it).
OutcomeKind = Literal["stored", "existing", "quarantined", "failed", "filtered"]

#: Attributes a source knows for a batch without download (one mapping per reference, or None).
Describe = Callable[[list[InstanceRef]], list["Mapping[str, Any] | None"]]


@runtime_checkable
class ContentDigests(Protocol):
    """Capability of a source: the MD5 of an instance's bytes as stored, without a download.

    Orthanc: ``GET /instances/{id}/attachments/dicom/md5``. ``None`` when unknown.
    """

    def content_md5(self, ref: InstanceRef) -> str | None: ...


@runtime_checkable
class Replaceable(Protocol):
    """Capability of a destination: replace what it holds for an instance by new bytes."""

    def replace(self, instance: Instance) -> StoreOutcome: ...


ChangedPolicy = Literal["report", "resend"]


@dataclass(frozen=True)
class Outcome:
    """What happened to one reference.

    ``destinations`` pairs each destination's name with what happened there
    (``stored``, ``existing``, ``quarantined`` or ``failed``); ``seconds`` is
    the time spent on the instance (fetch, stages, stores) and
    ``stage_seconds`` the time per stage name.  Plain values, for metrics.
    """

    ref: InstanceRef
    kind: OutcomeKind
    reason: str = ""
    destinations: tuple[tuple[str, str], ...] = ()
    seconds: float = 0.0
    stage_seconds: tuple[tuple[str, float], ...] = ()
    #: The source holds other bytes than those delivered (same instance, new content).
    changed: bool = False
    #: Destinations that stored it with a warning: ``(name, reason)`` pairs (see
    #: :attr:`copydicom.model.Instance.warnings`); the kind stays ``stored``.
    warnings: tuple[tuple[str, str], ...] = ()


@dataclass
class Summary:
    """Counts of one run; :meth:`line` is the last line every command prints."""

    counts: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)
    first_retryable: str = ""
    #: Instances changed at the source since delivery, and of those, how many a destination still
    #: holds in the older version (policy ``report``).
    changed: int = 0
    changed_kept: int = 0
    #: Print ``filtered=`` even when zero (the route has a filter).
    show_filtered: bool = False
    #: Deliveries a destination accepted with a warning (one per instance and destination);
    #: each is also counted in ``replicated``.
    warnings: int = 0
    #: Identifiers the operator named (``--ids``, API ``ids=``) that matched nothing at the source
    #: (:mod:`copydicom.selection`): the run is not ``ok``.
    not_found: int = 0

    def add(self, outcome: Outcome) -> None:
        self.counts[outcome.kind] += 1
        self.warnings += len(outcome.warnings)
        if outcome.kind == "failed" and not self.first_retryable:
            self.first_retryable = outcome.reason
        if outcome.changed:
            self.changed += 1
            if outcome.kind == "existing":
                self.changed_kept += 1

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    @property
    def ok(self) -> bool:
        """Nothing quarantined, failed, left different at a destination, or asked for and not found."""
        return not (self.counts["quarantined"] or self.counts["failed"] or self.changed_kept or self.not_found)

    def line(self) -> str:
        c = self.counts
        filtered = f"filtered={c['filtered']} " if self.show_filtered or c["filtered"] else ""
        warnings = f"warnings={self.warnings} " if self.warnings else ""
        changed = f"changed={self.changed} " if self.changed else ""
        return (
            f"replicated={c['stored']} skipped_existing={c['existing']} "
            f"quarantined={c['quarantined']} failed={c['failed']} {filtered}{warnings}{changed}"
            f"seconds={self.seconds:.1f}"
        )


@dataclass
class _Planned:
    """An instance to process: the destinations that lack it, and those not asked yet."""

    ref: InstanceRef
    target_id: str
    needed: list[Destination]
    unasked: list[Destination]
    #: Destinations whose copy is an older version of the instance, to replace (policy ``resend``).
    replace: list[Destination] = field(default_factory=list)
    #: The source's bytes differ from those delivered to some destination.
    changed: bool = False
    #: The filter could not decide on the listing's metadata: decide on the parsed dataset.
    check_filter: bool = False


class Pipeline:
    """One route at run time.

    Parameters
    ----------
    route
        The route's name (ledger key).
    source
        The route's source (:class:`~copydicom.model.Source`): fetches bytes for a reference.
    stages
        Applied in order; one that implements
        :class:`~copydicom.model.IdentityTransform` predicts the identity of
        what will be sent, which is the dedupe key.
    destinations
        Image destinations.
    ledger
        The state database.
    quarantine_dir
        Where quarantined instances' bytes are kept (created 0700).
    workers
        Worker threads.
    on_outcome
        Called in the driving thread for every outcome (progress, metrics).
    dry_run
        Decide and report, but fetch and store nothing.
    validate
        Called with the bytes of every instance no stage parsed, after the stages and
        before the first store; raises :class:`~copydicom.errors.SkippableError` to
        quarantine it at every destination alike (the route's validity decision).
    check_fetched
        Called with the bytes of every fetched instance before anything parses or
        forwards them (:func:`copydicom.routes.fetched_check`, the structure check,
        for every route whatever its source); raises
        :class:`~copydicom.errors.SkippableError` to quarantine them, bytes kept.
    on_changed
        What to do with an instance delivered before whose content changed at
        the source: ``report`` or ``resend`` (see the module documentation).
    route_filter
        The route's filter (:mod:`copydicom.stages.filters`): decided on the
        attributes the source listed (``DescribedRef.attributes``, else
        ``describe(batch)``), and on the parsed dataset only when those do not
        suffice.  Excluded instances end as ``filtered``.
    describe
        Attributes of a batch known without download (Orthanc main tags).
    rate_limiter
        Caps instances read from the source per second, shared by the workers.
    window
        Working hours: outside them no new batch starts (``waiting_until`` says so).
    """

    def __init__(
        self,
        route: str,
        source: Source,
        stages: Sequence[Stage],
        destinations: Sequence[Destination],
        ledger: Ledger,
        *,
        quarantine_dir: Path,
        workers: int = 4,
        on_outcome: Callable[[Outcome], None] | None = None,
        dry_run: bool = False,
        validate: Callable[[bytes], None] | None = None,
        check_fetched: Callable[[bytes], None] | None = None,
        on_changed: ChangedPolicy = "report",
        route_filter: Filter | None = None,
        describe: Describe | None = None,
        rate_limiter: RateLimiter | None = None,
        window: TimeWindow | None = None,
    ) -> None:
        self.route = route
        self.source = source
        self.stages = list(stages)
        self.destinations = list(destinations)
        self.ledger = ledger
        self.quarantine_dir = quarantine_dir
        self.workers = max(1, workers)
        self.on_outcome = on_outcome
        self.dry_run = dry_run
        self.validate = validate
        self.check_fetched = check_fetched
        self.on_changed = on_changed
        self.stop_event = threading.Event()
        self.route_filter = route_filter
        self.describe = describe
        self.rate_limiter = rate_limiter
        self.window = window
        #: Seconds until the window opens while the pipeline waits for it, else None.
        self.waiting_until: float | None = None
        transforms = [s for s in self.stages if isinstance(s, IdentityTransform)]
        self.transform: IdentityTransform | None = transforms[0] if transforms else None
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix=f"copydicom-{route}")

    # -- planning (dedupe) ---------------------------------------------------------------

    def _sent_identity(self, ref: InstanceRef) -> Identity | None:
        """The identity of what will be sent, if it can be known before the download."""
        if ref.identity is None:
            return None
        return ref.identity if self.transform is None else self.transform.transform_identity(ref.identity)

    def _target(self, ref: InstanceRef) -> tuple[str, str | None]:
        """Dedupe key (Orthanc ID of what will be sent) and its series ID at the destination."""
        if self.transform is None:
            # The Orthanc ID of the identity where the source knows it (a folder's file paths are
            # not IDs, and are PHI: they must never reach a destination's URL), else the source's ID.
            return (ref.identity.orthanc_id if ref.identity is not None else ref.source_id), ref.series_id
        sent = self._sent_identity(ref)
        if sent is None:
            return ref.source_id, None  # decided after the stages ran
        return sent.orthanc_id, sent.series_orthanc_id

    def _changed(self, batch: list[InstanceRef], ids: list[str]) -> dict[str, list[Destination]]:
        """Target IDs (of change-feed references) whose source bytes differ from those delivered.

        Only where the source tells: a change on an instance already delivered (a reference from
        the change feed, ``seq`` set) whose MD5 at the source differs from the one recorded at
        delivery. One small request per such reference; none for new instances.
        """
        if not isinstance(self.source, ContentDigests):
            return {}
        announced = [(ref, t) for ref, t in zip(batch, ids) if ref.seq is not None]
        if not announced:
            return {}
        wanted = [t for _, t in announced]
        recorded = {dest.name: self.ledger.delivered_md5(dest.name, wanted) for dest in self.destinations}
        changed: dict[str, list[Destination]] = {}
        for ref, target in announced:
            holders = [d for d in self.destinations if target in recorded[d.name]]
            if not holders:
                continue
            now = self.source.content_md5(ref)
            if now is None:
                continue
            stale = [d for d in holders if recorded[d.name][target] != now]
            if stale:
                log.warning("instance %s changed at the source since it was delivered (on_changed_instance: %s)",
                            display_source_id(target), self.on_changed)
                changed[target] = stale
        return changed

    def _store_answers(self, dest: Destination) -> bool:
        """Skip asking ``dest`` before storing: the source's instances are new as a rule, and storing one
        the destination already holds costs no more than asking, and is answered "existing".

        A source sets ``mostly_new`` (the receive spool: instances a sender just pushed) and a destination
        ``store_reports_existing`` (Orthanc answers ``AlreadyStored`` and keeps its copy). Asking costs a
        request per batch, and a listener drained as instances arrive has batches of a few instances:
        measured, it was the drain's largest CPU cost after the upload (notes/drain.md).
        """
        return (not self.dry_run and getattr(self.source, "mostly_new", False) is True
                and getattr(dest, "store_reports_existing", False) is True)

    def plan(self, batch: list[InstanceRef]) -> tuple[list[_Planned], list[Outcome]]:
        """Split a batch into work to do and references every destination already holds."""
        targets = [self._target(ref) for ref in batch]
        ids = [t[0] for t in targets]
        changed = self._changed(batch, ids)
        resend = self.on_changed == "resend"
        series_hints = {t[1] for t in targets}
        batch_hint = series_hints.pop() if len(series_hints) == 1 else None
        missing: dict[str, list[Destination]] = {i: [] for i in ids}
        unasked: list[Destination] = []
        per_series = batch_hint is not None and len(batch) > 1
        sent = [self._sent_identity(ref) for ref in batch]
        for dest in self.destinations:
            known = self.ledger.delivered_among(dest.name, ids)
            if resend:  # an older version to replace counts as missing (and is not asked about)
                known -= {t for t, stale in changed.items() if dest in stale}
            rest = [i for i in ids if i not in known]
            by_identity = isinstance(dest, IdentityAddressed) and all(sent)
            replaced = [i for i in rest if resend and dest in changed.get(i, ())]
            rest = [i for i in rest if i not in replaced]
            if rest and self._store_answers(dest):
                pass  # not asked: its store says "already stored" (the ledger was asked above)
            elif rest and not (by_identity or per_series):
                unasked.append(dest)  # asked per instance, in parallel, by the workers
            elif rest:
                if isinstance(dest, IdentityAddressed) and by_identity:
                    wanted = set(rest)
                    present = dest.has_identities(i for i in sent if i is not None and i.orthanc_id in wanted)
                else:
                    present = dest.has(rest, series_hint=batch_hint)
                source_of = {t[0]: ref.source_id for ref, t in zip(batch, targets)}
                for target_id in present:
                    self.ledger.record_delivered(dest.name, target_id, source_of[target_id], self.route, "existing")
                rest = [i for i in rest if i not in present]
            for target_id in rest + replaced:
                missing[target_id].append(dest)
        planned: list[_Planned] = []
        done: list[Outcome] = []
        for ref, (target_id, _) in zip(batch, targets):
            stale = changed.get(target_id, [])
            if missing[target_id]:
                needed = missing[target_id]
                replace = [d for d in needed if resend and d in stale]
                unasked_here = [d for d in needed if d in unasked and d not in replace]
                planned.append(_Planned(ref, target_id, needed, unasked_here, replace, bool(stale)))
            else:
                done.append(Outcome(ref, "existing", changed=bool(stale)))
            if stale and not resend:  # report: the destination keeps the older version; status counts it
                recorded = {d.name: self.ledger.delivered_md5(d.name, [target_id]).get(target_id) for d in stale}
                for dest in stale:
                    self.ledger.record_delivered(dest.name, target_id, ref.source_id, self.route, "changed",
                                                 recorded[dest.name])
        return planned, done

    # -- one instance --------------------------------------------------------------------

    def _process(self, item: _Planned) -> Outcome:
        started = time.monotonic()
        per_dest: dict[str, str] = {}
        timings: list[tuple[str, float]] = []
        outcome = self._process_one(item, per_dest, timings)
        dests = tuple(
            (d.name, per_dest.get(d.name, outcome.kind if d in item.needed else "existing"))
            for d in self.destinations
        )
        return replace(
            outcome, destinations=dests, seconds=time.monotonic() - started, stage_seconds=tuple(timings)
        )

    def _process_one(self, item: _Planned, per_dest: dict[str, str], timings: list[tuple[str, float]]) -> Outcome:
        ref = item.ref
        needed = item.needed
        if self.stop_event.is_set():
            # Queued behind the running workers when a stop came: do not start it (a stop must
            # not wait for a second round of retries); it stays below the watermark.
            return Outcome(ref, "failed", "not started: stop requested")
        try:
            if item.unasked and (self.transform is None or ref.identity is not None):
                present = [d for d in item.unasked if item.target_id in d.has([item.target_id])]
                for dest in present:
                    self.ledger.record_delivered(dest.name, item.target_id, ref.source_id, self.route, "existing")
                    per_dest[dest.name] = "existing"
                needed = [d for d in needed if d not in present]
                if not needed:
                    return Outcome(ref, "existing")
            if self.dry_run:
                return Outcome(ref, "stored", "dry run", changed=item.changed)
            if self.rate_limiter is not None and not self.rate_limiter.acquire(self.stop_event):
                return Outcome(ref, "failed", "not started: stop requested")
            data = self.source.fetch(ref)
            if self.check_fetched is not None:
                try:
                    self.check_fetched(data)
                except SkippableError as refused:
                    return self._quarantine(ref, data, refused)  # the bytes are kept: a retry can use them
            if item.check_filter and not self._dataset_passes(ref, data):
                return Outcome(ref, "filtered")
        except SkippableError as exc:
            # a source whose copy is the only one (the listener's spool) hands over the bytes it refused
            return self._quarantine(ref, getattr(exc, "instance_data", None), exc)
        except RetryableError as exc:
            return Outcome(ref, "failed", str(exc))
        instance = Instance(ref, data, identity=ref.identity)
        # The MD5 of what is delivered, to notice new content under the same ID later: only for references
        # of a change feed from a source that can tell its digests (the only ones _changed() checks). It
        # costs 0.7 ms of CPU per 0.5 MB instance, 40% of the client's CPU per instance in a one-shot
        # replicate (benchmarks/replicate_bench.py, round 2), which listings do not need.
        source_md5 = (hashlib.md5(data, usedforsecurity=False).hexdigest()
                      if ref.seq is not None and isinstance(self.source, ContentDigests) else None)
        try:
            for stage in self.stages:
                began = time.monotonic()
                try:
                    instance = stage.process(instance)
                finally:
                    timings.append((getattr(stage, "name", type(stage).__name__), time.monotonic() - began))
            if self.transform is not None:
                before = needed
                needed = self._recheck_after_transform(instance, needed, item.target_id)
                per_dest.update((d.name, "existing") for d in before if d not in needed)
                if not needed:
                    return Outcome(ref, "existing")
            if self.validate is not None and instance.dataset is None:
                self.validate(instance.data)  # once for the route, before any destination stores it
            outcomes: list[StoreOutcome] = []
            for dest in needed:
                if dest in item.replace and isinstance(dest, Replaceable):
                    outcome = dest.replace(instance)
                else:
                    outcome = dest.store(instance)
                per_dest[dest.name] = outcome
                outcomes.append(outcome)
                self.ledger.record_delivered(dest.name, instance.target_id, ref.source_id, self.route, outcome,
                                             source_md5)
        except SkippableError as exc:
            return self._quarantine(ref, data, exc)
        except RetryableError as exc:
            return Outcome(ref, "failed", str(exc))
        except (ConfigError, FatalError):
            raise
        except Exception as exc:  # a malformed file tripped a stage: quarantine, keep running
            log.debug("unexpected error on instance %s", display_source_id(ref.source_id), exc_info=True)
            return self._quarantine(ref, data, InvalidInstance(f"cannot process: {safe_reason(exc)}"))
        for stage_name, actions in instance.audit.items():
            self.ledger.record_audit(self.route, instance.target_id, stage_name, actions)
        kind: OutcomeKind = "stored" if "stored" in outcomes else "existing"
        warned = tuple((d.name, instance.warnings[d.name]) for d in needed if d.name in instance.warnings)
        for name, reason in warned:
            log.debug("instance %s stored at %s with a warning: %s", instance.target_id, name, reason)
        return Outcome(ref, kind, changed=item.changed, warnings=warned)

    # -- filter ----------------------------------------------------------------------------

    def _split_filtered(self, batch: list[InstanceRef]) -> tuple[list[InstanceRef], list[Outcome], set[str]]:
        """``(kept, filtered outcomes, source IDs to decide after download)`` of a batch."""
        assert self.route_filter is not None
        attrs: list[Mapping[str, Any] | None] = [getattr(ref, "attributes", None) for ref in batch]
        if self.describe is not None and any(a is None for a in attrs):
            described = self.describe(batch)
            attrs = [a if a is not None else d for a, d in zip(attrs, described)]
        kept: list[InstanceRef] = []
        dropped: list[Outcome] = []
        undecided: set[str] = set()
        for ref, known in zip(batch, attrs):
            verdict = self.route_filter.evaluate(known or {}, complete=False)
            if verdict is False:
                dropped.append(Outcome(ref, "filtered"))
                continue
            if verdict is None:
                undecided.add(ref.source_id)
            kept.append(ref)
        return kept, dropped, undecided

    def _dataset_passes(self, ref: InstanceRef, data: bytes) -> bool:
        assert self.route_filter is not None
        import pydicom

        try:
            ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
        except Exception:  # noqa: BLE001 - unreadable: let the stages quarantine it
            return True
        return self.route_filter.matches_dataset(ds, getattr(ref, "attributes", None))

    def _wait_for_window(self) -> None:
        window = self.window
        if window is None:
            return

        def note(delay: float) -> None:
            if self.waiting_until is None:
                log.info("route %s: outside its window %s; waiting %.0f s", self.route, window.text, delay)
            self.waiting_until = delay

        window.wait_open(self.stop_event, on_wait=note)
        self.waiting_until = None

    def _recheck_after_transform(
        self, instance: Instance, needed: list[Destination], predicted: str
    ) -> list[Destination]:
        actual = instance.target_id
        if actual != predicted and instance.ref.identity is not None:
            log.warning("instance %s: predicted and actual de-identified IDs differ",
                        display_source_id(instance.ref.source_id))
        if actual == predicted and instance.ref.identity is not None:
            return needed
        still: list[Destination] = []
        for dest in needed:
            if self.ledger.delivered_among(dest.name, [actual]) or actual in dest.has([actual]):
                self.ledger.record_delivered(dest.name, actual, instance.ref.source_id, self.route, "existing")
            else:
                still.append(dest)
        return still

    def _quarantine(self, ref: InstanceRef, data: bytes | None, exc: SkippableError) -> Outcome:
        # The file name is a digest of route and source ID: collision-free, and never the
        # source's path (file names of a folder import are often patient names and MRNs).
        path: str | None = None
        if data is not None:
            folder = private_dir(self.quarantine_dir / quarantine_folder_name(self.route))
            target = folder / quarantine_file_name(self.route, ref.source_id)
            write_private_bytes(target, data)
            path = str(target)
        reason = one_line(f"{type(exc).__name__}: {exc}")
        self.ledger.quarantine(self.route, ref.source_id, exc.code, reason, path)
        log.warning("instance %s quarantined on route %s: %s", display_source_id(ref.source_id), self.route,
                    mask_source_path(reason, ref.source_id))
        return Outcome(ref, "quarantined", reason)

    # -- driving -------------------------------------------------------------------------

    def run(self, batches: Iterable[list[InstanceRef]], summary: Summary | None = None) -> Summary:
        """Process every batch; stop early only when :attr:`stop_event` is set."""
        summary = summary if summary is not None else Summary()
        summary.show_filtered = summary.show_filtered or self.route_filter is not None
        for outcome in self.stream(batches):
            summary.add(outcome)
        self.ledger.flush()
        return summary

    def stream(self, batches: Iterable[list[InstanceRef]]) -> Iterable[Outcome]:
        """Yield outcomes as they complete (not in submission order)."""
        in_flight: set[Future[Outcome]] = set()
        limit = 2 * self.workers
        last_flush = time.monotonic()
        for batch in batches:
            if self.stop_event.is_set():
                break
            if not batch:
                continue
            self._wait_for_window()
            if self.stop_event.is_set():
                break
            undecided: set[str] = set()
            if self.route_filter is not None:
                try:
                    batch, dropped, undecided = self._split_filtered(batch)
                except RetryableError as exc:
                    batch, dropped = [], [Outcome(ref, "failed", str(exc)) for ref in batch]
                for outcome in dropped:
                    yield self._report(outcome)
                if not batch:
                    continue
            try:
                planned, done = self.plan(batch)
            except RetryableError as exc:
                planned, done = [], [Outcome(ref, "failed", str(exc)) for ref in batch]
            for item in planned:
                item.check_filter = item.ref.source_id in undecided
            will_fetch = getattr(self.source, "will_fetch", None)
            if callable(will_fetch) and not self.dry_run:
                will_fetch([item.ref for item in planned])  # e.g. a DICOMweb source picks series or instance retrieval
            for outcome in done:
                yield self._report(outcome)
            for item in planned:
                if self.stop_event.is_set():
                    break
                while len(in_flight) >= limit:
                    finished, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                    for future in finished:
                        yield self._report(self._result(future))
                in_flight.add(self._pool.submit(self._process, item))
            if time.monotonic() - last_flush > 1.0:
                self.ledger.flush()
                last_flush = time.monotonic()
        while in_flight:
            finished, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in finished:
                yield self._report(self._result(future))

    def force_stream(
        self, items: Iterable[tuple[InstanceRef, str, list[Destination], bool]]
    ) -> Iterable[Outcome]:
        """Process references already known to be missing (or different) at given destinations.

        For ``copydicom reconcile``: each item is ``(ref, target_id, destinations, replace)``; the
        dedupe step is skipped (the comparison already asked the destinations), everything after
        it (fetch, stages, validity, store or replace, ledger, audit) is the same as :meth:`stream`.
        """
        in_flight: set[Future[Outcome]] = set()
        for ref, target_id, dests, replace_them in items:
            if self.stop_event.is_set():
                break
            while len(in_flight) >= 2 * self.workers:
                finished, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in finished:
                    yield self._report(self._result(future))
            item = _Planned(ref, target_id, list(dests), [], list(dests) if replace_them else [], replace_them)
            in_flight.add(self._pool.submit(self._process, item))
        while in_flight:
            finished, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in finished:
                yield self._report(self._result(future))
        self.ledger.flush()

    def _result(self, future: Future[Outcome]) -> Outcome:
        exc = future.exception()
        if exc is None:
            return future.result()
        self.stop_event.set()  # configuration or fatal error: stop submitting, let it surface
        raise exc

    def _report(self, outcome: Outcome) -> Outcome:
        if outcome.kind in ("stored", "existing") and not self.dry_run:
            self.ledger.record_settled(self.route, outcome.ref.source_id)  # releases a quarantine entry
        if not outcome.destinations:  # decided for the whole batch: the same at every destination
            outcome = replace(outcome, destinations=tuple((d.name, outcome.kind) for d in self.destinations))
        if self.on_outcome is not None:
            self.on_outcome(outcome)
        return outcome

    def stop(self) -> None:
        self.stop_event.set()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.ledger.flush()
        for stage in self.stages:
            close = getattr(stage, "close", None)
            if callable(close):
                close()


_QUOTED = re.compile(r"('[^']*'|\"[^\"]*\")")


def safe_reason(exc: BaseException) -> str:
    """An exception's type and message with quoted values removed (they may be patient data)."""
    text = _QUOTED.sub("'…'", str(exc))[:300]
    return f"{type(exc).__name__}: {text}"

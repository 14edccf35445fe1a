"""Drive a route's pipeline from the source's changes feed, with a low-watermark checkpoint.

The checkpoint of a route is the highest sequence number ``s`` such that
every change ``<= s`` is finished: its instances stored at every destination
(or already there) or quarantined, or the change is of a type the route
ignores.  A change whose instance failed with a retryable error holds the
watermark where it is; the run stops there and the next run starts again from
the checkpoint, so nothing is skipped.  Instances processed beyond the
watermark before a crash are recognised by the ledger or the destination and
not sent twice.

Before each poll the feed is checked against the checkpoint (see
:mod:`copydicom.feedcheck`): a source whose feed was reset (its database
rebuilt) is reported (ERROR log, the ``feed_resets`` record read by ``status``,
``/healthz`` and a metric) and the checkpoint is not advanced until the route is
repaired (a re-based checkpoint clears the record).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from copydicom.feedcheck import reset_reason
from copydicom.ledger import Ledger
from copydicom.model import ChangeFeedSource
from copydicom.pipeline import Outcome, Pipeline, Summary
from copydicom.sources.orthanc import ChangesPage
from copydicom.state import FeedReset, FeedResetDetected

log = logging.getLogger(__name__)


@dataclass
class _Watermark:
    """Tracks which sequence numbers of a page are finished."""

    order: list[int]
    remaining: dict[int, int]
    failed: set[int]
    position: int = 0

    @classmethod
    def of(cls, seqs: list[int], refs_per_seq: dict[int, int]) -> _Watermark:
        return cls(list(seqs), {s: refs_per_seq.get(s, 0) for s in seqs}, set())

    def finish(self, outcome: Outcome) -> None:
        seq = outcome.ref.seq
        if seq is None or seq not in self.remaining:
            return
        if outcome.kind == "failed":
            self.failed.add(seq)
        self.remaining[seq] -= 1

    def advance(self) -> int | None:
        """The newest sequence number below which everything is finished, if it moved."""
        moved = None
        while self.position < len(self.order):
            seq = self.order[self.position]
            if self.remaining[seq] > 0 or seq in self.failed:
                break
            moved = seq
            self.position += 1
        return moved


class ChangesRunner:
    """One poll of a route: read pages of changes from the checkpoint on, until the end.

    Parameters
    ----------
    route
        The route's name (ledger key).
    feed
        The route's source, which has a change feed (``changes_page``, ``last_change``).
    pipeline
        The route's pipeline.
    ledger
        Where the checkpoint lives.
    start_from
        Where a route without a checkpoint starts: ``"beginning"`` (sequence 0)
        or ``"now"`` (the feed's current ``Last``: only new changes).
    """

    def __init__(
        self, route: str, feed: ChangeFeedSource, pipeline: Pipeline, ledger: Ledger, *, start_from: str = "beginning"
    ) -> None:
        self.route = route
        self.feed = feed
        self.pipeline = pipeline
        self.ledger = ledger
        self.start_from = start_from
        self.last_seen: int | None = None
        #: The feed reset this route is held by (``None`` while the feed matches the checkpoint).
        self.feed_reset: FeedReset | None = None

    def initial_checkpoint(self) -> int:
        saved = self.ledger.checkpoint(self.route)
        if saved is not None:
            return saved
        start = self.feed.last_change() if self.start_from == "now" else 0
        self.ledger.advance_checkpoint(self.route, start)
        return start

    def poll(self) -> Summary:
        """Process changes until the end of the feed, a retryable failure, or a stop request."""
        summary = Summary()
        since = self.initial_checkpoint()
        first = True
        while not self.pipeline.stop_event.is_set():
            page = self.feed.changes_page(since)
            self.last_seen = page.last
            if first:
                self._check_feed(page)
                first = False
            if not page.seqs:
                break
            per_seq: dict[int, int] = {}
            for batch in page.batches:
                for ref in batch:
                    assert ref.seq is not None
                    per_seq[ref.seq] = per_seq.get(ref.seq, 0) + 1
            mark = _Watermark.of(page.seqs, per_seq)
            last_save = time.monotonic()
            for outcome in self.pipeline.stream(page.batches):
                summary.add(outcome)
                mark.finish(outcome)
                if time.monotonic() - last_save > 1.0:
                    self._save(mark, page)
                    last_save = time.monotonic()
            self._save(mark, page)
            if mark.failed or self.pipeline.stop_event.is_set() or mark.position < len(mark.order):
                break
            since = page.seqs[-1]
            if page.done:
                break
        return summary

    def _save(self, mark: _Watermark, page: ChangesPage) -> None:
        seq = mark.advance()
        if seq is not None:
            self.ledger.advance_checkpoint(self.route, seq, page.resources.get(seq))
        else:
            self.ledger.flush()

    # -- feed reset ------------------------------------------------------------------------

    def _check_feed(self, page: ChangesPage) -> None:
        """Raise :class:`FeedResetDetected` (nothing processed) if the feed no longer matches the checkpoint."""
        known = self.ledger.feed_resets().get(self.route)
        if known is None:
            position = self.ledger.position(self.route)
            names = None
            if position is not None and page.last >= position.seq:
                names = self.feed.names_change(position)
            reason = reset_reason(position, page.last, names)
            if reason is None:
                self.feed_reset = None
                return
            assert position is not None
            known = FeedReset(self.route, time.time(), position.seq, position.resource, page.last, reason)
            self.ledger.store.feed_reset_put(known)
            log.error("route %s: change feed reset detected: %s; the checkpoint is held at %d and nothing "
                      "is sent from this feed until the route is reconciled and its checkpoint re-based",
                      self.route, reason, position.seq)
        elif self.feed_reset is None:
            log.error("route %s: change feed reset detected earlier and not repaired: %s; checkpoint held at %d",
                      self.route, known.reason, known.checkpoint)
        self.feed_reset = known
        raise FeedResetDetected(f"change feed reset: {known.reason}")

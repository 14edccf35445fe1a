"""An index sink seen by the pipeline as one more destination.

The pipeline plans, dedupes and records index deliveries in the ledger exactly
as for image destinations: an instance document's ``_id`` is the Orthanc ID of
what is sent, which is the pipeline's dedupe key.  :meth:`IndexDestination.store`
only writes the instance's documents to the durable local spool, so image
replication never waits for an index; the spool delivers them in order, in the
background, and keeps them while the index is down.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from tenacity import Retrying, retry_if_result, stop_after_delay, stop_when_event_set, wait_random_exponential

from copydicom.errors import ConfigError
from copydicom.model import Instance, StoreOutcome
from copydicom.sinks.spool import SpooledIndex

log = logging.getLogger(__name__)


class IndexDestination:
    """Adapter: :class:`SpooledIndex` -> :class:`~copydicom.model.Destination`."""

    def __init__(self, spooled: SpooledIndex) -> None:
        self.spooled = spooled
        self.name = spooled.name
        self._drained = False

    def has(self, target_ids: Iterable[str], *, series_hint: str | None = None) -> set[str]:
        """The IDs whose instance documents this index already received."""
        return self.spooled.already_indexed(list(target_ids))

    def store(self, instance: Instance) -> StoreOutcome:
        """Queue the instance's documents in the spool (never blocks on the index)."""
        return "stored" if self.spooled.submit(instance.documents) else "existing"

    def drain(self, timeout: float, *, stop: threading.Event | None = None) -> int:
        """Deliver the spool until it is empty or ``timeout`` seconds passed; return what is still pending.

        A one-shot command calls this before it prints its summary, so that documents the index has
        not taken are counted (as failed) instead of silently left behind. Attempts back off with
        full jitter (tenacity), at most 5 s apart; ``stop`` interrupts the wait at once. A
        configuration error of the index (credentials) is logged and ends the wait: the documents stay.
        """
        stop = stop if stop is not None else threading.Event()

        def attempt() -> int:
            try:
                return self.spooled.flush().pending
            except ConfigError as exc:
                log.error("index %s: %s; documents stay in the spool", self.name, exc)
                stop.set()
                return self.spooled.spool.pending(self.name)

        def sleep(seconds: float) -> None:
            stop.wait(seconds)

        retrying = Retrying(
            stop=stop_after_delay(max(0.0, timeout)) | stop_when_event_set(stop),
            wait=wait_random_exponential(multiplier=0.25, max=5.0),
            retry=retry_if_result(lambda pending: pending > 0),
            sleep=sleep,
            retry_error_callback=lambda state: state.outcome.result() if state.outcome else 0,
            reraise=True,
        )
        pending: int = retrying(attempt)
        self._drained = True
        return pending

    def close(self) -> None:
        """Deliver what can be delivered now (unless :meth:`drain` just tried), then stop the flusher."""
        try:
            if self._drained:
                return
            result = self.spooled.flush()
            if result.pending:
                log.warning("index %s: %d documents stay in the spool for the next run", self.name, result.pending)
        except ConfigError as exc:
            log.error("index %s: %s; documents stay in the spool", self.name, exc)
        finally:
            self.spooled.close()

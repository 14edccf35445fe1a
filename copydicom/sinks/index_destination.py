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
from collections.abc import Iterable

from copydicom.errors import ConfigError
from copydicom.model import Instance, StoreOutcome
from copydicom.sinks.spool import SpooledIndex

log = logging.getLogger(__name__)


class IndexDestination:
    """Adapter: :class:`SpooledIndex` -> :class:`~copydicom.model.Destination`."""

    def __init__(self, spooled: SpooledIndex) -> None:
        self.spooled = spooled
        self.name = spooled.name

    def has(self, target_ids: Iterable[str], *, series_hint: str | None = None) -> set[str]:
        """The IDs whose instance documents this index already received."""
        return self.spooled.already_indexed(list(target_ids))

    def store(self, instance: Instance) -> StoreOutcome:
        """Queue the instance's documents in the spool (never blocks on the index)."""
        return "stored" if self.spooled.submit(instance.documents) else "existing"

    def close(self) -> None:
        """Deliver what can be delivered now, then stop the background flusher."""
        try:
            result = self.spooled.flush()
            if result.pending:
                log.warning("index %s: %d documents stay in the spool for the next run", self.name, result.pending)
        except ConfigError as exc:
            log.error("index %s: %s; documents stay in the spool", self.name, exc)
        finally:
            self.spooled.close()

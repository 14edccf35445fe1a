"""Retention of PHI at rest: quarantined bytes and refused index documents are purged after a while.

Configuration (top level of the YAML)::

    quarantine: {retain: 30d}      # default 30d; "off" keeps entries until purged by hand
    index_spool: {retain: 30d}     # documents an index refused (undeliverable); default 30d

Why 30 days by default: a quarantined file is a copy of an instance the source still
holds (or of a file the operator still has), kept so that its problem can be looked
at; keeping such copies of patient data forever is what the hardening review flagged.
A month is long enough to notice (``status`` shows the oldest entry's age; the
quarantine metric and the ``list`` command show every entry) and to retry.  Documents
*waiting* for an index that is down are never purged: they are not undeliverable.

Each purge is logged on its own line with the route (or index), a digest of the source
ID, the reason code and the age: nothing of the patient.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass

from copydicom.errors import ConfigError
from copydicom.state._files import display_source_id
from copydicom.state._protocol import Store

log = logging.getLogger(__name__)

DEFAULT_RETAIN = 30 * 86400.0
_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_retain(value: object, where: str) -> float | None:
    """``30d``, ``12h``, ``90m``, ``45s`` -> seconds; ``off`` (or YAML ``false``) -> ``None`` (keep)."""
    if value is False or value == "off":
        return None
    match = _DURATION.match(str(value).strip()) if isinstance(value, str) else None
    if match is None or int(match.group(1)) == 0:
        raise ConfigError(f"{where}: a duration like 30d, 12h, 90m or 'off' (got {value!r})")
    return float(int(match.group(1)) * _UNITS[match.group(2)])


@dataclass(frozen=True)
class Retention:
    """How long quarantine entries and refused index documents are kept (``None``: forever)."""

    quarantine: float | None = DEFAULT_RETAIN
    rejected_documents: float | None = DEFAULT_RETAIN


def _age(seconds: float) -> str:
    return f"{int(seconds // 86400)}d" if seconds >= 86400 else f"{int(seconds // 3600)}h"


def purge_expired(store: Store, retention: Retention, *, now: float | None = None) -> tuple[int, int]:
    """Purge what is older than the retention; returns ``(quarantine entries, documents)`` purged."""
    from copydicom.ledger import remove_files

    now = time.time() if now is None else now
    entries = documents = 0
    if retention.quarantine is not None:
        for entry in store.quarantine_older_than(now - retention.quarantine):
            released = store.quarantine_release(entry.route, entry.source_id)
            if released is None:
                continue
            files = remove_files(released)
            entries += 1
            log.info("retention: quarantine entry of instance %s on route %s purged (%s, %s old, %d file(s))",
                     display_source_id(entry.source_id), entry.route, entry.code, _age(now - entry.at), files)
    if retention.rejected_documents is not None:
        for sink, doc_id, at in store.spool_rejected_older_than(now - retention.rejected_documents):
            store.spool_drop_rejected(sink, doc_id)
            documents += 1
            log.info("retention: document refused by index %s purged (%s old)", sink, _age(now - at))
    return entries, documents

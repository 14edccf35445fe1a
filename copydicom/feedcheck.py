"""Is a change feed still the one the checkpoint was taken on?  (feed-reset detection)

A source whose database was wiped and rebuilt starts its change sequence again
at 1: the changes below the saved checkpoint would silently never be sent.  Two
signs, checked at every poll before anything is processed:

1. the feed's ``Last`` is below the checkpoint (a rebuilt source that has not
   caught up yet; also a checkpoint raised by hand);
2. the checkpoint's sequence number names another resource than the one saved
   with it (a rebuilt source already past the checkpoint).  Orthanc 1.10.1's
   ``/system`` exposes no database identity, so the feed itself is asked:
   ``GET /changes?since=seq-1&limit=1``.

When the change at the checkpoint is gone (Orthanc drops the changes of deleted
resources from its log) nothing can be told from it, and it is not a reset.
"""

from __future__ import annotations

from typing import Any

from copydicom.model import FeedPosition


def names_change(client: Any, position: FeedPosition) -> bool | None:
    """Whether ``position.seq`` still names ``position.resource`` on an Orthanc ``client``.

    ``None`` when it cannot be told: no resource saved (a checkpoint of the first
    release, or a route that started from ``now``), or the change at ``seq`` is gone.
    """
    if position.resource is None or position.seq < 1:
        return None
    reply = client.changes(position.seq - 1, 1)
    changes = reply.get("Changes") or []
    if not changes or int(changes[0].get("Seq", -1)) != position.seq:
        return None
    return str(changes[0].get("ID", "")) == position.resource


def reset_reason(position: FeedPosition | None, last: int | None, names: bool | None) -> str | None:
    """Why the feed no longer matches the checkpoint, or ``None`` if nothing says so.

    The text holds sequence numbers only (no identifiers: nothing of a patient).
    """
    if position is None or last is None:
        return None
    if last < position.seq:
        return (
            f"the source's change feed ends at {last}, below the checkpoint {position.seq} "
            "(source database rebuilt or reset?)"
        )
    if names is False:
        return (
            f"the source's change {position.seq} (the checkpoint) now names another resource "
            "(source database rebuilt?)"
        )
    return None

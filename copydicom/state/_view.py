"""The common start and end of a component's view over the state store.

The ledger, the index spool and the de-identification mapping store each take either a path to
the state database (they then open the store and close it with themselves) or a
:class:`~copydicom.state.Store` that someone else opened and will close (the daemon shares one
store between them). :class:`StoreView` holds that rule once.
"""

from __future__ import annotations

from pathlib import Path

from copydicom.state._protocol import Store
from copydicom.state._sqlite import open_store


class StoreView:
    """Base of the views over the state store.

    Parameters
    ----------
    path
        The state database file (opened here, created 0600 if missing, and closed by :meth:`close`)
        or an open :class:`~copydicom.state.Store` (left open by :meth:`close`: its opener owns it).
    """

    def __init__(self, path: str | Path | Store) -> None:
        self.store: Store
        if isinstance(path, (str, Path)):
            self.store = open_store(path)
            self.path = Path(path)
            self._owns_store = True
        else:
            self.store = path
            self.path = Path(path.location)
            self._owns_store = False
        self._closed = False

    def _before_close(self) -> None:
        """Work a view does once before its store is released (commit what it buffered)."""

    def close(self) -> None:
        """Run :meth:`_before_close` once, then close the store if this view opened it."""
        if self._closed:
            return
        try:
            self._before_close()
        finally:
            self._closed = True
            if self._owns_store:
                self.store.close()

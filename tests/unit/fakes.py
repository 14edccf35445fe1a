"""In-memory fakes of the plugin protocols for unit tests."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from copydicom.model import Instance, InstanceRef, StoreOutcome


class FakeSource:
    """Serves bytes per source ID; ``errors`` maps an ID to an exception to raise."""

    name = "fake-source"

    def __init__(self, files: dict[str, bytes], errors: dict[str, Exception] | None = None) -> None:
        self.files = files
        self.errors = errors or {}
        self.fetched: list[str] = []
        self._lock = threading.Lock()

    def fetch(self, ref: InstanceRef) -> bytes:
        with self._lock:
            self.fetched.append(ref.source_id)
        if ref.source_id in self.errors:
            raise self.errors[ref.source_id]
        return self.files[ref.source_id]


class FakeDestination:
    """Holds target IDs in a set; records every question and every store."""

    def __init__(self, name: str = "dest", held: Iterable[str] = (),
                 fail: Callable[[Instance], Exception | None] | None = None) -> None:
        self.name = name
        self.held: set[str] = set(held)
        self.has_calls: list[tuple[list[str], str | None]] = []
        self.stored: list[str] = []
        self.fail = fail
        self.closed = False
        self._lock = threading.Lock()

    def has(self, target_ids: Iterable[str], *, series_hint: str | None = None) -> set[str]:
        wanted = list(target_ids)
        with self._lock:
            self.has_calls.append((wanted, series_hint))
            return self.held.intersection(wanted)

    def store(self, instance: Instance) -> StoreOutcome:
        if self.fail is not None:
            error = self.fail(instance)
            if error is not None:
                raise error
        with self._lock:
            self.stored.append(instance.target_id)
            if instance.target_id in self.held:
                return "existing"
            self.held.add(instance.target_id)
        return "stored"

    def close(self) -> None:
        self.closed = True


class RaisingStage:
    """A stage that raises ``error`` for the given source IDs and passes the rest."""

    name = "raising"

    def __init__(self, error: Exception, ids: set[str]) -> None:
        self.error = error
        self.ids = ids

    def process(self, instance: Instance) -> Instance:
        if instance.ref.source_id in self.ids:
            raise self.error
        return instance

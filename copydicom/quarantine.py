"""Quarantine actions shared by ``copydicom quarantine`` and the web console.

An entry stays until its instance is delivered: a retry runs the instance
through its route's pipeline (built by the one assembly path, with its
stages, destinations and indexes), and the pipeline releases the entry and
removes its files when the instance settles; a retry that fails again keeps
the entry and its bytes. A purge removes every file the entry ever pointed to.
"""

from __future__ import annotations

import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from copydicom.config import AppConfig, Route
from copydicom.ledger import Ledger, remove_files
from copydicom.model import InstanceRef, RequeueableSource
from copydicom.pipeline import Summary
from copydicom.routes import build_route
from copydicom.state._files import private_dir, quarantine_file_name, quarantine_folder_name


def retry_entries(
    config: AppConfig, ledger: Ledger, entries: Iterable[Any], routes: Mapping[str, Route], *,
    key_file: str | None = None,
) -> tuple[Summary, list[str]]:
    """Re-process quarantine entries through their route.

    Returns the summary and the names of routes that could not be built (their
    entries are counted as failed and kept).
    """
    by_route: dict[str, list[Any]] = {}
    for entry in entries:
        by_route.setdefault(entry.route, []).append(entry)
    summary = Summary()
    unknown: list[str] = []
    for name, items in by_route.items():
        route, app = routes.get(name), config
        if route is None and name.startswith(UPLOAD_PREFIX) and name[len(UPLOAD_PREFIX):] in routes:
            route, app = _upload_retry_route(config, name)
        if route is None:
            unknown.append(name)
            summary.counts["failed"] += len(items)
            continue
        runtime = build_route(route, app, ledger, key_file=key_file)
        saved = {e.source_id: e.path for e in items if e.path}
        if saved and not isinstance(runtime.source, RequeueableSource):  # those rebuild from the copy themselves
            by_name = config.quarantine_dir / quarantine_folder_name(name) if app is not config else None
            runtime.pipeline.source = _SavedCopyFallback(runtime.pipeline.source, saved, name, by_name)
        try:
            refs = [[_ref_of(runtime.source, e)] for e in items]
            for outcome in runtime.pipeline.stream(refs):
                summary.add(outcome)
        finally:
            runtime.close()
    ledger.flush()
    return summary, unknown


#: Route name prefix of a console upload (``upload:<route>``): the configured route with the job's
#: files as its source (:func:`copydicom.console._wiring.upload_route`). An upload with its own patient
#: CSV is named ``upload+csv:<route>`` instead: the CSV is deleted with the job, and a retry without it
#: would pseudonymise with another map, so those entries are not retried (they stay, with their bytes).
UPLOAD_PREFIX = "upload:"


def _upload_retry_route(config: AppConfig, name: str) -> tuple[Route, AppConfig]:
    """The route a console upload ran, with its quarantine folder as the (placeholder) source.

    The job's folder is gone: every instance comes from its saved quarantine copy.
    """
    from copydicom.console._wiring import upload_route

    folder = private_dir(config.quarantine_dir / quarantine_folder_name(name))
    return upload_route(config, name[len(UPLOAD_PREFIX):], folder, None)


def _ref_of(source: Any, entry: Any) -> InstanceRef:
    """The reference to re-process for an entry: rebuilt by the source when its IDs cannot be fetched alone."""
    if isinstance(source, RequeueableSource):
        return source.requeue(entry.source_id, Path(entry.path) if entry.path else None)
    complete = getattr(source, "complete", None)
    return complete(InstanceRef(entry.source_id)) if callable(complete) else InstanceRef(entry.source_id)


class _SavedCopyFallback:
    """The route's source, falling back to the quarantined copy when the source no longer has it.

    A listener's spool entry leaves once quarantined (the saved copy is then the only one), and a
    DICOMweb source cannot fetch by Orthanc ID alone; without this a retry could never deliver
    them and replaced the original reason by "vanished". The saved copy goes through the same
    structure check the sources apply (:func:`~copydicom.stages.structure.check_structure`).
    """

    def __init__(self, source: Any, saved: Mapping[str, str], route: str = "", by_name: Path | None = None) -> None:
        self._source = source
        self._saved = saved
        self._route = route
        self._by_name = by_name

    def __getattr__(self, name: str) -> Any:
        return getattr(self._source, name)

    def fetch(self, ref: InstanceRef) -> bytes:
        from pathlib import Path

        from copydicom.errors import InvalidInstance
        from copydicom.stages.structure import checked_keeping_bytes

        try:
            data: bytes = self._source.fetch(ref)
            return data
        except InvalidInstance as first:
            path = self._saved.get(ref.source_id)
            if path is None:
                raise
            # Only a copy that is this instance: its identity's Orthanc ID is the entry's source ID (a file
            # put in its place, or one of another instance, is not sent in its name).
            from copydicom.sources.folder import identity_of_file

            if not self._written_for(ref, Path(path)):
                identity = identity_of_file(Path(path))
                if identity is None or identity.orthanc_id != ref.source_id:
                    raise first from None
            try:
                data = Path(path).read_bytes()
            except OSError:
                raise first from None
        return checked_keeping_bytes(data)

    def _written_for(self, ref: InstanceRef, path: Path) -> bool:
        """Whether ``path`` is the copy the pipeline wrote for this entry (a console upload's source
        IDs are paths in a folder that no longer exists, so its identity cannot name the entry):
        its name is the digest of route and source ID, in the route's private quarantine folder,
        and it is a regular file, not a symlink."""
        if self._by_name is None or path.name != quarantine_file_name(self._route, ref.source_id):
            return False
        try:
            return path.parent.resolve() == self._by_name.resolve() and stat.S_ISREG(path.lstat().st_mode)
        except OSError:
            return False


def purge_entries(ledger: Ledger, entries: Iterable[Any]) -> int:
    """Remove entries and every file each ever pointed to; returns how many."""
    count = 0
    for entry in entries:
        remove_files(entry)
        ledger.release(entry.route, entry.source_id)
        count += 1
    return count

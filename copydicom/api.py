"""The Python API: one-shot replication from scripts and notebooks, as the original CopyDICOM offered.

Each function builds its route through the same validator and assembly path
as the command line (:func:`copydicom.routes.oneshot_route`,
:func:`copydicom.routes.build_route`), runs it once and returns the
:class:`~copydicom.pipeline.Summary` whose :meth:`~copydicom.pipeline.Summary.line`
is the command's last line.  Endpoints are URLs (``http://user:pass@host:8042``,
``s3://bucket/prefix/?endpoint_url=...``, ``sqlite:///index.db``,
``file:///folder``) or, with ``config=``, names from a configuration file.

Errors are the exceptions of :mod:`copydicom.errors`: a
:class:`~copydicom.errors.ConfigError` for a bad endpoint, profile or key;
instances that could not be delivered are counted in the summary
(``quarantined``, ``failed``), never raised.

Heavy modules load inside the functions: ``import copydicom`` stays light.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from copydicom.config import AppConfig, Route
    from copydicom.model import InstanceRef
    from copydicom.pipeline import Summary
    from copydicom.routes import RouteRuntime

Endpoints = str | Sequence[str]


def _as_list(value: Endpoints | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _config(config: str | Path | AppConfig | None) -> AppConfig | None:
    if config is None or not isinstance(config, (str, Path)):
        return config
    from copydicom.config import load_config

    return load_config(config)


def _validated(
    config: AppConfig | None, *, workers: int, route: str | None, **fields: Any
) -> tuple[Route, AppConfig]:
    """The one-shot route of an API call, checked like the command line's."""
    from copydicom.errors import ConfigError
    from copydicom.routes import oneshot_route

    if workers < 1:
        raise ConfigError("workers: must be a whole number >= 1")
    return oneshot_route(config, workers=workers, route_name=route, **fields)


@contextmanager
def _running(spec: Route, app: AppConfig, *, dry_run: bool, key_file: str | None) -> Iterator[RouteRuntime]:
    """The assembled route with its ledger; both closed on exit."""
    from copydicom.ledger import Ledger
    from copydicom.routes import build_route

    ledger = Ledger(app.store_location)
    try:
        runtime = build_route(spec, app, ledger, dry_run=dry_run, key_file=key_file)
        try:
            yield runtime
        finally:
            runtime.close()
    finally:
        ledger.close()


def _run(
    config: AppConfig | None,
    *,
    src: str,
    dests: list[str],
    indexes: list[str],
    profile: str | None,
    workers: int,
    state: str | Path | None,
    dry_run: bool,
    key_file: str | None,
    route: str | None,
    batches: Any = None,
) -> Summary:
    from copydicom.pipeline import Summary

    spec, app = _validated(
        config, src=src, dests=dests, indexes=indexes, profile=profile, workers=workers, state=state,
        route=route,
    )
    summary = Summary()
    with _running(spec, app, dry_run=dry_run, key_file=key_file) as runtime:
        runtime.pipeline.run(batches(runtime) if batches is not None else runtime.source.batches(), summary)
        selection = getattr(batches, "selection", None)
        if selection is not None and selection.not_found:
            summary.not_found = len(selection.not_found)  # not ok: the caller asked for what is not there
            log.warning("%s", selection.report(runtime.source.name))
    return summary


def _selection(ids: Iterable[str] | None) -> Any:
    if ids is None:
        return None
    from copydicom.selection import Selection

    selection = Selection([i for i in ids if i.strip()])

    def batches(runtime: RouteRuntime) -> Iterator[list[InstanceRef]]:
        from copydicom.errors import ConfigError
        from copydicom.model import SelectableSource

        if not isinstance(runtime.source, SelectableSource):
            raise ConfigError("ids: this source cannot select instances by identifier")
        return selection.batches(runtime.source)

    batches.selection = selection  # type: ignore[attr-defined]
    return batches


def replicate(
    src: str,
    dest: Endpoints,
    *,
    profile: str | None = None,
    workers: int = 4,
    state: str | Path | None = None,
    dry_run: bool = False,
    config: str | Path | AppConfig | None = None,
    key_file: str | None = None,
    ids: Iterable[str] | None = None,
    route: str | None = None,
) -> Summary:
    """Copy every instance of ``src`` (or those named by ``ids``) to ``dest``, once.

    Parameters
    ----------
    src
        The source: a URL or, with ``config``, an endpoint name (any registered source type).
    dest
        One destination or several (URLs or names).
    profile
        De-identify in flight with this profile (a name of ``config``, or ``"default"``,
        PS3.15 Annex E Basic Profile); the key comes from ``key_file``, the profile's
        ``key_file`` or ``$COPYDICOM_DEID_KEY_FILE``.
    workers
        Parallel transfers.
    state
        The state database (ledger, quarantine): default the config's, else
        ``~/.local/state/copydicom/state.db``.
    dry_run
        Decide what would be sent (``replicated`` counts it) and send nothing.
    config
        A configuration file (or a loaded :class:`~copydicom.config.AppConfig`), for names.
    ids
        Orthanc IDs or Study/Series/SOP Instance UIDs to copy (default: everything). Any that
        matches nothing makes the summary not ``ok`` (``Summary.not_found`` counts them).
    route
        The route's name in the ledger (default derived from the endpoints).

    Returns
    -------
    Summary
        Counts; ``summary.line()`` is ``replicated=N skipped_existing=M quarantined=Q failed=F seconds=S``
        and ``summary.ok`` is False when something was quarantined or failed.
    """
    return _run(
        _config(config), src=src, dests=_as_list(dest), indexes=[], profile=profile, workers=workers,
        state=state, dry_run=dry_run, key_file=key_file, route=route, batches=_selection(ids),
    )


def replicate_tags(
    src: str,
    index: Endpoints,
    *,
    profile: str | None = None,
    workers: int = 4,
    state: str | Path | None = None,
    dry_run: bool = False,
    config: str | Path | AppConfig | None = None,
    key_file: str | None = None,
    ids: Iterable[str] | None = None,
    route: str | None = None,
) -> Summary:
    """Index the tags and radiation dose of every instance of ``src`` (CopyDICOM's ``replicate_tags``).

    ``index`` is one index or several (``sqlite:///index.db``, ``es+https://...``,
    ``splunk+https://...`` or names); documents go through the durable spool in the
    state database.  Other parameters as :func:`replicate`.
    """
    return _run(
        _config(config), src=src, dests=[], indexes=_as_list(index), profile=profile, workers=workers,
        state=state, dry_run=dry_run, key_file=key_file, route=route, batches=_selection(ids),
    )


def conditional_replicate(
    src: str,
    dest: Endpoints,
    *,
    index: str,
    query: str,
    profile: str | None = None,
    workers: int = 4,
    state: str | Path | None = None,
    dry_run: bool = False,
    config: str | Path | AppConfig | None = None,
    key_file: str | None = None,
    route: str | None = None,
) -> Summary:
    """Run ``query`` against ``index`` and replicate exactly the instances it names.

    ``query`` is in the index's language (SQLite: one read-only ``SELECT``;
    Elasticsearch: query DSL JSON or a Lucene query string; Splunk: SPL); result
    rows name instances by Orthanc ID or Study/Series/SOP Instance UID.  Other
    parameters as :func:`replicate`.

    Raises
    ------
    ConfigError
        The index refused the query, or its rows name no instances.
    """
    from copydicom.conditional import replicate_matches
    from copydicom.pipeline import Summary
    from copydicom.sinks import open_index

    loaded = _config(config)
    spec, app = _validated(
        loaded, src=src, dests=_as_list(dest), profile=profile, workers=workers, state=state, route=route,
    )
    searchable = open_index(index, endpoints=loaded.endpoints if loaded is not None else None)
    try:
        with _running(spec, app, dry_run=dry_run, key_file=key_file) as runtime:
            summary, _ = replicate_matches(runtime, searchable, query, Summary())
    finally:
        searchable.close()
    return summary

"""Conditional replication: copy exactly the instances an index query matched.

Used by ``copydicom conditional-replicate`` and by the daemon for routes with a
cron trigger (``trigger: {cron: {schedule: "0 2 * * *", query: ..., index: NAME}}``).
The matches go through the route's own :class:`~copydicom.pipeline.Pipeline`, so
dedupe (ledger, then destination), de-identification, quarantine and the summary
line behave exactly as for ``replicate``; a second run sends nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from copydicom.config import AppConfig, Route
from copydicom.errors import ConfigError
from copydicom.model import SelectableSource
from copydicom.pipeline import Summary
from copydicom.routes import RouteRuntime
from copydicom.sources.index_query import IndexQuerySource, QueryStats

log = logging.getLogger(__name__)


def replicate_matches(
    runtime: RouteRuntime, index: Any, query: str, summary: Summary | None = None
) -> tuple[Summary, QueryStats]:
    """Run ``query`` on ``index`` and push every matching instance through ``runtime.pipeline``.

    Raises
    ------
    ConfigError
        The index refused the query (its message is kept) or the rows name no instances.
    """
    if not isinstance(runtime.source, SelectableSource):
        raise ConfigError(
            f"route {runtime.route.name}: its source cannot select instances by identifier, "
            "so it cannot serve an index query"
        )
    source = IndexQuerySource(_empty_if_missing(index), runtime.source, query)
    summary = runtime.pipeline.run(source.batches(), summary)
    return summary, source.stats


class _MissingOk:
    """An embedded (SQLite) index whose database may not exist yet: then it is empty.

    A conditional route that runs before anything was indexed matches nothing (zero rows, exit 0)
    instead of failing; the query is still checked against the schema.
    """

    def __init__(self, index: Any) -> None:
        self.index = index
        self.name: str = index.name

    def search(self, query: str) -> Iterator[dict[str, Any]]:
        from copydicom.sinks.sqlite_index import readonly_query

        return readonly_query(self.index.config.path, query, missing_ok=True)


def _empty_if_missing(index: Any) -> Any:
    from copydicom.sinks.sqlite_index import SqliteIndex

    return _MissingOk(index) if isinstance(index, SqliteIndex) else index


def describe(stats: QueryStats) -> str:
    """One line on what the query matched (counts only, no identifiers)."""
    if stats.rows == 0:
        return "query matched nothing"
    text = (
        f"query matched {stats.rows} row(s): {stats.identifiers} distinct identifier(s), "
        f"{stats.instances} instance(s)"
    )
    if stats.duplicates:
        text += f", {stats.duplicates} repeated identifier(s) ignored"
    if stats.unresolved:
        text += f", {stats.unresolved} identifier(s) not found on the source"
    return text


def run_conditional(route: Route, config: AppConfig, runtime: RouteRuntime | None) -> Summary:
    """Run a cron route once: its trigger's query against its trigger's index.

    Parameters
    ----------
    route
        A route whose ``trigger`` has ``query`` and ``index`` (validated by the config).
    config
        The configuration (the index is one of its endpoints).
    runtime
        The route's live objects, built by the daemon at start-up.
    """
    from copydicom.sinks import open_index

    trigger = route.trigger
    if runtime is None or trigger.query is None or trigger.index is None:
        raise ConfigError(f"route {route.name}: not a conditional (cron) route")
    index = open_index(trigger.index, endpoints=config.endpoints)
    try:
        summary, stats = replicate_matches(runtime, index, trigger.query)
    finally:
        index.close()
    log.info("route %s: %s; %s", route.name, describe(stats), summary.line())
    return summary

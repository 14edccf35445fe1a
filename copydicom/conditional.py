"""Conditional replication: copy exactly the instances an index query matched.

Used by ``copydicom conditional-replicate`` and by the daemon for routes with a
cron trigger (``trigger: {cron: {schedule: "0 2 * * *", query: ..., index: NAME}}``).
The matches go through the route's own :class:`~copydicom.pipeline.Pipeline`, so
dedupe (ledger, then destination), de-identification, quarantine and the summary
line behave exactly as for ``replicate``; a second run sends nothing.
"""

from __future__ import annotations

import logging
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
    source = IndexQuerySource(index, runtime.source, query)
    summary = runtime.pipeline.run(source.batches(), summary)
    return summary, source.stats


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

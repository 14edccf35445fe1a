"""``copydicom run --role planner``: follow change feeds under the election lease and publish batches.

Per changes route, one thread:

1. **Lease.** :class:`~copydicom.cluster.election.PlannerLease` on the route (a
   standby planner waits here, it does not exit; workers take no lease).
2. **Resume.** Batches recorded but still open (published by a predecessor that
   died, maybe before it published them) are published again: dedupe makes a
   second copy harmless. The feed is read from the route's ``published_upto``.
3. **Publish.** Each page of changes is grouped into work units (one series, or
   up to ``batch_size`` instances), recorded in PostgreSQL (``published``, with
   the feed progress, fenced by the lease's generation) and then published.
   While the work queue holds more than ``queue_bound`` messages (a passive
   queue declare's ``message_count``) the planner publishes nothing (back-pressure).
4. **Checkpoint.** A low-watermark over finished batches (see :mod:`.work`),
   written with :meth:`~copydicom.cluster.election.PlannerLease.fenced_update`:
   it never passes an unfinished batch, never moves back, and a planner that lost
   its lease cannot write it.

One more thread drains the dead-letter queue: a dead-lettered batch of several
instances is split into single-instance batches (so one bad instance does not
quarantine its neighbours); a dead-lettered single instance is quarantined with
the reason, and its batch is finished, so the watermark moves past it.

Cron (index-query) routes run under the same lease: the planner runs the trigger's
query when a fire time has passed and publishes the matches as the same work
units, with the run's progress in PostgreSQL so that a failover neither loses nor
doubles a run (:mod:`.cron`).

A changes route's ``reconcile: {cron, on_start}`` schedule is run by the planner
that leads the route, in its lead loop before the feed is read, like the daemon
(:mod:`.reconciling`).

Not planned here: routes whose source is a DIMSE listener (bound to its host and
its local spool: ``copydicom listen`` runs them there, outside planner failover)
and QIDO-polling routes (refused: run them with ``--role all``). The feed-reset
check is the single-process runner's (:mod:`copydicom.feedcheck`).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from copydicom import retry
from copydicom.cluster import broker, cron, reconciling, work
from copydicom.cluster.config import ClusterConfig
from copydicom.cluster.election import FencedOff, PlannerLease
from copydicom.cluster.metrics import PlannerMetrics
from copydicom.config import AppConfig, Route
from copydicom.errors import ConfigError, FatalError, RetryableError
from copydicom.ledger import Ledger
from copydicom.model import ChangeFeedSource, FeedPosition, InstanceRef
from copydicom.routes import build_route
from copydicom.runner import ChangesRunner

log = logging.getLogger(__name__)


def group(batches: list[list[InstanceRef]], size: int) -> list[list[InstanceRef]]:
    """Work units from a page's batches: a series stays whole up to ``size``; single instances are packed."""
    units: list[list[InstanceRef]] = []
    loose: list[InstanceRef] = []
    for batch in batches:
        if len(batch) == 1:
            loose.append(batch[0])
            if len(loose) >= size:
                units.append(loose)
                loose = []
            continue
        for start in range(0, len(batch), size):
            units.append(batch[start : start + size])
    if loose:
        units.append(loose)
    return units


class Planner:
    """The planner role of one process (see the module docstring)."""

    def __init__(self, config: AppConfig, cluster: ClusterConfig, *, stop: threading.Event | None = None) -> None:
        from copydicom.cluster import staging
        from copydicom.state import open_store

        self.config = staging.expand(config)
        self.cluster = cluster
        self.stop = stop or threading.Event()
        self.store: Any = open_store(self.config.store_location)
        self.ledger = Ledger(self.store)
        self.app = broker.make_app(cluster)
        self.holder = f"{socket.gethostname()}:{os.getpid()}"
        self.leases: dict[str, PlannerLease] = {}
        self._conn: Any = None
        self._conn_lock = threading.Lock()
        self.errors: list[BaseException] = []
        #: Wall clock of the cron schedule (tests inject one).
        self.clock: Callable[[], float] = time.time
        #: Prometheus metrics (served by :func:`run_planner` when ``metrics:`` is configured).
        self.metrics = PlannerMetrics(None)
        #: The process's standard metrics (reconcile gauges), when ``metrics:`` is configured.
        self.app_metrics: Any = None
        #: Each route's reconcile schedule (kept across leads: ``on_start`` is due once per lease taken).
        self.reconcile_schedules: dict[str, reconciling.Schedule] = {}

    # -- broker ----------------------------------------------------------------------------

    def _broker(self) -> Any:
        if self._conn is None:
            self._conn = self.app.connection_for_write()
            self._conn.ensure_connection(max_retries=3)
        return self._conn

    def _depth(self) -> int:
        with self._conn_lock:
            try:
                n = broker.depth(self._broker(), self.cluster)
            except Exception as exc:
                self._drop_broker()
                raise RetryableError(f"broker: cannot read the queue depth: {type(exc).__name__}") from None
        self.metrics.depth(n)
        return n

    def _drop_broker(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.release()
            except Exception:  # noqa: BLE001 - it is being dropped
                pass

    def _republish_open(self, route: str) -> None:
        """Publish again the batches an earlier planner published but that are not finished (at-least-once:
        workers dedupe, so a batch delivered twice has one effect)."""
        stale = self.store.run("open batches", lambda c: work.open_batches(c, route))
        if stale:
            log.info("planner: route %s: publishing %d open batch(es) of an earlier planner again", route, len(stale))
            self._publish(stale)
            self.metrics.published(route, len(stale), sum(len(b.refs) for b in stale))

    def _publish(self, batches: list[work.Batch]) -> None:
        for b in batches:
            broker.publish(self.app, self.cluster, b.route, b.batch_id, b.refs)

    # -- life ------------------------------------------------------------------------------

    def run(self) -> int:
        routes = planned_routes(self.config)
        listeners = [r.name for r in self.config.routes if r.trigger.kind == "driven"]
        if listeners:
            log.info("planner: listener route(s) %s are run by `copydicom listen` on their listener host (no "
                     "planner failover); a staged listener's deliveries are planned here as a changes route",
                     ", ".join(listeners))
        with self._conn_lock:
            try:
                broker.declare(self._broker(), self.cluster)
            except Exception as exc:
                raise RetryableError(f"broker: cannot declare the queues: {type(exc).__name__}: {exc}") from None
        threads = [threading.Thread(target=self._route_thread, args=(r,), name=f"planner-{r.name}", daemon=True)
                   for r in routes]
        threads.append(threading.Thread(target=self._drain_thread, name="planner-dead-letters", daemon=True))
        for t in threads:
            t.start()
        log.info("copydicom planner %s started: %d route(s)", self.holder, len(routes))
        while not self.stop.wait(0.5):
            if self.errors:
                break
        self.stop.set()
        retry.request_stop()
        for t in threads:
            t.join(10)
        for lease in self.leases.values():
            lease.release()
        with self._conn_lock:
            self._drop_broker()
        self.ledger.close()
        self.store.close()
        if self.errors:
            raise self.errors[0]
        return 0

    def _route_thread(self, route: Route) -> None:
        lease = PlannerLease(self.store.connect_dedicated, route.name, holder=self.holder)
        self.leases[route.name] = lease
        backoff = retry.Backoff(retries=None, base=1.0, cap=30.0)
        failures = 0
        while not self.stop.is_set():
            if lease.generation is None or lease.lost.is_set():
                lease.release()
                self.metrics.lead(route.name, None)
                if lease.acquire(self.stop, poll=0.5) is None:
                    return
                self.metrics.lead(route.name, lease.generation)
            try:
                if route.trigger.kind == "cron":
                    self._lead_cron(route, lease)
                else:
                    self._lead(route, lease)
                failures = 0
            except FencedOff as exc:
                log.warning("planner: route %s: %s; standing by", route.name, exc)
                lease.release()
                self.metrics.lead(route.name, None)
            except RetryableError as exc:
                failures += 1
                delay = backoff.delay(failures)
                log.warning("planner: route %s: %s; retrying in %.0f s", route.name, exc, delay)
                self.stop.wait(delay)
            except (ConfigError, FatalError) as exc:
                log.error("planner: route %s: %s", route.name, exc)
                self.errors.append(exc)
                self.stop.set()
                return
            except Exception as exc:  # noqa: BLE001 - keep planning other routes; retried after a pause
                log.exception("planner: route %s: unexpected error", route.name)
                failures += 1
                self.stop.wait(backoff.delay(failures))
                if isinstance(exc, MemoryError):
                    raise

    def _lead(self, route: Route, lease: PlannerLease) -> None:
        """Plan one route while the lease holds."""
        runtime = build_route(route, self.config, self.ledger)
        try:
            feed = runtime.source
            if not isinstance(feed, ChangeFeedSource):
                raise ConfigError(f"route {route.name}: the source {route.source} has no change feed")
            if self.store.checkpoint(route.name) is None:
                start = feed.last_change() if route.trigger.start_from == "now" else 0
                self.store.write_batch(checkpoint=(route.name, FeedPosition(start)))
            checkpoint = self.store.checkpoint(route.name)
            assert checkpoint is not None
            self._republish_open(route.name)
            since = max(checkpoint.seq, self.store.run("progress", lambda c: work.published_upto(c, route.name))
                        or checkpoint.seq)
            resources: dict[int, str] = {}
            poll = route.trigger.poll_seconds
            # The single-process runner's feed-reset check, once per lead and after each idle wait: a source
            # whose feed no longer matches the checkpoint raises FeedResetDetected (retried after a backoff,
            # nothing published) until the route is repaired.
            checker = ChangesRunner(route.name, feed, runtime.pipeline, self.ledger)
            check = True
            schedule = self.reconcile_schedules.setdefault(route.name, reconciling.Schedule(route))
            schedule.lead(lease.generation, self.clock())
            while not self.stop.is_set():
                if lease.lost.is_set():
                    raise FencedOff(f"planner {route.name}: lock session lost")
                if schedule.active:
                    self._reconcile(route, lease, runtime, schedule)
                self._wait_for_room(route, lease, resources)
                page = feed.changes_page(since)
                if check:
                    checker._check_feed(page)
                    check = False
                if page.seqs:
                    units = [work.Batch.new(route.name, refs) for refs in group(page.batches, self.cluster.batch_size)]
                    upto = page.seqs[-1]
                    self.store.run("publish", lambda c: work.record_published(c, lease, route.name, units, upto))
                    self._publish(units)
                    self.metrics.published(route.name, len(units), sum(len(u.refs) for u in units))
                    log.info("planner: route %s: published %d batch(es) of %d instance(s), changes up to %d",
                             route.name, len(units), sum(len(u.refs) for u in units), upto)
                    resources.update(page.resources)
                    since = upto
                self._advance(route.name, lease, resources)
                if not page.seqs or page.done:
                    self.stop.wait(poll)
                    check = True
        finally:
            runtime.close()

    def _reconcile(self, route: Route, lease: PlannerLease, runtime: Any, schedule: reconciling.Schedule) -> None:
        """Run the route's due reconcile (leader only: called from the lead loop), recorded for ``status``."""
        from copydicom.reconcile import Options, run_reconcile
        from copydicom.reconcile._daemon import FULL

        due = schedule.take(self.clock())
        if due is None:
            return
        if lease.lost.is_set():
            schedule.again(due)
            raise FencedOff(f"planner {route.name}: lock session lost")
        options = Options(since=None if due == FULL else due, deletions=route.deletions,  # type: ignore[arg-type]
                          on_changed=route.on_changed_instance)
        kind = "full" if due == FULL else "on start"
        try:
            report = run_reconcile(runtime, self.ledger, options, metrics=self.app_metrics)
        except (RetryableError, OSError):
            schedule.again(due)
            raise
        self.metrics.reconciled(route.name)
        log.info("planner: route %s: reconcile (%s): %s", route.name, kind, report.line())

    # -- cron routes -------------------------------------------------------------------------

    def _lead_cron(self, route: Route, lease: PlannerLease) -> None:
        """Plan a cron route while the lease holds: resume an unfinished run, then wait for the next fire time."""
        from apscheduler.triggers.cron import CronTrigger

        from copydicom.model import SelectableSource

        assert route.trigger.cron is not None
        trigger = CronTrigger.from_crontab(route.trigger.cron)
        runtime = build_route(route, self.config, self.ledger)
        try:
            if not isinstance(runtime.source, SelectableSource):
                raise ConfigError(f"route {route.name}: the source {route.source} cannot select instances by "
                                  "identifier, so a cron (index query) trigger cannot use it")
            origin = self.store.run("schedule", lambda c: cron.schedule_from(c, lease, route.name, self.clock()))
            self._republish_open(route.name)
            while not self.stop.is_set():
                if lease.lost.is_set():
                    raise FencedOff(f"planner {route.name}: lock session lost")
                run = self.store.run("cron run", lambda c: cron.unfinished(c, route.name))
                if run is None:
                    last = self.store.run("cron last", lambda c: cron.last_fire(c, route.name))
                    fire, upcoming = cron.due(trigger, origin if last is None else max(last, origin), self.clock())
                    if fire is None:
                        wait = 1.0 if upcoming is None else min(1.0, max(0.05, upcoming - self.clock()))
                        self.stop.wait(wait)
                        continue
                    run = self.store.run("cron begin", lambda c: cron.begin(c, lease, route.name, fire))
                    log.info("planner: route %s: cron run of %s begins", route.name, _when(fire))
                if run.state == "planning":
                    self._plan_cron(route, lease, runtime, run)
                elif run.state == "published":
                    if self.store.run("cron complete", lambda c: cron.complete(c, lease, run)):
                        log.info("planner: route %s: cron run of %s done: %d instance(s) in %d unit(s)",
                                 route.name, _when(run.fire), run.instances, run.planned)
                        self.metrics.cron_done(route.name)
                    else:
                        self.stop.wait(0.5)
        finally:
            runtime.close()

    def _plan_cron(self, route: Route, lease: PlannerLease, runtime: Any, run: cron.Run) -> None:
        """Run the query and record + publish its matches from unit ``run.planned`` on; then ``published``."""
        from copydicom.conditional import _empty_if_missing, describe
        from copydicom.sinks import open_index
        from copydicom.sources.index_query import IndexQuerySource

        assert route.trigger.index is not None and route.trigger.query is not None
        if run.planned:
            log.info("planner: route %s: resuming the cron run of %s after %d recorded unit(s)", route.name,
                     _when(run.fire), run.planned)
        index = open_index(route.trigger.index, endpoints=self.config.endpoints)
        size = self.cluster.batch_size
        try:
            source = IndexQuerySource(_empty_if_missing(index), runtime.source, route.trigger.query,
                                      batch_size=size)
            n = 0
            try:
                for found in source.batches():
                    for start in range(0, len(found), size):
                        refs = found[start:start + size]
                        if n < run.planned:  # recorded by this run already (an earlier planner's pass)
                            n += 1
                            continue
                        self._wait_for_room(route, lease, {})
                        if self.stop.is_set() or lease.lost.is_set():
                            return
                        unit = work.Batch(route.name, cron.batch_id(run.fire, n), work.encode_refs(refs))
                        n += 1

                        def record(conn: Any, unit: work.Batch = unit, n: int = n) -> None:
                            work.record_published(conn, lease, route.name, [unit], None)
                            cron.planned(conn, lease, run, n, len(unit.refs))

                        self.store.run("cron publish", record)
                        self._publish([unit])
                        self.metrics.published(route.name, 1, len(unit.refs))
            except ConfigError as exc:
                log.error("planner: route %s: cron run of %s failed: %s", route.name, _when(run.fire), exc)
                self.store.run("cron failed", lambda c: cron.fail(c, lease, run, str(exc)[:500]))
                return
            self.store.run("cron published", lambda c: cron.finish_planning(c, lease, run))
            log.info("planner: route %s: cron run of %s: %s; %d unit(s) published", route.name, _when(run.fire),
                     describe(source.stats), n)
        finally:
            index.close()

    def _wait_for_room(self, route: Route, lease: PlannerLease, resources: dict[int, str]) -> None:
        """Back-pressure: publish nothing while the queue holds more than ``queue_bound`` batches."""
        announced = False
        began = time.monotonic()
        try:
            while not self.stop.is_set() and self._depth() > self.cluster.queue_bound:
                if not announced:
                    log.info("planner: queue %s holds more than %d batches; waiting", self.cluster.queue,
                             self.cluster.queue_bound)
                    announced = True
                self._advance(route.name, lease, resources)
                self.stop.wait(0.5)
        finally:
            if announced:
                self.metrics.waited(time.monotonic() - began)

    def _advance(self, route: str, lease: PlannerLease, resources: dict[int, str]) -> None:
        """Move the checkpoint to the low-watermark of finished batches (fenced; never backwards)."""

        def body(conn: Any) -> int | None:
            mark = work.watermark(conn, route)
            if mark is None:
                return None
            lease.fenced_update(
                conn, "UPDATE checkpoints SET seq = %s, updated = %s, resource = %s "
                "WHERE route = %s AND seq < %s AND {fence}",
                (mark, time.time(), resources.get(mark), route, mark))
            work.prune(conn, route, mark)
            return mark

        mark = self.store.run("checkpoint", body)
        if mark is not None:
            self.metrics.checkpoint(route, mark)
            for seq in [s for s in resources if s < mark]:
                del resources[seq]

    # -- dead letters ----------------------------------------------------------------------

    def _drain_thread(self) -> None:
        from kombu import Connection

        _work, dead = broker.queues(self.cluster)
        while not self.stop.is_set():
            try:
                with Connection(self.cluster.broker_url()) as conn:
                    queue = dead(conn.default_channel)
                    queue.declare()
                    while not self.stop.is_set():
                        message = queue.get(no_ack=False, accept=["json"])
                        if message is None:
                            self.stop.wait(1.0)
                            continue
                        self._dead_letter(message)
            except Exception as exc:  # noqa: BLE001 - the broker went away: try again shortly
                log.warning("planner: dead-letter queue: %s; trying again", type(exc).__name__)
                self.stop.wait(2.0)

    def _dead_letter(self, message: Any) -> None:
        try:
            args = message.decode()[0]
            route, batch_id, refs = str(args[0]), str(args[1]), list(args[2])
        except Exception:  # noqa: BLE001 - not ours: drop it (logged)
            log.error("planner: dead-letter queue: a message that is not a copydicom batch was dropped")
            message.ack()
            return
        lease = self.leases.get(route)
        if lease is None or lease.generation is None or lease.lost.is_set():
            message.requeue()  # another planner leads that route
            self.stop.wait(1.0)
            return
        if self.store.run("config error", lambda c: work.take_config_error(c, route, batch_id)):
            self._publish([work.Batch(route, batch_id, refs)])  # a fresh message: not the batch's fault
            self.metrics.dead_letter("republished")
            log.warning("planner: batch %s of route %s was dead-lettered after a worker's configuration error; "
                        "published again", batch_id[:12], route)
            message.ack()
            return
        deaths = message.headers.get("x-death") or [{}]
        why = str(deaths[0].get("reason", "delivery limit"))
        if why == "delivery_limit":
            reason = (f"WorkerLost: its work unit was delivered {self.cluster.delivery_limit} times and each "
                      "time its worker died or gave up (poison instance)")
        else:
            reason = f"WorkerError: its work unit failed on a worker with an unexpected error ({why})"
        if len(refs) > 1:
            singles = [work.Batch(route, f"{batch_id}.{i}", [ref]) for i, ref in enumerate(refs)]

            def split(conn: Any) -> None:
                if work.mark(conn, route, batch_id, "dead", reason="split after dead-letter"):
                    work.record_published(conn, lease, route, singles, None)

            self.store.run("split", split)
            self._publish(singles)
            self.metrics.dead_letter("split")
            log.warning("planner: batch %s of route %s was dead-lettered (%s); split into %d single-instance "
                        "batches", batch_id[:12], route, why, len(singles))
        else:
            (source_id, _seq, _series), = refs
            from copydicom.state import display_source_id

            self.ledger.quarantine(route, str(source_id), "poison", reason, None)
            self.store.run("dead", lambda c: work.mark(c, route, batch_id, "dead", reason=reason))
            self.metrics.dead_letter("quarantined")
            log.warning("instance %s quarantined on route %s: %s", display_source_id(str(source_id)), route, reason)
        message.ack()


def _when(fire: float) -> str:
    """A fire time for logs (a schedule time, not PHI)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(fire)) + "Z"


def planned_routes(config: AppConfig) -> list[Route]:
    """The routes a planner plans (changes and cron). Refused, because it would silently not run in cluster
    mode: a QIDO-polling route. Listener routes are left to ``copydicom listen`` on their host. A changes
    route's ``reconcile:`` schedule is run by its leading planner (a ``reconcile:`` key on any other route,
    a listener's included, is refused when the configuration is loaded)."""
    qido = [r.name for r in config.routes if r.trigger.kind == "qido"]
    if qido:
        raise ConfigError(f"routes {', '.join(qido)}: a QIDO-RS polling trigger is not planned in cluster mode; "
                          "run such routes with `copydicom run --role all` from a configuration of their own")
    return [r for r in config.routes if r.trigger.kind in ("changes", "cron")]


def run_planner(config: AppConfig) -> int:
    """Run the planner role until SIGTERM/SIGINT; exit status like the daemon's."""
    import signal

    cluster = config.cluster
    if cluster is None:
        raise ConfigError("--role planner: the configuration has no cluster: section")
    stop = threading.Event()

    def request_stop(*_: Any) -> None:
        log.info("stop requested")
        retry.request_stop()
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    retry.clear_stop()
    planner = Planner(config, cluster, stop=stop)
    observability = _observability(config, planner)
    try:
        return planner.run()
    finally:
        if observability is not None:
            observability.stop()


def _observability(config: AppConfig, planner: Planner) -> Any:
    """The planner's metrics and ``/healthz`` on ``metrics.listen`` (``metrics:`` configured)."""
    if not config.metrics:
        return None
    from copydicom.observability._wiring import Observability

    observability = Observability(config, lambda: [])
    try:
        observability.start()
    except OSError as exc:
        raise ConfigError(f"metrics.listen: cannot listen: {exc.strerror or exc}") from None
    planner.metrics = PlannerMetrics(observability.metrics.registry)
    planner.app_metrics = observability.metrics
    if observability.server is not None:
        log.info("planner metrics on %s:%d", *observability.server.address)
    return observability

"""``copydicom run --role worker``: execute batches from the queue.

One Celery worker process running one batch at a time (pool ``threads`` with
concurrency 1: measured, the ``solo`` pool's event loop left published batches
waiting about 10 s between deliveries on this setup; the route's own ``workers``
threads run the instances of a batch in parallel, exactly as in the
single-process daemon). Per batch:

1. skip it if PostgreSQL says it is finished (a redelivery of a done batch);
2. complete the references' identities from the source when the route needs them
   (messages carry Orthanc IDs only);
3. take the destinations' cluster-wide slots (:mod:`.slots`) where a
   ``max_concurrency`` is set;
4. run the route's pipeline, built once per process through
   :func:`copydicom.routes.build_route` on the PostgreSQL store: dedupe (ledger,
   then destination), fetch, stages, store, record outcomes;
5. every instance finished -> the batch is marked ``done``; some failed with a
   retryable error (a destination down) -> wait (backoff, interrupted by a stop)
   and publish the batch again as a new message (``Task.retry``), which does not
   count toward the delivery limit.

A redelivered batch (its worker died) has exactly-once effect: what the dead worker
stored is in the ledger or at the destination, and dedupe skips it.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from copydicom import retry
from copydicom.cluster import broker, work
from copydicom.cluster.config import ClusterConfig
from copydicom.cluster.metrics import WorkerMetrics
from copydicom.config import AppConfig, Route
from copydicom.errors import ConfigError, FatalError, RetryableError
from copydicom.ledger import Ledger
from copydicom.model import Destination, Instance, StoreOutcome
from copydicom.routes import RouteRuntime, build_route

log = logging.getLogger(__name__)


class _Throttled:
    """A destination whose ``store`` runs under a per-batch semaphore sized by the cluster slots held."""

    def __init__(self, inner: Destination) -> None:
        self._inner = inner
        self.name = inner.name
        self.gate = threading.Semaphore(1)

    def __getattr__(self, item: str) -> Any:
        return getattr(self._inner, item)

    def has(self, target_ids: Any, *, series_hint: str | None = None) -> set[str]:
        return self._inner.has(target_ids, series_hint=series_hint)

    def store(self, instance: Instance) -> StoreOutcome:
        with self.gate:
            return self._inner.store(instance)

    def close(self) -> None:
        self._inner.close()


class Worker:
    """The state of one worker process (routes built once, heartbeat, counters)."""

    def __init__(self, config: AppConfig, cluster: ClusterConfig) -> None:
        from copydicom.cluster import staging
        from copydicom.state import open_store

        config = staging.expand(config)
        self.config = config
        self.cluster = cluster
        self.store: Any = open_store(config.store_location)
        self.ledger = Ledger(self.store)
        self.routes: dict[str, Route] = {r.name: r for r in config.routes}
        #: Routes delivering from a listener's staging Orthanc: staged copies are deleted once delivered.
        self.staged: dict[str, str] = staging.staged_routes(config)
        self.runtimes: dict[str, RouteRuntime] = {}
        self.throttled: dict[str, list[tuple[_Throttled, Any]]] = {}
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.started = time.time()
        self.batches = 0
        self.instances = 0
        self.current: str | None = None
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._claims: Any = None
        #: Prometheus metrics of this worker (``metrics:`` configured), served by :func:`run_worker`.
        self.metrics: Any = None
        #: Cluster-only counters (staged copies not deleted), registered beside ``metrics`` by :func:`run_worker`.
        self.cluster_metrics = WorkerMetrics(None)
        #: The configuration or fatal error that stopped this worker (exit status 2 or 1).
        self.fatal: BaseException | None = None
        self.backoff = retry.Backoff(retries=None, base=1.0, cap=float(cluster.retry_cap))

    # -- per route, once per process -------------------------------------------------------

    def runtime(self, route_name: str) -> RouteRuntime:
        with self._lock:
            found = self.runtimes.get(route_name)
            if found is not None:
                return found
            route = self.routes.get(route_name)
            if route is None:
                raise ConfigError(f"batch for route {route_name}: no such route in this worker's configuration")
            hook = None
            if self.metrics is not None:
                metrics, name = self.metrics, route.name
                hook = lambda outcome: metrics.observe_outcome(name, outcome)  # noqa: E731
            runtime = build_route(route, self.config, self.ledger, background_index=True, on_outcome=hook)
            self._throttle(runtime)
            self.runtimes[route_name] = runtime
            return runtime

    def _throttle(self, runtime: RouteRuntime) -> None:
        from copydicom.cluster.slots import DestinationSlots

        limits = dict(self.cluster.max_concurrency)
        wrapped: list[tuple[_Throttled, Any]] = []
        pipeline = runtime.pipeline
        for i, dest in enumerate(list(pipeline.destinations)):
            limit = limits.get(dest.name) or getattr(self.config.endpoints.get(dest.name), "max_concurrency", None)
            if not limit:
                continue
            proxy = _Throttled(dest)
            pipeline.destinations[i] = proxy
            wrapped.append((proxy, DestinationSlots(self.store.connect_dedicated, dest.name, int(limit))))
        self.throttled[runtime.route.name] = wrapped

    @contextmanager
    def _slots(self, route: str, want: int) -> Iterator[None]:
        with ExitStack() as stack:
            for proxy, slots in self.throttled.get(route, []):
                held = stack.enter_context(slots.hold(want, self.stop))
                proxy.gate = threading.Semaphore(max(1, held))
            yield

    # -- one batch -------------------------------------------------------------------------

    def _finished(self, route: str, batch_id: str) -> bool:
        row = self.store.run("batch state", lambda c: c.execute(
            "SELECT state FROM cluster_batches WHERE route=%s AND batch_id=%s", (route, batch_id)).fetchone())
        return row is not None and row[0] in ("done", "dead")

    @contextmanager
    def _claim(self, route: str, batch_id: str) -> Iterator[None]:
        """Hold the batch's advisory lock while running it: two copies of one batch (a planner that took
        over publishes open batches again) never run at once, so the second finds it done and skips it.

        Session lock on this worker's own connection: released by the server if the worker dies.
        """
        import hashlib

        digest = hashlib.sha256(f"copydicom-batch:{route}:{batch_id}".encode()).digest()
        keys = (int.from_bytes(digest[:4], "big", signed=True), int.from_bytes(digest[4:8], "big", signed=True))
        while True:
            try:
                if self._claims is None or self._claims.closed:
                    self._claims = self.store.connect_dedicated()
                if self._claims.execute("SELECT pg_try_advisory_lock(%s, %s)", keys).fetchone()[0]:
                    break
            except Exception as exc:  # noqa: BLE001 - the session timed out while idle: open a new one
                log.debug("batch claim: %s; reconnecting", type(exc).__name__)
                self._drop_claims()
                continue
            if self.stop.wait(0.2):
                raise RetryableError("stopping")
        try:
            yield
        finally:
            try:
                self._claims.execute("SELECT pg_advisory_unlock(%s, %s)", keys)
            except Exception:  # noqa: BLE001 - a lost session has released it already
                self._drop_claims()

    def _drop_claims(self) -> None:
        conn, self._claims = self._claims, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - it is gone either way
                pass

    def execute(self, task: Any, route: str, batch_id: str, refs: list[list[Any]]) -> str:
        if self._finished(route, batch_id):
            return "already finished"
        if self.stop.is_set():  # stopping (configuration error): hand the batch back as a new message
            raise task.retry(countdown=0, max_retries=None)
        try:
            with self._claim(route, batch_id):
                if self._finished(route, batch_id):
                    return "already finished"
                return self._execute(task, route, batch_id, refs)
        except (ConfigError, FatalError) as exc:
            # Refused credentials, a missing extra...: not the batch's fault. It goes back to the queue as a
            # new message (not counted toward the delivery limit, so never quarantined for this) and this
            # worker stops, as the daemon does (exit 2 on a configuration error: systemd does not loop).
            log.error("batch %s of route %s: %s: %s; the batch is queued again and this worker stops",
                      batch_id[:12], route, type(exc).__name__, exc)
            self.fatal = exc
            self.stop.set()
            try:
                self.store.run("config error", lambda c: work.note_config_error(c, route, batch_id))
            except Exception:  # noqa: BLE001 - the note only keeps a dead-lettered copy out of quarantine
                log.warning("batch %s of route %s: could not note the configuration error", batch_id[:12], route)
            threading.Timer(0.5, os.kill, args=(os.getpid(), signal.SIGTERM)).start()
            raise task.retry(countdown=0, max_retries=None) from None

    def _execute(self, task: Any, route: str, batch_id: str, refs: list[list[Any]]) -> str:
        runtime = self.runtime(route)
        pipeline = runtime.pipeline
        source = runtime.source
        complete = getattr(source, "complete", None)
        batch = work.decode_refs(refs)
        if callable(complete):
            batch = [complete(ref) for ref in batch]
        self.current = batch_id
        began = time.monotonic()
        failed: list[str] = []
        delivered: list[str] = []  # every destination has it (or the filter excluded it)
        try:
            finished = 0
            with self._slots(route, runtime.route.workers):
                for outcome in pipeline.stream([batch]):
                    finished += 1
                    if outcome.kind == "failed":
                        failed.append(outcome.reason)
                    else:
                        self.instances += 1
                        if outcome.kind in ("stored", "existing", "filtered"):
                            delivered.append(outcome.ref.source_id)
            self.ledger.flush()
            if finished < len(batch):  # the pipeline stopped early: never mark such a batch done
                failed.append(f"{len(batch) - finished} instance(s) not processed (the pipeline stopped)")
        finally:
            self.current = None
        if failed:
            attempt = int(getattr(task.request, "retries", 0) or 0) + 1
            delay = self.backoff.delay(attempt)
            log.warning("batch %s of route %s: %d instance(s) failed (%s); publishing it again in %.0f s",
                        batch_id[:12], route, len(failed), failed[0][:200], delay)
            self.stop.wait(delay)
            raise task.retry(countdown=0, max_retries=None)
        self.store.run("batch done", lambda c: work.mark(c, route, batch_id, "done", worker=self.name))
        self.batches += 1
        if route in self.staged:
            self._unstage(route, source, delivered)
        log.info("batch %s of route %s: %d instance(s) in %.2f s", batch_id[:12], route, len(batch),
                 time.monotonic() - began)
        return "done"

    def _unstage(self, route: str, source: Any, delivered: list[str]) -> None:
        """Delete the staged copies every destination has (after the batch is done: a worker that dies first
        leaves them staged, never lost)."""
        client = getattr(source, "client", None)
        if client is None or not delivered:
            return
        removed = 0
        for source_id in delivered:
            try:
                removed += bool(client.delete_instance(source_id))
            except Exception as exc:  # noqa: BLE001 - a staged copy left behind is not a loss
                self.cluster_metrics.unstage_failed(route)
                log.warning("route %s: staged instance %s not deleted from %s: %s", route, source_id[:12],
                            self.staged[route], type(exc).__name__)
        log.debug("route %s: %d staged instance(s) deleted from %s", route, removed, self.staged[route])

    # -- heartbeat -------------------------------------------------------------------------

    def beat(self) -> None:
        host = socket.gethostname()
        while not self.stop.wait(self.cluster.heartbeat):
            self.beat_once(host)

    def beat_once(self, host: str | None = None) -> None:
        try:
            self.store.run("heartbeat", lambda c: work.heartbeat(
                c, self.name, host or socket.gethostname(), os.getpid(), self.started, batches=self.batches,
                instances=self.instances, current=self.current))
        except Exception as exc:  # noqa: BLE001 - a missed heartbeat is not a reason to stop working
            log.warning("worker heartbeat failed: %s", type(exc).__name__)

    def close(self) -> None:
        self.stop.set()
        for runtime in self.runtimes.values():
            runtime.close()
        for wrapped in self.throttled.values():
            for _proxy, slots in wrapped:
                slots.close()
        self._drop_claims()
        self.ledger.close()
        self.store.close()


def run_worker(config: AppConfig) -> int:
    """Run a Celery worker for this configuration until SIGTERM (warm shutdown) or SIGINT."""
    cluster: ClusterConfig | None = config.cluster
    if cluster is None:
        raise ConfigError("--role worker: the configuration has no cluster: section")
    app = broker.make_app(cluster)
    worker = Worker(config, cluster)
    observability = _observability(config, worker)

    @app.task(name=work.TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True)
    def batch(self: Any, route: str, batch_id: str, refs: list[list[Any]]) -> str:
        return worker.execute(self, route, batch_id, refs)

    worker.beat_once()
    beat = threading.Thread(target=worker.beat, name="copydicom-heartbeat", daemon=True)
    beat.start()
    log.info("copydicom worker %s started: queue %s", worker.name, cluster.queue)
    try:
        app.worker_main(argv=[
            "worker", "--pool", "threads", "--concurrency", "1", "--queues", cluster.queue, "--without-gossip", "--without-mingle",
            "--without-heartbeat", "--loglevel", "WARNING", "--hostname", f"copydicom@{worker.name}",
        ])
    except SystemExit as exc:  # Celery's command line ends with sys.exit
        if worker.fatal is None and exc.code not in (None, 0):
            raise
    finally:
        if observability is not None:
            observability.stop()
        worker.close()
    if worker.fatal is not None:
        return 2 if isinstance(worker.fatal, ConfigError) else 1
    return 0


def _observability(config: AppConfig, worker: Worker) -> Any:
    """Each worker's own metrics and ``/healthz`` (``metrics:`` configured): the port is ``metrics.listen``'s
    plus ``$COPYDICOM_WORKER_INDEX`` (``Environment=COPYDICOM_WORKER_INDEX=%i`` in the worker unit), so that
    several workers on one host do not compete for one port."""
    if not config.metrics:
        return None
    import dataclasses

    from copydicom.observability._wiring import Observability

    observability = Observability(config, lambda: [])
    index = os.environ.get("COPYDICOM_WORKER_INDEX", "0")
    if not index.isdigit():
        raise ConfigError(f"COPYDICOM_WORKER_INDEX: a number, not {index!r}")
    if observability.config.port:
        observability.config = dataclasses.replace(observability.config,
                                                   port=observability.config.port + int(index))
    try:
        observability.start()
    except OSError as exc:
        raise ConfigError(f"metrics.listen (+{index}): cannot listen: {exc.strerror or exc}") from None
    worker.metrics = observability.metrics
    worker.cluster_metrics = WorkerMetrics(observability.metrics.registry)
    if observability.server is not None:
        log.info("worker metrics on %s:%d", *observability.server.address)
    return observability

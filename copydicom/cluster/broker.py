"""The Celery application and the RabbitMQ queues of a cluster.

Queues (declared by the planner and by every worker; declaring is idempotent):

- ``<queue>``: a **quorum queue** with ``x-delivery-limit`` (``cluster.delivery_limit``)
  and a dead-letter exchange ``<queue>.dlx``. ``acks_late`` with
  ``reject_on_worker_lost`` alone would redeliver a batch that kills its worker
  forever; a quorum queue counts deliveries (a consumer whose connection dies
  returns its message, and that counts), and past the limit the broker moves the
  message to the dead-letter queue;
- ``<queue>.dead``: classic durable queue bound to ``<queue>.dlx``; the planner
  drains it (a batch of several instances is split into single-instance
  batches; a single instance is quarantined with the reason).

Task settings (Celery): ``task_acks_late=True`` (acknowledged once done, so a
worker's death re-queues it), ``task_reject_on_worker_lost=True``,
``worker_prefetch_multiplier=1`` (a worker holds one batch at a time: the others
stay in the queue for the other workers), and
``task_acks_on_failure_or_timeout=False``: a task that raises an unexpected error
is rejected without requeue, so it is dead-lettered at once rather than lost as
"acknowledged". Retryable failures (a destination down) are not failures of the
task: the worker waits (backoff) and publishes the batch again as a new message
(``Task.retry``), which does not count toward the delivery limit.

Messages are JSON (never pickle).
"""

from __future__ import annotations

from typing import Any

from copydicom.cluster.config import ClusterConfig
from copydicom.cluster.work import TASK_NAME


def queues(cfg: ClusterConfig) -> tuple[Any, Any]:
    """``(work queue, dead-letter queue)`` as kombu declarations."""
    from kombu import Exchange, Queue

    work_exchange = Exchange(cfg.queue, type="direct", durable=True)
    dead_exchange = Exchange(f"{cfg.queue}.dlx", type="direct", durable=True)
    work = Queue(
        cfg.queue, work_exchange, routing_key=cfg.queue, durable=True,
        queue_arguments={
            "x-queue-type": "quorum",
            "x-delivery-limit": cfg.delivery_limit,
            "x-dead-letter-exchange": f"{cfg.queue}.dlx",
            "x-dead-letter-routing-key": f"{cfg.queue}.dead",
        },
    )
    dead = Queue(f"{cfg.queue}.dead", dead_exchange, routing_key=f"{cfg.queue}.dead", durable=True)
    return work, dead


def make_app(cfg: ClusterConfig) -> Any:
    """The Celery application of a cluster (no result backend: outcomes live in PostgreSQL)."""
    from celery import Celery

    app = Celery("copydicom", broker=cfg.broker_url(), set_as_current=False)
    work, _dead = queues(cfg)
    app.conf.update(
        task_queues=[work],
        task_default_queue=cfg.queue,
        task_default_exchange=cfg.queue,
        task_default_routing_key=cfg.queue,
        task_create_missing_queues=False,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=False,
        worker_prefetch_multiplier=1,
        worker_detect_quorum_queues=True,
        task_ignore_result=True,
        result_backend=None,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        broker_transport_options={"confirm_publish": True},
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        worker_enable_remote_control=False,
        worker_send_task_events=False,
    )
    return app


def publish(app: Any, cfg: ClusterConfig, route: str, batch_id: str, refs: list[list[Any]]) -> None:
    """Publish one batch (publisher confirms: returns once the broker has it)."""
    app.send_task(TASK_NAME, args=[route, batch_id, refs], queue=cfg.queue, routing_key=cfg.queue,
                  exchange=cfg.queue, retry=True)


def declare(conn: Any, cfg: ClusterConfig) -> None:
    """Declare both queues and their exchanges on a kombu connection."""
    work, dead = queues(cfg)
    channel = conn.default_channel
    work(channel).declare()
    dead(channel).declare()


def depth(conn: Any, cfg: ClusterConfig) -> int:
    """Messages ready in the work queue (a passive declare: it creates nothing)."""
    result = conn.default_channel.queue_declare(queue=cfg.queue, passive=True)
    return int(result.message_count)

"""The ``cluster:`` section: broker, work-unit size, back-pressure and poison-batch limits.

.. code-block:: yaml

    state: {url: "postgresql://copydicom@db.example:5432/copydicom", password_file: /etc/copydicom/pg.pw}
    cluster:
      broker: "amqp://copydicom@mq.example:5672/copydicom"   # no password in the URL
      password: ${COPYDICOM_BROKER_PASSWORD}                 # or password_file: /etc/copydicom/mq.pw
      queue_bound: 200      # the planner stops publishing while the queue holds more batches
      batch_size: 100       # a work unit: one series, or up to this many instances
      delivery_limit: 3     # deliveries of one batch before it is dead-lettered (then quarantined)
      max_concurrency: {pacs: 4}   # uploads at once to a destination, across every worker and host
      staging: {modality_rx: staging_orthanc}   # a listener's instances, reachable by every worker (.staging)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from copydicom.errors import ConfigError

_KEYS = {"broker", "password", "password_file", "queue_bound", "batch_size", "delivery_limit", "queue",
         "heartbeat", "retry_cap", "max_concurrency", "staging"}


def _positive(data: Mapping[str, Any], key: str, default: int, where: str) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where}.{key}: must be a whole number >= 1")
    return value


@dataclass(frozen=True)
class ClusterConfig:
    """The validated ``cluster:`` section (see the module docstring)."""

    broker: str
    password: str | None = field(default=None, repr=False)
    queue_bound: int = 200
    batch_size: int = 100
    delivery_limit: int = 3
    queue: str = "copydicom"
    #: Seconds between a worker's heartbeat rows (``status``).
    heartbeat: int = 5
    #: Longest wait (seconds) between retries of a batch whose destination is down.
    retry_cap: int = 60
    #: ``{destination name: N}``: at most N uploads at once to that destination across the whole cluster
    #: (an endpoint's own ``max_concurrency``, as S3 has, counts too).
    max_concurrency: dict[str, int] = field(default_factory=dict)
    #: ``{listener endpoint: Orthanc endpoint}``: the listener host stores what it receives there, and the
    #: workers deliver from there (:mod:`copydicom.cluster.staging`).
    staging: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, where: str) -> ClusterConfig:
        from copydicom.secrets import resolve_secret

        unknown = sorted(set(data) - _KEYS)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(_KEYS))})")
        broker = data.get("broker")
        if not isinstance(broker, str) or not broker.startswith(("amqp://", "amqps://")):
            raise ConfigError(f"{where}.broker: required, amqp://user@host:5672/vhost")
        parts = urlsplit(broker)
        if parts.password is not None:
            raise ConfigError(f"{where}.broker: put no password in the URL; give {where}.password: ${{ENV}} "
                              f"or {where}.password_file")
        if not parts.hostname:
            raise ConfigError(f"{where}.broker: a host is required")
        try:
            parts.port
        except ValueError:
            raise ConfigError(f"{where}.broker: the port must be 1-65535") from None
        queue = data.get("queue", "copydicom")
        if not isinstance(queue, str) or not queue.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise ConfigError(f"{where}.queue: letters, digits, '-', '_' and '.' only")
        limits = data.get("max_concurrency") or {}
        if not isinstance(limits, Mapping) or any(
                isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in limits.values()):
            raise ConfigError(f"{where}.max_concurrency: a mapping of destination name to a whole number >= 1")
        staging = data.get("staging") or {}
        if not isinstance(staging, Mapping) or any(not isinstance(v, str) or not v for v in staging.values()):
            raise ConfigError(f"{where}.staging: a mapping of listener endpoint name to an Orthanc endpoint name")
        return cls(
            staging={str(k): str(v) for k, v in staging.items()},
            max_concurrency={str(k): int(v) for k, v in limits.items()},
            broker=broker,
            password=resolve_secret(data, "password", where=where),
            queue_bound=_positive(data, "queue_bound", 200, where),
            batch_size=_positive(data, "batch_size", 100, where),
            delivery_limit=_positive(data, "delivery_limit", 3, where),
            queue=queue,
            heartbeat=_positive(data, "heartbeat", 5, where),
            retry_cap=_positive(data, "retry_cap", 60, where),
        )

    def broker_url(self) -> str:
        """The broker URL with the password in it (for kombu only: never log it)."""
        if self.password is None:
            return self.broker
        parts = urlsplit(self.broker)
        user = parts.username or ""
        host = parts.hostname or ""
        netloc = f"{quote(user, safe='')}:{quote(self.password, safe='')}@{host}" + (
            f":{parts.port}" if parts.port else "")
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

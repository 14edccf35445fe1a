"""The ``metrics:`` section of the configuration.

Example::

    metrics:
      listen: "127.0.0.1:9108"     # loopback only unless allow_remote: true; port 0 = any free port
      allow_remote: false
      stale_margin_seconds: 60     # /healthz: a route is stale after 3 x poll_seconds + this margin
      max_backoff_minutes: 15      # /healthz: a route failing for longer than this is unhealthy
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from copydicom.errors import ConfigError
from copydicom.netaddr import is_loopback

_KEYS = {"listen", "allow_remote", "stale_margin_seconds", "max_backoff_minutes"}


def require_prometheus(where: str = "metrics") -> None:
    """Raise a ConfigError naming the missing package if prometheus-client is not installed."""
    if importlib.util.find_spec("prometheus_client") is None:
        raise ConfigError(
            f"{where}: metrics need the package prometheus_client (pip install 'copydicom[metrics]')"
        )


@dataclass(frozen=True)
class MetricsConfig:
    """Where the metrics and health server listens, and the health thresholds."""

    host: str = "127.0.0.1"
    port: int = 9108
    allow_remote: bool = False
    stale_margin_seconds: float = 60.0
    max_backoff_minutes: float = 15.0

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, where: str = "metrics") -> MetricsConfig:
        """Validate the ``metrics:`` mapping; a non-loopback address needs ``allow_remote: true``."""
        unknown = sorted(set(data) - _KEYS)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(_KEYS))})")
        listen = data.get("listen", "127.0.0.1:9108")
        if not isinstance(listen, str) or ":" not in listen:
            raise ConfigError(f"{where}.listen: must be 'host:port', e.g. '127.0.0.1:9108'")
        host, _, port_text = listen.rpartition(":")
        host = host.strip("[]")
        try:
            port = int(port_text)
        except ValueError:
            raise ConfigError(f"{where}.listen: port {port_text!r} is not a number") from None
        if not 0 <= port <= 65535:
            raise ConfigError(f"{where}.listen: port {port} out of range 0-65535")
        allow_remote = data.get("allow_remote", False)
        if not isinstance(allow_remote, bool):
            raise ConfigError(f"{where}.allow_remote: must be true or false")
        if not host:
            raise ConfigError(f"{where}.listen: a host is required (e.g. 127.0.0.1)")
        if not is_loopback(host) and not allow_remote:
            raise ConfigError(
                f"{where}.listen: {host} is not a loopback address; set allow_remote: true to expose metrics"
            )
        margin = data.get("stale_margin_seconds", 60.0)
        backoff = data.get("max_backoff_minutes", 15.0)
        for key, value in (("stale_margin_seconds", margin), ("max_backoff_minutes", backoff)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{where}.{key}: must be a number >= 0")
        require_prometheus(where)
        return cls(host, port, allow_remote, float(margin), float(backoff))

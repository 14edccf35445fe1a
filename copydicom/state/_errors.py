"""Errors of the state store (they fit the one tree in :mod:`copydicom.errors`)."""

from __future__ import annotations

from copydicom.errors import ConfigError, RetryableError


class RouteLocked(ConfigError):
    """Another process already follows this route's feed on this state (exit 2 at start-up)."""


class SchemaTooNew(ConfigError):
    """The state database was written by a newer release (no downgrade)."""


class FeedResetDetected(RetryableError):
    """The source's change feed no longer matches the checkpoint: its database was rebuilt or reset.

    The checkpoint is not advanced; the route reports the reset (log at ERROR, ``status``,
    metric, ``/healthz`` 503) until it is repaired (reconcile, then a re-based checkpoint).
    """

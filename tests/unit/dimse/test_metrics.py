"""Listener counters and spool depth as Prometheus metrics (read at scrape time)."""

from __future__ import annotations

from pathlib import Path

import prometheus_client as prom

from copydicom.endpoints.dimse import ListenerConfig
from copydicom.endpoints.dimse import metrics as dimse_metrics
from copydicom.endpoints.dimse.listener import RUNNING, Listener
from copydicom.endpoints.dimse.spool import ReceiveSpool


def test_collector_reports_running_listeners(tmp_path: Path) -> None:
    cfg = ListenerConfig.from_mapping("rx", {"allowed_calling": ["M"], "spool": str(tmp_path / "s")}, where="e.rx")
    spool = ReceiveSpool(cfg.spool)
    listener = Listener(cfg, spool)
    listener.stats.bump("associations")
    listener.stats.bump("rejected_associations")
    for _ in range(3):
        listener.stats.bump("instances_received")
    spool.put("a", b"x")
    spool.put("b", b"y")
    registry = prom.CollectorRegistry()
    dimse_metrics.register(registry)
    dimse_metrics.register(registry)  # once per registry
    RUNNING["rx"] = listener
    try:
        get = registry.get_sample_value
        assert get("copydicom_dimse_associations_total", {"listener": "rx"}) == 1
        assert get("copydicom_dimse_rejected_associations_total", {"listener": "rx"}) == 1
        assert get("copydicom_dimse_instances_received_total", {"listener": "rx"}) == 3
        assert get("copydicom_dimse_spool_depth", {"listener": "rx"}) == 2
        assert (get("copydicom_dimse_spool_oldest_seconds", {"listener": "rx"}) or 0) >= 0
    finally:
        RUNNING.pop("rx", None)
    assert registry.get_sample_value("copydicom_dimse_spool_depth", {"listener": "rx"}) is None

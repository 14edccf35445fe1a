"""``cluster.staging``: a listener route split into its receive part (listener host) and its deliver part
(planned), and the planner's refusal of routes it would silently not run (no servers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from copydicom.cluster.planner import planned_routes
from copydicom.cluster.staging import expand, staged_routes
from copydicom.config import parse_config
from copydicom.errors import ConfigError


def _config(tmp_path: Path, *, staging: dict[str, str] | None = None, routes: list[dict[str, Any]] | None = None,
            extra: dict[str, Any] | None = None) -> Any:
    cluster: dict[str, Any] = {"broker": "amqp://cd@mq//"}
    if staging is not None:
        cluster["staging"] = staging
    return parse_config({
        "state": "postgresql://cd@db/x",
        "cluster": cluster,
        "endpoints": {
            "rx": {"type": "dimse_listener", "allowed_calling": ["CT1"], "spool": str(tmp_path / "spool")},
            "stage": {"type": "orthanc", "url": "http://127.0.0.1:8042"},
            "pacs": {"type": "orthanc", "url": "http://127.0.0.1:8043"},
            "idx": {"type": "sqlite", "path": str(tmp_path / "idx.db")},
            **(extra or {}),
        },
        "routes": routes or [{"name": "rx-copy", "source": "rx", "destinations": ["pacs"], "indexes": ["idx"]}],
    }, base_dir=tmp_path)


def test_a_staged_listener_route_is_split_in_two(tmp_path: Path) -> None:
    config = expand(_config(tmp_path, staging={"rx": "stage"}))
    by_name = {r.name: r for r in config.routes}
    receive, deliver = by_name["rx-copy.staging"], by_name["rx-copy"]
    assert (receive.source, receive.destinations, receive.indexes, receive.profile) == ("rx", ("stage",), (), None)
    assert receive.trigger.kind == "driven"
    assert (deliver.source, deliver.destinations, deliver.indexes) == ("stage", ("pacs",), ("idx",))
    assert deliver.trigger.kind == "changes"
    assert staged_routes(config) == {"rx-copy": "stage"}
    assert [r.name for r in planned_routes(config)] == ["rx-copy"]  # the receive part is the listener host's


def test_without_staging_a_listener_route_is_left_to_its_host(tmp_path: Path) -> None:
    config = expand(_config(tmp_path))
    assert [r.name for r in config.routes] == ["rx-copy"] and staged_routes(config) == {}
    assert planned_routes(config) == []


@pytest.mark.parametrize(("staging", "message"), [
    ({"pacs": "stage"}, "'pacs' is not a dimse_listener endpoint"),
    ({"rx": "idx"}, "'idx' is not an Orthanc endpoint"),
    ({"rx": "pacs"}, "cannot also be a destination"),
])
def test_wrong_staging_is_a_config_error(tmp_path: Path, staging: dict[str, str], message: str) -> None:
    """Refused when the configuration is loaded (so ``check-config`` and every role see it)."""
    with pytest.raises(ConfigError, match=message):
        _config(tmp_path, staging=staging)


def test_staging_must_be_a_mapping_of_names(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cluster.staging"):
        _config(tmp_path, staging={"rx": ""})


def test_the_planner_refuses_a_qido_route_it_would_not_run(tmp_path: Path) -> None:
    config = _config(tmp_path, extra={"web": {"type": "dicomweb", "url": "http://127.0.0.1:8044/dicom-web"}},
                     routes=[{"name": "poll", "source": "web", "destinations": ["pacs"],
                              "trigger": {"qido": {"poll_seconds": 60}}}])
    with pytest.raises(ConfigError, match="routes poll: a QIDO-RS polling trigger is not planned"):
        planned_routes(config)


def test_the_planner_plans_a_changes_route_with_a_reconcile_schedule(tmp_path: Path) -> None:
    config = _config(tmp_path, routes=[{"name": "copy", "source": "stage", "destinations": ["pacs"],
                                        "reconcile": {"cron": "0 3 * * *", "on_start": "24h"}}])
    assert [r.name for r in planned_routes(config)] == ["copy"]  # the leading planner runs the schedule


def test_a_reconcile_schedule_on_a_listener_route_is_refused_when_loaded(tmp_path: Path) -> None:
    # a staged listener's deliver part reads the staging Orthanc, emptied as batches finish: never reconciled
    with pytest.raises(ConfigError, match="changes routes only"):
        _config(tmp_path, staging={"rx": "stage"}, routes=[
            {"name": "rx-copy", "source": "rx", "destinations": ["pacs"], "reconcile": {"on_start": "24h"}}])

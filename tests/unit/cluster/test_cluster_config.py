"""The ``state:`` URL and ``cluster:`` section, work-unit grouping and message encoding (no servers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from copydicom.cluster.config import ClusterConfig
from copydicom.cluster.planner import group
from copydicom.cluster.work import decode_refs, encode_refs
from copydicom.config import parse_config
from copydicom.errors import ConfigError
from copydicom.model import Identity, InstanceRef
from copydicom.state import PostgresTarget

BASE: dict[str, Any] = {"endpoints": {}, "routes": []}


def _parse(tmp_path: Path, **top: Any) -> Any:
    return parse_config({**BASE, **top}, base_dir=tmp_path)


def test_postgres_state_with_password_from_env_and_cluster_section(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPW", "pg-secret")
    monkeypatch.setenv("MQPW", "mq/secret@x")
    cfg = _parse(tmp_path, state={"url": "postgresql://cd@db:5432/copydicom", "password": "${PGPW}"},
                 cluster={"broker": "amqp://cd@mq:5672/prod", "password": "${MQPW}", "batch_size": 50,
                          "queue_bound": 10, "max_concurrency": {"pacs": 4}})
    assert isinstance(cfg.store_location, PostgresTarget)
    assert str(cfg.store_location) == "postgresql://cd@db:5432/copydicom"
    assert cfg.store_location.password == "pg-secret" and "pg-secret" not in repr(cfg)
    assert cfg.quarantine_dir == tmp_path / "quarantine"
    cluster: ClusterConfig = cfg.cluster
    assert (cluster.batch_size, cluster.queue_bound, cluster.delivery_limit) == (50, 10, 3)
    assert cluster.max_concurrency == {"pacs": 4}
    assert cluster.broker_url() == "amqp://cd:mq%2Fsecret%40x@mq:5672/prod"
    assert "mq/secret" not in repr(cluster)


def test_sqlite_state_is_unchanged(tmp_path: Path) -> None:
    cfg = _parse(tmp_path, state="state.db")
    assert cfg.store_location == tmp_path / "state.db" and cfg.state_url is None and cfg.cluster is None


@pytest.mark.parametrize(("top", "message"), [
    ({"state": "postgresql://cd:pw@db/x"}, "no password in the URL"),
    ({"state": "postgresql://cd@db"}, "needs a host and a database"),
    ({"state": {"url": "postgresql://cd@db/x", "colour": 1}}, "unknown"),
    ({"state": "s.db", "cluster": {"broker": "amqp://cd@mq//"}}, "needs a PostgreSQL state"),
    ({"state": "postgresql://cd@db/x", "cluster": {"broker": "amqp://cd:pw@mq//"}}, "no password in the URL"),
    ({"state": "postgresql://cd@db/x", "cluster": {"broker": "http://mq"}}, "cluster.broker"),
    ({"state": "postgresql://cd@db/x", "cluster": {"broker": "amqp://cd@mq//", "batch_size": 0}},
     "cluster.batch_size"),
    ({"state": "postgresql://cd@db/x", "cluster": {"broker": "amqp://cd@mq//", "queue_bond": 3}}, "unknown"),
    ({"state": "postgresql://cd@db/x", "cluster": {"broker": "amqp://cd@mq//", "max_concurrency": {"p": 0}}},
     "cluster.max_concurrency"),
])
def test_bad_cluster_configuration_names_the_key(tmp_path: Path, top: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _parse(tmp_path, **top)


def test_work_units_keep_series_whole_and_pack_single_instances() -> None:
    singles = [[InstanceRef(f"i{n}", n)] for n in range(7)]
    series = [InstanceRef(f"s{n}", 100, None, "S") for n in range(5)]
    units = group([*singles[:3], series, *singles[3:]], 3)
    assert [len(u) for u in units] == [3, 3, 2, 3, 1]
    assert [r.source_id for r in units[1]] == ["s0", "s1", "s2"]


def test_messages_carry_ids_and_sequence_numbers_only() -> None:
    ref = InstanceRef("abc", 7, Identity("PATIENT", "1.2", "1.2.3", "1.2.3.4"), "ser")
    encoded = encode_refs([ref])
    assert encoded == [["abc", 7, "ser"]] and "PATIENT" not in repr(encoded)
    assert decode_refs(encoded) == [InstanceRef("abc", 7, None, "ser")]

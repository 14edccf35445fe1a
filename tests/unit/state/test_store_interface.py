"""The Store interface, method by method, against every backend: SQLite, and PostgreSQL (a private server
started once per session by the ``postgres`` fixture, a fresh database per test: these tests are
integration-ish for that backend)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from copydicom.model import FeedPosition
from copydicom.state import SCHEMA_VERSION, FeedReset, PostgresStore, SqliteStore, Store
from copydicom.state._pgschema import LATEST as PG_SCHEMA_VERSION
from tests.support.postgres import fresh_database


def _postgres(request: pytest.FixtureRequest, tmp: Path) -> Store:
    server = request.getfixturevalue("postgres")
    return PostgresStore(fresh_database(server), password=server.password)


BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], Store]] = {
    "sqlite": lambda request, tmp: SqliteStore(tmp / "state.db"),
    "postgresql": _postgres,
}


@pytest.fixture(params=sorted(BACKENDS))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    made = BACKENDS[request.param](request, tmp_path)
    yield made
    made.close()


@pytest.mark.parametrize("cls", [SqliteStore, PostgresStore])
def test_store_implements_every_method_of_the_protocol(cls: type) -> None:
    wanted = {n for n, v in vars(Store).items() if inspect.isfunction(v) and not n.startswith("_")}
    missing = sorted(n for n in wanted if not callable(getattr(cls, n, None)))
    assert missing == []


def test_checkpoint_never_moves_back_but_rebase_does(store: Store) -> None:
    assert store.checkpoint("r") is None
    store.write_batch(checkpoint=("r", FeedPosition(7, "a7")))
    store.write_batch(checkpoint=("r", FeedPosition(3, "a3")))
    assert store.checkpoint("r") == FeedPosition(7, "a7")
    store.write_batch(checkpoint=("r", FeedPosition(7, None)))  # same seq without a resource keeps it
    assert store.checkpoint("r") == FeedPosition(7, "a7")
    store.feed_reset_put(FeedReset("r", 1.0, 7, "a7", 2, "below"))
    assert set(store.feed_resets()) == {"r"}
    store.rebase_checkpoint("r", FeedPosition(0))
    assert store.checkpoint("r") == FeedPosition(0, None) and store.feed_resets() == {}


def test_deliveries_and_kinds(store: Store) -> None:
    store.register_index("es")
    store.write_batch(deliveries=[("img", "t1", "s1", "r", "stored", 1.0, "md5-1"),
                                  ("es", "t1", "s1", "r", "stored", 1.0, None)],
                      audits=[("t1", "r", "deid", '{"x": 1}', 1.0)])
    assert store.deliveries_among("img", ["t1", "t2"]) == {"t1"}
    assert store.deliveries_md5("img", ["t1", "t2"]) == {"t1": "md5-1"}
    assert store.deliveries_md5("es", ["t1"]) == {}
    assert {(c.destination, c.kind, c.count) for c in store.delivery_counts()} == {("img", "image", 1),
                                                                                  ("es", "index", 1)}
    assert list(store.iter_deliveries("es")) == [("t1", "s1")]
    assert store.audit_of("r", "t1") == {"deid": {"x": 1}}


def test_quarantine_lifecycle(store: Store) -> None:
    store.quarantine_put("r", "s1", "invalid", "bad", "/q/1.dcm")
    store.quarantine_put("r", "s1", "gone", "source gone", None)
    (entry,) = store.quarantine_entries("r")
    assert (entry.code, entry.path, entry.files) == ("gone", "/q/1.dcm", ("/q/1.dcm",))
    assert store.quarantine_oldest() == entry.at
    assert store.quarantine_older_than(entry.at + 1) == [entry]
    released = store.write_batch(settled=[("r", "s1"), ("r", "unknown")])
    assert [e.source_id for e in released] == ["s1"] and store.quarantine_entries() == []
    assert store.quarantine_release("r", "s1") is None


def test_spool(store: Store) -> None:
    assert store.spool_enqueue("es", [("d1", "h1", "{}"), ("d2", "h2", "{}")]) == 2
    rows = store.spool_next("es", 10)
    assert [r[0] for r in rows] == sorted(r[0] for r in rows) and store.spool_pending("es") == 2
    store.spool_mark_delivered("es", [(rows[0][0], "h1", "d1")])
    assert store.spool_delivered_among("es", ["d1", "d2"]) == {"d1"}
    assert store.spool_enqueue("es", [("d1", "h1", "{}")]) == 0  # same content: nothing
    store.spool_forget_delivered("es", ["d1"])  # reconcile found it gone from the index
    assert store.spool_delivered_among("es", ["d1"]) == set()
    assert store.spool_enqueue("es", [("d1", "h1", "{}")]) == 1  # so it is sent again
    store.spool_mark_delivered("es", [(store.spool_next("es", 10)[-1][0], "h1", "d1")])
    store.spool_mark_failed("es", [rows[1][0]], "down")
    assert store.spool_mark_rejected("es", [(rows[1][0], "d2", "{}")], {"d2": "bad"}) == 1
    assert store.spool_rejected("es") == {"d2": "bad"} and store.spool_sizes() == {}
    assert store.spool_rejected_oldest() is not None
    (old,) = store.spool_rejected_older_than(float("inf"))
    store.spool_drop_rejected(old[0], old[1])
    assert store.spool_rejected("es") == {}


def test_mapping(store: Store) -> None:
    store.mapping_add([("uid", "1.2", "2.25.1"), ("uid", "1.2", "2.25.9"), ("patient_id", "P", "Q")])
    assert store.mapping_pairs("uid") == [("1.2", "2.25.1")]  # first pair wins
    assert store.mapping_pairs("patient_id") == [("P", "Q")]


def test_probe_and_version(store: Store) -> None:
    store.probe_write()
    expected = PG_SCHEMA_VERSION if isinstance(store, PostgresStore) else SCHEMA_VERSION
    assert store.schema_version() == expected


def test_route_lock_refuses_a_second_holder_until_released(store: Store) -> None:
    from copydicom.state import RouteLocked

    first = store.lock_route("r")
    with pytest.raises(RouteLocked):
        store.lock_route("r")
    other = store.lock_route("other")  # per route
    first.release()
    again = store.lock_route("r")
    again.release()
    other.release()

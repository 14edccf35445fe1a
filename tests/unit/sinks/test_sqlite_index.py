from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from copydicom.errors import ConfigError, DocumentsRejected
from copydicom.sinks.sqlite_index import SqliteIndex, SqliteIndexConfig, readonly_query
from tests.unit.sinks.docs_helpers import dose_event, instance_doc


@pytest.fixture()
def index(tmp_path: Path) -> SqliteIndex:
    idx = SqliteIndex(SqliteIndexConfig(name="local", path=tmp_path / "index.db"))
    yield idx  # type: ignore[misc]
    idx.close()


def test_from_url() -> None:
    assert SqliteIndexConfig.from_url("sqlite:///var/lib/x.db").path == Path("/var/lib/x.db")
    assert SqliteIndexConfig.from_url("sqlite://rel/x.db").path == Path("rel/x.db")
    with pytest.raises(ConfigError):
        SqliteIndexConfig.from_url("sqlite://")


def test_upsert_is_idempotent(index: SqliteIndex) -> None:
    docs = [instance_doc(i) for i in range(25)] + [dose_event(1), dose_event(2, protocol="Chest", dlp=300.0)]
    index.send(docs)
    index.send(docs)
    rows = list(index.search("SELECT count(*) AS n FROM instances"))
    assert rows == [{"n": 25}]
    assert list(index.search("SELECT count(*) AS n FROM studies")) == [{"n": 3}]
    assert list(index.search("SELECT protocol, sum(dlp) AS dlp FROM dose_events GROUP BY protocol ORDER BY protocol")) == [
        {"protocol": "Chest", "dlp": 300.0},
        {"protocol": "Head", "dlp": 800.0},
    ]
    assert index.has([docs[0]["_id"], "nope", "1.2.826.0.1.3680043.99.dose.2"]) == {
        docs[0]["_id"], "1.2.826.0.1.3680043.99.dose.2"}


def test_studies_by_modality_by_day(index: SqliteIndex) -> None:
    index.send([instance_doc(i, study=1, day=2) for i in range(3)] + [instance_doc(50, modality="SR", study=2, day=2)])
    rows = list(index.search(
        "SELECT st.study_date AS day, se.modality AS modality, count(DISTINCT st.study_uid) AS n "
        "FROM studies st JOIN series se ON se.study_uid = st.study_uid GROUP BY 1, 2 ORDER BY 2"))
    assert rows == [{"day": "2024-01-02", "modality": "CT", "n": 1}, {"day": "2024-01-02", "modality": "SR", "n": 1}]


@pytest.mark.parametrize("query", [
    "DELETE FROM instances",
    "SELECT 1; DELETE FROM instances",
    "PRAGMA table_info(instances)",
    "ATTACH DATABASE ':memory:' AS x",
    "WITH x AS (SELECT 1) INSERT INTO patients SELECT 'a', 'b' FROM x",
    "SELECT * FROM",
    "CREATE TABLE t (a)",
])
def test_search_refuses_anything_but_one_select(index: SqliteIndex, query: str) -> None:
    index.send([instance_doc(1)])
    with pytest.raises(ConfigError):
        list(index.search(query))
    assert list(index.search("SELECT count(*) AS n FROM instances")) == [{"n": 1}]


def test_search_opens_read_only(index: SqliteIndex, tmp_path: Path) -> None:
    index.send([instance_doc(1)])
    rows = list(readonly_query(tmp_path / "index.db", "SELECT json_extract(tags, '$.Modality') AS m FROM instances"))
    assert rows == [{"m": "CT"}]
    with pytest.raises(ConfigError):
        list(readonly_query(tmp_path / "missing.db", "SELECT 1"))
    assert not (tmp_path / "missing.db").exists()


def test_bad_documents_are_rejected_others_kept(index: SqliteIndex) -> None:
    good = instance_doc(1)
    with pytest.raises(DocumentsRejected) as info:
        index.send([{"doc_type": "instance"}, good, {"_id": "x"}, {"_id": "y", "doc_type": "instance",
                                                                   "StudyInstanceUID": "9.9", "Modality": ["CT"],
                                                                   "SeriesInstanceUID": "1"}])
    assert sorted(info.value.rejected) == ["None", "x", "y"]
    conn = sqlite3.connect(str(index.config.path))
    assert conn.execute("SELECT _id FROM instances").fetchall() == [(good["_id"],)]
    assert conn.execute("SELECT count(*) FROM studies WHERE study_uid = '9.9'").fetchone() == (0,)
    conn.close()


def test_search_alone_never_writes_the_file(tmp_path: Path) -> None:
    """``copydicom search`` opens the database read-only: no schema, no WAL switch, bytes unchanged."""
    import hashlib
    import sqlite3

    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (x INTEGER)")
        conn.execute("INSERT INTO t VALUES (1)")
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    index = SqliteIndex(SqliteIndexConfig("other", path))
    assert list(index.search("SELECT x FROM t")) == [{"x": 1}]
    index.close()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert not (tmp_path / "other.db-wal").exists()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master")] == ["t"]

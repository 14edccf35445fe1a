"""A SQLite index's inventory for reconcile: instance documents per study, and which IDs it holds.

Only what reconcile needs to re-index instances missing from the index (issue 12 item 4):
``instances`` rows per (sent) Study Instance UID, then ``_id`` look-ups per series. The
spool's memory of delivered documents is cleared for those IDs so that the spool sends them
again (it would otherwise skip a document it delivered before with the same content).
"""

from __future__ import annotations

from typing import Any


class SqliteIndexInventory:
    """Counts and look-ups on a :class:`~copydicom.sinks.sqlite_index.SqliteIndex` behind an index destination."""

    def __init__(self, index_destination: Any) -> None:
        self.destination = index_destination
        self.name = str(index_destination.name)
        self.sink = index_destination.spooled.sink

    def study_count(self, study_uid: str) -> int:
        with self.sink._lock:  # noqa: SLF001 - the index's one writing connection
            row = self.sink._conn.execute("SELECT count(*) FROM instances WHERE study_uid=?", (study_uid,)).fetchone()
        return int(row[0])

    def study_documents(self, study_uid: str, route: str) -> set[str]:
        """``_id`` of the instance documents of one (sent) study that ``route`` wrote."""
        with self.sink._lock:  # noqa: SLF001
            rows = self.sink._conn.execute(
                "SELECT _id FROM instances WHERE study_uid=? AND route=?", (study_uid, route)).fetchall()
        return {str(r[0]) for r in rows}

    def delete(self, target_ids: list[str]) -> None:
        """Delete instance documents, and dose documents that name the same instance ID."""
        with self.sink._lock:  # noqa: SLF001
            conn = self.sink._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                for table, column in (("instances", "_id"), ("dose_events", "orthanc_id"),
                                      ("dose_summaries", "orthanc_id")):
                    conn.executemany(f"DELETE FROM {table} WHERE {column}=?", [(t,) for t in target_ids])
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        self.forget_delivered(target_ids)

    def has(self, target_ids: list[str]) -> set[str]:
        return set(self.sink.has(target_ids))

    def forget_delivered(self, target_ids: list[str]) -> None:
        """Let the spool send these instance documents again (they are gone from the index)."""
        self.destination.spooled.spool.forget_delivered(self.name, target_ids)

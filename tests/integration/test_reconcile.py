"""``copydicom reconcile`` against real Orthanc servers (issue 12).

An instance removed at the destination is restored; deletions at the source follow each
policy (and propagation never deletes what this route did not deliver); a de-identifying
route in sync is found in sync without a single download; a content mismatch is found by
``--verify``.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from copydicom.cli import main
from copydicom.clients.orthanc import OrthancClient
from tests.integration.conftest import instance_count, load_ct
from tests.support.orthanc import OrthancServer
from tests.support.synthetic import ct_dataset, to_bytes

pytestmark = pytest.mark.integration


@pytest.fixture
def downloads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every instance download any Orthanc client makes during the test (the source's fetch)."""
    seen: list[str] = []
    original = OrthancClient.download

    def counting(self: OrthancClient, instance_id: str) -> bytes:
        seen.append(instance_id)
        return original(self, instance_id)

    monkeypatch.setattr(OrthancClient, "download", counting)
    yield seen


def _args(source: OrthancServer, dest: OrthancServer, state: Path, *more: str) -> list[str]:
    return ["--src", source.url_with_credentials, "--dest", dest.url_with_credentials, "--state", str(state), *more]


def _last_line(capsys: pytest.CaptureFixture[str]) -> str:
    return capsys.readouterr().out.strip().splitlines()[-1]


def _delete(server: OrthancServer, instance_id: str) -> None:
    requests.delete(f"{server.url}/instances/{instance_id}", auth=server.auth, timeout=30).raise_for_status()


def test_in_sync_pair_reports_nothing_and_downloads_nothing(
    servers: tuple[OrthancServer, OrthancServer], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    downloads: list[str],
) -> None:
    source, dest = servers
    load_ct(source, 12, rows=8)
    state = tmp_path / "state.db"
    assert main(["replicate", *_args(source, dest, state)]) == 0
    downloads.clear()
    assert main(["reconcile", *_args(source, dest, state)]) == 0
    assert _last_line(capsys).startswith("missing=0 repaired=0 extra=0 deleted=0 mismatched=0 seconds=")
    assert downloads == []


def test_instance_removed_at_the_destination_is_restored(
    servers: tuple[OrthancServer, OrthancServer], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    downloads: list[str],
) -> None:
    source, dest = servers
    ids = sorted(load_ct(source, 12, rows=8))
    state = tmp_path / "state.db"
    assert main(["replicate", *_args(source, dest, state)]) == 0
    _delete(dest, ids[3])
    _delete(dest, ids[7])
    downloads.clear()
    assert main(["reconcile", *_args(source, dest, state), "--dry-run"]) == 1
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1].startswith("missing=2 repaired=0 ")
    assert " at " in out and "missing=2" in out  # the per-study line
    assert downloads == []
    assert main(["reconcile", *_args(source, dest, state)]) == 0
    assert _last_line(capsys).startswith("missing=2 repaired=2 extra=0 ")
    assert sorted(downloads) == sorted([ids[3], ids[7]])  # exactly the missing ones
    assert set(dest.instance_ids()) == set(ids)
    assert main(["reconcile", *_args(source, dest, state)]) == 0
    assert _last_line(capsys).startswith("missing=0 repaired=0 ")


@pytest.mark.parametrize("policy", ["ignore", "report", "propagate"])
def test_deletions_follow_the_policy(
    servers: tuple[OrthancServer, OrthancServer], tmp_path: Path, capsys: pytest.CaptureFixture[str], policy: str
) -> None:
    source, dest = servers
    ids = sorted(load_ct(source, 10, rows=8))
    state = tmp_path / "state.db"
    assert main(["replicate", *_args(source, dest, state)]) == 0
    # Something this route never delivered: uploaded to the destination directly.
    foreign = dest.upload(to_bytes(ct_dataset(0, 0, 0, 999, rows=8, cols=8)))["ID"]
    _delete(source, ids[0])
    _delete(source, ids[1])
    status = main(["reconcile", *_args(source, dest, state), "--deletions", policy])
    out = capsys.readouterr().out
    last = out.strip().splitlines()[-1]
    assert last.startswith("missing=0 repaired=0 extra=2 ")
    if policy == "ignore":
        assert status == 0 and "deleted=0" in last
        assert instance_count(dest) == 11
    elif policy == "report":
        assert status == 1 and "deleted=0" in last
        listed = [line.rsplit(" ", 1)[1] for line in out.splitlines() if line.startswith("  extra at ")]
        assert sorted(listed) == sorted([ids[0], ids[1]])  # the foreign instance is not this route's
        assert instance_count(dest) == 11
    else:
        assert status == 0 and "deleted=2" in last
        held = set(dest.instance_ids())
        assert ids[0] not in held and ids[1] not in held
        assert foreign in held  # never delete what did not come from this route's source
        assert instance_count(dest) == 9
        assert main(["reconcile", *_args(source, dest, state), "--deletions", policy]) == 0
        assert _last_line(capsys).startswith("missing=0 repaired=0 extra=0 deleted=0 ")


def test_a_whole_study_gone_at_the_source_is_found(
    servers: tuple[OrthancServer, OrthancServer], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, dest = servers
    load_ct(source, 4, rows=8)
    state = tmp_path / "state.db"
    assert main(["replicate", *_args(source, dest, state)]) == 0
    for study in source.get("/studies"):
        requests.delete(f"{source.url}/studies/{study}", auth=source.auth, timeout=30).raise_for_status()
    kept = load_ct(source, 3, rows=8, seed="kept")  # a source left empty is never followed (see below)
    assert main(["replicate", *_args(source, dest, state)]) == 0
    assert main(["reconcile", *_args(source, dest, state), "--deletions", "propagate"]) == 0
    assert _last_line(capsys).startswith("missing=0 repaired=0 extra=4 deleted=4 ")
    assert instance_count(dest) == len(kept)


def test_verify_finds_different_content_and_resend_replaces_it(
    servers: tuple[OrthancServer, OrthancServer], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, dest = servers
    ds = ct_dataset(3, 0, 0, 0, rows=8, cols=8)
    good = to_bytes(ds)
    ds.StudyDescription = "SOMETHING ELSE"
    other = to_bytes(ds)
    instance_id = source.upload(good)["ID"]
    assert dest.upload(other)["ID"] == instance_id  # same identity, other bytes at the destination
    state = tmp_path / "state.db"
    assert main(["reconcile", *_args(source, dest, state)]) == 0  # counts agree: no --verify, no finding
    assert _last_line(capsys).startswith("missing=0 repaired=0 extra=0 deleted=0 mismatched=0 ")
    assert main(["reconcile", *_args(source, dest, state), "--verify"]) == 1
    assert _last_line(capsys).startswith("missing=0 repaired=0 extra=0 deleted=0 mismatched=1 ")
    config = tmp_path / "c.yaml"
    config.write_text(
        "state: " + str(state) + "\nendpoints:\n"
        f"  src: {{type: orthanc, url: '{source.url}', user: {source.user}, password: {source.password}}}\n"
        f"  dst: {{type: orthanc, url: '{dest.url}', user: {dest.user}, password: {dest.password}}}\n"
        "routes:\n  - {name: r, source: src, destinations: [dst], trigger: manual, on_changed_instance: resend}\n"
    )
    assert main(["reconcile", "--config", str(config), "--route", "r", "--verify"]) == 0
    assert _last_line(capsys).startswith("missing=0 repaired=0 extra=0 deleted=0 mismatched=1 ")
    md5 = requests.get(f"{dest.url}/instances/{instance_id}/attachments/dicom/md5", auth=dest.auth, timeout=30).text
    assert md5.strip().strip('"') == hashlib.md5(good).hexdigest()
    assert main(["reconcile", "--config", str(config), "--route", "r", "--verify"]) == 0
    assert _last_line(capsys).startswith("missing=0 repaired=0 extra=0 deleted=0 mismatched=0 ")
    db = sqlite3.connect(state)
    row = db.execute("SELECT mismatched FROM reconcile_runs WHERE route='r'").fetchone()
    db.close()
    assert row == (0,)


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert main(["reconcile", "--src", "http://u:p@127.0.0.1:9"]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["reconcile", "--src", "http://u:p@127.0.0.1:9", "--dest", "http://u:p@127.0.0.1:8", "--since", "2024-13-40"])
    assert exc.value.code == 2


@pytest.fixture
def key(tmp_path: Path) -> Path:
    import os

    path = tmp_path / "deid.key"
    path.write_bytes(os.urandom(32).hex().encode())
    path.chmod(0o600)
    return path


def test_deidentifying_route_in_sync_is_found_without_any_download(
    servers: tuple[OrthancServer, OrthancServer], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    downloads: list[str], key: Path,
) -> None:
    source, dest = servers
    ids = sorted(load_ct(source, 16, rows=8))
    state = tmp_path / "state.db"
    deid = ["--profile", "default", "--key-file", str(key)]
    assert main(["replicate", *_args(source, dest, state), *deid]) == 0
    assert not set(dest.instance_ids()) & set(ids)  # what the destination holds is de-identified
    downloads.clear()
    assert main(["reconcile", *_args(source, dest, state), *deid]) == 0
    assert _last_line(capsys).startswith("missing=0 repaired=0 extra=0 deleted=0 mismatched=0 ")
    assert downloads == []  # compared against the predicted de-identified identities
    # one sent instance removed at the destination: exactly that one is downloaded and sent again
    victim = sorted(dest.instance_ids())[5]
    _delete(dest, victim)
    assert main(["reconcile", *_args(source, dest, state), *deid]) == 0
    assert _last_line(capsys).startswith("missing=1 repaired=1 ")
    assert len(downloads) == 1
    assert victim in set(dest.instance_ids())
    downloads.clear()
    # --verify on a de-identifying route downloads and transforms every instance (said in the README)
    assert main(["reconcile", *_args(source, dest, state), *deid, "--verify"]) == 0
    assert _last_line(capsys).startswith("missing=0 repaired=0 extra=0 deleted=0 mismatched=0 ")
    assert len(downloads) == 16


def test_instances_missing_from_the_index_are_reindexed_without_resending_the_image(
    servers: tuple[OrthancServer, OrthancServer], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    downloads: list[str],
) -> None:
    from tests.integration.conftest import last_seq

    source, dest = servers
    ids = sorted(load_ct(source, 8, rows=8))
    state = tmp_path / "state.db"
    index = tmp_path / "index.db"
    with_index = [*_args(source, dest, state), "--index", f"sqlite:///{index}"]
    assert main(["replicate", *with_index]) == 0
    assert main(["reconcile", *with_index]) == 0
    assert _last_line(capsys).startswith("missing=0 repaired=0 ")
    db = sqlite3.connect(index)
    db.execute("DELETE FROM instances WHERE _id IN (?, ?)", (ids[1], ids[4]))
    db.commit()
    db.close()
    seq = last_seq(dest)
    downloads.clear()
    assert main(["reconcile", *with_index]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1].startswith("missing=2 repaired=2 ")
    assert "(index documents)" in out
    assert sorted(downloads) == sorted([ids[1], ids[4]])  # from the source, to index them
    assert last_seq(dest) == seq  # no image sent again
    db = sqlite3.connect(index)
    assert db.execute("SELECT count(*) FROM instances").fetchone() == (8,)
    db.close()
    # an instance deleted at the source: its image and its index document follow the deletion policy
    _delete(source, ids[6])
    assert main(["reconcile", *with_index, "--deletions", "report"]) == 1
    assert _last_line(capsys).startswith("missing=0 repaired=0 extra=2 deleted=0 ")
    assert main(["reconcile", *with_index, "--deletions", "propagate"]) == 0
    assert _last_line(capsys).startswith("missing=0 repaired=0 extra=2 deleted=2 ")
    db = sqlite3.connect(index)
    assert db.execute("SELECT count(*) FROM instances").fetchone() == (7,)
    assert db.execute("SELECT count(*) FROM instances WHERE _id=?", (ids[6],)).fetchone() == (0,)
    db.close()
    assert ids[6] not in set(dest.instance_ids())


def test_since_and_study_limit_the_comparison(
    servers: tuple[OrthancServer, OrthancServer], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, dest = servers
    files = [to_bytes(ct_dataset(p, 0, 0, i, rows=8, cols=8, seed="scope")) for p in range(2) for i in range(3)]
    for data in files:
        source.upload(data)
    state = tmp_path / "state.db"
    assert main(["replicate", *_args(source, dest, state)]) == 0
    first = ct_dataset(0, 0, 0, 0, rows=8, cols=8, seed="scope")
    second = ct_dataset(1, 0, 0, 0, rows=8, cols=8, seed="scope")
    from copydicom.model import Identity

    for ds in (first, second):
        _delete(dest, Identity.from_dataset(ds).orthanc_id)
    capsys.readouterr()
    assert main(["reconcile", *_args(source, dest, state), "--since", "2100-01-01"]) == 0
    assert _last_line(capsys).startswith("missing=0 repaired=0 ")  # no study dated that late
    assert main(["reconcile", *_args(source, dest, state), "--study", str(first.StudyInstanceUID)]) == 0
    assert _last_line(capsys).startswith("missing=1 repaired=1 ")
    assert main(["reconcile", *_args(source, dest, state), "--since", "2000-01-01"]) == 0
    assert _last_line(capsys).startswith("missing=1 repaired=1 ")
    assert instance_count(dest) == 6


def test_listings_spilled_to_disk_give_the_same_answer(
    servers: tuple[OrthancServer, OrthancServer], tmp_path: Path
) -> None:
    """Memory stays bounded: with a bound of one study in memory the count maps spill to SQLite."""
    from copydicom.ledger import Ledger
    from copydicom.reconcile import Options, Reconciler
    from copydicom.routes import build_route, oneshot_route

    source, dest = servers
    for p in range(3):
        for i in range(2):
            source.upload(to_bytes(ct_dataset(p, 0, 0, i, rows=8, cols=8, seed="spill")))
    state = tmp_path / "state.db"
    assert main(["replicate", *_args(source, dest, state)]) == 0
    from copydicom.model import Identity, orthanc_id

    zero = Identity.from_dataset(ct_dataset(0, 0, 0, 0, seed="spill"))
    requests.delete(f"{source.url}/studies/{orthanc_id(zero.patient_id, zero.study_uid)}", auth=source.auth,
                    timeout=30).raise_for_status()
    _delete(dest, Identity.from_dataset(ct_dataset(1, 0, 0, 0, seed="spill")).orthanc_id)
    route, config = oneshot_route(None, src=source.url_with_credentials, dests=[dest.url_with_credentials],
                                  state=state)
    ledger = Ledger(state)
    runtime = build_route(route, config, ledger)
    try:
        report = Reconciler(runtime, ledger, Options(dry_run=True, deletions="report"), memory_limit=1).run()
    finally:
        runtime.close()
        ledger.close()
    assert (report.missing, report.extra, report.repaired, report.deleted) == (1, 2, 0, 0)


def test_propagate_never_empties_the_replica_after_an_empty_source(
    servers: tuple[OrthancServer, OrthancServer], tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """Review round 2: a one-shot reconcile --deletions propagate against a rebuilt (empty) source
    deleted every instance this route had delivered, exit 0."""
    source, dest = servers
    ids = load_ct(source, 6, rows=8)
    state = tmp_path / "state.db"
    assert main(["replicate", *_args(source, dest, state)]) == 0
    source.clear()
    assert main(["reconcile", *_args(source, dest, state), "--deletions", "propagate"]) == 1
    assert _last_line(capsys).startswith("missing=0 repaired=0 extra=6 deleted=0 ")
    assert instance_count(dest) == len(ids)


def test_reconcile_on_a_postgresql_state(
    servers: tuple[OrthancServer, OrthancServer], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    postgres: object, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """reconcile refused a PostgreSQL state (its SQL was SQLite-only): restore, propagate, status (leftovers 7)."""
    import json

    from tests.support.postgres import fresh_database

    source, dest = servers
    monkeypatch.setenv("PGPASSWORD", postgres.password)  # type: ignore[attr-defined]
    state = fresh_database(postgres, "reconcile")  # type: ignore[arg-type]
    ids = sorted(load_ct(source, 6, rows=8))
    args = ["--src", source.url_with_credentials, "--dest", dest.url_with_credentials, "--state", state]
    assert main(["replicate", *args]) == 0
    import psycopg

    with psycopg.connect(state, password=postgres.password) as conn:  # type: ignore[attr-defined]
        assert conn.execute("SELECT count(*) FROM delivered").fetchone() == (6,)  # not a file named "postgresql:"
    assert not Path("postgresql:").exists()
    _delete(dest, ids[0])
    _delete(source, ids[1])
    foreign = dest.upload(to_bytes(ct_dataset(0, 0, 0, 998, rows=8, cols=8)))["ID"]
    capsys.readouterr()
    assert main(["reconcile", *args, "--deletions", "propagate"]) == 0
    assert _last_line(capsys).startswith("missing=1 repaired=1 extra=1 deleted=1 ")
    held = set(dest.instance_ids())
    assert ids[0] in held and ids[1] not in held and foreign in held
    assert main(["reconcile", *args, "--deletions", "propagate"]) == 0
    assert _last_line(capsys).startswith("missing=0 repaired=0 extra=0 deleted=0 ")
    assert main(["status", "--state", state, "--json"]) in (0, 1)
    shown = json.loads(capsys.readouterr().out)
    assert any(run.get("deleted") == 0 and run.get("missing") == 0 for run in _runs(shown))


def _runs(shown: object) -> list[dict[str, object]]:
    """The reconcile records anywhere in ``status --json`` output."""
    found: list[dict[str, object]] = []
    if isinstance(shown, dict):
        if "mismatched" in shown and "deleted" in shown:
            found.append(shown)
        for value in shown.values():
            found.extend(_runs(value))
    elif isinstance(shown, list):
        for value in shown:
            found.extend(_runs(value))
    return found

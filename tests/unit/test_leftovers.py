"""Regressions for the defects the round-2 review left open (notes/review.md, "Not fixed")."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from copydicom import registry
from copydicom.config import parse_config
from copydicom.ledger import Ledger
from copydicom.model import Destination, Instance, InstanceRef, Source, StoreOutcome
from copydicom.registry import BuildContext, EndpointConfig, EndpointType
from copydicom.routes import build_route
from tests.support.synthetic import ct_dataset, to_bytes


def deep_instance(depth: int = 100) -> bytes:
    """A valid-looking CT instance with a sequence nested ``depth`` deep (Orthanc 1.10.1 crashes on it)."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds = ct_dataset(8, 0, 0, 1, rows=8, cols=8)
    inner = cur = Dataset()
    for _ in range(depth):
        nxt = Dataset()
        cur.ReferencedImageSequence = Sequence([nxt])
        cur = nxt
    ds.ReferencedImageSequence = Sequence([inner])
    return to_bytes(ds)


# -- 1. every source's fetch goes through the structure check ------------------------------

HELD: dict[str, bytes] = {}
STORED: list[str] = []


class ByteConfig(EndpointConfig):
    """A source or destination type no code in copydicom knows about (a plug-in)."""

    type: str = "bytes"

    @classmethod
    def from_url(cls, url: str, *, name: str | None = None) -> ByteConfig:
        return cls(name=name or url)


class ByteSource:
    name = "bytes"

    def batches(self) -> Iterator[list[InstanceRef]]:
        yield [InstanceRef(key) for key in sorted(HELD)]

    def fetch(self, ref: InstanceRef) -> bytes:
        return HELD[ref.source_id]

    def close(self) -> None:
        pass


class ByteDestination:
    name = "sink"

    def has(self, target_ids: Iterable[str], *, series_hint: str | None = None) -> set[str]:
        return set()

    def store(self, instance: Instance) -> StoreOutcome:
        STORED.append(instance.ref.source_id)
        return "stored"

    def close(self) -> None:
        pass


def _byte_source(config: ByteConfig, ctx: BuildContext) -> Source:
    return ByteSource()


def _byte_destination(config: ByteConfig, ctx: BuildContext) -> Destination:
    return ByteDestination()


BYTES: EndpointType[ByteConfig] = EndpointType(
    name="bytes", description="test plug-in", schemes=("bytes",), config=ByteConfig, source=_byte_source,
    destination=_byte_destination,
)


@pytest.fixture
def plugin() -> Iterator[None]:
    HELD.clear()
    STORED.clear()
    registry.register(BYTES)
    yield
    registry.unregister("bytes")


def _run_route(tmp_path: Path, source: dict[str, Any]) -> tuple[dict[str, int], Ledger]:
    config = parse_config(
        {
            "state": "state.db",
            "endpoints": {"src": source, "sink": {"type": "bytes"}},
            "routes": [{"name": "r", "source": "src", "destinations": ["sink"], "trigger": "manual"}],
        },
        base_dir=tmp_path,
    )
    ledger = Ledger(config.state)
    runtime = build_route(config.routes[0], config, ledger)
    try:
        summary = runtime.pipeline.run(runtime.source.batches())
    finally:
        runtime.close()
    return dict(summary.counts), ledger


def _quarantined_reasons(ledger: Ledger) -> list[str]:
    try:
        return [e.reason for e in ledger.quarantined()]
    finally:
        ledger.close()


def test_a_plugin_source_gets_the_structure_check_without_asking(plugin: None, tmp_path: Path) -> None:
    """The check runs for every route (one place), not in each source: a new source cannot forget it."""
    good = to_bytes(ct_dataset(8, 0, 0, 2, rows=8, cols=8))
    HELD.update({"deep": deep_instance(), "good": good, "cut": good[:-100]})
    counts, ledger = _run_route(tmp_path, {"type": "bytes"})
    assert STORED == ["good"]
    assert counts["quarantined"] == 2
    reasons = _quarantined_reasons(ledger)
    assert any("nest" in r for r in reasons) and any("trunc" in r or "past the end" in r for r in reasons)
    kept = sorted(p.read_bytes() for p in (tmp_path / "quarantine").rglob("*.dcm"))
    assert kept == sorted([HELD["deep"], HELD["cut"]])  # retryable: the bytes are kept


def test_s3_restore_quarantines_a_deeply_nested_object(plugin: None, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="arch")
        client.put_object(Bucket="arch", Key="ct/1/2/3.dcm", Body=deep_instance())
        client.put_object(Bucket="arch", Key="ct/1/2/4.dcm", Body=to_bytes(ct_dataset(8, 0, 0, 2, rows=8, cols=8)))
        counts, ledger = _run_route(tmp_path, {"type": "s3", "bucket": "arch", "prefix": "ct/",
                                               "region": "us-east-1"})
    assert STORED == ["ct/1/2/4.dcm"]
    assert counts["quarantined"] == 1
    assert "nest" in _quarantined_reasons(ledger)[0]


def test_dicomweb_source_instance_is_structure_checked(tmp_path: Path) -> None:
    """The DICOMweb source, fetched through a pipeline as build_route makes it, refuses deep nesting."""
    from copydicom.endpoints.dicomweb._source import DicomwebSource
    from copydicom.pipeline import Pipeline
    from copydicom.routes import fetched_check
    from tests.unit.dicomweb.test_source_spool import FakeClient, refs
    from tests.unit.fakes import FakeDestination

    client = FakeClient(2)
    client.files[0] = deep_instance()
    source = DicomwebSource(client)  # type: ignore[arg-type]
    ledger = Ledger(tmp_path / "state.db")
    dest = FakeDestination()
    try:
        pipe = Pipeline("r", source, [], [dest], ledger, quarantine_dir=tmp_path / "q", workers=1,
                        check_fetched=fetched_check)
        summary = pipe.run([refs(client)])
    finally:
        ledger.close()
    assert summary.counts["quarantined"] == 1 and summary.counts["stored"] == 1
    assert len(dest.stored) == 1


# -- 2. console uploads: quarantined bytes kept and retryable; stale upload folders removed ----------

class RefusingDestination(ByteDestination):
    """Refuses (quarantine) every instance while ``REFUSE`` is set, as a destination rejecting a file does."""

    def store(self, instance: Instance) -> StoreOutcome:
        from copydicom.errors import InvalidInstance

        if REFUSE:
            raise InvalidInstance("refused by the destination")
        return super().store(instance)


REFUSE: list[bool] = []


def _upload_config(tmp_path: Path) -> Any:
    registry.unregister("bytes")
    registry.register(EndpointType(
        name="bytes", description="test plug-in", schemes=("bytes",), config=ByteConfig, source=_byte_source,
        destination=lambda c, ctx: RefusingDestination(),
    ))
    (tmp_path / "in").mkdir()
    return parse_config(
        {
            "state": "state/state.db",
            "endpoints": {"src": {"type": "folder", "path": "in"}, "sink": {"type": "bytes"}},
            "routes": [{"name": "r", "source": "src", "destinations": ["sink"], "trigger": "manual"}],
        },
        base_dir=tmp_path,
    )


def _run_upload(config: Any, ledger: Ledger, files: list[bytes]) -> dict[str, Any]:
    import time

    from copydicom.console._jobs import JobManager
    from copydicom.console._wiring import make_upload_runner

    folder = config.state.parent / "copydicom-console-abcd1234" / "job-1"
    folder.mkdir(parents=True, mode=0o700)
    paths = []
    for i, data in enumerate(files):
        path = folder / f"{i:06d}.dcm"
        path.write_bytes(data)
        paths.append(path)
    jobs = JobManager(make_upload_runner(config, ledger))
    job = jobs.submit(paths, route="r", user="op", patient_csv=None, folder=folder, refused=[])
    deadline = time.monotonic() + 60
    while job.state in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.05)
    jobs.stop()
    assert job.state == "done", job.error
    assert not folder.exists()  # uploaded PHI does not outlive its job
    return job.as_dict()["counts"]


def test_console_upload_quarantine_keeps_owner_only_bytes_and_can_be_retried(plugin: None, tmp_path: Path) -> None:
    """Upload entries used to keep no file (structure refusals) and their route ``upload:r`` was unknown to retry."""
    import stat

    from copydicom.console._wiring import make_retry

    config = _upload_config(tmp_path)
    config.state.parent.mkdir()
    ledger = Ledger(config.state)
    try:
        deep, good = deep_instance(), to_bytes(ct_dataset(8, 0, 0, 2, rows=8, cols=8))
        REFUSE[:] = [True]
        counts = _run_upload(config, ledger, [deep, good])
        assert counts["quarantined"] == 2 and STORED == []
        entries = ledger.quarantined()
        assert len(entries) == 2
        kept = sorted(Path(e.path).read_bytes() for e in entries if e.path)
        assert kept == sorted([deep, good])
        for e in entries:
            assert stat.S_IMODE(Path(str(e.path)).stat().st_mode) == 0o600
        REFUSE.clear()  # the destination accepts now: the retry delivers what is deliverable
        result = make_retry(config, ledger)(entries)
        assert result["replicated"] == 1 and result["quarantined"] == 1 and result["failed"] == 0
        assert len(STORED) == 1
        left = ledger.quarantined()
        assert len(left) == 1 and "nest" in left[0].reason and Path(str(left[0].path)).read_bytes() == deep
    finally:
        REFUSE.clear()
        ledger.close()


def test_console_start_removes_stale_upload_folders_only(tmp_path: Path) -> None:
    """Each start left an empty ``copydicom-console-XXXX`` folder, and a crash left uploaded files behind."""
    import os

    from copydicom.console import ConsoleConfig, JobManager, StateBackend, create_app

    ledger = Ledger(tmp_path / "state.db")
    try:
        backend = StateBackend(ledger, lambda: ["r"])
        config = ConsoleConfig(users_file=tmp_path / "users.yaml", audit_log=tmp_path / "audit.log")

        def start() -> Path:
            app = create_app(config, backend, jobs=JobManager(lambda *a, **k: None), work_dir=tmp_path)
            return Path(app.state.console.work_dir)

        live = start()  # a console still running (the daemon's) keeps its folder
        stale = tmp_path / "copydicom-console-k3x9_q2a"
        (stale / "job-abc").mkdir(parents=True)
        (stale / "job-abc" / "000000.dcm").write_bytes(b"PHI")
        (stale / ".lock").write_bytes(b"")  # a console that crashed: its lock died with it
        older = tmp_path / "copydicom-console-0ld0ld00"  # an older version's, no lock file
        older.mkdir()
        os.utime(older, (1.0e9, 1.0e9))
        starting = tmp_path / "copydicom-console-n0w0n0w0"  # no lock yet, just made: maybe starting
        starting.mkdir()
        outside = tmp_path / "elsewhere"
        outside.mkdir()
        (outside / "keep.dcm").write_bytes(b"x")
        os.symlink(outside, tmp_path / "copydicom-console-link0000")
        other = tmp_path / "copydicom-consoles"
        other.mkdir()
        mine = start()
        assert mine.is_dir() and live.is_dir()
        assert not stale.exists() and not older.exists()
        assert (outside / "keep.dcm").read_bytes() == b"x"  # a symlink is never followed
        assert other.is_dir()
        names = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("copydicom-console-"))
        assert names == sorted([live.name, mine.name, starting.name, "copydicom-console-link0000"])
    finally:
        ledger.close()


# -- 3. --ids / ids=[...] naming instances the source does not have --------------------------

class SelectableByteSource(ByteSource):
    def selected(self, identifiers: Iterable[str]) -> Iterator[list[InstanceRef]]:
        for ident in identifiers:
            if ident in HELD:
                yield [InstanceRef(ident)]


def _selectable(config: ByteConfig, ctx: BuildContext) -> Source:
    return SelectableByteSource()


@pytest.fixture
def selectable() -> Iterator[None]:
    HELD.clear()
    STORED.clear()
    registry.register(EndpointType(
        name="bytes", description="test plug-in", schemes=("bytes",), config=ByteConfig, source=_selectable,
        destination=_byte_destination,
    ))
    yield
    registry.unregister("bytes")


MISSING_ORTHANC_ID = "0a1b2c3d-4e5f6a7b-8c9d0e1f-2a3b4c5d-6e7f8a9b"
MISSING_UID = "1.2.826.0.1.3680043.99.424242"


def test_replicate_ids_not_found_exits_1_and_says_how_many(
    selectable: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from copydicom.cli import main

    HELD["good"] = to_bytes(ct_dataset(8, 0, 0, 2, rows=8, cols=8))
    state = str(tmp_path / "state.db")
    code = main(["replicate", "--src", "bytes://a", "--dest", "bytes://b", "--state", state,
                 "--ids", "good", MISSING_ORTHANC_ID, MISSING_UID])
    out, err = capsys.readouterr()
    assert code == 1
    assert out.splitlines()[-1].startswith("replicated=1 skipped_existing=0 quarantined=0 failed=0 ")
    assert "2 of 3 identifier(s) matched nothing" in err
    assert MISSING_ORTHANC_ID in err and MISSING_UID not in err + out  # a UID may be PHI: its position only
    assert main(["replicate", "--src", "bytes://a", "--dest", "bytes://b", "--state", state, "--ids", "good"]) == 0


def test_api_ids_not_found_is_not_ok(selectable: None, tmp_path: Path) -> None:
    import copydicom

    HELD["good"] = to_bytes(ct_dataset(8, 0, 0, 2, rows=8, cols=8))
    summary = copydicom.replicate("bytes://a", "bytes://b", ids=["good", MISSING_UID], state=tmp_path / "s.db")
    assert not summary.ok and summary.not_found == 1 and summary.counts["stored"] == 1
    again = copydicom.replicate("bytes://a", "bytes://b", ids=["good"], state=tmp_path / "s.db")
    assert again.ok and again.not_found == 0


# -- 4. check-config --schema CONFIG ----------------------------------------------------------

def test_check_config_schema_with_a_config_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """It printed the schema and exited 0, silently ignoring (not checking) the file."""
    from copydicom.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("endpoints: {x: {type: nope}}\nroutes: 3\n")
    assert main(["check-config", "--schema", str(bad)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "--schema" in err and "bad.yaml" not in err
    assert main(["check-config", "--schema"]) == 0
    assert '"properties"' in capsys.readouterr().out


# -- 5. DICOMweb destination with a wrong base path --------------------------------------------

def test_stow_404_is_a_wrong_url_not_an_instance_to_quarantine() -> None:
    """Every instance was quarantined ("HTTP 404 refused"): it is the endpoint's url that is wrong."""
    import responses

    from copydicom.endpoints.dicomweb import DicomwebConfig
    from copydicom.endpoints.dicomweb._client import DicomwebClient
    from copydicom.endpoints.dicomweb._destination import StowDestination
    from copydicom.errors import ConfigError
    from copydicom.model import Identity

    data = to_bytes(ct_dataset(8, 0, 0, 2, rows=8, cols=8))
    cfg = DicomwebConfig.from_url("dicomweb+http://u:p@dw.test/dicomweb", name="pacs").model_copy(update={"retries": 0})
    with responses.RequestsMock() as mock:
        mock.post("http://dw.test/dicomweb/studies", status=404, body="Unknown resource")
        dest = StowDestination(DicomwebClient(cfg, side="destination"), concurrency=1)
        ds = ct_dataset(8, 0, 0, 2, rows=8, cols=8)
        identity = Identity(str(ds.PatientID), str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID),
                            str(ds.SOPInstanceUID))
        with pytest.raises(ConfigError, match=r"endpoints\.pacs\.url.*not the base of a DICOMweb service"):
            dest.store(Instance(InstanceRef(identity.orthanc_id, identity=identity), data, identity=identity))


# -- 6. a transfer syntax the DICOMweb server cannot serve --------------------------------------

JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
WADO = "http://dw.test/dicom-web/studies/1/series/2/instances/3"


def _wado_client(ts: str = JPEG_BASELINE) -> Any:
    from copydicom.endpoints.dicomweb import DicomwebConfig
    from copydicom.endpoints.dicomweb._client import DicomwebClient

    cfg = DicomwebConfig.from_url(f"dicomweb+http://u:p@dw.test/dicom-web?transfer_syntax={ts}", name="pacs")
    return DicomwebClient(cfg.model_copy(update={"retries": 4}), side="source")


def _serve(statuses: dict[str, tuple[int, str]]) -> Any:
    """A WADO-RS callback answering by the requested transfer syntax; counts the calls per syntax."""
    calls: dict[str, int] = {}
    boundary = "b0undary"
    part = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").encode() + b"DICM" + f"\r\n--{boundary}--\r\n".encode()

    def callback(request: Any) -> tuple[int, dict[str, str], bytes]:
        ts = request.headers["Accept"].rsplit("transfer-syntax=", 1)[1]
        calls[ts] = calls.get(ts, 0) + 1
        status, body = statuses.get(ts, (200, ""))
        if status == 200:
            return 200, {"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'}, part
        return status, {"Content-Type": "application/json", "Retry-After": "0"}, body.encode()

    callback.calls = calls  # type: ignore[attr-defined]
    return callback


def test_wado_500_for_a_syntax_the_server_cannot_transcode_is_quarantined_not_retried() -> None:
    """Orthanc answers a JPEG Baseline request for a 16-bit image with a bare HTTP 500: it was retried 4 times
    per instance and counted failed (the daemon never got past it); the instance as stored is served."""
    import responses

    from copydicom.errors import InvalidInstance

    serve = _serve({JPEG_BASELINE: (500, '{"Message": "Error encountered within the plugin engine"}')})
    with responses.RequestsMock() as mock:
        mock.add_callback(responses.GET, WADO, callback=serve)
        with pytest.raises(InvalidInstance, match=f"cannot send this instance in transfer syntax {JPEG_BASELINE}"):
            with _wado_client().retrieve("studies", "1", "series", "2", "instances", "3") as parts:
                list(parts)
    assert serve.calls == {JPEG_BASELINE: 1, "*": 1}


def test_wado_refusing_the_syntax_itself_is_a_config_error_naming_the_key() -> None:
    import responses

    from copydicom.errors import ConfigError

    serve = _serve({"1.2.3.4.5": (400, '{"Details": "Unsupported transfer syntax in WADO-RS: 1.2.3.4.5"}')})
    with responses.RequestsMock() as mock:
        mock.add_callback(responses.GET, WADO, callback=serve)
        with pytest.raises(ConfigError, match=r"endpoints\.pacs\.transfer_syntax"):
            with _wado_client("1.2.3.4.5").retrieve("studies", "1", "series", "2", "instances", "3") as parts:
                list(parts)


def test_wado_500_that_is_a_real_outage_stays_retryable() -> None:
    import responses

    from copydicom.errors import SourceUnavailable

    serve = _serve({JPEG_BASELINE: (503, "{}"), "*": (503, "{}")})
    with responses.RequestsMock() as mock:
        mock.add_callback(responses.GET, WADO, callback=serve)
        with pytest.raises(SourceUnavailable, match="HTTP 503"):
            with _wado_client().retrieve("studies", "1", "series", "2", "instances", "3") as parts:
                list(parts)
    assert serve.calls[JPEG_BASELINE] == 5


# -- 7. reconcile and the console's chart on a PostgreSQL state ----------------------------------

def _ledger(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Ledger:
    if backend == "sqlite":
        return Ledger(tmp_path / "state.db")
    from copydicom.state import PostgresStore
    from tests.support.postgres import fresh_database

    server = request.getfixturevalue("postgres")
    return Ledger(PostgresStore(fresh_database(server), password=server.password))


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_reconcile_state_reads_and_writes_on_both_stores(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """reconcile refused a PostgreSQL state ("runs on the SQLite state store"): its SQL was SQLite-only."""
    from copydicom.reconcile._store import RunRecord, forget, last_runs, record_run, routed_among

    ledger = _ledger(backend, request, tmp_path)
    try:
        for i in range(3):
            ledger.record_delivered("dst", f"t{i}", f"s{i}", "r1", "stored")
        ledger.record_delivered("dst", "t9", "s9", "r2", "stored")
        ledger.record_delivered("other", "t0", "s0", "r1", "stored")
        assert routed_among(ledger, "dst", "r1", ["t0", "t1", "t9", "nope"]) == {"t0", "t1"}
        forget(ledger, "dst", ["t1", "nope"])
        assert routed_among(ledger, "dst", "r1", ["t0", "t1", "t2"]) == {"t0", "t2"}
        assert ledger.delivered_among("other", ["t0"]) == {"t0"}  # another destination keeps its row
        assert last_runs(ledger) == {}
        first = RunRecord("r1", 100.0, 2.5, 3, 2, 1, 0, 0, True)
        record_run(ledger, first)
        record_run(ledger, RunRecord("r2", 101.0, 1.0, 0, 0, 0, 0, 0, False))
        again = RunRecord("r1", 200.0, 3.0, 1, 1, 0, 1, 2, False)
        record_run(ledger, again)  # replaces the route's row
        assert last_runs(ledger) == {"r1": again, "r2": RunRecord("r2", 101.0, 1.0, 0, 0, 0, 0, 0, False)}
    finally:
        ledger.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_console_throughput_chart_on_both_stores(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """The overview's last-hour chart was empty on PostgreSQL (the console skipped it)."""
    from copydicom.console import StateBackend

    ledger = _ledger(backend, request, tmp_path)
    try:
        for i in range(5):
            ledger.record_delivered("dst", f"t{i}", f"s{i}", "r1", "stored")
        ledger.record_delivered("dst", "u0", "v0", "r2", "existing")
        ledger.flush()
        views = {v.name: v for v in StateBackend(ledger, lambda: ["r1", "r2", "r3"]).routes()}
        assert sum(views["r1"].throughput) == 5 and views["r1"].throughput[-1] == 5
        assert sum(views["r2"].throughput) == 1
        assert views["r3"].throughput == (0,) * 12
    finally:
        ledger.close()


def test_console_serve_opens_a_postgresql_state(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``console serve`` with ``state: postgresql://...`` opened a local SQLite file instead (an empty console)."""
    import os
    import signal

    import yaml

    from copydicom import console as console_pkg
    from copydicom.cli import main
    from copydicom.state import PostgresStore
    from tests.support.postgres import fresh_database

    server = request.getfixturevalue("postgres")
    url = fresh_database(server)
    store = PostgresStore(url, password=server.password)
    store.quarantine_put("r", "0a1b2c3d-4e5f6a7b-8c9d0e1f-2a3b4c5d-6e7f8a9b", "invalid", "InvalidInstance: x", None)
    store.close()
    monkeypatch.setenv("CD_LEFTOVERS_PG", server.password)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "state": {"url": url, "password": "${CD_LEFTOVERS_PG}"},
        "console": {"listen": "127.0.0.1:8399", "users_file": "users.yaml"},
    }))
    seen: list[Any] = []

    class Server:
        def __init__(self, config: Any, app: Any) -> None:
            self.app = app

        def start(self) -> None:
            seen.append(self.app.state.console.backend.quarantine())  # what the pages would show
            os.kill(os.getpid(), signal.SIGTERM)  # cmd_serve's own handler ends its wait

        def stop(self) -> None:
            pass

    monkeypatch.setattr(console_pkg, "ConsoleServer", Server)
    old = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT))
    try:
        assert main(["console", "serve", "--config", str(config)]) == 0
    finally:
        signal.signal(signal.SIGTERM, old[0])
        signal.signal(signal.SIGINT, old[1])
    items, total = seen[0]
    assert total == 1 and items[0].code == "invalid"
    assert not (tmp_path / "state-local").exists()

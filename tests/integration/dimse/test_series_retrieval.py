"""Query/retrieve source, retrieval per series: one C-GET/C-MOVE per series into a bounded spool on disk.

Against dcmtk's ``dcmqrscp``, Orthanc's DICOM port and a pynetdicom Q/R SCP that fails chosen
sub-operations (so that partial retrieval is seen: final status 0xB000 with counts).
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from pydicom import Dataset, dcmread
from pynetdicom import ALL_TRANSFER_SYNTAXES, AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
)

from copydicom.endpoints.dimse import DimseConfig
from copydicom.endpoints.dimse import qr as qr_module
from copydicom.endpoints.dimse.listener import identity_of
from copydicom.endpoints.dimse.qr import QueryRetrieveSource
from copydicom.ledger import Ledger
from copydicom.pipeline import Pipeline
from tests.integration.dimse.conftest import write_files
from tests.support.dcmtk import DcmQRSCP
from tests.support.orthanc import OrthancServer, free_port
from tests.unit.fakes import FakeDestination


def pull(source: QueryRetrieveSource, workers: int = 3) -> dict[str, bytes]:
    """What the pipeline does with a source: will_fetch per batch, then fetches in parallel."""
    got: dict[str, bytes] = {}
    with ThreadPoolExecutor(workers) as pool:
        for batch in source.batches():
            source.will_fetch(batch)
            for ref, data in zip(batch, pool.map(source.fetch, batch)):
                got[ref.source_id] = data
    return got


def series_count(files: list[Path]) -> int:
    return len({str(dcmread(f, stop_before_pixels=True).SeriesInstanceUID) for f in files})


def check_bytes(got: dict[str, bytes], files: list[Path]) -> None:
    want = {identity_of(f.read_bytes()).orthanc_id: f for f in files}
    assert set(got) == set(want)
    for key, data in got.items():
        assert dcmread(io.BytesIO(data)).PixelData == dcmread(want[key]).PixelData


@pytest.mark.parametrize("retrieve", ["get", "move"])
def test_per_series_from_dcmqrscp(tmp_path: Path, retrieve: str) -> None:
    files = write_files(tmp_path / "in", 16, seed=f"series-{retrieve}")
    move_port = free_port()
    with DcmQRSCP(folder=tmp_path / "qrscp", moves={"MOVEDEST": move_port}) as qrscp:
        qrscp.load(files)
        extra = f"&move_destination=MOVEDEST&move_port={move_port}" if retrieve == "move" else ""
        cfg = DimseConfig.from_url(f"dicom://QRSCP@127.0.0.1:{qrscp.port}?retrieve={retrieve}{extra}", name="qr")
        cfg = cfg.model_copy(update={"retrieve_spool": tmp_path / "spools"})
        source = QueryRetrieveSource(cfg, since="2020-01-01")
        try:
            got = pull(source)
            spool = source.spool_folder
            assert spool is not None and spool.parent == tmp_path / "spools"
            assert list(spool.iterdir()) == []  # each file removed once read
        finally:
            source.close()
    check_bytes(got, files)
    assert source.series_retrievals == series_count(files) and source.instance_retrievals == 0
    assert source.retried == 0
    assert not spool.exists()


def test_per_series_from_orthanc_through_the_pipeline(tmp_path: Path, dest: OrthancServer) -> None:
    files = write_files(tmp_path / "in", 12, seed="series-orthanc")
    for f in files:
        dest.upload(f.read_bytes())
    cfg = DimseConfig.from_url(f"dicom://DEST@127.0.0.1:{dest.dicom_port}?calling=COPYDICOM", name="pacs")
    source = QueryRetrieveSource(cfg, since="2020-01-01")
    sink = FakeDestination()
    ledger = Ledger(tmp_path / "state.db")
    pipeline = Pipeline("pull", source, [], [sink], ledger, quarantine_dir=tmp_path / "q", workers=3)
    try:
        summary = pipeline.run(source.batches())
    finally:
        pipeline.close()
        source.close()
        ledger.close()
    assert summary.counts["stored"] == 12, summary.line()
    assert set(sink.stored) == {identity_of(f.read_bytes()).orthanc_id for f in files}
    assert source.series_retrievals == series_count(files) and source.instance_retrievals == 0


def test_image_level_when_configured(tmp_path: Path) -> None:
    files = write_files(tmp_path / "in", 4, seed="image-level")
    with DcmQRSCP(folder=tmp_path / "qrscp") as qrscp:
        qrscp.load(files)
        cfg = DimseConfig.from_url(f"dicom://QRSCP@127.0.0.1:{qrscp.port}?retrieve_level=image", name="qr")
        source = QueryRetrieveSource(cfg, since="2020-01-01")
        try:
            got = pull(source)
        finally:
            source.close()
    check_bytes(got, files)
    assert source.series_retrievals == 0 and source.instance_retrievals == 4


def test_a_full_spool_fails_sub_operations_and_those_are_retrieved_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A spool limit below two instances: one file at a time; what finds it full (0xA702) is asked alone."""
    monkeypatch.setattr(qr_module, "SPACE_WAIT_SECONDS", 0.2)
    files = write_files(tmp_path / "in", 8, seed="full")
    size = max(len(f.read_bytes()) for f in files)
    with DcmQRSCP(folder=tmp_path / "qrscp") as qrscp:
        qrscp.load(files)
        cfg = DimseConfig.from_url(f"dicom://QRSCP@127.0.0.1:{qrscp.port}", name="qr")
        limit = size + size // 2  # room for one instance (as re-encoded by the peer), never two
        cfg = cfg.model_copy(update={"retrieve_spool_limit": limit})
        source = QueryRetrieveSource(cfg, since="2020-01-01")
        try:
            got = pull(source, workers=1)
        finally:
            source.close()
    check_bytes(got, files)
    assert 0 < source.spool_peak <= limit
    assert source.series_retrievals == series_count(files)


class ScriptedQR:
    """A pynetdicom Q/R SCP (C-FIND, C-GET) that fails the sub-operations of chosen instances.

    ``lost_in_series``: failed in a SERIES-level C-GET, sent when asked alone;
    ``lost``: failed in a SERIES-level C-GET, and asked alone answered 0xC000.
    """

    def __init__(self, files: list[Path], *, lost_in_series: set[str], lost: set[str]) -> None:
        self.datasets = [dcmread(f) for f in files]
        self.lost_in_series, self.lost = lost_in_series, lost
        self.levels: list[str] = []
        self.port = free_port()
        self.ae = AE(ae_title="SCRIPTQR")
        self.ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
        self.ae.add_supported_context(StudyRootQueryRetrieveInformationModelGet)
        self.ae.add_supported_context(CTImageStorage, ALL_TRANSFER_SYNTAXES, scu_role=True, scp_role=True)
        self._lock = threading.Lock()

    def _find(self, event: Any) -> Iterator[tuple[int, Dataset | None]]:
        level = event.identifier.QueryRetrieveLevel
        if level == "STUDY":
            seen = set()
            for ds in self.datasets:
                if ds.StudyInstanceUID not in seen:
                    seen.add(ds.StudyInstanceUID)
                    answer = Dataset()
                    answer.QueryRetrieveLevel = "STUDY"
                    answer.StudyInstanceUID, answer.StudyDate = ds.StudyInstanceUID, ds.StudyDate
                    yield 0xFF00, answer
        else:
            for ds in self.datasets:
                if ds.StudyInstanceUID == event.identifier.StudyInstanceUID:
                    answer = Dataset()
                    answer.QueryRetrieveLevel = "IMAGE"
                    for keyword in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
                                    "SOPClassUID"):
                        setattr(answer, keyword, getattr(ds, keyword))
                    yield 0xFF00, answer

    def _get(self, event: Any) -> Iterator[Any]:
        query = event.identifier
        level = query.QueryRetrieveLevel
        with self._lock:
            self.levels.append(level)
        if level == "SERIES":
            chosen = [ds for ds in self.datasets if ds.SeriesInstanceUID == query.SeriesInstanceUID]
            failing = self.lost_in_series | self.lost
        else:
            chosen = [ds for ds in self.datasets if ds.SOPInstanceUID == query.SOPInstanceUID]
            failing = self.lost
        yield len(chosen)
        if level == "IMAGE" and chosen and chosen[0].SOPInstanceUID in self.lost:
            yield 0xC000, None  # "unable to process" (PS3.4 C.4.3.1.4): this instance cannot be had
            return
        for ds in chosen:
            # A non-dataset counts as a failed sub-operation (pynetdicom's C-GET SCP).
            yield (0xFF00, "unavailable") if ds.SOPInstanceUID in failing else (0xFF00, ds)

    def __enter__(self) -> ScriptedQR:
        self.ae.start_server(("127.0.0.1", self.port), block=False,
                             evt_handlers=[(evt.EVT_C_FIND, self._find), (evt.EVT_C_GET, self._get)])
        return self

    def __exit__(self, *exc: object) -> None:
        self.ae.shutdown()


def test_partial_series_retrieval_retries_the_missing_and_quarantines_what_never_comes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = write_files(tmp_path / "in", 12, seed="partial")  # 4 series of 3
    series = [str(dcmread(f, stop_before_pixels=True).SeriesInstanceUID) for f in files]
    # Both lost instances in the same series of at least 3 (one series retrieval, 2 failed sub-operations).
    (target,) = [s for s in dict.fromkeys(series) if series.count(s) >= 3][:1]
    picked = [f for f, s in zip(files, series) if s == target]
    uids = [str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in picked]
    with ScriptedQR(files, lost_in_series={uids[0]}, lost={uids[1]}) as peer:
        cfg = DimseConfig.from_url(f"dicom://SCRIPTQR@127.0.0.1:{peer.port}", name="scripted")
        source = QueryRetrieveSource(cfg, since="2000-01-01")
        sink = FakeDestination()
        ledger = Ledger(tmp_path / "state.db")
        pipeline = Pipeline("pull", source, [], [sink], ledger, quarantine_dir=tmp_path / "q", workers=2)
        try:
            with caplog.at_level(logging.WARNING, logger="copydicom.endpoints.dimse.qr"):
                summary = pipeline.run(source.batches())
        finally:
            pipeline.close()
            source.close()
            ledger.close()
    assert summary.counts["stored"] == 11 and summary.counts["quarantined"] == 1, summary.line()
    lost_id = identity_of(picked[1].read_bytes()).orthanc_id
    assert lost_id not in sink.stored and len(sink.stored) == 11
    assert source.series_retrievals == series_count(files) and source.retried == 2
    assert peer.levels.count("IMAGE") == 2
    warned = [r.getMessage() for r in caplog.records if "series retrieval" in r.getMessage()]
    assert any("status 0xB000" in m and "failed 2" in m and f"2 of {len(picked)} planned instances missing" in m
               for m in warned), warned

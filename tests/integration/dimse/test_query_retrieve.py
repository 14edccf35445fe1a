"""Query/retrieve source against Orthanc's DICOM port: C-FIND by study date (halved when refused), C-GET."""

from __future__ import annotations

from pathlib import Path

from pydicom import dcmread

from copydicom.endpoints.dimse import DimseConfig
from copydicom.endpoints.dimse.listener import identity_of
from copydicom.endpoints.dimse.qr import QueryRetrieveSource
from copydicom.ledger import Ledger
from copydicom.pipeline import Pipeline
from tests.integration.dimse.conftest import write_files
from tests.support.orthanc import OrthancServer
from tests.unit.fakes import FakeDestination


def test_lists_by_date_and_retrieves_bytes_as_stored(tmp_path: Path, dest: OrthancServer) -> None:
    files = write_files(tmp_path / "in", 24)  # 24 instances, 4 per series: 6 series in a few studies
    for f in files:
        dest.upload(f.read_bytes())
    by_id = {identity_of(f.read_bytes()).orthanc_id: f for f in files}
    dates = sorted({str(dcmread(f, stop_before_pixels=True).StudyDate) for f in files})
    first = f"{dates[0][:4]}-{dates[0][4:6]}-{dates[0][6:]}"
    cfg = DimseConfig.from_url(f"dicom://DEST@127.0.0.1:{dest.dicom_port}?calling=COPYDICOM", name="pacs")
    # find_limit=1: every range answered with more than one study is halved down to single days.
    source = QueryRetrieveSource(cfg, since=first, until="2025-12-31", find_limit=1)
    sink = FakeDestination()
    ledger = Ledger(tmp_path / "state.db")
    pipeline = Pipeline("pull", source, [], [sink], ledger, quarantine_dir=tmp_path / "q", workers=2)
    try:
        summary = pipeline.run(source.batches())
    finally:
        pipeline.close()
        source.close()
        ledger.close()
    assert summary.counts["stored"] == 24, summary.line()
    assert set(sink.stored) == set(by_id)
    assert source.splits > 0  # the range was asked by halves


def test_fetch_returns_the_stored_file(tmp_path: Path, dest: OrthancServer) -> None:
    (f,) = write_files(tmp_path / "in", 1, seed="one")
    dest.upload(f.read_bytes())
    date = str(dcmread(f, stop_before_pixels=True).StudyDate)
    day = f"{date[:4]}-{date[4:6]}-{date[6:]}"
    cfg = DimseConfig.from_url(f"dicom://DEST@127.0.0.1:{dest.dicom_port}?calling=COPYDICOM", name="pacs")
    source = QueryRetrieveSource(cfg, since=day, until=day)
    try:
        (batch,) = list(source.batches())
        (ref,) = batch
        data = source.fetch(ref)
    finally:
        source.close()
    got, sent = dcmread(__import__("io").BytesIO(data)), dcmread(f)
    assert got.SOPInstanceUID == sent.SOPInstanceUID and got.PixelData == sent.PixelData
    assert ref.source_id == identity_of(f.read_bytes()).orthanc_id


def test_pull_from_dcmqrscp(tmp_path: Path) -> None:
    from tests.support.dcmtk import DcmQRSCP

    files = write_files(tmp_path / "in", 8, seed="qrscp")
    with DcmQRSCP(folder=tmp_path / "qrscp") as qrscp:
        qrscp.load(files)
        cfg = DimseConfig.from_url(f"dicom://QRSCP@127.0.0.1:{qrscp.port}", name="qrscp")
        source = QueryRetrieveSource(cfg, since="2020-01-01")
        try:
            refs = [ref for batch in source.batches() for ref in batch]
            got = {ref.source_id: source.fetch(ref) for ref in refs}
        finally:
            source.close()
    want = {identity_of(f.read_bytes()).orthanc_id: f for f in files}
    assert set(got) == set(want)
    for key, data in got.items():
        assert dcmread(__import__("io").BytesIO(data)).PixelData == dcmread(want[key]).PixelData


def _pull_all(source: QueryRetrieveSource) -> dict[str, bytes]:
    try:
        refs = [ref for batch in source.batches() for ref in batch]
        return {ref.source_id: source.fetch(ref) for ref in refs}
    finally:
        source.close()


def test_cmove_from_dcmqrscp_and_orthanc(tmp_path: Path) -> None:
    from tests.support.dcmtk import DcmQRSCP
    from tests.support.orthanc import free_port

    files = write_files(tmp_path / "in", 6, seed="cmove")
    want = {identity_of(f.read_bytes()).orthanc_id: f for f in files}
    move_port = free_port()
    with DcmQRSCP(folder=tmp_path / "qrscp", moves={"MOVEDEST": move_port}) as qrscp:
        qrscp.load(files)
        cfg = DimseConfig.from_url(f"dicom://QRSCP@127.0.0.1:{qrscp.port}?retrieve=move&move_destination=MOVEDEST"
                                   f"&move_port={move_port}", name="qrscp")
        got = _pull_all(QueryRetrieveSource(cfg, since="2020-01-01"))
    assert set(got) == set(want)
    orthanc = OrthancServer(name="PACS", workdir=tmp_path / "pacs",
                            modalities={"copydicom": ("COPYDICOM", "127.0.0.1", 104),
                                        "mover": ("MOVEDEST", "127.0.0.1", move_port)})
    orthanc.start()
    try:
        for f in files:
            orthanc.upload(f.read_bytes())
        cfg = DimseConfig.from_url(f"dicom://PACS@127.0.0.1:{orthanc.dicom_port}?retrieve=move"
                                   f"&move_destination=MOVEDEST&move_port={move_port}", name="pacs")
        got = _pull_all(QueryRetrieveSource(cfg, since="2020-01-01"))
    finally:
        orthanc.cleanup()
    assert set(got) == set(want)
    for key, data in got.items():
        assert dcmread(__import__("io").BytesIO(data)).PixelData == dcmread(want[key]).PixelData

"""DICOMweb source and destination against real Orthanc servers with the DICOMweb plugin."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable
from pathlib import Path

import pytest
import requests

from copydicom.clients.orthanc import OrthancClient, OrthancConfig
from copydicom.endpoints.dicomweb import DicomwebConfig
from copydicom.endpoints.dicomweb._client import DicomwebClient
from copydicom.endpoints.dicomweb._destination import StowDestination
from copydicom.endpoints.dicomweb._source import DicomwebSource, QidoPoller
from copydicom.ledger import Ledger
from copydicom.model import Destination, Stage
from copydicom.pipeline import Pipeline, Summary
from copydicom.sinks.orthanc import OrthancDestination
from copydicom.sources.folder import FolderSource
from copydicom.sources.orthanc import OrthancSource
from copydicom.stages.filter_attrs import orthanc_describer
from copydicom.stages.filters import parse_cli_filters, parse_filter
from tests.support.orthanc import OrthancServer
from tests.support.synthetic import ct_dataset, ct_study_files, to_bytes, upload_all

pytestmark = pytest.mark.integration


def dw_source(server: OrthancServer, **options: object) -> DicomwebSource:
    cfg = DicomwebConfig.from_url(server.dicomweb_url, name="dwsrc")
    if options:
        cfg = cfg.model_copy(update=options)
    return DicomwebSource(DicomwebClient(cfg, side="source"))


def dw_dest(server: OrthancServer, workers: int = 4) -> StowDestination:
    cfg = DicomwebConfig.from_url(server.dicomweb_url, name="dwdst")
    return StowDestination(DicomwebClient(cfg, side="destination"), concurrency=workers)


def load(server: OrthancServer, n: int, *, seed: str = "dw", series: int = 3) -> None:
    upload_all(lambda data: server.upload(data), ct_study_files(n, series_per_study=series, rows=16, cols=16,
                                                                 seed=seed))
    assert server.statistics()["CountInstances"] == n


def digests(server: OrthancServer) -> dict[str, str]:
    """Orthanc ID -> SHA-256 of the stored file, for every instance."""
    out = {}
    for iid in server.instance_ids():
        reply = requests.get(f"{server.url}/instances/{iid}/file", auth=server.auth, timeout=30)
        reply.raise_for_status()
        out[iid] = hashlib.sha256(reply.content).hexdigest()
    return out


def run(source: object, dest: Destination, state: Path, tmp_path: Path, *, batches: Iterable[list] | None = None,
        stages: list[Stage] | None = None, **kwargs: object) -> Summary:
    ledger = Ledger(state)
    pipeline = Pipeline("dw", source, stages or [], [dest], ledger, quarantine_dir=tmp_path / "q",  # type: ignore[arg-type]
                        workers=4, **kwargs)  # type: ignore[arg-type]
    try:
        return pipeline.run(batches if batches is not None else source.batches())  # type: ignore[attr-defined]
    finally:
        pipeline.close()
        ledger.close()


def counts(summary: Summary) -> dict[str, int]:
    return {k: v for k, v in summary.counts.items() if v}


@pytest.mark.parametrize("retrieve", ["series", "instance"])
def test_dicomweb_to_dicomweb_bytes_identical_and_rerun_sends_nothing(
    dw: tuple[OrthancServer, OrthancServer], state: Path, tmp_path: Path, retrieve: str
) -> None:
    src, dst = dw
    load(src, 24)
    source = dw_source(src, retrieve=retrieve)
    dest = dw_dest(dst)
    assert counts(run(source, dest, state, tmp_path)) == {"stored": 24}
    assert digests(dst) == digests(src)  # never re-encoded (transfer-syntax=*)
    assert source.client.counters["wado"] == (3 if retrieve == "series" else 24)
    stows = dest.client.counters["stow"]
    assert stows < 24  # several instances per STOW-RS request
    # Same ledger, then a fresh ledger: the destination is asked by QIDO-RS; nothing is fetched or sent.
    assert counts(run(source, dest, state, tmp_path)) == {"existing": 24}
    assert counts(run(source, dest, tmp_path / "fresh.db", tmp_path)) == {"existing": 24}
    assert dest.client.counters["stow"] == stows
    assert source.client.counters["wado"] == (3 if retrieve == "series" else 24)
    source.close()
    dest.close()


def test_dicomweb_to_orthanc_rest_and_rerun(dw: tuple[OrthancServer, OrthancServer], state: Path,
                                            tmp_path: Path) -> None:
    src, dst = dw
    load(src, 15)
    source = dw_source(src)
    dest = OrthancDestination(OrthancConfig.from_url(dst.url_with_credentials, name="rest"), pool_size=6)
    assert counts(run(source, dest, state, tmp_path)) == {"stored": 15}
    assert digests(dst) == digests(src)
    wado = source.client.counters["wado"]
    # source IDs are Orthanc IDs of the QIDO identity: the Orthanc destination answers per series
    assert counts(run(source, dest, tmp_path / "fresh.db", tmp_path)) == {"existing": 15}
    assert source.client.counters["wado"] == wado
    source.close()
    dest.close()


def test_orthanc_rest_to_dicomweb_and_rerun(dw: tuple[OrthancServer, OrthancServer], state: Path,
                                            tmp_path: Path) -> None:
    src, dst = dw
    load(src, 15)
    client = OrthancClient(OrthancConfig.from_url(src.url_with_credentials, name="rest"), side="source")
    source = OrthancSource(client, want_identity=True)  # dicomweb is registered by_identity
    dest = dw_dest(dst)
    assert counts(run(source, dest, state, tmp_path, batches=source.all_instances())) == {"stored": 15}
    assert digests(dst) == digests(src)
    stows = dest.client.counters["stow"]
    assert counts(run(source, dest, tmp_path / "fresh.db", tmp_path, batches=source.all_instances())) == {
        "existing": 15}
    assert dest.client.counters["stow"] == stows
    client.close()
    dest.close()


def test_stow_failure_quarantines_exactly_that_instance(dw: tuple[OrthancServer, OrthancServer], state: Path,
                                                       tmp_path: Path) -> None:
    """Orthanc's STOW-RS answers 400 with the bad instance in the Failed SOP Sequence (Failure Reason C000H)."""
    _, dst = dw
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(7):
        ds = ct_dataset(0, 0, 0, i, rows=8, cols=8, seed="stowfail")
        if i == 3:
            del ds.SeriesInstanceUID  # readable DICOM that the server refuses
        (folder / f"{i}.dcm").write_bytes(to_bytes(ds))
    dest = dw_dest(dst)
    summary = run(FolderSource(folder), dest, state, tmp_path)
    assert counts(summary) == {"stored": 6, "quarantined": 1}
    assert dst.statistics()["CountInstances"] == 6
    ledger = Ledger(state)
    try:
        rows = ledger.quarantined("dw")
    finally:
        ledger.close()
    assert len(rows) == 1 and rows[0].source_id.endswith("3.dcm")
    assert "cannot understand (C000H)" in rows[0].reason
    dest.close()


def test_qido_poller_picks_up_a_study_uploaded_after_it_started(
    dw: tuple[OrthancServer, OrthancServer], state: Path, tmp_path: Path
) -> None:
    src, dst = dw
    today = dt.date.today().strftime("%Y%m%d")
    load(src, 6, seed="old")  # StudyDate 2025-01-01: outside a 2h window
    source = dw_source(src)
    dest = dw_dest(dst)
    ledger = Ledger(state)
    pipeline = Pipeline("poll", source, [], [dest], ledger, quarantine_dir=tmp_path / "q", workers=2)
    poller = source.runner("poll", pipeline, ledger)
    assert isinstance(poller, QidoPoller)
    try:
        assert counts(poller.poll()) == {}
        for i in range(5):
            ds = ct_dataset(7, 7, 0, i, rows=8, cols=8, seed="new")
            ds.StudyDate = today
            src.upload(to_bytes(ds))
        assert counts(poller.poll()) == {"stored": 5}
        assert counts(poller.poll()) == {"existing": 5}  # the window still covers it: dedupe
        assert dst.statistics()["CountInstances"] == 5
    finally:
        pipeline.close()
        ledger.close()
        source.close()
        dest.close()


def test_filters_on_a_dicomweb_source_decide_before_download(
    dw: tuple[OrthancServer, OrthancServer], state: Path, tmp_path: Path
) -> None:
    src, dst = dw
    for i in range(4):
        ds = ct_dataset(1, 1, 0, i, rows=8, cols=8, seed="flt")
        src.upload(to_bytes(ds))
    for i in range(3):
        ds = ct_dataset(1, 1, 1, i, rows=8, cols=8, seed="flt")
        ds.Modality = "MR"
        ds.SeriesDescription = "Localizer"
        src.upload(to_bytes(ds))
    flt = parse_cli_filters(["Modality=CT,SR", "SeriesDescription!=*localizer*"])
    assert flt is not None
    cfg = DicomwebConfig.from_url(src.dicomweb_url, name="dwsrc").model_copy(update={"retrieve": "instance"})
    source = DicomwebSource(DicomwebClient(cfg), include=flt.keywords)
    summary = run(source, dw_dest(dst), state, tmp_path, route_filter=flt)
    assert counts(summary) == {"stored": 4, "filtered": 3}
    assert source.client.counters["wado"] == 4  # the MR series was never downloaded
    assert "filtered=3" in summary.line()
    source.close()


def test_filters_on_an_orthanc_source_use_main_tags_then_the_dataset(
    dw: tuple[OrthancServer, OrthancServer], state: Path, tmp_path: Path
) -> None:
    src, dst = dw
    for i in range(4):
        ds = ct_dataset(2, 1, 0, i, rows=8, cols=8, seed="flt2")
        if i == 0:
            ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        src.upload(to_bytes(ds))
    for i in range(2):
        ds = ct_dataset(2, 1, 1, i, rows=8, cols=8, seed="flt2")
        ds.Modality = "MR"
        src.upload(to_bytes(ds))
    flt = parse_filter({"all": [{"Modality": "CT"}, {"not": {"ImageType": "*LOCALIZER*"}}]})
    client = OrthancClient(OrthancConfig.from_url(src.url_with_credentials, name="rest"), side="source")
    source = OrthancSource(client, want_identity=True)
    fetched: list[str] = []
    original = source.fetch

    def counting_fetch(ref):  # type: ignore[no-untyped-def]
        fetched.append(ref.source_id)
        return original(ref)

    source.fetch = counting_fetch  # type: ignore[method-assign]
    summary = run(source, dw_dest(dst), state, tmp_path, batches=source.all_instances(), route_filter=flt,
                  describe=orthanc_describer(source, keywords=flt.keywords))
    assert counts(summary) == {"stored": 3, "filtered": 3}
    assert len(fetched) == 4  # the MR series was decided on Orthanc's main tags; the CT ones on the dataset
    assert dst.statistics()["CountInstances"] == 3
    client.close()


def test_index_feed_from_metadata_downloads_no_pixels(dw: tuple[OrthancServer, OrthancServer], state: Path,
                                                      tmp_path: Path) -> None:
    from copydicom.app import make_index_destination
    from copydicom.sinks.sqlite_index import SqliteIndexConfig
    from copydicom.stages.index_docs import IndexDocumentsStage

    src, _ = dw
    load(src, 9)
    cfg = DicomwebConfig.from_url(src.dicomweb_url + "?mode=metadata", name="dwsrc")
    source = DicomwebSource(DicomwebClient(cfg))
    index_cfg = SqliteIndexConfig("idx", tmp_path / "index.db")
    dest = make_index_destination(index_cfg, state=state, background=False)
    summary = run(source, dest, state, tmp_path, stages=[IndexDocumentsStage("dw", deidentified=False)])
    assert counts(summary) == {"stored": 9}
    assert "wado" not in source.client.counters  # no instance retrieved
    assert source.client.counters["metadata"] == 3  # one /metadata per series
    dest.close()
    import sqlite3

    db = sqlite3.connect(tmp_path / "index.db")
    try:
        (n,) = db.execute("SELECT count(*) FROM instances").fetchone()
        assert n == 9
    finally:
        db.close()
    source.close()


def test_deidentifying_dicomweb_route_dedupes_on_the_predicted_identity(
    dw: tuple[OrthancServer, OrthancServer], state: Path, tmp_path: Path
) -> None:
    import os

    from copydicom.app import make_stages
    from copydicom.stages.deid import DeidProfile

    src, dst = dw
    load(src, 12)
    key = tmp_path / "deid.key"
    key.write_bytes(os.urandom(32).hex().encode())
    key.chmod(0o600)
    stages = make_stages(DeidProfile.default(), state=state, key_file=str(key))
    source = dw_source(src)
    dest = dw_dest(dst)
    assert counts(run(source, dest, state, tmp_path, stages=stages)) == {"stored": 12}
    src_study = src.get(f"/studies/{src.get('/studies')[0]}")["MainDicomTags"]["StudyInstanceUID"]
    dst_study = dst.get(f"/studies/{dst.get('/studies')[0]}")["MainDicomTags"]["StudyInstanceUID"]
    assert src_study != dst_study
    stows = dest.client.counters["stow"]
    stages = make_stages(DeidProfile.default(), state=state, key_file=str(key))
    assert counts(run(source, dest, tmp_path / "fresh.db", tmp_path, stages=stages)) == {"existing": 12}
    assert dest.client.counters["stow"] == stows
    source.close()
    dest.close()


def test_a_top_up_of_a_few_instances_does_not_download_the_whole_series(
    dw: tuple[OrthancServer, OrthancServer], state: Path, tmp_path: Path
) -> None:
    src, dst = dw
    load(src, 12, series=1)
    source = dw_source(src)
    dest = dw_dest(dst)
    assert counts(run(source, dest, state, tmp_path)) == {"stored": 12}
    assert source.client.counters["wado"] == 1  # the whole series in one request
    for iid in dst.instance_ids()[:2]:
        requests.delete(f"{dst.url}/instances/{iid}", auth=dst.auth, timeout=30).raise_for_status()
    assert counts(run(source, dest, tmp_path / "fresh.db", tmp_path)) == {"stored": 2, "existing": 10}
    assert source.client.counters["wado"] == 1 + 2  # two single-instance requests, not the series again
    assert digests(dst) == digests(src)
    source.close()
    dest.close()

"""Filters on the other source kinds: a folder (decided on the parsed header) and Orthanc's changes feed
(filtered instances let the checkpoint pass)."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from copydicom.clients.orthanc import OrthancClient, OrthancConfig
from copydicom.ledger import Ledger
from copydicom.pipeline import Pipeline
from copydicom.runner import ChangesRunner
from copydicom.sinks.orthanc import OrthancDestination
from copydicom.sources.folder import FolderSource
from copydicom.sources.orthanc import OrthancSource
from copydicom.stages.filter_attrs import orthanc_describer
from copydicom.stages.filters import parse_cli_filters, parse_filter
from tests.support.orthanc import OrthancServer
from tests.support.synthetic import ct_dataset, to_bytes

pytestmark = pytest.mark.integration


def test_folder_source_filter_on_the_parsed_header(dw: tuple[OrthancServer, OrthancServer], tmp_path: Path) -> None:
    _, dst = dw
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(6):
        ds = ct_dataset(4, 0, 0, i, rows=8, cols=8, seed="folder")
        ds.StudyDate = "20240615" if i < 4 else "20230101"
        (folder / f"{i}.dcm").write_bytes(to_bytes(ds))
    flt = parse_cli_filters(["StudyDate=20240101-20241231"])
    dest = OrthancDestination(OrthancConfig.from_url(dst.url_with_credentials, name="dst"), pool_size=4)
    ledger = Ledger(tmp_path / "state.db")
    pipeline = Pipeline("folder", FolderSource(folder), [], [dest], ledger, quarantine_dir=tmp_path / "q",
                        workers=2, route_filter=flt)
    try:
        summary = pipeline.run(FolderSource(folder).batches())
    finally:
        pipeline.close()
        ledger.close()
        dest.close()
    assert (summary.counts["stored"], summary.counts["filtered"]) == (4, 2)
    assert dst.statistics()["CountInstances"] == 4


def test_changes_feed_checkpoint_passes_filtered_instances(dw: tuple[OrthancServer, OrthancServer],
                                                           tmp_path: Path) -> None:
    src, dst = dw
    last_before = int(requests.get(src.url + "/changes", params={"last": ""}, auth=src.auth, timeout=10).json()["Last"])
    for i in range(3):
        src.upload(to_bytes(ct_dataset(5, 0, 0, i, rows=8, cols=8, seed="feed")))
    for i in range(2):
        ds = ct_dataset(5, 0, 1, i, rows=8, cols=8, seed="feed")
        ds.Modality = "MR"
        src.upload(to_bytes(ds))
    client = OrthancClient(OrthancConfig.from_url(src.url_with_credentials, name="src"), side="source")
    source = OrthancSource(client)
    flt = parse_filter({"Modality": "CT"})
    dest = OrthancDestination(OrthancConfig.from_url(dst.url_with_credentials, name="dst"), pool_size=4)
    ledger = Ledger(tmp_path / "state.db")
    ledger.advance_checkpoint("feed", last_before)
    pipeline = Pipeline("feed", source, [], [dest], ledger, quarantine_dir=tmp_path / "q", workers=2,
                        route_filter=flt, describe=orthanc_describer(source, keywords=flt.keywords))
    runner = ChangesRunner("feed", source, pipeline, ledger)
    try:
        summary = runner.poll()
        last = int(requests.get(src.url + "/changes", params={"last": ""}, auth=src.auth, timeout=10).json()["Last"])
        checkpoint = ledger.checkpoint("feed")
    finally:
        pipeline.close()
        ledger.close()
        dest.close()
        client.close()
    assert (summary.counts["stored"], summary.counts["filtered"]) == (3, 2)
    assert checkpoint == last  # the MR instances were filtered, not left pending
    assert dst.statistics()["CountInstances"] == 3

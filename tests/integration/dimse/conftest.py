"""Fixtures for DIMSE integration tests: an Orthanc destination with its DICOM port, synthetic files."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.orthanc import OrthancServer
from tests.support.synthetic import ct_study_files


@pytest.fixture(scope="module")
def dest_orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    """An Orthanc that overwrites re-sent instances (so a second send shows as a second NewInstance change)."""
    # COPYDICOM is a known modality: Orthanc answers C-FIND only to those.
    server = OrthancServer(name="DEST", workdir=tmp_path_factory.mktemp("dest"), extra={"OverwriteInstances": True},
                           modalities={"copydicom": ("COPYDICOM", "127.0.0.1", 104)})
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def dest(dest_orthanc: OrthancServer) -> OrthancServer:
    if dest_orthanc.process is None:
        dest_orthanc.start()
    dest_orthanc.clear()
    return dest_orthanc


def write_files(folder: Path, n: int, *, seed: str = "dimse", rows: int = 32) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, data in enumerate(ct_study_files(n, series_per_study=4, rows=rows, cols=rows, seed=seed)):
        path = folder / f"{i:05d}.dcm"
        path.write_bytes(data)
        paths.append(path)
    return paths


def wait_until(condition: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
    """Poll ``condition`` until it holds (a deadline only to fail a hung test, not a speed check)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def new_instance_changes(server: OrthancServer) -> int:
    count, since = 0, 0
    while True:
        page = server.get("/changes", params={"since": since, "limit": 1000})
        count += sum(1 for c in page["Changes"] if c["ChangeType"] == "NewInstance")
        if page["Done"]:
            return count
        since = page["Last"]

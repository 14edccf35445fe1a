"""Two private Orthanc servers with the DICOMweb plugin (Debian package orthanc-dicomweb)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.orthanc import OrthancServer


@pytest.fixture(scope="session")
def dicomweb_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[OrthancServer, OrthancServer]]:
    base = tmp_path_factory.mktemp("dicomweb")
    source = OrthancServer(name="DWSOURCE", workdir=base / "source", dicomweb=True)
    dest = OrthancServer(name="DWDEST", workdir=base / "dest", dicomweb=True)
    source.start()
    try:
        dest.start()
    except BaseException:
        source.stop()
        raise
    try:
        yield source, dest
    finally:
        dest.stop()
        source.stop()


@pytest.fixture
def dw(dicomweb_pair: tuple[OrthancServer, OrthancServer]) -> tuple[OrthancServer, OrthancServer]:
    """Both servers, emptied before the test."""
    for server in dicomweb_pair:
        if server.process is None:
            server.start()
        server.clear()
    return dicomweb_pair


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state.db"

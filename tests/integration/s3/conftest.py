"""Fixtures: one private SeaweedFS S3 server per test session, a fresh bucket per test, its credentials in
the environment (``aws_env``)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from tests.support.seaweedfs import SeaweedFSServer

_counter = itertools.count()


@pytest.fixture(scope="session")
def seaweedfs() -> Iterator[SeaweedFSServer]:
    """A running SeaweedFS (master, volume, filer, S3 with signature checks) on loopback."""
    server = SeaweedFSServer().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def bucket(seaweedfs: SeaweedFSServer) -> str:
    """A new, empty bucket on the session's SeaweedFS."""
    return seaweedfs.create_bucket(f"copydicom-test-{next(_counter)}")


@pytest.fixture
def aws_env(seaweedfs: SeaweedFSServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The session server's credentials in ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweedfs.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweedfs.secret_key)

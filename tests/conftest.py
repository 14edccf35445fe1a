"""Fixtures shared by every test folder: one private PostgreSQL server per session, started on first use.

Only the tests that ask for ``postgres`` (the store-interface tests' PostgreSQL backend, the
daemon's ledger-semantics tests, the cluster tests) start it; the rest of the suite never does.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.postgres import PostgresServer


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.cleanup()

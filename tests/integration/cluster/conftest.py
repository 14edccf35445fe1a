"""The cluster tests use the session's private PostgreSQL (``postgres``, tests/conftest.py) and RabbitMQ."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.rabbitmq import RabbitServer


@pytest.fixture(scope="session")
def rabbit() -> Iterator[RabbitServer]:
    server = RabbitServer()
    server.start()
    try:
        yield server
    finally:
        server.cleanup()

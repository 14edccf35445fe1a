"""Fixtures of the fault suite: the integration fixtures, a figures report, de-identifying configs.

Figures (kills, re-sends, recovery seconds...) are recorded with
:func:`figure` and printed in the terminal summary of every run, whatever the
``-r``/``-s`` options, so CI logs show them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.orthanc import OrthancServer
from tests.integration.conftest import REPO_ROOT, daemon, orthanc_pair, servers  # noqa: F401

FIGURES: list[str] = []

#: The daemons of the fault suite run on a backoff clock ten times faster than production
#: (copydicom.retry.TIME_SCALE): the tests wait for recoveries, not for retry sleeps.  The scenario
#: durations (a 30 s outage) stay in real seconds, so an outage spans ten times more backoff steps.
TIME_SCALE = "0.1"


@pytest.fixture
def daemon_env(servers: tuple[OrthancServer, OrthancServer]) -> dict[str, str]:  # noqa: F811
    """The integration suite's daemon environment, with the injected backoff clock."""
    source, dest = servers
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["CD_TEST_SRC_PW"] = source.password
    env["CD_TEST_DST_PW"] = dest.password
    env["COPYDICOM_TEST_TIME_SCALE"] = TIME_SCALE
    return env


def figure(test: str, **values: Any) -> None:
    """Record one line of figures for the end-of-run report (and print it for ``-s``)."""
    line = f"{test}: " + " ".join(f"{k}={v}" for k, v in values.items())
    FIGURES.append(line)
    print(line)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if FIGURES:
        terminalreporter.section("fault suite figures")
        for line in FIGURES:
            terminalreporter.write_line(line)


@pytest.fixture
def deid_key(tmp_path: Path) -> Path:
    path = tmp_path / "deid.key"
    path.write_bytes(os.urandom(32).hex().encode())
    path.chmod(0o600)
    return path


def route_config(
    tmp_path: Path,
    source: OrthancServer,
    dest: OrthancServer | None,
    *,
    key: Path | None = None,
    poll_seconds: float = 0.5,
    workers: int = 4,
    dest_retries: int = 1,
    route: str = "copy",
    indexes: dict[str, dict[str, Any]] | None = None,
    state: Path | None = None,
    extra_source: dict[str, Any] | None = None,
) -> Path:
    """A daemon configuration: one changes route, optionally de-identifying, optionally indexing."""
    endpoints: dict[str, Any] = {
        "src": {"type": "orthanc", "url": source.url, "user": source.user, "password": "${CD_TEST_SRC_PW}",
                **(extra_source or {})},
    }
    body: dict[str, Any] = {
        "name": route, "source": "src", "trigger": {"changes": {"poll_seconds": poll_seconds}},
        "destinations": [],
    }
    if dest is not None:
        endpoints["dst"] = {
            "type": "orthanc", "url": dest.url, "user": dest.user, "password": "${CD_TEST_DST_PW}",
            "retries": dest_retries,
        }
        body["destinations"] = ["dst"]
    data: dict[str, Any] = {
        "state": str(state or tmp_path / "state.db"),
        "quarantine_dir": str(tmp_path / "quarantine"),
        "workers": workers,
        "endpoints": endpoints,
        "routes": [body],
    }
    if key is not None:
        data["profiles"] = {"research": {"key_file": str(key)}}
        body["profile"] = "research"
    for name, index in (indexes or {}).items():
        endpoints[name] = index
        body.setdefault("indexes", []).append(name)
    path = tmp_path / "copydicom.yaml"
    path.write_text(yaml.safe_dump(data))
    return path

"""Route keys ``on_changed_instance`` and ``index_source_ids``: defaults and errors naming the key."""

from __future__ import annotations

from typing import Any

import pytest

from copydicom.config import parse_config
from copydicom.errors import ConfigError


def _config(**route: Any) -> Any:
    return parse_config({
        "state": "/tmp/copydicom-test-state.db",
        "endpoints": {"src": {"type": "orthanc", "url": "http://127.0.0.1:9"},
                      "dst": {"type": "orthanc", "url": "http://127.0.0.1:10"}},
        "routes": [{"name": "r", "source": "src", "destinations": ["dst"], **route}],
    })


def test_defaults_are_closed() -> None:
    route = _config().routes[0]
    assert (route.on_changed_instance, route.index_source_ids) == ("report", False)
    route = _config(on_changed_instance="resend", index_source_ids=True).routes[0]
    assert (route.on_changed_instance, route.index_source_ids) == ("resend", True)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("on_changed_instance", "overwrite", r"routes\[0\]\.on_changed_instance: one of report, resend"),
    ("index_source_ids", "yes", r"routes\[0\]\.index_source_ids: true or false"),
])
def test_invalid_values_name_the_key(key: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _config(**{key: value})

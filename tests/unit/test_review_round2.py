"""Regressions found by the round-2 hostile review (one test per finding)."""

from __future__ import annotations

import pytest

from copydicom.endpoints.dicomweb._config import DicomwebConfig
from copydicom.errors import ConfigError


@pytest.mark.parametrize(
    "url",
    ["dicomweb+http://u:p@127.0.0.1:99999/dicom-web", "dicomweb+http://127.0.0.1:0x1/dicom-web"],
)
def test_dicomweb_url_with_bad_port_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match="port"):
        DicomwebConfig.from_url(url)


def test_dicomweb_yaml_url_with_bad_port_is_a_config_error() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="port must be a number"):
        DicomwebConfig.model_validate({"name": "x", "url": "http://127.0.0.1:99999/dicom-web"})

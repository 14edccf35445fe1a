"""Regressions found by the round-2 hostile review (one test per finding)."""

from __future__ import annotations

import pytest
import responses

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


@pytest.mark.parametrize(
    "url",
    [
        "es+http://u:s3cret@127.0.0.1:99999/idx",
        "splunk+http://u:s3cret@127.0.0.1:99999?hec=http://127.0.0.1:8088&hec_token=tok",
    ],
)
def test_index_url_with_bad_port_is_a_config_error(url: str) -> None:
    from copydicom.app import endpoint_from_url

    with pytest.raises(ConfigError, match="Port out of range") as info:
        endpoint_from_url(url)
    assert "s3cret" not in str(info.value)


@responses.activate
def test_qido_404_on_a_top_level_search_is_a_wrong_url_not_an_empty_archive() -> None:
    """A typo in the base URL (``/dicomweb`` for ``/dicom-web``) used to read as "nothing to copy", exit 0."""
    from copydicom.endpoints.dicomweb._client import DicomwebClient

    cfg = DicomwebConfig.from_url("dicomweb+http://u:p@dw.test/nope", name="dw").model_copy(update={"retries": 0})
    responses.get("http://dw.test/nope/studies", status=404)
    with pytest.raises(ConfigError, match="not the base of a DICOMweb service"):
        list(DicomwebClient(cfg, side="source").qido(("studies",)))
    responses.get("http://dw.test/nope/studies/9/series", status=404)
    assert list(DicomwebClient(cfg, side="source").qido(("studies", "9", "series"))) == []

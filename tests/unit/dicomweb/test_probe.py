"""The DICOMweb probe: a wrong base URL is told from a right one before any work (notes/probes.md).

The fake server is :mod:`responses`; the replies are the ones Orthanc 1.10.1 and its DICOMweb plugin
give (measured, see the integration test ``tests/integration/dicomweb/test_probes.py``).
"""

from __future__ import annotations

import logging

import pytest
import responses

from copydicom.endpoints.dicomweb import DicomwebConfig, check_url, make_destination, probe
from copydicom.errors import ConfigError, DestinationUnavailable
from copydicom.registry import BuildContext

BASE = "http://dw.test/dicom-web"
SECRET = "s3cr3t-pw"


def _cfg(base: str = BASE) -> DicomwebConfig:
    return DicomwebConfig.from_url(base.replace("http://", f"dicomweb+http://u:{SECRET}@"), name="pacs")


def _methods(mock: responses.RequestsMock) -> list[str]:
    return [str(call.request.method) for call in mock.calls]


def test_a_dicom_json_study_list_verifies_the_url_with_one_get() -> None:
    with responses.RequestsMock() as mock:
        mock.get(f"{BASE}/studies", json=[{"0020000D": {"vr": "UI", "Value": ["1.2.3"]}}])
        assert probe(_cfg()) is None
        assert _methods(mock) == ["GET"]
        assert "limit=1" in str(mock.calls[0].request.url)


def test_an_empty_dicom_json_list_or_204_verifies_the_url() -> None:
    with responses.RequestsMock() as mock:
        mock.get(f"{BASE}/studies", body="[]", content_type="application/dicom+json")
        assert probe(_cfg()) is None
    with responses.RequestsMock() as mock:
        mock.get(f"{BASE}/studies", status=204)
        assert probe(_cfg()) is None
        assert _methods(mock) == ["GET"]


def test_a_wrong_path_is_a_config_error_naming_the_url_key() -> None:
    """Orthanc: 404 to both the search and an empty STOW-RS at ``/dicomweb``."""
    with responses.RequestsMock() as mock:
        mock.get(f"{BASE}x/studies", status=404, body="Unknown resource")
        mock.post(f"{BASE}x/studies", status=404, body="Unknown resource")
        with pytest.raises(ConfigError, match=r"^endpoints\.pacs\.url: not the base of a DICOMweb service") as err:
            probe(_cfg(BASE + "x"))
        assert _methods(mock) == ["GET", "POST"]
        assert SECRET not in str(err.value) and "dw.test" not in str(err.value)


def test_the_empty_stow_carries_no_instance() -> None:
    with responses.RequestsMock() as mock:
        mock.get(f"{BASE}/studies", status=404)
        mock.post(f"{BASE}/studies", status=404)
        with pytest.raises(ConfigError):
            probe(_cfg())
        post = mock.calls[1].request
        assert str(post.headers["Content-Type"]).startswith('multipart/related; type="application/dicom"')
        body = b"".join(post.body) if not isinstance(post.body, (bytes, str)) else post.body
        body = body.encode() if isinstance(body, str) else body
        assert b"Content-Type: application/dicom" not in body  # the closing delimiter only: no part


def test_orthanc_root_instead_of_dicom_web_is_a_config_error() -> None:
    """Orthanc's REST API at the root: the search is 400 (``since`` missing), POST /studies is 405."""
    root = "http://dw.test"
    with responses.RequestsMock() as mock:
        mock.get(f"{root}/studies", status=400, body='{"Details": "Missing \\"since\\" argument"}')
        mock.post(f"{root}/studies", status=405, headers={"Allow": "GET"})
        with pytest.raises(ConfigError, match=r"QIDO-RS answered HTTP 400 and STOW-RS HTTP 405"):
            probe(_cfg(root))


def test_a_list_of_orthanc_ids_is_not_dicom_json() -> None:
    with responses.RequestsMock() as mock:
        mock.get(f"{BASE}/studies", json=["6b9e19d9-62094390-5f9ddb01-4a191ae7-9766b715"])
        with pytest.raises(ConfigError, match=r"list of IDs, not DICOM JSON"):
            probe(_cfg())


def test_a_stow_only_server_is_could_not_verify_not_wrong() -> None:
    """QIDO refused (400/404/405) but an empty STOW-RS answered: the url may be right, say so, do not fail."""
    for qido in (400, 404, 405):
        with responses.RequestsMock() as mock:
            mock.get(f"{BASE}/studies", status=qido)
            mock.post(f"{BASE}/studies", status=200, body="{}", content_type="application/dicom+json")
            note = probe(_cfg())
            assert note is not None and note.startswith("could not verify the url")
            assert f"HTTP {qido}" in note and SECRET not in note


def test_a_server_refusing_both_in_another_way_is_not_reported_wrong() -> None:
    with responses.RequestsMock() as mock:
        mock.get(f"{BASE}/studies", status=404)
        mock.post(f"{BASE}/studies", status=415)
        note = probe(_cfg())
        assert note is not None and "could not verify" in note and "STOW-RS HTTP 415" in note


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_are_a_config_error(status: int) -> None:
    with responses.RequestsMock() as mock:
        mock.get(f"{BASE}/studies", status=status)
        with pytest.raises(ConfigError, match="credentials") as err:
            probe(_cfg())
        assert SECRET not in str(err.value)


def test_an_outage_is_retryable_and_passes_the_start_up_check(caplog: pytest.LogCaptureFixture) -> None:
    with responses.RequestsMock() as mock:
        mock.get(f"{BASE}/studies", status=503)
        with pytest.raises(DestinationUnavailable):
            probe(_cfg())
    with responses.RequestsMock() as mock, caplog.at_level(logging.INFO):
        mock.get(f"{BASE}/studies", status=503)
        check_url(_cfg())  # no raise: the run's own retries deal with an outage
    assert SECRET not in caplog.text and "dw.test" not in caplog.text


def test_the_destination_factory_stops_on_a_wrong_url_before_any_work() -> None:
    with responses.RequestsMock() as mock:
        mock.get(f"{BASE}x/studies", status=404)
        mock.post(f"{BASE}x/studies", status=404)
        with pytest.raises(ConfigError, match=r"endpoints\.pacs\.url"):
            make_destination(_cfg(BASE + "x"), BuildContext(pool_size=3))
    with responses.RequestsMock() as mock:
        mock.get(f"{BASE}/studies", body="[]", content_type="application/dicom+json")
        dest = make_destination(_cfg(), BuildContext(pool_size=3))
        assert type(dest).__name__ == "StowDestination"

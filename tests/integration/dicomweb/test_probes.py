"""The DICOMweb probe against Orthanc 1.10.1 and its DICOMweb plugin: ``check-config`` and start-up
tell a wrong base URL from a right one before any work, and write nothing (notes/probes.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from copydicom.cli import main
from copydicom.endpoints.dicomweb import DicomwebConfig, probe
from copydicom.errors import ConfigError
from tests.support.orthanc import OrthancServer
from tests.support.synthetic import ct_dataset, to_bytes

pytestmark = pytest.mark.integration

ENV = "CD_TEST_PROBE_PW"


def _config(tmp_path: Path, src: OrthancServer, dst_url: str) -> Path:
    config: dict[str, Any] = {
        "state": str(tmp_path / "state.db"),
        "endpoints": {
            "pacs": {"type": "dicomweb", "url": src.url + "/dicom-web", "user": src.user, "password": f"${{{ENV}}}"},
            "research": {"type": "dicomweb", "url": dst_url, "user": src.user, "password": f"${{{ENV}}}"},
        },
        "routes": [{"name": "r", "source": "pacs", "destinations": ["research"]}],
    }
    path = tmp_path / "copydicom.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_probe_tells_the_dicom_web_base_from_wrong_ones_and_stores_nothing(
    dw: tuple[OrthancServer, OrthancServer],
) -> None:
    src, dst = dw
    dst.upload(to_bytes(ct_dataset(11, 0, 0, 0, rows=8, cols=8, seed="probe")))  # a non-empty study list too
    for server in (src, dst):
        right = DicomwebConfig.from_url(server.dicomweb_url, name="dw")
        assert probe(right) is None
    for wrong_url, key in ((dst.dicomweb_url.replace("/dicom-web", "/dicomweb"), "STOW-RS HTTP 404"),
                           (dst.dicomweb_url.replace("/dicom-web", ""), "STOW-RS HTTP 405")):
        with pytest.raises(ConfigError, match=r"endpoints\.dw\.url: not the base of a DICOMweb service") as err:
            probe(DicomwebConfig.from_url(wrong_url, name="dw"))
        assert key in str(err.value) and dst.password not in str(err.value)
    bad_auth = DicomwebConfig.from_url(dst.dicomweb_url.replace(f":{dst.password}@", ":wrong@"), name="dw")
    with pytest.raises(ConfigError, match="HTTP 401"):
        probe(bad_auth)
    assert src.statistics()["CountInstances"] == 0 and dst.statistics()["CountInstances"] == 1


def test_check_config_online_names_the_wrong_url(
    dw: tuple[OrthancServer, OrthancServer], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    src, dst = dw
    monkeypatch.setenv(ENV, src.password)
    assert main(["check-config", str(_config(tmp_path, src, dst.url + "/dicom-web"))]) == 0
    out = capsys.readouterr().out
    assert "endpoint research: credentials accepted" in out and "endpoint pacs: credentials accepted" in out

    assert main(["check-config", str(_config(tmp_path, src, dst.url + "/dicomweb"))]) == 2
    err = capsys.readouterr().err
    assert "endpoints.research.url: not the base of a DICOMweb service" in err
    assert src.password not in err and "127.0.0.1" not in err

    assert main(["check-config", "--offline", str(_config(tmp_path, src, dst.url + "/dicomweb"))]) == 0
    capsys.readouterr()


def test_start_up_stops_on_a_wrong_destination_url_before_any_work(
    dw: tuple[OrthancServer, OrthancServer], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One-shot and daemon: exit 2 naming the url key, no STOW-RS sent, nothing read from the source."""
    src, dst = dw
    monkeypatch.setenv(ENV, src.password)
    for i in range(3):
        src.upload(to_bytes(ct_dataset(12, 0, 0, i, rows=8, cols=8, seed="probe-start")))
    config = _config(tmp_path, src, dst.url + "/dicomweb")
    assert main(["replicate", "--config", str(config), "--src", "pacs", "--dest", "research",
                 "--state", str(tmp_path / "one.db")]) == 2
    err = capsys.readouterr().err
    assert "endpoints.research.url: not the base of a DICOMweb service" in err
    assert "QIDO-RS answered HTTP 404 and STOW-RS HTTP 404" in err  # the start-up check, not a failed STOW
    assert main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "endpoints.research.url" in err and src.password not in err
    assert dst.statistics()["CountInstances"] == 0

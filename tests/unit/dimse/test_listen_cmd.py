"""``copydicom listen`` and ``echo``: configuration errors exit 2 and name the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from copydicom.cli import main


def write(tmp_path: Path, **listener: object) -> Path:
    cfg = {
        "state": "state.db",
        "endpoints": {
            "rx": {"type": "dimse_listener", "allowed_calling": ["CT01"], "spool": "spool", **listener},
            "peer": {"type": "dimse", "called_aet": "PACS", "host": "127.0.0.1", "port": 104},
        },
        "routes": [{"name": "in", "source": "rx", "destinations": ["peer"]}],
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_plaintext_on_a_public_address_is_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["listen", "--config", str(write(tmp_path, host="0.0.0.0"))]) == 2
    err = capsys.readouterr().err
    assert "endpoints.rx" in err and "allow_plaintext" in err


def test_status_reads_the_spool_relative_to_the_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path)
    (tmp_path / "spool").mkdir()
    (tmp_path / "spool" / "abc.dcm").write_bytes(b"x")
    assert main(["listen", "--config", str(path), "--status"]) == 0
    assert capsys.readouterr().out.startswith("rx: spool_depth=1 oldest=")


def test_unknown_destination_and_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path)
    data = yaml.safe_load(path.read_text())
    data["routes"][0]["destinations"] = ["nowhere"]
    path.write_text(yaml.safe_dump(data))
    assert main(["listen", "--config", str(path)]) == 2
    assert "routes[0].destinations[0]" in capsys.readouterr().err
    assert main(["listen", "--config", str(write(tmp_path, colour="blue"))]) == 2
    assert "endpoints.rx.colour: unknown key" in capsys.readouterr().err


def test_echo_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["echo", "http://PACS@127.0.0.1:104"]) == 2
    assert "dicom://AET@host:port" in capsys.readouterr().err

"""DIMSE endpoint configuration: closed by default, errors name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from copydicom import registry
from copydicom.endpoints.dimse import DimseConfig, ListenerConfig
from copydicom.endpoints.dimse._config import parse_duration
from copydicom.errors import ConfigError


def listener(**body: object) -> ListenerConfig:
    data = {"type": "dimse_listener", "allowed_calling": ["MOD1"], "spool": "/tmp/spool", **body}
    return ListenerConfig.from_mapping("rx", data, where="endpoints.rx")


def test_listener_defaults_to_loopback() -> None:
    cfg = listener()
    assert cfg.host == "127.0.0.1" and cfg.port == 11112 and cfg.ae_title == "COPYDICOM"
    assert cfg.fsync is True and cfg.tls is None


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::", "pacs.example.org"])
def test_non_loopback_needs_tls_or_allow_plaintext(host: str) -> None:
    with pytest.raises(ConfigError, match=r"endpoints\.rx: .*not loopback.*tls"):
        listener(host=host)
    assert listener(host=host, allow_plaintext=True).allow_plaintext
    assert listener(host=host, tls={"cert": "c.pem", "key": "k.pem"}).tls is not None


def test_allowed_calling_is_required_and_checked() -> None:
    with pytest.raises(ConfigError, match=r"endpoints\.rx\.allowed_calling"):
        listener(allowed_calling=[])
    with pytest.raises(ConfigError, match=r"allowed_calling.*AE title"):
        listener(allowed_calling=["A" * 17])
    with pytest.raises(ConfigError, match=r"endpoints\.rx\.allowed_calling"):
        ListenerConfig.from_mapping("rx", {"spool": "/tmp/s"}, where="endpoints.rx")


def test_unknown_keys_and_bad_networks_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"endpoints\.rx\.bogus: unknown key"):
        listener(bogus=1)
    with pytest.raises(ConfigError, match=r"allowed_addresses.*not an IP"):
        listener(allowed_addresses=["nope"])
    with pytest.raises(ConfigError, match=r"tls.*require_client_cert needs ca"):
        listener(tls={"cert": "c", "key": "k", "require_client_cert": True})


def test_allowed_addresses() -> None:
    cfg = listener(allowed_addresses=["127.0.0.1", "10.1.0.0/16"])
    assert cfg.allows_address("127.0.0.1") and cfg.allows_address("10.1.200.3")
    assert not cfg.allows_address("10.2.0.1") and not cfg.allows_address("garbage")
    assert listener().allows_address("192.0.2.1")


def test_durations() -> None:
    assert parse_duration("30s") == 30 and parse_duration("5m") == 300 and parse_duration("2h") == 7200
    assert listener(timeout="2m").timeout == 120
    with pytest.raises(ConfigError, match=r"endpoints\.rx\.timeout"):
        listener(timeout="soon")


def test_url_form() -> None:
    cfg = DimseConfig.from_url("dicom://PACS@127.0.0.1:4242?calling=ME&dedupe=cfind&timeout=10s")
    assert (cfg.called_aet, cfg.host, cfg.port, cfg.calling_aet, cfg.dedupe, cfg.timeout) == (
        "PACS", "127.0.0.1", 4242, "ME", "cfind", 10.0)
    assert cfg.display_url == "dicom://PACS@127.0.0.1:4242"
    assert DimseConfig.from_url("dicom://PACS@host").port == 104
    with pytest.raises(ConfigError, match="unknown parameter 'colling'"):
        DimseConfig.from_url("dicom://PACS@h:1?colling=ME")
    with pytest.raises(ConfigError, match="called AE title"):
        DimseConfig.from_url("dicom://h:104")
    with pytest.raises(ConfigError, match="dedupe"):
        DimseConfig.from_url("dicom://PACS@h:1?dedupe=maybe")
    with pytest.raises(ConfigError, match="move_destination"):
        DimseConfig.from_url("dicom://PACS@h:1?retrieve=move")


def test_registry_descriptors() -> None:
    listener_type = registry.get("dimse_listener")
    node = registry.by_scheme("dicom://PACS@h:1")
    assert listener_type.roles == ("source",) and listener_type.config is ListenerConfig
    assert node.name == "dimse" and node.roles == ("source", "destination") and node.extra == "dimse"
    assert node.installed()


def test_paths_are_paths(tmp_path: Path) -> None:
    assert listener(spool=str(tmp_path)).spool == tmp_path

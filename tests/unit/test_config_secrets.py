"""Configuration validation, secrets and log masking."""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from copydicom.cli import main
from copydicom.config import load_config, parse_config
from copydicom.errors import ConfigError
from copydicom.logsetup import mask_secrets
from copydicom.secrets import check_private_file, expand_env, read_secret_file, resolve_secret

BASE: dict[str, Any] = {
    "state": "state.db",
    "endpoints": {
        "pacs": {"type": "orthanc", "url": "http://127.0.0.1:8042", "user": "cd", "password": "${CD_UNIT_PW}"},
        "research": {"type": "orthanc", "url": "http://127.0.0.1:8043", "user": "cd", "password": "${CD_UNIT_PW}"},
    },
    "routes": [
        {"name": "copy", "source": "pacs", "trigger": {"changes": {"poll_seconds": 5}}, "destinations": ["research"]}
    ],
}


@pytest.fixture(autouse=True)
def _password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CD_UNIT_PW", "s3cret")


def config(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    for key, value in changes.items():
        if key == "route":
            data["routes"][0].update(value)
        else:
            data[key] = value
    return data


def error_of(data: Any) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data, base_dir=Path("/tmp"))
    return str(info.value)


def test_valid_config(tmp_path: Path) -> None:
    cfg = parse_config(config(), base_dir=tmp_path)
    assert cfg.state == tmp_path / "state.db"
    assert cfg.quarantine_dir == tmp_path / "quarantine"
    (route,) = cfg.routes
    assert (route.name, route.source, route.destinations) == ("copy", "pacs", ("research",))
    assert (route.trigger.kind, route.trigger.poll_seconds, route.trigger.wait_for) == ("changes", 5.0, "instance")
    assert cfg.endpoints["pacs"].password == "s3cret"
    assert cfg.endpoints["pacs"].url == "http://127.0.0.1:8042"


def test_unknown_top_level_key() -> None:
    assert error_of(config(routs=[])).startswith("unknown top-level key(s): routs")


def test_unknown_route_key() -> None:
    assert error_of(config(route={"destination": ["research"]})) == "routes[0]: unknown key(s) destination"


def test_unknown_endpoint_key() -> None:
    data = config()
    data["endpoints"]["pacs"]["passwd"] = "x"
    assert error_of(data) == "endpoints.pacs: unknown key(s) passwd for an orthanc endpoint"


def test_missing_state() -> None:
    data = config()
    del data["state"]
    assert error_of(data).startswith("state: required")


def test_missing_source() -> None:
    data = config()
    del data["routes"][0]["source"]
    assert error_of(data).startswith("routes[0].source: None is not a source endpoint of endpoints:")
    assert error_of(config(route={"source": "nope"})).startswith("routes[0].source: 'nope'")


def test_destination_is_source() -> None:
    msg = error_of(config(route={"destinations": ["research", "pacs"]}))
    assert msg == "routes[0].destinations[1]: the destination is the source"


def test_unknown_destination() -> None:
    assert error_of(config(route={"destinations": ["nowhere"]})).startswith("routes[0].destinations[0]: 'nowhere'")


@pytest.mark.parametrize(
    "trigger, expected",
    [
        ({"changes": {}, "manual": {}}, "routes[0].trigger: give exactly one of changes, cron, manual"),
        ({"weekly": {}}, "routes[0].trigger: unknown trigger 'weekly' (changes, qido, cron or manual)"),
        ({"changes": {"every": 3}}, "routes[0].trigger.changes: unknown key(s) every"),
        ({"changes": {"wait_for": "study"}}, "routes[0].trigger.changes.wait_for: one of"),
        ({"changes": {"start_from": "end"}}, "routes[0].trigger.changes.start_from:"),
        ({"cron": {"schedule": "not cron", "query": "q", "index": "x"}}, "routes[0].trigger.cron.schedule:"),
    ],
)
def test_bad_trigger(trigger: Any, expected: str) -> None:
    assert error_of(config(route={"trigger": trigger})).startswith(expected)


@pytest.mark.parametrize("poll", [0, -1, "10", True])
def test_bad_poll_seconds(poll: Any) -> None:
    msg = error_of(config(route={"trigger": {"changes": {"poll_seconds": poll}}}))
    assert msg == "routes[0].trigger.changes.poll_seconds: must be a number > 0"


def test_profile_missing() -> None:
    assert error_of(config(route={"profile": "research"})) == "routes[0].profile: no profile 'research' under profiles:"


def test_bad_workers() -> None:
    assert error_of(config(workers=0)) == "workers: must be a whole number >= 1"
    assert error_of(config(route={"workers": "4"})) == "routes[0].workers: must be a whole number >= 1"


def test_duplicate_route_names() -> None:
    data = config()
    data["routes"].append(copy.deepcopy(data["routes"][0]))
    assert error_of(data) == "routes[1].name: duplicate route name 'copy'"


def test_password_in_url_refused() -> None:
    data = config()
    data["endpoints"]["pacs"]["url"] = "http://cd:pw@127.0.0.1:8042"
    del data["endpoints"]["pacs"]["password"]
    assert error_of(data) == "endpoints.pacs.url: put the password in password or password_file, not in the URL"


def test_missing_env_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CD_UNIT_PW")
    assert error_of(config()) == "endpoints.pacs.password: environment variable CD_UNIT_PW is not set"


def test_load_config_relative_to_file_and_check_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config()))
    assert load_config(path).state == tmp_path / "state.db"
    assert main(["check-config", "--offline", str(path)]) == 0
    out = capsys.readouterr().out
    assert "route copy: pacs -> research" in out
    assert "s3cret" not in out
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config(route={"destinations": ["pacs"]})))
    assert main(["check-config", "--offline", str(bad)]) == 2
    assert "routes[0].destinations[0]: the destination is the source" in capsys.readouterr().err


# -- secrets ---------------------------------------------------------------------------------


def test_expand_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CD_A", "x")
    assert expand_env("a${CD_A}b${CD_A}", where="k") == "axbx"
    monkeypatch.delenv("CD_MISSING", raising=False)
    with pytest.raises(ConfigError, match=r"^k: environment variable CD_MISSING is not set$"):
        expand_env("${CD_MISSING}", where="k")


def test_secret_file_permissions(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("hunter2\n")
    os.chmod(secret, 0o640)
    with pytest.raises(ConfigError, match="accessible by group or others \\(mode 0640\\)") as info:
        read_secret_file(secret, where="endpoints.x.password_file")
    assert "hunter2" not in str(info.value)
    os.chmod(secret, 0o604)
    with pytest.raises(ConfigError):
        check_private_file(secret, where="k")
    os.chmod(secret, 0o600)
    assert read_secret_file(secret, where="k") == "hunter2"
    assert resolve_secret({"password_file": str(secret)}, "password", where="e") == "hunter2"
    with pytest.raises(ConfigError, match="cannot read"):
        check_private_file(tmp_path / "absent", where="k")


def test_secret_inline_and_file_both_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="^e: give either password or password_file, not both$"):
        resolve_secret({"password": "a", "password_file": "/x"}, "password", where="e")


def test_inline_password_warns_without_value(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="copydicom.secrets"):
        assert resolve_secret({"password": "plain-pw"}, "password", where="endpoints.x") == "plain-pw"
    assert [r.getMessage() for r in caplog.records] == [
        "endpoints.x.password is written inline in the configuration; prefer ${ENV_VAR} or password_file"
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="copydicom.secrets"):
        resolve_secret({"password": "${CD_UNIT_PW}"}, "password", where="endpoints.x")
    assert caplog.records == []


def test_mask_secrets() -> None:
    assert mask_secrets("GET http://orthanc:s3cret@127.0.0.1:8042/x") == "GET http://orthanc:***@127.0.0.1:8042/x"
    assert mask_secrets("s3://b/p?aws_secret_access_key=AbC&region=x") == "s3://b/p?aws_secret_access_key=***&region=x"
    assert mask_secrets("url?token=abc123 done") == "url?token=*** done"
    assert mask_secrets("Password=xyz") == "Password=***"
    assert mask_secrets("http://127.0.0.1:8042/instances") == "http://127.0.0.1:8042/instances"


def test_relative_retrieve_spool_is_anchored_to_the_config_folder(tmp_path: Path) -> None:
    """A Q/R source's ``retrieve_spool`` given relative resolves against the config's folder, like ``spool``."""
    data = config()
    data["endpoints"]["qr"] = {"type": "dimse", "called_aet": "PACS", "host": "127.0.0.1", "port": 11112,
                               "retrieve_spool": "qr-spool"}
    cfg = parse_config(data, base_dir=tmp_path)
    assert cfg.endpoints["qr"].retrieve_spool == tmp_path / "qr-spool"

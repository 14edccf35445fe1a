"""The console's configuration is closed by default; proxy-header mode trusts only its proxies."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from copydicom.config import load_config
from copydicom.console import ConsoleConfig, StateBackend, add_user, create_app
from copydicom.errors import ConfigError
from copydicom.ledger import Ledger
from tests.unit.console.conftest import PASSWORD


def _write(tmp_path: Path, console: dict[str, object]) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"state": "state.db", "console": console}))
    return path


def test_plain_http_only_on_loopback_and_paths_relative_to_the_config(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, {"listen": "127.0.0.1:8300", "users_file": "users.yaml"}))
    assert config.console.users_file == tmp_path / "users.yaml"
    with pytest.raises(ConfigError, match="console: .*plain HTTP is allowed only on loopback"):
        load_config(_write(tmp_path, {"listen": "0.0.0.0:8300", "users_file": "users.yaml"}))
    with pytest.raises(ConfigError, match=r"console.listen: .*1-65535"):
        load_config(_write(tmp_path, {"listen": "127.0.0.1:99999", "users_file": "users.yaml"}))
    with pytest.raises(ConfigError, match=r"console.colour: unknown key"):
        load_config(_write(tmp_path, {"users_file": "u.yaml", "colour": "blue"}))
    tls = load_config(_write(tmp_path, {"listen": "0.0.0.0:8443", "users_file": "u.yaml",
                                        "tls": {"cert": "c.pem", "key": "k.pem"}}))
    assert tls.console.tls.cert == tmp_path / "c.pem"


def test_add_user_file_is_owner_only_and_short_passwords_refused(tmp_path: Path) -> None:
    users = tmp_path / "users.yaml"
    add_user(users, "alice", PASSWORD, role="viewer")
    assert users.stat().st_mode & 0o777 == 0o600
    assert "correct horse" not in users.read_text()
    with pytest.raises(ConfigError):
        add_user(users, "bob", "short", role="viewer")


def test_proxy_header_accepted_only_from_a_trusted_proxy(tmp_path: Path) -> None:
    users = tmp_path / "users.yaml"
    add_user(users, "sso-user", PASSWORD, role="viewer")
    ledger = Ledger(tmp_path / "state.db")
    backend = StateBackend(ledger, lambda: ["r"])
    trusted = ConsoleConfig(users_file=users, auth="proxy_header", trusted_proxies=("testclient",))
    with TestClient(create_app(trusted, backend, work_dir=tmp_path)) as client:
        assert client.get("/api/routes", headers={"X-Remote-User": "sso-user"}).status_code == 200
        assert client.get("/api/routes", headers={"X-Remote-User": "stranger"}).status_code == 401
        assert client.get("/api/routes").status_code == 401
    untrusted = ConsoleConfig(users_file=users, auth="proxy_header")  # the test client is not 127.0.0.1
    with TestClient(create_app(untrusted, backend, work_dir=tmp_path)) as client:
        assert client.get("/api/routes", headers={"X-Remote-User": "sso-user"}).status_code == 401
    ledger.close()


def test_behind_a_trusted_proxy_the_login_limit_counts_by_the_forwarded_client(tmp_path: Path) -> None:
    """Review finding: behind a reverse proxy every request came from 127.0.0.1, so one client's five bad
    logins locked every user out. The limiter now keys on the proxy's X-Forwarded-For (only from a trusted
    proxy: elsewhere the header is ignored)."""
    import base64

    users = tmp_path / "users.yaml"
    add_user(users, "alice", PASSWORD, role="viewer")
    add_user(users, "bob", PASSWORD, role="viewer")
    ledger = Ledger(tmp_path / "state.db")
    config = ConsoleConfig(users_file=users, trusted_proxies=("testclient",))

    def basic(user: str, password: str) -> str:
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    with TestClient(create_app(config, StateBackend(ledger, lambda: ["r"]), work_dir=tmp_path)) as client:
        for _ in range(5):
            bad = {"Authorization": basic("mallory", "wrong"), "X-Forwarded-For": "198.51.100.7"}
            assert client.get("/api/routes", headers=bad).status_code == 401
        blocked = {"Authorization": basic("bob", PASSWORD), "X-Forwarded-For": "198.51.100.7"}
        assert client.get("/api/routes", headers=blocked).status_code == 429  # that client is limited
        other = {"Authorization": basic("alice", PASSWORD), "X-Forwarded-For": "203.0.113.9"}
        assert client.get("/api/routes", headers=other).status_code == 200  # everyone else is not
    untrusted = ConsoleConfig(users_file=users)  # the test client is not a trusted proxy: header ignored
    with TestClient(create_app(untrusted, StateBackend(ledger, lambda: ["r"]), work_dir=tmp_path)) as client:
        for _ in range(5):
            forged = {"Authorization": basic("mallory", "wrong"), "X-Forwarded-For": f"10.0.0.{_}"}
            assert client.get("/api/routes", headers=forged).status_code == 401
        assert client.get("/api/routes", headers={"Authorization": basic("alice", PASSWORD)}).status_code == 429
    ledger.close()

"""Issue 7, item 10: hostile configuration and input.

- URLs with credentials: the password never appears in a log line of the
  daemon (also when an endpoint with credentials is unreachable and errors are
  logged) nor in ``copydicom status``;
- a de-identification key file readable by others is refused;
- TLS verification is off only with an explicit ``insecure_skip_verify: true``,
  and then a warning is logged at every start;
- ``copydicom search`` on an SQLite index runs one SELECT and nothing else.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from copydicom.cli import main
from copydicom.sinks.sqlite_index import SqliteIndex, SqliteIndexConfig
from tests.support.orthanc import OrthancServer
from tests.faults.conftest import figure, route_config
from tests.integration.conftest import REPO_ROOT, DaemonProcess, checkpoint_of, last_seq, load_ct, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.integration]

DEAD_PASSWORD = "Hunter2-dead-endpoint-secret"


def _with_dead_route(config: Path) -> None:
    """Add a route to a dead endpoint with a password, so its errors are logged."""
    data = yaml.safe_load(config.read_text())
    data["endpoints"]["dead"] = {
        "type": "orthanc", "url": "http://127.0.0.1:9/", "user": "copy", "password": DEAD_PASSWORD, "retries": 1,
    }
    data["routes"].append({
        "name": "to-dead", "source": "src", "trigger": {"changes": {"poll_seconds": 0.5}}, "destinations": ["dead"],
    })
    config.write_text(yaml.safe_dump(data))


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "copydicom.cli", *args], env=env, capture_output=True,
                          text=True, timeout=120, cwd=str(REPO_ROOT), check=False)


def test_credentials_are_masked_in_every_log_line_and_in_status(
    servers: tuple[OrthancServer, OrthancServer], tmp_path: Path, daemon: Callable[[Path], DaemonProcess],
    daemon_env: dict[str, str],
) -> None:
    source, dest = servers
    config = route_config(tmp_path, source, dest)
    # A password in a configured URL is refused, without echoing it.
    data = yaml.safe_load(config.read_text())
    data["endpoints"]["src"]["url"] = source.url_with_credentials
    config.write_text(yaml.safe_dump(data))
    refused = _cli(daemon_env, "run", "--config", str(config))
    assert refused.returncode == 2 and "not in the URL" in refused.stderr
    assert source.password not in refused.stdout + refused.stderr

    config = route_config(tmp_path, source, dest)
    _with_dead_route(config)
    load_ct(source, 5, seed="hostile", rows=32)
    state = tmp_path / "state.db"
    proc = daemon(config)
    wait_until(lambda: checkpoint_of(state, "copy") == last_seq(source) and len(dest.instance_ids()) == 5,
               timeout=60, what="the copy route")
    wait_until(lambda: "retrying in" in proc.log(), timeout=60, what="the dead route to fail and back off")
    proc.signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    status = [_cli(daemon_env, "status", "--config", str(config)),
              _cli(daemon_env, "status", "--config", str(config), "--json")]
    assert [s.returncode for s in status] == [0, 0]

    # URLs with credentials on the command line: one-shot runs to a live and to a dead destination.
    dead = f"http://copy:{DEAD_PASSWORD}@127.0.0.1:9/"
    oneshot = [
        _cli(daemon_env, "-v", "replicate", "--src", source.url_with_credentials, "--dest",
             dest.url_with_credentials, "--state", str(tmp_path / "oneshot.db")),
        _cli(daemon_env, "-v", "replicate", "--src", source.url_with_credentials, "--dest", dead,
             "--state", str(tmp_path / "dead.db")),
        # A URL the command cannot use: refused without echoing its password.
        _cli(daemon_env, "replicate", "--src", source.url_with_credentials, "--dest",
             f"ftp://copy:{DEAD_PASSWORD}@127.0.0.1/", "--state", str(tmp_path / "bad.db")),
    ]
    texts = [proc.log()] + [r.stdout + r.stderr for r in status + oneshot]
    # The test servers' password is a common word: look for it as a URL credential.
    secrets = (f"{source.user}:{source.password}@", f"{dest.user}:{dest.password}@", DEAD_PASSWORD)
    for secret in secrets:
        for text in texts:
            assert secret not in text
    assert [r.returncode for r in oneshot] == [0, 1, 2]
    assert "not a known endpoint URL scheme" in oneshot[2].stderr
    lines = sum(len(t.splitlines()) for t in texts)
    figure("hostile-masking", output_lines=lines, secrets_checked=len(secrets), leaks=0)


def test_key_file_readable_by_others_is_refused(
    servers: tuple[OrthancServer, OrthancServer], tmp_path: Path, deid_key: Path, daemon_env: dict[str, str],
) -> None:
    source, dest = servers
    config = route_config(tmp_path, source, dest, key=deid_key)
    for mode in (0o644, 0o640, 0o604):
        deid_key.chmod(mode)
        result = _cli(daemon_env, "run", "--config", str(config))
        assert result.returncode == 2, result.stderr
        assert str(deid_key) in result.stderr and "key_file" in result.stderr
    assert not (tmp_path / "state.db").exists() or checkpoint_of(tmp_path / "state.db", "copy") is None
    deid_key.chmod(0o600)


def test_tls_verification_is_off_only_explicitly_with_a_warning_at_every_start(
    servers: tuple[OrthancServer, OrthancServer], tmp_path: Path, daemon: Callable[[Path], DaemonProcess],
    daemon_env: dict[str, str],
) -> None:
    source, dest = servers
    config = route_config(tmp_path, source, dest)
    data = yaml.safe_load(config.read_text())
    data["endpoints"]["dst"]["insecure_skip_verify"] = "yes"
    config.write_text(yaml.safe_dump(data))
    result = _cli(daemon_env, "run", "--config", str(config))
    assert result.returncode == 2
    assert "endpoints.dst.insecure_skip_verify: Input should be a valid boolean" in result.stderr

    data["endpoints"]["dst"]["insecure_skip_verify"] = True
    config.write_text(yaml.safe_dump(data))
    for start in (1, 2):
        proc = daemon(config)
        def warned(proc: DaemonProcess = proc, start: int = start) -> bool:
            return proc.log().count("TLS verification is DISABLED for endpoint dst") == start

        wait_until(warned, timeout=30, what=f"the warning of start {start}")
        proc.signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    assert proc.log().count("TLS verification is DISABLED") == 2


@pytest.mark.parametrize("query", [
    "DELETE FROM t",
    "SELECT 1; DELETE FROM t",
    "SELECT * FROM t; SELECT 2",
    "ATTACH DATABASE ':memory:' AS other",
    "PRAGMA user_version = 7",
    "PRAGMA journal_mode = DELETE",
    "WITH x AS (SELECT 1) DELETE FROM t",
    "UPDATE t SET v = 'x'",
    "DROP TABLE t",
    "INSERT INTO t SELECT * FROM t",
    "VACUUM",
    "CREATE TABLE u (a)",
    "SELECT * FROM t WHERE v = 'a'; --",
])
def test_search_refuses_anything_but_a_single_select(
    tmp_path: Path, query: str, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "index.db"
    # A search never creates the index (it opens the file read-only): make one by writing to it.
    SqliteIndex(SqliteIndexConfig("hostile", db)).open()
    assert main(["search", "--index", f"sqlite:///{db}", "SELECT count(*) AS n FROM instances"]) == 0
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE t (v TEXT)")
    conn.executemany("INSERT INTO t VALUES (?)", [("a",), ("b",)])
    conn.commit()
    conn.close()

    def snapshot() -> tuple[object, ...]:
        conn = sqlite3.connect(db)
        try:
            return (
                conn.execute("SELECT v FROM t ORDER BY v").fetchall(),
                conn.execute("PRAGMA user_version").fetchone()[0],
                conn.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall(),
                conn.execute("PRAGMA journal_mode").fetchone()[0],
            )
        finally:
            conn.close()

    before = snapshot()
    capsys.readouterr()
    status = main(["search", "--index", f"sqlite:///{db}", query])
    out = capsys.readouterr()
    assert snapshot() == before
    if query.startswith("SELECT * FROM t WHERE"):
        assert status == 0 and out.out.splitlines() == ['{"v": "a"}']  # a trailing comment is not a statement
    else:
        assert status == 2, out
        assert "search:" in out.err

"""Issue 10 defects: a closed pipe ends a command quietly; the secrets reader strips exactly one newline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from copydicom.cli import EXIT_BROKEN_PIPE
from copydicom.secrets import read_secret_file
from tests.unit.dose import builder as b

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("command", [["dose"], ["dose", "--json"], ["tags"]])
def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path: Path, command: list[str]) -> None:
    """``copydicom dose ... | head``: no BrokenPipeError traceback, status 141 (128 + SIGPIPE)."""
    report = tmp_path / "r.dcm"
    report.write_bytes(b.to_bytes(b.ct_report([b.ct_event(f"1.2.3.{i}") for i in range(1, 4)], n_events="3")))
    args = [command[0], str(report), *command[1:]]
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "copydicom.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=str(REPO_ROOT), env=env)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the first write: like `| head -0`
    err = proc.stderr.read().decode()
    assert proc.wait(120) == EXIT_BROKEN_PIPE == 141
    assert "Traceback" not in err and "BrokenPipeError" not in err and "Exception ignored" not in err


@pytest.mark.parametrize(("content", "expected"), [
    (b"hunter2\n", "hunter2"),
    (b"hunter2\r\n", "hunter2"),
    (b"hunter2", "hunter2"),
    (b"hunter2\n\n", "hunter2\n"),        # exactly one newline goes, the secret's own stays
    (b"ends-with-cr\r", "ends-with-cr\r"),
    (b"two\nlines\n", "two\nlines"),
    (b"\n", ""),
])
def test_secret_files_lose_exactly_one_trailing_newline(tmp_path: Path, content: bytes, expected: str) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(content)
    secret.chmod(0o600)
    assert read_secret_file(secret, where="endpoints.x.password_file") == expected

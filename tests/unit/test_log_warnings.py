"""Hardening item 16: pydicom ``UserWarning``s go through logging, so ``--log-json`` stays one JSON object a line.

Run in a child process: pytest replaces ``warnings.showwarning`` in its own.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import sys, warnings
from copydicom.logsetup import configure_logging
configure_logging(json_lines=sys.argv[1] == "json")
from pydicom.dataset import Dataset
ds = Dataset()
ds.StudyDescription = "x" * 300            # pydicom: value length exceeds the VR's maximum
warnings.warn("a library warning\\nover two lines", UserWarning)
warnings.warn("Invalid value for VR DA: '19700101'", UserWarning)  # quotes a value: never logged
"""


def _stderr(mode: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=120,
                          cwd=str(REPO_ROOT), env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"},
                          check=True)
    return done.stderr.splitlines()


def test_warnings_are_json_log_lines() -> None:
    lines = _stderr("json")
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    messages = [r["message"] for r in records]
    assert any("exceeds the maximum length" in m for m in messages)
    assert "UserWarning: a library warning over two lines" in messages
    assert sum("exceeds the maximum length" in m for m in messages) == 1  # pydicom logs and warns: once
    assert not any("19700101" in line for line in lines)


def test_warnings_are_one_plain_log_line_each() -> None:
    lines = _stderr("plain")
    assert lines and all(" WARNING " in line for line in lines), lines
    assert not any("19700101" in line for line in lines)

"""The committed de-identification tables are exactly what ``tools/gen_deid_tables.py`` makes from
the CSVs committed under ``tools/reference`` (PS3.15 Tables E.1-1 and E.3.10-1)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
DATA = ROOT / "copydicom" / "stages" / "deid" / "data"


def _generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("gen_deid_tables", ROOT / "tools" / "gen_deid_tables.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_json_equals_generated() -> None:
    generated = _generator().generate(ROOT / "tools" / "reference")
    assert sorted(generated) == ["ps315_e1_1.json", "ps315_e3_10_1.json"]
    for name, text in generated.items():
        assert (DATA / name).read_text(encoding="utf-8") == text, f"{name}: run python tools/gen_deid_tables.py"


def test_generator_reads_the_csv(tmp_path: Path) -> None:
    """A changed CSV row changes the output: the test above compares real generation, not a copy."""
    ref = tmp_path / "ref"
    ref.mkdir()
    for csv in (ROOT / "tools" / "reference").glob("*.csv"):
        (ref / csv.name).write_text(csv.read_text(encoding="utf-8"), encoding="utf-8")
    e1 = ref / "ps315_table_e1_1.csv"
    lines = e1.read_text(encoding="utf-8").splitlines()
    lines = lines[:1] + lines[2:]  # drop the first row
    e1.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert _generator().generate(ref)["ps315_e1_1.json"] != (DATA / "ps315_e1_1.json").read_text(encoding="utf-8")


def test_one_command_from_a_checkout() -> None:
    """``python tools/gen_deid_tables.py`` needs no argument and no path outside the repository."""
    reply = subprocess.run([sys.executable, str(ROOT / "tools" / "gen_deid_tables.py"), "--help-not-a-dir"],
                           capture_output=True, text=True, check=False)
    assert reply.returncode == 2  # a folder without the CSVs is refused, never a machine path fallback
    assert "no ps315_table_e1_1.csv" in reply.stderr

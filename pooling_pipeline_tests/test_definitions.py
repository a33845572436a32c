"""The whole code location loads, so a broken definition fails CI rather than the UI."""

import subprocess
import sys
from pathlib import Path

import dagster as dg

from pooling_pipeline.definitions import defs


def test_code_location_loads_and_validates() -> None:
    dg.Definitions.validate_loadable(defs)
    repo = defs.get_repository_def()
    assert repo.get_all_jobs() is not None


def test_dg_check_defs_passes() -> None:
    root = Path(__file__).resolve().parents[1]
    dg_bin = Path(sys.executable).with_name("dg")
    result = subprocess.run([str(dg_bin), "check", "defs"], cwd=root, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr

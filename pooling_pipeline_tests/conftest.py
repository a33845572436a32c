"""Shared fixtures. Each domain keeps its fixtures in fixtures/<domain>.py (session-scoped servers live
there, so one SeaweedFS / olah / vLLM serves every test that needs it)."""

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_REFERENCE = PROJECT_ROOT.parent / "shared" / "reference"

# Tests never touch the developer's own stack or Dagster instance.
os.environ.setdefault("POOLING_STACK_DIR", str(PROJECT_ROOT / ".stack-test"))

pytest_plugins = [
    "pooling_pipeline_tests.fixtures.stack",
    "pooling_pipeline_tests.fixtures.cluster",
    "pooling_pipeline_tests.fixtures.serving",
    "pooling_pipeline_tests.fixtures.evaluation",
]


@pytest.fixture(scope="session")
def shared_reference() -> Path:
    if not SHARED_REFERENCE.is_dir():
        pytest.fail(f"{SHARED_REFERENCE} is missing: the repo must sit beside shared/ (as CI checks it out)")
    return SHARED_REFERENCE

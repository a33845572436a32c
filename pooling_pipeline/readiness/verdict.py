"""The migration's decision matrix as code: one verdict per model, then the catalog-wide hybrid rule.

Pure: everything it reads is in `ReadinessInputs` (filled from the upstream assets by readiness/assets.py),
so every branch is tested without a server. The criteria are judged in the order the migration team used:

1. loads and serves   rollout Ready (and, when configured, a cold start within bound)
                      not Ready              -> keep-incumbent (vLLM cannot serve it today; Caikit stays)
2. API works          every endpoint of the kind answers (/v1/embeddings; /rerank + /score)
                      an endpoint fails      -> revisit (it loads: a runtime flag or chat template to fix)
3. quality passes     every blocking quality check passed
                      a check failed/absent  -> revisit (served numbers differ from the reference)
4. measurement valid  the load benchmark ran, is valid and its success rate is high enough
                      invalid / errors       -> revisit (re-run the benchmark; no decision on bad numbers)
5. performance        throughput ratio >= threshold and p99 ratio <= bound, both vs the incumbent
                      worse                  -> keep-incumbent (works, but slower than Caikit)
                      no incumbent           -> "not compared": does not block (nothing to be worse
                                                than); the reason says so. Set `require_incumbent`
                                                to make it block (verdict revisit) instead.
all pass                                      -> migrate

Across the catalog (`catalog_verdicts`): when at least one reranker is not ready, every embedding model
whose own verdict is `migrate` becomes `hybrid` — the platform moves embeddings to vLLM and keeps
rerankers on Caikit, so both stacks stay up. That can only be decided with every model in view, which is
why the per-model asset shows the model's own verdict and the readiness report shows the catalog's.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from pooling_pipeline.catalog import ModelKind


class Verdict(StrEnum):
    MIGRATE = "migrate"
    HYBRID = "hybrid"
    KEEP_INCUMBENT = "keep-incumbent"
    REVISIT = "revisit"


class Criterion(StrEnum):
    LOADS = "loads and serves"
    API = "API works"
    QUALITY = "quality checks pass"
    MEASUREMENT = "benchmark valid"
    PERFORMANCE = "performance vs incumbent"


class Status(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    NOT_RUN = "not run"  # an earlier criterion failed, or the input is missing
    NOT_COMPARED = "not compared"  # no incumbent to compare against


class ReadinessThresholds(BaseModel):
    """The bar a model must clear; env POOLING_READINESS_* overrides (see readiness/assets.py)."""

    model_config = ConfigDict(frozen=True)

    min_throughput_ratio: float = Field(0.9, gt=0, description="vLLM / incumbent requests per second, at least")
    max_p99_ratio: float = Field(1.25, gt=0, description="vLLM / incumbent p99 latency, at most")
    min_success_rate: float = Field(0.99, ge=0, le=1, description="benchmark requests that succeeded, at least")
    max_cold_start_s: float | None = Field(None, gt=0, description="apply -> Ready, at most (None: not judged)")
    require_incumbent: bool = Field(False, description="no incumbent to compare against blocks the migration")


class CheckOutcome(BaseModel):
    """One blocking quality check's latest evaluation."""

    name: str
    passed: bool
    reason: str = ""


class PerformanceInputs(BaseModel):
    """The load benchmark's numbers; throughput is inputs (texts or documents) per second at peak."""

    valid: bool = True
    invalid_reason: str = ""
    success_rate: float | None = None
    throughput_per_s: float | None = None
    p99_ms: float | None = None
    incumbent_throughput_per_s: float | None = None
    incumbent_p99_ms: float | None = None
    throughput_ratio: float | None = None  # None: no incumbent measured
    p99_ratio: float | None = None
    incumbent_error: str = ""  # why the incumbent was not measured, when it was not


class ReadinessInputs(BaseModel):
    """Everything the verdict is decided on; the asset shows each of these in the UI."""

    model: str
    kind: ModelKind
    commit_sha: str = ""
    vllm_version: str = ""
    # 1. loads and serves
    rollout_ready: bool
    rollout_error: str = ""
    cold_start_s: float | None = None
    # 2. API works: endpoint path -> answered correctly
    endpoints: dict[str, bool] = Field(default_factory=dict)
    endpoint_errors: dict[str, str] = Field(default_factory=dict)
    # 3. quality: each blocking check; numbers for the report (name -> value, higher is better)
    quality_checks: list[CheckOutcome] = Field(default_factory=list)
    quality_metrics: dict[str, float] = Field(default_factory=dict)
    # 4./5. benchmark (None: it did not run)
    performance: PerformanceInputs | None = None
    has_incumbent: bool = True


class ReadinessDecision(BaseModel):
    model: str
    kind: ModelKind
    verdict: Verdict
    reasons: list[str]
    criteria: dict[str, Status]  # Criterion value -> status, in matrix order


# Which endpoints each kind must serve (a reranker is reached both as Cohere/Jina /rerank and /score).
REQUIRED_ENDPOINTS: dict[ModelKind, tuple[str, ...]] = {
    ModelKind.EMBEDDING: ("/v1/embeddings",),
    ModelKind.RERANKER: ("/rerank", "/score"),
}


def _fmt(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def decide(inputs: ReadinessInputs, thresholds: ReadinessThresholds | None = None) -> ReadinessDecision:
    """The model's own verdict (before the catalog-wide hybrid rule)."""
    t = thresholds or ReadinessThresholds()
    criteria = {c.value: Status.NOT_RUN for c in Criterion}
    reasons: list[str] = []

    def done(verdict: Verdict) -> ReadinessDecision:
        return ReadinessDecision(model=inputs.model, kind=inputs.kind, verdict=verdict, reasons=reasons,
                                 criteria=criteria)

    # 1. loads and serves
    if not inputs.rollout_ready:
        criteria[Criterion.LOADS] = Status.FAIL
        reasons.append("loads and serves: rollout did not become Ready"
                       + (f" ({inputs.rollout_error})" if inputs.rollout_error else ""))
        return done(Verdict.KEEP_INCUMBENT)
    if t.max_cold_start_s is not None and inputs.cold_start_s is not None and inputs.cold_start_s > t.max_cold_start_s:
        criteria[Criterion.LOADS] = Status.FAIL
        reasons.append(f"loads and serves: cold start {inputs.cold_start_s:.1f}s > bound {t.max_cold_start_s:.1f}s")
        return done(Verdict.KEEP_INCUMBENT)
    criteria[Criterion.LOADS] = Status.PASS

    # 2. API works
    api_problems = []
    for path in REQUIRED_ENDPOINTS[inputs.kind]:
        if path not in inputs.endpoints:
            api_problems.append(f"{path} was not probed")
        elif not inputs.endpoints[path]:
            detail = inputs.endpoint_errors.get(path, "")
            api_problems.append(f"{path} failed" + (f" ({detail})" if detail else ""))
    if api_problems:
        criteria[Criterion.API] = Status.FAIL
        reasons.extend(f"API works: {p}" for p in api_problems)
        return done(Verdict.REVISIT)
    criteria[Criterion.API] = Status.PASS

    # 3. quality
    if not inputs.quality_checks:
        criteria[Criterion.QUALITY] = Status.FAIL
        reasons.append("quality checks pass: no quality check was evaluated (materialise quality_report)")
        return done(Verdict.REVISIT)
    failed = [c for c in inputs.quality_checks if not c.passed]
    if failed:
        criteria[Criterion.QUALITY] = Status.FAIL
        reasons.extend(f"quality check {c.name} failed" + (f": {c.reason}" if c.reason else "") for c in failed)
        return done(Verdict.REVISIT)
    criteria[Criterion.QUALITY] = Status.PASS

    # 4. the benchmark itself
    perf = inputs.performance
    if perf is None:
        criteria[Criterion.MEASUREMENT] = Status.FAIL
        reasons.append("benchmark valid: load_benchmark has not run (materialise load_benchmark)")
        return done(Verdict.REVISIT)
    if not perf.valid:
        criteria[Criterion.MEASUREMENT] = Status.FAIL
        reasons.append("benchmark valid: the run is invalid" + (f" ({perf.invalid_reason})" if perf.invalid_reason
                                                                  else "") + "; re-run load_benchmark")
        return done(Verdict.REVISIT)
    if perf.success_rate is not None and perf.success_rate < t.min_success_rate:
        criteria[Criterion.MEASUREMENT] = Status.FAIL
        reasons.append(f"benchmark valid: success rate {perf.success_rate:.2%} < {t.min_success_rate:.2%}")
        return done(Verdict.REVISIT)
    criteria[Criterion.MEASUREMENT] = Status.PASS

    # 5. performance vs incumbent
    compared = inputs.has_incumbent and perf.throughput_ratio is not None and perf.p99_ratio is not None
    if not compared:
        if t.require_incumbent:
            criteria[Criterion.PERFORMANCE] = Status.FAIL
            reasons.append("performance vs incumbent: no incumbent measurement, and thresholds require one "
                           "(add `incumbent:` to the catalog entry or set require_incumbent false)")
            return done(Verdict.REVISIT)
        criteria[Criterion.PERFORMANCE] = Status.NOT_COMPARED
        why = perf.incumbent_error or "no incumbent measurement"
        reasons.append(f"performance vs incumbent: not compared ({why}); vLLM alone "
                       f"{_fmt(perf.throughput_per_s, 1)} inputs/s, p99 {_fmt(perf.p99_ms, 1)} ms")
        return done(Verdict.MIGRATE)
    slow = []
    if perf.throughput_ratio < t.min_throughput_ratio:
        slow.append(f"throughput ratio {perf.throughput_ratio:.2f} < {t.min_throughput_ratio:.2f} "
                    f"({_fmt(perf.throughput_per_s, 1)} vs incumbent "
                    f"{_fmt(perf.incumbent_throughput_per_s, 1)} inputs/s)")
    if perf.p99_ratio > t.max_p99_ratio:
        slow.append(f"p99 ratio {perf.p99_ratio:.2f} > {t.max_p99_ratio:.2f} "
                    f"({_fmt(perf.p99_ms, 1)} vs incumbent {_fmt(perf.incumbent_p99_ms, 1)} ms)")
    if slow:
        criteria[Criterion.PERFORMANCE] = Status.FAIL
        reasons.extend(f"performance vs incumbent: {s}" for s in slow)
        return done(Verdict.KEEP_INCUMBENT)
    criteria[Criterion.PERFORMANCE] = Status.PASS
    reasons.append(f"all criteria pass: throughput ratio {perf.throughput_ratio:.2f} ≥ {t.min_throughput_ratio:.2f}, "
                   f"p99 ratio {perf.p99_ratio:.2f} ≤ {t.max_p99_ratio:.2f}")
    return done(Verdict.MIGRATE)


def catalog_verdicts(per_model: dict[str, ReadinessDecision]) -> dict[str, ReadinessDecision]:
    """Apply the cross-catalog rule: embeddings ready but a reranker not -> the ready embeddings are `hybrid`."""
    rerankers_not_ready = sorted(d.model for d in per_model.values()
                                 if d.kind is ModelKind.RERANKER and d.verdict is not Verdict.MIGRATE)
    if not rerankers_not_ready:
        return dict(per_model)
    out = {}
    for name, decision in per_model.items():
        if decision.kind is ModelKind.EMBEDDING and decision.verdict is Verdict.MIGRATE:
            decision = decision.model_copy(update={
                "verdict": Verdict.HYBRID,
                "reasons": [*decision.reasons,
                            f"hybrid: embeddings are ready but reranker(s) {', '.join(rerankers_not_ready)} are not: "
                            "move embeddings to vLLM, keep rerankers on Caikit"],
            })
        out[name] = decision
    return out


def overall_verdict(decisions: dict[str, ReadinessDecision]) -> Verdict:
    """The catalog's one-word answer (after `catalog_verdicts`)."""
    verdicts = {d.verdict for d in decisions.values()}
    if not verdicts:
        return Verdict.REVISIT
    if verdicts == {Verdict.MIGRATE}:
        return Verdict.MIGRATE
    if Verdict.HYBRID in verdicts:
        return Verdict.HYBRID
    if verdicts == {Verdict.KEEP_INCUMBENT}:
        return Verdict.KEEP_INCUMBENT
    return Verdict.REVISIT

"""The migration's decision matrix for one model, as code.

Pure: everything it reads is in `ReadinessInputs` (the upstream assets' own models, put together by
readiness/assets.py), so every branch is tested without a server. The criteria are judged in order; the
first that fails decides:

1. loads and serves     rollout Ready (and, when configured, a cold start within bound)
                        not Ready                  -> keep-incumbent (vLLM cannot serve it today)
2. API works            every endpoint of the kind answers (/v1/embeddings; /rerank + /score)
                        an endpoint fails          -> revisit (it loads: a runtime flag to fix)
3. quality passes       every blocking quality check passed
                        a check failed/absent      -> revisit (served numbers differ from the reference)
4. benchmark valid      load_benchmark ran, the server did not crash, every workload was measured
                        otherwise                  -> revisit (no decision on a broken measurement)
5. capacity at the SLO  vLLM sustains some load within the SLO on every workload (absolute)
                        median capacity 0          -> keep-incumbent (one request at a time misses the SLO)
6. performance          vLLM / incumbent capacity at the SLO, an interval over repeats, per workload;
                        judged on the worst workload against the bar (default 1.0x: "performance >= Caikit")
                        lower bound >= bar         -> pass
                        interval straddles the bar -> revisit (inconclusive: within measurement noise)
                        upper bound <= bar         -> keep-incumbent (slower than the incumbent: both
                                                      bounds are strict, see benchmark/stats.py)
                        no incumbent measured      -> "not compared": does not block unless
                                                      `require_incumbent` (the default on a cluster)
all pass                                          -> migrate

Every reason drawn from the benchmark names the profile that produced it ("profile demo"), and
generator-limited points are listed as such: the generator, not the model, fell short, so capacity is a lower bound.
Whether the catalog as a whole migrates (hybrid, keep Caikit and revisit on a date) is decided across
models in readiness/catalog_rule.py.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from pooling_pipeline.catalog import ModelKind
from pooling_pipeline.evaluation.benchmark.schemas import Interval, LoadBenchmarkResult, WorkloadComparison
from pooling_pipeline.evaluation.quality.checks import CheckOutcome

DEFAULT_PERFORMANCE_BAR = 1.0  # issue 12 / the seed's matrix: "performance >= Caikit"


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
    CAPACITY = "capacity at the SLO"
    PERFORMANCE = "performance vs incumbent"


class Status(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    NOT_RUN = "not run"  # an earlier criterion failed, or the input is missing
    NOT_COMPARED = "not compared"  # no incumbent to compare against


class ReadinessThresholds(BaseModel):
    """The bar a model must clear (the asset's config fills it from the settings)."""

    model_config = ConfigDict(frozen=True)

    min_capacity_ratio: float = Field(
        DEFAULT_PERFORMANCE_BAR, gt=0, description="vLLM / incumbent capacity at the SLO, lower bound at least"
    )
    max_cold_start_s: float | None = Field(None, gt=0, description="apply -> Ready, at most (None: not judged)")
    require_incumbent: bool = Field(False, description="no incumbent measurement blocks the migration")


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
    # 4.-6. the load benchmark as load_benchmark returned it (None: it did not run)
    benchmark: LoadBenchmarkResult | None = None
    has_incumbent: bool = True


class ReadinessDecision(BaseModel):
    model: str
    kind: ModelKind
    verdict: Verdict
    reasons: list[str]
    criteria: dict[Criterion, Status]  # in matrix order

    @property
    def works(self) -> bool:
        """Loads, answers its API and passes quality: the model itself works on vLLM, however fast."""
        return all(self.criteria.get(c) is Status.PASS for c in (Criterion.LOADS, Criterion.API, Criterion.QUALITY))


# Which endpoints each kind must serve (a reranker is reached both as Cohere/Jina /rerank and /score).
REQUIRED_ENDPOINTS: dict[ModelKind, tuple[str, ...]] = {
    ModelKind.EMBEDDING: ("/v1/embeddings",),
    ModelKind.RERANKER: ("/rerank", "/score"),
}


class _Judge:
    """Collects criteria statuses and reasons in matrix order; `done` turns them into the decision."""

    def __init__(self, inputs: ReadinessInputs) -> None:
        self.inputs = inputs
        self.criteria = {c: Status.NOT_RUN for c in Criterion}
        self.reasons: list[str] = []

    def fail(self, criterion: Criterion, verdict: Verdict, *reasons: str) -> ReadinessDecision:
        self.criteria[criterion] = Status.FAIL
        return self.done(verdict, *reasons)

    def done(self, verdict: Verdict, *reasons: str) -> ReadinessDecision:
        self.reasons.extend(reasons)
        return ReadinessDecision(
            model=self.inputs.model,
            kind=self.inputs.kind,
            verdict=verdict,
            reasons=self.reasons,
            criteria=self.criteria,
        )


def decide(inputs: ReadinessInputs, thresholds: ReadinessThresholds | None = None) -> ReadinessDecision:
    """The model's own verdict (the catalog-wide matrix is applied on top, in catalog_rule.py)."""
    t = thresholds or ReadinessThresholds()
    judge = _Judge(inputs)
    for step in (_loads, _api, _quality):
        decision = step(judge, t)
        if decision is not None:
            return decision
    return _benchmark(judge, t)


def _loads(judge: _Judge, t: ReadinessThresholds) -> ReadinessDecision | None:
    i = judge.inputs
    if not i.rollout_ready:
        detail = f" ({i.rollout_error})" if i.rollout_error else ""
        return judge.fail(
            Criterion.LOADS, Verdict.KEEP_INCUMBENT, f"loads and serves: rollout did not become Ready{detail}"
        )
    if t.max_cold_start_s is not None and i.cold_start_s is not None and i.cold_start_s > t.max_cold_start_s:
        return judge.fail(
            Criterion.LOADS,
            Verdict.KEEP_INCUMBENT,
            f"loads and serves: cold start {i.cold_start_s:.1f}s > bound {t.max_cold_start_s:.1f}s",
        )
    judge.criteria[Criterion.LOADS] = Status.PASS
    return None


def _api(judge: _Judge, t: ReadinessThresholds) -> ReadinessDecision | None:
    i = judge.inputs
    if i.benchmark is not None and i.benchmark.server_crashed:
        # migration_readiness probes the API after the benchmark: a server that died under load fails that probe
        # too, but the crash is the cause the user must read, so the benchmark criteria speak first.
        judge.criteria[Criterion.API] = Status.NOT_RUN
        return _benchmark(judge, t)
    problems = []
    for path in REQUIRED_ENDPOINTS[i.kind]:
        if path not in i.endpoints:
            problems.append(f"{path} was not probed")
        elif not i.endpoints[path]:
            detail = i.endpoint_errors.get(path, "")
            problems.append(f"{path} failed" + (f" ({detail})" if detail else ""))
    if problems:
        return judge.fail(Criterion.API, Verdict.REVISIT, *(f"API works: {p}" for p in problems))
    judge.criteria[Criterion.API] = Status.PASS
    return None


def _quality(judge: _Judge, t: ReadinessThresholds) -> ReadinessDecision | None:
    checks = judge.inputs.quality_checks
    if not checks:
        return judge.fail(
            Criterion.QUALITY,
            Verdict.REVISIT,
            "quality checks pass: no quality check was evaluated (materialise quality_report)",
        )
    failed = [c for c in checks if not c.passed]
    if failed:
        reasons = (f"quality check {c.name.value} failed" + (f": {c.reason}" if c.reason else "") for c in failed)
        return judge.fail(Criterion.QUALITY, Verdict.REVISIT, *reasons)
    judge.criteria[Criterion.QUALITY] = Status.PASS
    return None


def _benchmark(judge: _Judge, t: ReadinessThresholds) -> ReadinessDecision:
    """Criteria 4-6: every reason from here names the profile; generator-limited points are noted."""
    bench = judge.inputs.benchmark
    if bench is None:
        return judge.fail(
            Criterion.MEASUREMENT, Verdict.REVISIT, "benchmark valid: load_benchmark has not run (materialise it)"
        )
    decision = _measurement(judge, bench) or _capacity(judge, bench) or _performance(judge, bench, t)
    profile = f" (profile {bench.profile.value})"
    decision.reasons = [r + profile if r.startswith(_BENCHMARK_CRITERIA) else r for r in decision.reasons]
    if bench.generator_limited:
        decision.reasons.append(
            f"{len(bench.generator_limited)} point(s) were generator-limited (the load generator, not the model, "
            f"could not offer the load even after a re-run with more workers), so the capacity behind them is a lower "
            f"bound, not the model's limit: " + "; ".join(bench.generator_limited[:3]) + profile
        )
    return decision


_BENCHMARK_CRITERIA = tuple(f"{c.value}:" for c in (Criterion.MEASUREMENT, Criterion.CAPACITY, Criterion.PERFORMANCE))


def _measurement(judge: _Judge, bench: LoadBenchmarkResult) -> ReadinessDecision | None:
    if bench.server_crashed:
        return judge.fail(
            Criterion.MEASUREMENT,
            Verdict.REVISIT,
            f"benchmark valid: server crashed during the benchmark ({bench.server_crashed}); "
            "its log says why; re-run load_benchmark once fixed",
        )
    if not bench.workloads:
        return judge.fail(
            Criterion.MEASUREMENT, Verdict.REVISIT, "benchmark valid: no workload was measured; re-run load_benchmark"
        )
    judge.criteria[Criterion.MEASUREMENT] = Status.PASS
    return None


def _capacity(judge: _Judge, bench: LoadBenchmarkResult) -> ReadinessDecision | None:
    """The absolute criterion: a model that misses the SLO with one request at a time fails, incumbent or not."""
    zero = [w for w in bench.workloads if w.vllm.capacity_rps.median <= 0.0]
    if zero:
        return judge.fail(
            Criterion.CAPACITY,
            Verdict.KEEP_INCUMBENT,
            *(
                f"capacity at the SLO: vLLM capacity on {w.workload} at p99 ≤ {w.slo_p99_ms:g} ms is 0 "
                f"({w.vllm.capacity_rps.fmt()} req/s): one request at a time already misses the SLO"
                for w in zero
            ),
        )
    judge.criteria[Criterion.CAPACITY] = Status.PASS
    return None


def _ratio_text(w: WorkloadComparison, ratio: Interval) -> tuple[str, str]:
    """("capacity ratio 0.95 [0.83, 1.08]", "on <workload> at p99 ≤ 100 ms (vLLM ... vs incumbent ... req/s)")."""
    incumbent = w.incumbent.capacity_rps.fmt(1) if w.incumbent else "—"
    where = (
        f"on {w.workload} at p99 ≤ {w.slo_p99_ms:g} ms "
        f"(vLLM {w.vllm.capacity_rps.fmt(1)} vs incumbent {incumbent} req/s)"
    )
    return f"capacity ratio {ratio.fmt()}", where


def _performance(judge: _Judge, bench: LoadBenchmarkResult, t: ReadinessThresholds) -> ReadinessDecision:
    bar = t.min_capacity_ratio
    compared = [(w, w.capacity_ratio) for w in bench.workloads if w.capacity_ratio is not None]
    if not compared or not judge.inputs.has_incumbent:
        return _not_compared(judge, bench, t)
    texts = {w.workload: _ratio_text(w, ratio) for w, ratio in compared}
    ratios = {w.workload: ratio for w, ratio in compared}
    below = [w.workload for w, ratio in compared if ratio.high <= bar]
    if below:
        reasons = (
            f"performance vs incumbent: {texts[n][0]} {'<' if ratios[n].high < bar else '≤'} {bar:.2f} "
            f"{texts[n][1]}: slower than the incumbent"
            for n in below
        )
        return judge.fail(Criterion.PERFORMANCE, Verdict.KEEP_INCUMBENT, *reasons)
    noisy = [w.workload for w, ratio in compared if ratio.low < bar]
    if noisy:
        reasons = (
            f"performance vs incumbent: {texts[n][0]}: within measurement noise (the interval straddles the bar "
            f"{bar:.2f}) {texts[n][1]}; inconclusive after {ratios[n].n} repeats: re-measure with the nightly "
            "profile (finer resolution, longer windows)"
            for n in noisy
        )
        return judge.fail(Criterion.PERFORMANCE, Verdict.REVISIT, *reasons)
    worst, ratio = min(compared, key=lambda pair: pair[1].low)
    judge.criteria[Criterion.PERFORMANCE] = Status.PASS
    passed = [
        f"performance vs incumbent: all criteria pass: lower bound {ratio.low:.2f} ≥ {bar:.2f} on the worst "
        f"workload, {texts[worst.workload][0]} {texts[worst.workload][1]}"
    ]
    uncompared = [w.workload for w in bench.workloads if w.capacity_ratio is None]
    if uncompared:
        passed.append(f"performance vs incumbent: not compared on {', '.join(uncompared)}")
    return judge.done(Verdict.MIGRATE, *passed)


def _not_compared(judge: _Judge, bench: LoadBenchmarkResult, t: ReadinessThresholds) -> ReadinessDecision:
    why = bench.incumbent_error or ("no incumbent in the catalog" if not judge.inputs.has_incumbent else "not measured")
    alone = ", ".join(f"{w.workload} {w.vllm.capacity_rps.fmt(1)} req/s" for w in bench.workloads)
    if t.require_incumbent:
        return judge.fail(
            Criterion.PERFORMANCE,
            Verdict.REVISIT,
            f"performance vs incumbent: no incumbent measurement ({why}), and a comparison is required "
            "(add `incumbent:` to the catalog entry, or set require_incumbent false)",
        )
    judge.criteria[Criterion.PERFORMANCE] = Status.NOT_COMPARED
    return judge.done(
        Verdict.MIGRATE, f"performance vs incumbent: not compared ({why}); vLLM alone: capacity at the SLO {alone}"
    )


__all__ = [
    "DEFAULT_PERFORMANCE_BAR",
    "REQUIRED_ENDPOINTS",
    "CheckOutcome",
    "Criterion",
    "ReadinessDecision",
    "ReadinessInputs",
    "ReadinessThresholds",
    "Status",
    "Verdict",
    "decide",
]

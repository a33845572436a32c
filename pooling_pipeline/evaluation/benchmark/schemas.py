"""What load_benchmark hands to migration_readiness: capacity at an SLO, repeated, with intervals.

This is the contract between the evaluation and readiness domains (issue 11). Readiness reads these
fields by name and type; renaming one fails mypy downstream, never silently at run time.

Capacity is the highest offered request rate (open loop, latency from the *planned* send) whose p99 is
within the workload's SLO and whose success rate is at least `min_success_rate`. Each capacity search is
repeated (vLLM and the incumbent alternating), and every figure the verdict reads is an `Interval` over
those repeats; `Interval.method` says how it was made.
"""

from __future__ import annotations

import math
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from pooling_pipeline.evaluation.server_metrics import ServerSideSummary


class BenchmarkProfile(StrEnum):
    """Which load profile produced a result: the report says so beside every verdict."""

    DEMO = "demo"  # local demo: fewer repeats, shorter windows, one workload per model
    NIGHTLY = "nightly"  # full re-validation: every workload, default repeats and windows
    CUSTOM = "custom"  # run config changed by hand


class Interval(BaseModel):
    """A median over repeats with the interval around it. `high` may be infinite: a capacity ratio whose
    incumbent sustained nothing in enough repeats has no upper bound. JSON writes it as the string
    "Infinity" (a bare Infinity is not JSON: the UI's JSON metadata would not parse), which reads back as inf."""

    model_config = ConfigDict(ser_json_inf_nan="strings")

    median: float
    low: float
    high: float
    n: int = Field(description="repeats the interval is made of")
    confidence: float | None = Field(None, description="nominal coverage of [low, high] for the median, if known")
    method: str = Field("", description="how low/high were made, for the report")

    def straddles(self, threshold: float) -> bool:
        # Strictly inside: a ratio interval's bounds are strict (the true ratio lies strictly between them,
        # benchmark/stats.py), so a bound equal to the threshold still decides.
        return self.low < threshold < self.high

    def fmt(self, digits: int = 2) -> str:
        high = "∞" if math.isinf(self.high) else f"{self.high:.{digits}f}"
        return f"{self.median:.{digits}f} [{self.low:.{digits}f}, {high}]"


class PointKind(StrEnum):
    OK = "ok"
    CONTENDED = "contended"  # the generator lagged behind its schedule, but latency from planned send covers it
    GENERATOR_LIMITED = "generator-limited"  # the generator could not offer the load (re-run with more workers)


class SearchPoint(BaseModel):
    """One open-loop window of a capacity search."""

    # A window with no successful answer has an infinite p99: JSON keeps it as Infinity, not null.
    model_config = ConfigDict(ser_json_inf_nan="constants")

    offered_rps: float
    achieved_rps: float
    requests: int
    success_rate: float
    p99_ms: float  # from planned send
    p50_ms: float
    lag_p99_ms: float | None = None
    kind: PointKind = PointKind.OK
    note: str = ""
    within_slo: bool
    workers: int = 1
    lag_drift_ms: float | None = None  # how much later the last sends went out than the first (> 0: behind)
    generator_busy: float | None = None  # generator CPU / wall while sending, per process (1.0 = saturated)
    stopped_early: bool = False  # the window ended once its failure was certain (see loadgen StopRule)
    confirmation: bool = False  # a confirming window at a rate whose window missed (search `confirm_misses`)


class CapacitySearch(BaseModel):
    """One repeat of the capacity search of one server on one workload."""

    server: str  # "vllm" | "incumbent"
    workload: str  # e.g. "embeddings x1", "rerank 16 docs"
    inputs_per_request: int
    slo_p99_ms: float
    capacity_rps: float  # 0.0: even the calibration rate missed the SLO
    service_time_ms: float | None = None  # calibration: median latency at concurrency 1
    points: list[SearchPoint] = Field(default_factory=list)
    repeat: int = 0  # 0-based; repeats of vLLM and the incumbent with the same index are paired
    failed_above_rps: float | None = None  # the lowest failing rate above capacity (None: none failed)
    resolution: float | None = None  # the search stopped once failed_above / capacity <= 1 + resolution
    note: str = ""  # why the search ended early, if it did
    # What the server's own /metrics counted during this search (vLLM; None when it exports none).
    server_side: ServerSideSummary | None = None


class KneePoint(BaseModel):
    """A closed-loop point of the saturation sweep (for the plot)."""

    model_config = ConfigDict(ser_json_inf_nan="constants")

    concurrency: int
    requests_per_s: float
    inputs_per_s: float
    p99_ms: float
    p50_ms: float | None = None


class ServerCapacity(BaseModel):
    """One server on one workload, over all repeats."""

    server: str
    capacity_rps: Interval
    capacity_inputs_per_s: Interval
    searches: list[CapacitySearch] = Field(default_factory=list)
    knee: list[KneePoint] = Field(default_factory=list)
    success_rate: float | None = None
    gpus: float | None = Field(None, description="GPUs the server held (None on CPU)")
    capacity_inputs_per_s_per_gpu: float | None = None
    cost_per_million_inputs: float | None = Field(None, description="at POOLING_GPU_HOUR_PRICE, at capacity")


class WorkloadComparison(BaseModel):
    """vLLM against the incumbent on one workload."""

    workload: str
    inputs_per_request: int
    slo_p99_ms: float
    vllm: ServerCapacity
    incumbent: ServerCapacity | None = None
    capacity_ratio: Interval | None = Field(None, description="vLLM / incumbent capacity at the SLO (paired repeats)")
    common_load_rps: float | None = Field(None, description="a rate both servers sustain, for p99 side by side")
    p99_at_common_load_ms: dict[str, float] = Field(default_factory=dict)  # server -> p99 at common_load_rps
    extended: str | None = Field(None, description="why this workload ran more than the planned repeats, if it did")


class LoadBenchmarkResult(BaseModel):
    """What migration_readiness needs from the benchmark (plus the detail behind it)."""

    model: str
    profile: BenchmarkProfile
    started_at: str
    vllm_url: str
    incumbent_url: str | None = None
    incumbent_error: str | None = None  # why there is no comparison, when there is none
    conditions: dict[str, str] = Field(default_factory=dict)  # dtype, CPU threads, ... as the report states them
    repeats: int  # planned per server and workload; a close comparison may run up to max_repeats
    max_repeats: int | None = None
    decision_bar: float | None = Field(None, description="capacity ratio the extra repeats try to settle")
    workloads: list[WorkloadComparison] = Field(default_factory=list)
    success_rate: float  # vLLM, all measured requests
    server_crashed: str | None = Field(None, description="the vLLM server died during the benchmark: why")
    generator_limited: list[str] = Field(default_factory=list)  # points the generator could not offer, after re-runs
    contended: list[str] = Field(default_factory=list)  # points whose sends lagged (host contention): pessimistic
    resolution: float | None = None  # capacity search resolution (hi / lo <= 1 + resolution)
    duration_s: float | None = None  # wall time of the whole benchmark
    cold_start_s: float | None = None
    results_uri: str | None = None
    plot_files: list[str] = Field(default_factory=list)

    def repeats_text(self) -> str:
        """ "3 repeats", or "3 repeats (6 on rerank 4 docs: the ratio was close to the bar 1.00)"."""
        more = [f"{w.vllm.capacity_rps.n} on {w.workload}" for w in self.workloads if w.extended]
        if not more:
            return f"{self.repeats} repeats"
        bar = f" {self.decision_bar:.2f}" if self.decision_bar is not None else ""
        return f"{self.repeats} repeats ({', '.join(more)}: the ratio was close to the bar{bar})"

    def worst_ratio(self) -> WorkloadComparison | None:
        """The workload with the lowest capacity-ratio median: performance must hold for every workload."""
        compared = [w for w in self.workloads if w.capacity_ratio is not None]
        return min(compared, key=lambda w: w.capacity_ratio.median if w.capacity_ratio else 0.0, default=None)

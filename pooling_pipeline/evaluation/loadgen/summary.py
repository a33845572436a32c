"""Records -> numbers: throughput, latency percentiles, success rate, errors by class, schedule lag.

Pure: no I/O, no clock. Latency percentiles are over successful requests (a fast 503 is not a fast
answer); errors are counted by class beside them. Warm-up records are dropped first.

The schedule lag (actual - planned send) is reported, never turned into a verdict here: latency from the
planned send already contains it. `lag_drift_ms` (how much later the last sends went out than the first)
and `send_cpu_fraction` (how much of the time the generator wanted a core while sending) are what
benchmark/points.py reads to tell a generator that could not keep up from one that shared its cores.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
from pydantic import BaseModel, Field

from pooling_pipeline.evaluation.loadgen.runner import LoadResult, RequestRecord

PERCENTILES = (50, 90, 95, 99)


class LatencyStats(BaseModel):
    count: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def of(cls, seconds: list[float] | np.ndarray) -> LatencyStats:
        values = np.asarray(seconds, dtype=float) * 1000.0
        if values.size == 0:
            nan = math.nan
            return cls(count=0, mean_ms=nan, p50_ms=nan, p90_ms=nan, p95_ms=nan, p99_ms=nan, max_ms=nan)
        p50, p90, p95, p99 = np.percentile(values, PERCENTILES).tolist()
        return cls(
            count=int(values.size),
            mean_ms=float(values.mean()),
            p50_ms=p50,
            p90_ms=p90,
            p95_ms=p95,
            p99_ms=p99,
            max_ms=float(values.max()),
        )


class LoadSummary(BaseModel):
    label: str = ""
    mode: str  # "open" | "closed"
    offered_rate: float | None = None  # open loop, requests/s
    arrival: str | None = None
    concurrency: int | None = None  # closed loop
    workers: int
    requests: int  # measured (warm-up excluded)
    succeeded: int
    success_rate: float
    errors: dict[str, int] = Field(default_factory=dict)  # class -> count
    window_s: float  # first measured send (planned, in open loop) -> last completion
    requests_per_s: float  # successful requests per second
    inputs_per_s: float
    tokens_per_s: float
    send_rate: float  # achieved send rate (all measured sends / send span)
    latency: LatencyStats  # from the actual send time
    latency_from_planned: LatencyStats | None = None  # open loop: what a user arriving on schedule saw
    lag: LatencyStats | None = None  # open loop: actual - planned send time
    # open loop: median lag of the last tenth of the sends minus that of the first tenth (> 0: fell behind)
    lag_drift_ms: float | None = None
    client_cpu_s: float = 0.0
    # open loop: share of the sending time the generator's threads ran or waited for a core (~1.0: they
    # never idled, the generator was CPU-bound whoever had the cores)
    send_cpu_fraction: float | None = None
    planned: int = 0  # open loop: measured requests in the schedule (more than `requests` when stopped early)
    stopped: str | None = None  # open loop: why the window ended early (runner.StopRule)
    valid: bool = True  # False only when nothing was measured
    invalid_reason: str | None = None


def _drift_ms(measured: list[RequestRecord]) -> float | None:
    if len(measured) < 20:
        return None
    by_plan = sorted(measured, key=lambda r: r.planned)
    tenth = max(5, len(by_plan) // 10)
    first = float(np.median([r.sent - r.planned for r in by_plan[:tenth]]))
    last = float(np.median([r.sent - r.planned for r in by_plan[-tenth:]]))
    return (last - first) * 1000.0


def summarize(result: LoadResult) -> LoadSummary:
    measured: list[RequestRecord] = [r for r in result.records if not r.warmup]
    ok = [r for r in measured if r.error is None]
    errors = Counter(r.error for r in measured if r.error is not None)
    open_loop = result.mode == "open"
    if measured:
        first = min((r.planned if open_loop else r.sent) for r in measured)
        window = max(r.done for r in measured) - first
        sends = [r.sent for r in measured]
        send_span = max(sends) - min(sends)
    else:
        window = send_span = 0.0
    per_s = (lambda x: x / window) if window > 0 else (lambda x: 0.0)
    lag = LatencyStats.of([r.sent - r.planned for r in measured]) if open_loop else None
    valid, reason = True, None
    if not measured:
        valid, reason = False, "no measured requests (run shorter than its warm-up?)"
    busy = None
    if open_loop and result.send_wall_s > 0:
        # send_wall_s is summed over the workers, like send_cpu_s: the ratio is per process.
        busy = result.send_cpu_s / result.send_wall_s
    return LoadSummary(
        label=result.label,
        mode=result.mode,
        offered_rate=result.offered_rate,
        arrival=result.arrival,
        concurrency=result.concurrency,
        workers=result.workers,
        requests=len(measured),
        succeeded=len(ok),
        success_rate=(len(ok) / len(measured)) if measured else 0.0,
        errors=dict(sorted(errors.items())),
        window_s=window,
        requests_per_s=per_s(len(ok)),
        inputs_per_s=per_s(sum(r.inputs for r in ok)),
        tokens_per_s=per_s(sum(r.tokens for r in ok)),
        send_rate=((len(measured) - 1) / send_span) if send_span > 0 else 0.0,
        latency=LatencyStats.of([r.done - r.sent for r in ok]),
        latency_from_planned=LatencyStats.of([r.done - r.planned for r in ok]) if open_loop else None,
        lag=lag,
        lag_drift_ms=_drift_ms(measured) if open_loop else None,
        client_cpu_s=result.client_cpu_s,
        send_cpu_fraction=busy,
        planned=result.planned,
        stopped=result.stopped,
        valid=valid,
        invalid_reason=reason,
    )

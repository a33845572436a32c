"""The capacity search: the highest offered rate whose window meets the SLO. Pure: it only calls `measure`.

Like `vllm bench sweep serve_sla` (search the request rate, keep the highest passing value), with two
choices of ours:

- **start from a calibration**: the closed-loop sweep at concurrency 1, 2, 4, ... (run first, for the
  knee plot) gives the saturation throughput X; capacity at any SLO is below X, so the search starts at
  X/2, doubles while the SLO holds and halves while it does not, until one passing and one failing rate
  bracket the boundary;
- **bisect geometrically** (the midpoint of lo and hi is sqrt(lo x hi)) until hi / lo <= 1 + resolution:
  the same relative precision at 5 req/s (a CPU) and 5000 req/s (a GPU).

Later repeats start at the previous repeat's capacity with steps of `1 + max(resolution, 0.25)` instead
of doubling: a repeat re-decides the boundary on its own measurements (it can move either way) at the
cost of about two windows instead of five.

A rate whose window the generator could not offer (GENERATOR_LIMITED, after its re-run with more
workers) counts as failing: capacity is then a lower bound, and the result lists the point.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from pooling_pipeline.evaluation.benchmark.schemas import SearchPoint

Measure = Callable[[float], SearchPoint]


@dataclass
class SearchOutcome:
    capacity_rps: float  # highest passing rate (0.0: none passed)
    failed_above_rps: float  # lowest failing rate above it (inf: none failed, the search hit max_rps)
    points: list[SearchPoint] = field(default_factory=list)
    stopped: str = ""  # why the search ended early, if it did (point budget, ceiling)


def search_capacity(
    measure: Measure,
    start_rps: float,
    *,
    resolution: float,
    step: float = 2.0,
    max_rps: float = 1e6,
    min_rps: float | None = None,
    max_points: int = 24,
) -> SearchOutcome:
    """Bracket the boundary from `start_rps` by factors of `step`, then bisect to `resolution`.

    `min_rps` (default start / 16): below it the search gives up and reports capacity 0 (even a trickle
    missed the SLO). `max_rps`: above it the search stops and reports the last passing rate with
    `failed_above_rps` = inf (the server was not saturated: raise max_rps).
    """
    if start_rps <= 0 or resolution <= 0 or step <= 1:
        raise ValueError(f"need start_rps > 0, resolution > 0, step > 1 (got {start_rps}, {resolution}, {step})")
    floor = min_rps if min_rps is not None else start_rps / 16
    out = SearchOutcome(0.0, math.inf)
    lo, hi = 0.0, math.inf

    def probe(rate: float) -> bool:
        point = measure(rate)
        out.points.append(point)
        return point.within_slo

    rate = min(start_rps, max_rps)
    # 1. bracket: up while passing, down while failing
    while len(out.points) < max_points:
        if probe(rate):
            lo = rate
            if hi < math.inf:
                break
            if rate >= max_rps:
                out.stopped = f"reached max_rps {max_rps:g} without failing"
                break
            rate = min(rate * step, max_rps)
        else:
            hi = rate
            if lo > 0:
                break
            rate = rate / step
            if rate < floor:
                out.stopped = f"no rate down to {floor:.3g} req/s met the SLO"
                break
    # 2. bisect
    while lo > 0 and hi < math.inf and hi / lo > 1.0 + resolution and len(out.points) < max_points:
        mid = math.sqrt(lo * hi)
        if probe(mid):
            lo = mid
        else:
            hi = mid
    if len(out.points) >= max_points and not out.stopped and (lo == 0 or hi == math.inf or hi / lo > 1 + resolution):
        out.stopped = f"point budget ({max_points}) spent before the resolution was reached"
    out.capacity_rps, out.failed_above_rps = lo, hi
    return out


def repeat_step(resolution: float) -> float:
    """Step of a later repeat's bracket: one resolution step, but never under 25 % (so a boundary that
    moved between repeats is found in a step or two, then bisected)."""
    return 1.0 + max(resolution, 0.25)


def start_rate(service_time_s: float | None, saturation_rps: float | None) -> float:
    """Where the first repeat starts: half the saturation throughput of the closed-loop sweep (capacity at
    an SLO is below it), else half of one-request-at-a-time throughput."""
    if saturation_rps and saturation_rps > 0:
        return saturation_rps / 2
    if service_time_s and service_time_s > 0:
        return 0.5 / service_time_s
    raise ValueError("no calibration: neither a saturation throughput nor a service time was measured")

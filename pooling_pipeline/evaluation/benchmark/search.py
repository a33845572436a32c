"""The capacity search: the highest offered rate whose window meets the SLO. Pure: it only calls `measure`.

Like `vllm bench sweep serve_sla` (search the request rate, keep the highest passing value), with choices
of ours:

- **start from a calibration**: the closed-loop sweep at concurrency 1, 2, 4, ... (run first, for the
  knee plot) gives the saturation throughput X; capacity at any SLO is below X, so the search starts at
  the grid rate nearest X/2 and moves up while the SLO holds and down while it does not, first by the
  whole grid steps nearest a factor of 2, then by twice the previous move (galloping), until one
  passing and one failing rate bracket the boundary;
- **one fixed grid of rates** (`RateGrid`): every rate tried is (1 + resolution)^k req/s for an integer k,
  for every server, repeat and run. Bisection halves the index interval (the geometric midpoint, so the
  same relative precision at 5 req/s on a CPU and 5000 req/s on a GPU) until the passing and the failing
  rate are neighbours, one resolution step apart. Why a fixed grid: a search anchored on its own noisy
  calibration lands on a different grid each time, so two runs of identical servers could report
  capacities a step apart, and their ratio anywhere within a factor (1 + resolution)^2; on a shared grid,
  identical servers give identical capacities and a paired ratio is a whole number of steps;
  `max_rps` is met as the highest grid rate at or below it;
- **a contradicting miss is confirmed** (`confirm_misses`, 1 by default): a window that misses the SLO at
  a rate the server already sustained in an earlier repeat (`confirm_up_to_rps`) is measured once more
  at the same rate, and the rate fails only when every window missed. A short window's p99 is nearly
  its maximum (at 30 requests, one late answer decides it), so a single scheduler stall on a shared
  host used to fail a rate the server sustains and cut that repeat's capacity by a step or more (the
  repeats an interval's lower bound is made of). The confirming window replays the same arrivals
  (runner `ServerBench.schedule`), so it tests the host, not the trace. A miss above every sustained rate
  is what a search expects at its boundary and is taken as is: confirming those too cost the demo ~130 s
  a catalog run (measured 2026-12-07 when each window still drew its own arrivals: 220 such
  confirmations in 3 runs, 174 missed again). Repeat 1 has no earlier repeat, so its evidence is the
  calibration: a miss at or below half the throughput the closed loop carried within the SLO (runner
  `ServerBench.calibrated_rps`) is confirmed too. Both servers get the same rule; the points list keeps
  every window, the confirming ones marked `confirmation`.

Later repeats start at the previous repeat's capacity with a first step of `1 + max(resolution, 0.25)`
instead of doubling: a repeat re-decides the boundary on its own measurements (it can move either way) at
the cost of about two windows instead of five (three or four when a miss is confirmed). The moves gallop
because a previous capacity can be far off: on 2026-12-07 repeat 1 put MiniLM's vLLM capacity at 0.6
req/s (a cluster in that repeat's arrival trace: runner `ServerBench.schedule`), and repeat 2,
climbing from there one 25 % step per window, spent its whole point budget reaching 3.1 req/s where repeat
3 found 7.5.

A rate whose window the generator could not offer (GENERATOR_LIMITED, after its re-run with more
workers) counts as failing without a confirmation (another window would not change the generator):
capacity is then a lower bound, and the result lists the point.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from pooling_pipeline.evaluation.benchmark.schemas import PointKind, SearchPoint

Measure = Callable[[float], SearchPoint]


@dataclass(frozen=True)
class RateGrid:
    """The rates a search may try: growth^k req/s for integer k (growth = 1 + resolution)."""

    growth: float

    def __post_init__(self) -> None:
        if self.growth <= 1:
            raise ValueError(f"a rate grid needs growth > 1, got {self.growth}")

    @classmethod
    def for_resolution(cls, resolution: float) -> RateGrid:
        return cls(1.0 + resolution)

    def rate(self, index: int) -> float:
        return float(self.growth**index)

    def nearest(self, rate: float) -> int:
        return round(math.log(rate) / math.log(self.growth))

    def floor(self, rate: float) -> int:
        """The highest index whose rate is <= `rate` (a hair of float slack, so a grid rate maps to itself)."""
        return math.floor(math.log(rate) / math.log(self.growth) + 1e-9)

    def ceil(self, rate: float) -> int:
        """The lowest index whose rate is >= `rate` (the same float slack as `floor`)."""
        return math.ceil(math.log(rate) / math.log(self.growth) - 1e-9)

    def steps(self, factor: float) -> int:
        """Grid steps that make up about `factor` (at least one)."""
        return max(1, round(math.log(factor) / math.log(self.growth)))

    def snap(self, value: float, tolerance: float = 1e-6) -> float:
        """`value` as the exact grid power it is within float error of (a ratio of two grid rates); else as is."""
        if value <= 0:
            return value
        k = math.log(value) / math.log(self.growth)
        return self.rate(round(k)) if abs(k - round(k)) < tolerance else value


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
    confirm_misses: int = 0,
    confirm_up_to_rps: float = math.inf,
) -> SearchOutcome:
    """Bracket the boundary from `start_rps` by a first move of about `step` (doubling with each further
    move the same way), then bisect to `resolution`, on the grid of (1 + resolution)^k req/s.

    `min_rps` (default start / 16): below it the search gives up and reports capacity 0 (even a trickle
    missed the SLO). `max_rps`: above it the search stops and reports the last passing rate with
    `failed_above_rps` = inf (the server was not saturated: raise max_rps). `confirm_misses`: windows
    measured again at a rate whose window missed before the rate counts as failing (windows count
    against `max_points`), only at rates <= `confirm_up_to_rps` (the highest rate the server sustained
    before: a miss there contradicts the evidence; above it, a miss is the expected boundary).
    """
    if start_rps <= 0 or resolution <= 0 or step <= 1:
        raise ValueError(f"need start_rps > 0, resolution > 0, step > 1 (got {start_rps}, {resolution}, {step})")
    if not max_rps > 0:
        raise ValueError(f"need max_rps > 0 (got {max_rps}); use math.inf for no ceiling")
    grid = RateGrid.for_resolution(resolution)
    floor = min_rps if min_rps is not None else start_rps / 16
    # No ceiling: the highest index whose rate is still a float (galloping reaches any finite index quickly,
    # and rate() overflows past ~1.8e308).
    top = grid.floor(max_rps if math.isfinite(max_rps) else 1e300)
    jump = grid.steps(step)
    out = SearchOutcome(0.0, math.inf)
    unconfirmed: list[float] = []  # misses the point budget left no window to confirm
    lo: int | None = None  # grid index of the highest passing rate so far
    hi: int | None = None  # ... and of the lowest failing rate above it

    def probe(index: int) -> bool:
        rate = grid.rate(index)
        point = measure(rate)
        out.points.append(point)
        contradicts = rate <= confirm_up_to_rps * (1 + 1e-9)
        for _ in range(confirm_misses if contradicts else 0):
            if point.within_slo or point.kind is PointKind.GENERATOR_LIMITED:
                break
            if len(out.points) >= max_points:
                unconfirmed.append(rate)
                break
            point = measure(rate).model_copy(update={"confirmation": True})
            out.points.append(point)
        return point.within_slo

    k = min(grid.nearest(start_rps), top)
    # The lowest index whose rate is >= floor (with no floor, the lowest rate that is still a float).
    bottom = grid.ceil(max(floor, 1e-300))
    moves = 0  # consecutive moves so far, all in one direction (a change of direction ends the bracket)
    # 1. bracket: up while passing, down while failing, each move twice the last (galloping): a start far
    # from the boundary (a later repeat after a stalled one, a calibration under contention) costs
    # log2(distance) windows, not distance / step.
    while len(out.points) < max_points:
        distance = jump * 2**moves
        moves += 1
        if probe(k):
            lo = k
            if hi is not None:
                break
            if k >= top:
                out.stopped = f"reached max_rps {max_rps:g} (grid rate {grid.rate(top):.4g}) without failing"
                break
            k = min(k + distance, top)
        else:
            hi = k
            if lo is not None:
                break
            if k <= bottom:
                out.stopped = f"no rate down to {floor:.3g} req/s met the SLO"
                break
            k = max(k - distance, bottom)
    # 2. bisect on the grid: the geometric midpoint, until the two rates are neighbours
    while lo is not None and hi is not None and hi - lo > 1 and len(out.points) < max_points:
        mid = (lo + hi) // 2
        if probe(mid):
            lo = mid
        else:
            hi = mid
    if len(out.points) >= max_points and not out.stopped and (lo is None or hi is None or hi - lo > 1):
        out.stopped = f"point budget ({max_points}) spent before the resolution was reached"
    if unconfirmed:
        note = f"the point budget ({max_points}) left no window to confirm the miss at {unconfirmed[-1]:.4g} req/s"
        out.stopped = f"{out.stopped}; {note}" if out.stopped else note
    out.capacity_rps = grid.rate(lo) if lo is not None else 0.0
    out.failed_above_rps = grid.rate(hi) if hi is not None else math.inf
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

"""Intervals over repeats: how sure a capacity, or a capacity ratio, is. Pure, no I/O.

Each capacity search is repeated `n` times (vLLM and the incumbent alternating), and one repeat's capacity
is the highest offered rate that met the SLO (`lo`); the next rate tried above it failed (`hi`), so the
true boundary of that repeat lies in [lo, hi), with hi <= lo x (1 + resolution).

How an interval is made (the report prints `Interval.method`):

- **median**: the median of the repeats' `lo` (of the paired ratios lo_vllm_i / lo_incumbent_i);
- **[low, high]**: the order-statistic interval of the median, [x(k), x(n+1-k)] over the n sorted repeats,
  with the largest k whose coverage is at least `TARGET_COVERAGE` (75 %). The k - 1 lowest and the k - 1
  highest repeats are left out; all n repeats fall above a distribution's median with probability
  2^-n, so [min, max] (k = 1) covers it with probability 1 - 2^(1-n): 75 % at n = 3. Six repeats are the
  first count that can leave one extreme out on each side at that coverage: [x(2), x(5)] covers 78 %.
  It assumes nothing about the shape of the noise (host contention is anything but normal);
- **on one grid**: every rate a search tries is (1 + resolution)^k req/s (benchmark/search.py
  `RateGrid`), so a paired ratio is a whole number of resolution steps and identical servers give a
  ratio of exactly 1; "vLLM one step above the incumbent in the worst counted repeat" is a lower bound of
  exactly 1.0, not 0.9999. Both bounds of a ratio are strict: a repeat's true capacity lies in
  [lo, lo x (1 + res)), so the true ratio of a pair lies strictly between r / (1 + res) and r x (1 + res).
  A lower bound equal to the bar therefore clears it, and an upper bound equal to it falls short
  (readiness/verdict.py; `Interval.straddles` is strict on both sides);
- **widened by the resolution**: every repeat stops within one resolution step of its boundary, so
  equal repeats (all landing on the same grid point) must not read as a zero-width interval. A capacity
  interval is [x(k) of lo_i, x(n+1-k) of min(hi_i, lo_i x (1 + res))]; a ratio interval is
  [x(k) of r_i / (1 + res), x(n+1-k) of r_i x (1 + res)], since each side of a ratio may sit up to one
  step below its boundary.

**More repeats where the answer is close** (`worth_extending`; the runner acts on it): when the ratio's
interval after the planned repeats straddles the decision bar, but its median is clear of the bar by
more than one resolution step, one noisy repeat is what keeps the interval across the bar, and six
repeats (which may leave it out) can settle it. When the median itself is within a step of the bar, no
number of repeats at this resolution can clear it (the bound is at most median / (1 + res)), so none
are spent. Looking twice (after 3, then after 6) widens the chance of a wrong call a little; the bar is a
migration decision, not a significance test, and the report says how many repeats each interval has.

Why not a bootstrap or a t-interval: with 3 repeats a bootstrap only re-shuffles three numbers, and a
t-interval assumes normal noise. The order-statistic interval is exact for any noise and says plainly
how little three repeats can promise.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from pooling_pipeline.evaluation.benchmark.schemas import Interval
from pooling_pipeline.evaluation.benchmark.search import RateGrid

TARGET_COVERAGE = 0.75  # what [min, max] of 3 repeats gives; more repeats keep it and narrow the interval


def order_coverage(n: int, k: int) -> float:
    """Probability that [x(k), x(n+1-k)] of n independent repeats contains their distribution's median:
    1 - 2 P(Binomial(n, 1/2) <= k - 1)."""
    if n < 2 or not 1 <= k <= n // 2:
        return 0.0
    below = sum(math.comb(n, i) for i in range(k)) / 2.0**n
    return 1.0 - 2.0 * below


def median_coverage(n: int) -> float:
    """Probability that [min, max] of n independent repeats contains their distribution's median."""
    return order_coverage(n, 1)


def median_rank(n: int, target: float = TARGET_COVERAGE) -> int:
    """The largest k whose [x(k), x(n+1-k)] still covers the median with probability >= target (1 at least)."""
    k = 1
    while order_coverage(n, k + 1) >= target:
        k += 1
    return k


def _method(what: str, n: int, k: int, resolution: float) -> str:
    bounds = "[min, max]" if k == 1 else f"[x({k}), x({n + 1 - k})]"
    return (
        f"median of {n} repeats of {what}; [low, high] = {bounds} of the sorted repeats (order-statistic "
        f"interval of the median, coverage {order_coverage(n, k):.0%}), widened by the search resolution "
        f"{resolution:.0%}"
    )


def capacity_interval(lows: Sequence[float], highs: Sequence[float], resolution: float) -> Interval:
    """The capacity of one server over repeats: each repeat's passing rate `lows[i]` and the failing
    rate above it `highs[i]` (inf when nothing above was tried or the search hit its ceiling)."""
    if not lows or len(lows) != len(highs):
        raise ValueError(f"need one (low, high) per repeat, got {len(lows)} lows and {len(highs)} highs")
    n = len(lows)
    k = median_rank(n)
    tops = sorted(min(h, lo * (1.0 + resolution)) if lo > 0 else h for lo, h in zip(lows, highs, strict=True))
    top = tops[n - k]
    return Interval(
        median=statistics.median(lows),
        low=sorted(lows)[k - 1],
        high=top if math.isfinite(top) else sorted(lows)[n - k] * (1.0 + resolution),
        n=n,
        confidence=order_coverage(n, k),
        method=_method("the capacity (highest passing rate)", n, k, resolution),
    )


def ratio_interval(
    numerators: Sequence[float],
    denominators: Sequence[float],
    resolution: float,
    *,
    upper_bounds: Sequence[bool] | None = None,
) -> Interval | None:
    """vLLM / incumbent over paired repeats (repeat i of one with repeat i of the other: they ran back to
    back, so they saw the same machine state). None when a denominator is zero.

    `upper_bounds[i]`: denominator i is not a capacity but an upper bound on one (the incumbent sustained
    no rate in that repeat; the runner passes the lowest rate it failed). That repeat's ratio is then only
    known from below: at least numerator/bound, with no upper bound while vLLM sustained a rate. So the
    interval's low is made from the repeats' lower ends and its high from their upper ends, which are
    infinite for such repeats; the median is the median of the lower ends (conservative). Before, the bound
    was used as if it were a capacity, and a vLLM that sustained 0.6 req/s against an incumbent that
    sustained nothing got "ratio 0.06 [0.04, 0.09]", a keep-incumbent that only said the machine was slow."""
    if len(numerators) != len(denominators) or not numerators:
        raise ValueError(f"paired repeats needed: {len(numerators)} vs {len(denominators)}")
    if any(d <= 0 for d in denominators):
        return None
    bounded = list(upper_bounds) if upper_bounds is not None else [False] * len(numerators)
    # Both capacities sit on one grid of rates (search.RateGrid), so a ratio is a whole number of steps:
    # snapping removes the float error that would put "one step above" a hair under the bar.
    grid = RateGrid.for_resolution(resolution)
    lows = [grid.snap(a / b) for a, b in zip(numerators, denominators, strict=True)]
    highs = sorted(math.inf if bound and low > 0 else low for low, bound in zip(lows, bounded, strict=True))
    lows.sort()
    n = len(lows)
    k = median_rank(n)
    step = grid.growth
    return Interval(
        median=grid.snap(statistics.median(lows)),
        low=grid.snap(lows[k - 1] / step),
        high=highs[n - k] if math.isinf(highs[n - k]) else grid.snap(highs[n - k] * step),
        n=n,
        confidence=order_coverage(n, k),
        method=_method("the paired ratio vLLM/incumbent", n, k, resolution)
        + (
            f"; in {sum(bounded)} of {n} repeats the incumbent sustained no rate, so those ratios are known "
            "only from below"
            if any(bounded)
            else ""
        ),
    )


def worth_extending(ratio: Interval, bar: float, resolution: float) -> bool:
    """More repeats could settle a ratio interval that straddles `bar`: its median is clear of the bar by
    more than one resolution step (so an outlier repeat, not the median, keeps the interval across)."""
    step = 1.0 + resolution
    return ratio.straddles(bar) and (ratio.median / step >= bar or ratio.median * step <= bar)


def scaled(interval: Interval, factor: float) -> Interval:
    """The same interval in other units (requests/s -> inputs/s)."""
    return interval.model_copy(
        update={"median": interval.median * factor, "low": interval.low * factor, "high": interval.high * factor}
    )


def knee_index(throughputs: Sequence[float], min_growth: float) -> int | None:
    """Index of the saturation knee in a concurrency sweep (concurrency doubling at each step): the first
    point whose throughput grew by less than `min_growth` (0.10 = 10 %) over the one before. None while
    throughput still grows."""
    for i in range(1, len(throughputs)):
        if throughputs[i] < throughputs[i - 1] * (1.0 + min_growth):
            return i
    return None

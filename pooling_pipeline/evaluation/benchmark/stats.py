"""Intervals over repeats: how sure a capacity, or a capacity ratio, is. Pure, no I/O.

Each capacity search is repeated `n` times (vLLM and the incumbent alternating), and one repeat's capacity
is the highest offered rate that met the SLO (`lo`); the next rate tried above it failed (`hi`), so the
true boundary of that repeat lies in [lo, hi), with hi <= lo x (1 + resolution).

How an interval is made (the report prints `Interval.method`):

- **median**: the median of the repeats' `lo` (of the paired ratios lo_vllm_i / lo_incumbent_i);
- **[low, high]**: the order-statistic interval of the median, [min, max] over the n repeats. All n
  repeats fall above a distribution's median with probability 2^-n, and all below it with 2^-n, so
  [min, max] covers the median with probability 1 - 2^(1-n): 75 % at n = 3, 94 % at n = 5. It assumes
  nothing about the shape of the noise (host contention is anything but normal);
- **widened by the resolution**: every repeat stops within one resolution step of its boundary, so
  equal repeats (all landing on the same grid point) must not read as a zero-width interval. A capacity
  interval is [min lo_i, max hi_i]; a ratio interval is [min r_i / (1 + res), max r_i x (1 + res)],
  since each side of a ratio may sit up to one step below its boundary.

Why not a bootstrap or a t-interval: with 3 repeats a bootstrap only re-shuffles three numbers, and a
t-interval assumes normal noise. The order-statistic interval is exact for any noise and says plainly
how little three repeats can promise.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from pooling_pipeline.evaluation.benchmark.schemas import Interval


def median_coverage(n: int) -> float:
    """Probability that [min, max] of n independent repeats contains their distribution's median."""
    return 1.0 - 2.0 ** (1 - n) if n >= 2 else 0.0


def _method(what: str, n: int, resolution: float) -> str:
    return (
        f"median of {n} repeats of {what}; [low, high] = [min, max] of the repeats (order-statistic interval "
        f"of the median, coverage {median_coverage(n):.0%}), widened by the search resolution {resolution:.0%}"
    )


def capacity_interval(lows: Sequence[float], highs: Sequence[float], resolution: float) -> Interval:
    """The capacity of one server over repeats: each repeat's passing rate `lows[i]` and the failing
    rate above it `highs[i]` (inf when nothing above was tried or the search hit its ceiling)."""
    if not lows or len(lows) != len(highs):
        raise ValueError(f"need one (low, high) per repeat, got {len(lows)} lows and {len(highs)} highs")
    n = len(lows)
    top = max(min(h, lo * (1.0 + resolution)) if lo > 0 else h for lo, h in zip(lows, highs, strict=True))
    return Interval(
        median=statistics.median(lows),
        low=min(lows),
        high=top if math.isfinite(top) else max(lows) * (1.0 + resolution),
        n=n,
        confidence=median_coverage(n),
        method=_method("the capacity (highest passing rate)", n, resolution),
    )


def ratio_interval(numerators: Sequence[float], denominators: Sequence[float], resolution: float) -> Interval | None:
    """vLLM / incumbent over paired repeats (repeat i of one with repeat i of the other: they ran back to
    back, so they saw the same machine state). None when a denominator is zero (the runner passes an
    upper bound of the incumbent's capacity instead of a zero, which makes that ratio a lower bound)."""
    if len(numerators) != len(denominators) or not numerators:
        raise ValueError(f"paired repeats needed: {len(numerators)} vs {len(denominators)}")
    if any(d <= 0 for d in denominators):
        return None
    ratios = [a / b for a, b in zip(numerators, denominators, strict=True)]
    n = len(ratios)
    step = 1.0 + resolution
    return Interval(
        median=statistics.median(ratios),
        low=min(ratios) / step,
        high=max(ratios) * step,
        n=n,
        confidence=median_coverage(n),
        method=_method("the paired ratio vLLM/incumbent", n, resolution),
    )


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

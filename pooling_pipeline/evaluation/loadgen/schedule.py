"""Planned send times for an open-loop run, computed before the first request is sent.

Precomputing the schedule is what makes the run open loop: request k goes out at `offsets[k]` seconds
after the start whatever the server did with request k-1, so a slow server shows up as latency (measured
from the planned time) instead of quietly lowering the offered rate (coordinated omission).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

# The arrival processes a schedule can follow; run config, the benchmark plan and CLIs take their choices here.
Arrival = Literal["poisson", "constant"]


@dataclass(frozen=True)
class Schedule:
    """Send offsets in seconds from the run start (sorted), the rate they were drawn for, and how."""

    offsets: tuple[float, ...]
    rate: float  # requests per second offered
    arrival: Arrival
    seed: int | None = None
    warmup: int = 0  # the first `warmup` requests are sent but not reported

    def __len__(self) -> int:
        return len(self.offsets)

    @property
    def duration_s(self) -> float:
        return self.offsets[-1] if self.offsets else 0.0

    def for_worker(self, worker: int, workers: int) -> list[tuple[int, float]]:
        """(request index, offset) pairs of one of `workers` processes: round-robin, so each worker sees
        1/workers of the rate spread evenly over the whole run (not one slice of time each)."""
        return [(i, self.offsets[i]) for i in range(worker, len(self.offsets), workers)]


def _count(rate: float, duration_s: float | None, requests: int | None) -> int:
    if rate <= 0:
        raise ValueError(f"rate must be > 0 requests/s (got {rate})")
    if requests is None and duration_s is None:
        raise ValueError("give a duration_s or a number of requests")
    return int(requests) if requests is not None else max(1, math.floor(rate * float(duration_s or 0.0)))


def constant_schedule(
    rate: float, *, duration_s: float | None = None, requests: int | None = None, warmup_s: float = 0.0
) -> Schedule:
    """Evenly spaced sends at `rate` per second; `warmup_s` more seconds are prepended and excluded."""
    warmup = math.floor(rate * warmup_s)
    n = warmup + _count(rate, duration_s, requests)
    return Schedule(tuple(float(k) / rate for k in range(n)), rate, "constant", None, warmup)


def poisson_schedule(
    rate: float,
    *,
    duration_s: float | None = None,
    requests: int | None = None,
    seed: int = 0,
    warmup_s: float = 0.0,
) -> Schedule:
    """Poisson arrivals (exponential gaps) at `rate` per second, reproducible from `seed`."""
    rng = np.random.default_rng(seed)
    if requests is not None:
        warmup = math.floor(rate * warmup_s)
        gaps = rng.exponential(1.0 / rate, size=warmup + int(requests))
        gaps[0] = 0.0  # the first request goes at the start
        return Schedule(tuple(np.cumsum(gaps).tolist()), rate, "poisson", seed, warmup)
    if duration_s is None:
        raise ValueError("give a duration_s or a number of requests")
    _count(rate, duration_s, None)
    # A Poisson process on [0, warmup + duration): the count varies around rate x time (that is the
    # point of Poisson arrivals); a fixed count would stretch or squeeze the window instead.
    horizon = warmup_s + duration_s
    expected = rate * horizon
    size = int(expected + 10 * math.sqrt(expected) + 20)
    times = np.cumsum(rng.exponential(1.0 / rate, size=size))
    times = np.concatenate([[0.0], times[times < horizon]])
    warmup = int(np.searchsorted(times, warmup_s)) if warmup_s > 0 else 0
    return Schedule(tuple(times.tolist()), rate, "poisson", seed, warmup)

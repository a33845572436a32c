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


@dataclass(frozen=True)
class Schedule:
    """Send offsets in seconds from the run start (sorted), the rate they were drawn for, and how."""

    offsets: tuple[float, ...]
    rate: float  # requests per second offered
    arrival: Literal["poisson", "constant"]
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


def trace_seed(base: int, repeat: int, rate: float) -> int:
    """The seed of the Poisson trace for one (repeat, rate): reproducible, and independent across rates.

    Why not one trace per repeat scaled to every rate: a scaled trace keeps its clusters at every rate,
    and with a warm-up in seconds the same cluster stays in the measured part of every window below some
    rate. Seed 0 has three arrivals within 0.022 of each other at unit time 1.70; a search that went below
    ~8.5 req/s met them in every window (confirmations included), and all-MiniLM-L6-v2 (service ~50 ms,
    SLO 100 ms: a third request queued behind two is late) got capacity 0 in repeat 1 of every run."""
    if base < 0 or repeat < 0 or rate <= 0:
        raise ValueError(f"trace_seed needs base >= 0, repeat >= 0 and rate > 0 (got {base}, {repeat}, {rate})")
    # Milli-requests/s: the same float rate (the search's grid) gives the same key on either server.
    return int(np.random.SeedSequence([base, repeat, round(rate * 1000)]).generate_state(1)[0])


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

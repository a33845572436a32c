"""One open-loop window -> one SearchPoint: did it meet the SLO, and was it the generator or the host? Pure.

Latency is measured from the *planned* send time, so a send that went out late already counts against
the server: host contention (the generator and the server sharing cores) makes a point pessimistic, not
invalid. The lag is recorded beside the point, and the point is CONTENDED.

A point is GENERATOR_LIMITED only when the generator really could not offer the load: its sends fell
behind the schedule *cumulatively* (the last tenth of the window went out `lag_drift_ms` later than the
first tenth, more than scattered scheduling delays add up to) *while its own processes were CPU-bound*:
they wanted a core (running, or runnable and waiting for one: Linux schedstat) for >= `CPU_BOUND` of the
time, i.e. never idled between sends - or kept a core busy between them, whichever thread of its process held
the GIL (loadgen `_busy_s`). That is a generator short of processes whoever held the cores; the
runner re-runs such a point with more worker processes. A generator that fell behind but idled between
sends was held back by the host: CONTENDED. A limited point counts as not
meeting the SLO (the server never saw the offered rate), so a capacity behind one is a lower bound.
"""

from __future__ import annotations

import math

from pooling_pipeline.evaluation.benchmark.schemas import PointKind, SearchPoint
from pooling_pipeline.evaluation.loadgen import LoadSummary

CONTENDED_LAG_P99_MS = 10.0  # a send lag p99 above this is worth a note (uvloop timers + GC: a few ms)
DRIFT_FLOOR_MS = 20.0  # falling behind by less than this over a window is scheduling noise
DRIFT_FRACTION = 0.02  # ... or by less than 2 % of the window
CPU_BOUND = 0.8  # generator running or waiting for a core >= 80 % of its processes' sending time


def fell_behind(summary: LoadSummary) -> bool:
    """The sends slipped cumulatively over the window (not a few late sends that caught up)."""
    if summary.lag_drift_ms is None:
        return False
    return summary.lag_drift_ms > max(DRIFT_FLOOR_MS, DRIFT_FRACTION * summary.window_s * 1000.0)


def classify(summary: LoadSummary) -> tuple[PointKind, str]:
    """The kind of a window and the message that says why."""
    lag = summary.lag.p99_ms if summary.lag is not None else math.nan
    busy = summary.send_cpu_fraction
    busy_text = "unknown" if busy is None else f"{busy:.0%}"
    procs = f"{summary.workers} process{'es' if summary.workers > 1 else ''}"
    rate = f"{summary.offered_rate:g} req/s" if summary.offered_rate else "the offered rate"
    if fell_behind(summary):
        if busy is not None and busy >= CPU_BOUND:
            return PointKind.GENERATOR_LIMITED, (
                f"generator-limited: its sends fell {summary.lag_drift_ms:.0f} ms behind the schedule over the "
                f"window while its {procs} wanted a core {busy_text} of the time: it could not offer {rate}"
            )
        return PointKind.CONTENDED, (
            f"contended: sends fell {summary.lag_drift_ms:.0f} ms behind the schedule while the generator's "
            f"{procs} wanted a core only {busy_text} of the time (the host held it back, not its own work); "
            "latency from the planned send includes the delay, so this point is pessimistic"
        )
    if not math.isnan(lag) and lag > CONTENDED_LAG_P99_MS:
        return PointKind.CONTENDED, (
            f"contended: send lag p99 {lag:.1f} ms (host contention); latency from the planned send "
            "includes it, so this point is pessimistic"
        )
    return PointKind.OK, ""


def search_point(summary: LoadSummary, *, slo_p99_ms: float, min_success_rate: float) -> SearchPoint:
    """The SearchPoint of one open-loop window against its SLO."""
    planned = summary.latency_from_planned or summary.latency
    kind, note = classify(summary)
    p99 = planned.p99_ms if planned.count else math.inf
    within = (
        summary.requests > 0
        and summary.stopped is None
        and summary.success_rate >= min_success_rate
        and p99 <= slo_p99_ms
        and kind is not PointKind.GENERATOR_LIMITED
    )
    notes = [n for n in (note, summary.stopped or "") if n]
    if summary.errors:
        notes.append("errors: " + ", ".join(f"{k} x{v}" for k, v in summary.errors.items()))
    return SearchPoint(
        offered_rps=float(summary.offered_rate or 0.0),
        achieved_rps=summary.requests_per_s,
        requests=summary.requests,
        success_rate=summary.success_rate,
        p99_ms=p99,
        p50_ms=planned.p50_ms if planned.count else math.inf,
        lag_p99_ms=summary.lag.p99_ms if summary.lag is not None and summary.lag.count else None,
        kind=kind,
        note="; ".join(notes),
        within_slo=within,
        workers=summary.workers,
        lag_drift_ms=summary.lag_drift_ms,
        generator_busy=summary.send_cpu_fraction,
        stopped_early=summary.stopped is not None,
    )

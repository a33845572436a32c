"""A LoadBenchmarkResult for people: markdown tables, plots, and the JSON kept in S3. No Dagster here.

The summary has one row per (workload, server): capacity at the SLO with its interval, in requests/s and
inputs/s, the ratio vLLM/incumbent with its interval, p99 at a load both sustain, the saturation knee and
the cost per million inputs (on GPUs). Every window of every search is in the points table, with its
kind (ok / contended / generator-limited) and the note that says why.
"""

from __future__ import annotations

import math
from pathlib import Path

from pooling_pipeline.evaluation import plots
from pooling_pipeline.evaluation.benchmark.schemas import Interval, LoadBenchmarkResult, ServerCapacity
from pooling_pipeline.evaluation.resources_sampler import ResourceSample


def fmt(x: float | None, digits: int = 1) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def fmt_interval(iv: Interval | None, digits: int = 1) -> str:
    return "–" if iv is None else iv.fmt(digits)


def _knee(cap: ServerCapacity) -> str:
    if not cap.knee:
        return "–"
    best = max(cap.knee, key=lambda k: k.inputs_per_s)
    return f"{best.inputs_per_s:.1f} inputs/s at c={best.concurrency}"


def summary_table(result: LoadBenchmarkResult) -> str:
    rows = [
        "| workload | SLO p99 | server | capacity req/s | capacity inputs/s | ratio vLLM/incumbent | p99 at common "
        "load | saturation | cost / M inputs |",
        "|---|---:|---|---|---|---|---|---|---:|",
    ]
    for w in result.workloads:
        for cap in (w.vllm, w.incumbent):
            if cap is None:
                continue
            common = w.p99_at_common_load_ms.get(cap.server)
            at = f"{fmt(common)} ms at {fmt(w.common_load_rps)} req/s" if common is not None else "–"
            ratio = fmt_interval(w.capacity_ratio, 2) if cap is w.vllm else ""
            cost = f"{cap.cost_per_million_inputs:.2f}" if cap.cost_per_million_inputs is not None else "–"
            rows.append(
                f"| {w.workload} | {w.slo_p99_ms:g} ms | {cap.server} | {fmt_interval(cap.capacity_rps)} "
                f"| {fmt_interval(cap.capacity_inputs_per_s)} | {ratio} | {at} | {_knee(cap)} | {cost} |"
            )
    return "\n".join(rows)


def points_table(result: LoadBenchmarkResult) -> str:
    rows = [
        "| workload | server | repeat | offered req/s | achieved req/s | requests | p50 ms | p99 ms | success "
        "| meets SLO | lag p99 ms | gen. procs | kind | note |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|---|",
    ]
    for w in result.workloads:
        for cap in (w.vllm, w.incumbent):
            for s in cap.searches if cap else []:
                for p in s.points:
                    note = ("confirming window at a rate that missed; " if p.confirmation else "") + p.note
                    rows.append(
                        f"| {w.workload} | {s.server} | {s.repeat + 1} | {p.offered_rps:.1f} | {p.achieved_rps:.1f} "
                        f"| {p.requests} | {fmt(p.p50_ms)} | {fmt(p.p99_ms)} | {p.success_rate:.3f} "
                        f"| {'yes' if p.within_slo else 'no'} | {fmt(p.lag_p99_ms)} | {p.workers} | {p.kind.value} "
                        f"| {note[:160]} |"
                    )
                if not s.points and s.note:
                    blank = " – |" * 2 + " 0 |" + " – |" * 3 + " no |" + " – |" * 3
                    rows.append(f"| {w.workload} | {s.server} | {s.repeat + 1} |{blank} {s.note} |")
    return "\n".join(rows)


def conditions_table(result: LoadBenchmarkResult) -> str:
    rows = ["| condition | value |", "|---|---|"]
    rows += [f"| {k} | {v} |" for k, v in result.conditions.items()]
    rows.append(
        f"| repeats | {result.repeats_text()}, at most {result.max_repeats or result.repeats} (profile "
        f"{result.profile.value}, resolution {fmt(result.resolution, 2)}) |"
    )
    return "\n".join(rows)


def headline(result: LoadBenchmarkResult) -> str:
    """One line per workload, for logs and the demo's terminal."""
    if result.server_crashed:
        return f"{result.model}: server crashed during the benchmark: {result.server_crashed}"
    lines = []
    for w in result.workloads:
        line = f"{result.model} {w.workload} (p99 <= {w.slo_p99_ms:g} ms): vLLM {w.vllm.capacity_rps.fmt(1)} req/s"
        if w.incumbent is not None:
            line += f", incumbent {w.incumbent.capacity_rps.fmt(1)} req/s"
        if w.capacity_ratio is not None:
            line += f", ratio {w.capacity_ratio.fmt(2)} over {w.capacity_ratio.n} repeats"
        lines.append(line)
    return "\n".join(lines) or f"{result.model}: no workload measured"


def make_plots(result: LoadBenchmarkResult, samples: dict[str, list[ResourceSample]], out_dir: Path) -> list[Path]:
    knee: dict[str, list[tuple[float, float]]] = {}
    latency: dict[str, dict[str, list[tuple[float, float]]]] = {}
    slos: dict[str, float] = {}
    for w in result.workloads:
        slos[w.workload] = w.slo_p99_ms
        for cap in (w.vllm, w.incumbent):
            if cap is None:
                continue
            name = f"{cap.server} {w.workload}"
            knee[name] = [(k.concurrency, k.inputs_per_s) for k in cap.knee]
            for p in (p for s in cap.searches for p in s.points if math.isfinite(p.p99_ms)):
                for pct, value in (("p50", p.p50_ms), ("p99", p.p99_ms)):
                    latency.setdefault(name, {}).setdefault(pct, []).append((p.offered_rps, value))
    paths = []
    if any(knee.values()):
        paths.append(plots.throughput_vs_concurrency(knee, out_dir / "saturation_knee.png"))
    if latency:
        paths.append(plots.latency_vs_offered_load(latency, out_dir / "latency_vs_offered_load.png", slo_ms=slos))
    if any(samples.values()):
        paths.append(plots.resources_over_time(samples, out_dir / "resources_over_time.png"))
    return paths


def results_key(prefix: str, model: str, started_at: str) -> str:
    return "/".join(p for p in (prefix.strip("/"), model, "benchmarks", f"{started_at}.json") if p)

"""Benchmark plots (matplotlib, Agg): throughput vs concurrency (the saturation knee), latency vs offered
load (the capacity search's windows, with the SLO), resources over time. Each function writes one PNG
and returns its path; `markdown_image` embeds a PNG in asset metadata (a data URI, so the plot shows on
the asset page without a file server)."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from pooling_pipeline.evaluation.resources_sampler import ResourceSample

# One series per (target, workload): {"vllm embeddings x16": [(x, y), ...]}
Series = Mapping[str, Sequence[tuple[float, float]]]


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def throughput_vs_concurrency(series: Series, path: Path, *, unit: str = "inputs/s") -> Path:
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for name, points in sorted(series.items()):
        pts = sorted(points)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrency (closed loop)")
    ax.set_ylabel(unit)
    ax.set_title("Throughput vs concurrency")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def latency_vs_offered_load(
    series: Mapping[str, Mapping[str, Sequence[tuple[float, float]]]],
    path: Path,
    *,
    slo_ms: dict[str, float] | None = None,
) -> Path:
    """series: name -> percentile label ("p50", "p99") -> [(offered req/s, latency ms)]; `slo_ms`: label ->
    SLO, drawn as a horizontal line (a window below it met the SLO)."""
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for label, slo in sorted((slo_ms or {}).items()):
        ax.axhline(slo, color="grey", linestyle="--", linewidth=0.8)
        ax.annotate(f"SLO {label}", (0, slo), xycoords=("axes fraction", "data"), fontsize=6, va="bottom")
    styles = {"p50": "-", "p90": "--", "p95": "-.", "p99": ":"}
    for i, (name, by_pct) in enumerate(sorted(series.items())):
        color = f"C{i % 10}"
        for pct, points in sorted(by_pct.items()):
            pts = sorted(points)
            ax.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                styles.get(pct, "-"),
                color=color,
                marker=".",
                label=f"{name} {pct}",
            )
    ax.set_xlabel("offered load (requests/s, open loop)")
    ax.set_ylabel("latency from planned send (ms)")
    ax.set_yscale("log")
    ax.set_title("Latency percentiles vs offered load")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    return _save(fig, path)


def resources_over_time(samples: Mapping[str, Sequence[ResourceSample]], path: Path) -> Path:
    """samples: server name -> its samples. CPU% (and GPU util% when present) over time, RSS/GPU memory below."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.4, 5.0), sharex=True)
    for i, (name, ss) in enumerate(sorted(samples.items())):
        color = f"C{i % 10}"
        t = [s.t for s in ss]
        if any(s.cpu_percent is not None for s in ss):
            top.plot(t, [s.cpu_percent or 0.0 for s in ss], color=color, label=f"{name} CPU %")
            bottom.plot(t, [s.rss_mb or 0.0 for s in ss], color=color, label=f"{name} RSS MiB")
        if any(s.gpu_util_percent for s in ss):
            top.plot(
                t,
                [sum(s.gpu_util_percent) / max(1, len(s.gpu_util_percent)) for s in ss],
                "--",
                color=color,
                label=f"{name} GPU util %",
            )
            bottom.plot(t, [sum(s.gpu_mem_used_mb) for s in ss], "--", color=color, label=f"{name} GPU MiB")
    top.set_ylabel("% (100 = one core)")
    top.set_title("Server resource use over the run")
    bottom.set_ylabel("MiB")
    bottom.set_xlabel("seconds")
    for ax in (top, bottom):
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return _save(fig, path)


def markdown_image(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f"![{alt}](data:image/png;base64,{data})"

"""The readiness report's pictures (matplotlib, Agg): capacity ratios with their intervals, and each model's
saturation knee (closed-loop throughput vs p99, both servers, the SLO drawn in)."""

from __future__ import annotations

import base64
import io
import math

import matplotlib

matplotlib.use("Agg")  # no display in a run process
import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.ticker import ScalarFormatter

from pooling_pipeline.readiness.report import ReportRow
from pooling_pipeline.readiness.verdict import ReadinessThresholds


def _png(fig: Figure) -> bytes:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def capacity_plot_png(rows: list[ReportRow], thresholds: ReadinessThresholds) -> bytes:
    """Per model: the capacity ratio's median with its interval against the bar when any model was compared;
    otherwise vLLM's own capacity at the SLO (inputs/s), so a catalog without incumbents still shows what
    was measured. A model without a number is marked "n/a" rather than drawn as a zero bar."""
    compared = any(r.headline is not None and r.headline.capacity_ratio is not None for r in rows)
    names, medians, errors = [r.model for r in rows], [], []
    for r in rows:
        w = r.headline
        interval = (w.capacity_ratio if compared else w.vllm.capacity_inputs_per_s) if w else None
        medians.append(interval.median if interval else None)
        # An unbounded ratio (the incumbent sustained nothing) is drawn up to 2 x median + 1.
        high = (2 * interval.median + 1 if math.isinf(interval.high) else interval.high) if interval else 0.0
        errors.append((interval.median - interval.low, high - interval.median) if interval else (0.0, 0.0))
    fig, ax = plt.subplots(figsize=(max(4.5, 1.1 * len(rows)), 3.2))
    heights = [m or 0.0 for m in medians]
    colors = ["#4c72b0" if m is not None else "#cccccc" for m in medians]
    ax.bar(names, heights, color=colors, yerr=list(zip(*errors, strict=True)) if rows else None, capsize=4)
    for i, (m, (_, up)) in enumerate(zip(medians, errors, strict=True)):
        label = "n/a" if m is None else f"{m:.2f}"
        ax.annotate(label, (i, (m or 0.0) + up), xytext=(0, 3), textcoords="offset points", ha="center", fontsize=7)
    if compared:
        bar = thresholds.min_capacity_ratio
        ax.axhline(bar, color="#c44e52", linestyle="--", label=f"bar {bar:.2f}")
        ax.legend(fontsize=7)
        ax.set_title("capacity ratio at the SLO, vLLM / incumbent\n(median, interval over repeats)", fontsize=9)
    else:
        ax.set_title("vLLM capacity at the SLO, inputs/s\n(no incumbent compared)", fontsize=9)
    ax.tick_params(axis="x", labelsize=7, rotation=15)
    return _png(fig)


def knee_plot_png(rows: list[ReportRow]) -> bytes | None:
    """One panel per model with a closed-loop sweep: p99 against throughput for each server, up to the
    saturation knee (where throughput stops growing and latency climbs). None when no model has a sweep."""
    panels = []
    for r in rows:
        w = r.headline
        if w is not None and (w.vllm.knee or (w.incumbent is not None and w.incumbent.knee)):
            panels.append((r.model, w))
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.2), squeeze=False)
    for ax, (model, w) in zip(axes[0], panels, strict=True):
        for server in [w.vllm, *([w.incumbent] if w.incumbent else [])]:
            pts = sorted(server.knee, key=lambda k: k.concurrency)
            if not pts:
                continue
            ax.plot([k.inputs_per_s for k in pts], [k.p99_ms for k in pts], marker="o", label=server.server)
            for k in pts:
                ax.annotate(str(k.concurrency), (k.inputs_per_s, k.p99_ms), fontsize=6)
        ax.axhline(w.slo_p99_ms, color="#c44e52", linestyle="--", label=f"SLO {w.slo_p99_ms:g} ms")
        ax.set_title(f"{model}: {w.workload}", fontsize=8)
        ax.set_xlabel("inputs/s (closed loop, labels: concurrency)", fontsize=7)
        ax.set_ylabel("p99 ms", fontsize=7)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(ScalarFormatter())
        ax.legend(fontsize=6)
    return _png(fig)


def data_uri(png: bytes) -> str:
    return f"data:image/png;base64,{base64.b64encode(png).decode()}"


def png_markdown(png: bytes, alt: str) -> str:
    # The Dagster UI renders data-URI images in markdown metadata: the plot travels with the event.
    return f"![{alt}]({data_uri(png)})"

"""The migration's results table, its regression section and its plot: pure functions of readiness rows.

readiness/assets.py gathers the rows from the Dagster instance; everything here is tested on values.
"""

from __future__ import annotations

import base64
import io

import pandas as pd
from pydantic import BaseModel, Field

from pooling_pipeline.catalog import ModelKind
from pooling_pipeline.readiness.verdict import (
    ReadinessDecision,
    ReadinessInputs,
    ReadinessThresholds,
    Verdict,
    catalog_verdicts,
    overall_verdict,
)


class ModelReadiness(BaseModel):
    """What `migration_readiness` returns for one model (and stores as JSON metadata for the report)."""

    inputs: ReadinessInputs
    decision: ReadinessDecision
    thresholds: ReadinessThresholds = Field(default_factory=ReadinessThresholds)
    dimension: int | None = None
    max_model_len: int | None = None


class ReportRow(BaseModel):
    model: str
    kind: ModelKind
    dimension: int | None = None
    max_model_len: int | None = None
    status: str  # "served on vLLM 0.32.0", "blocked by quality", "not evaluated"
    vllm_version: str = ""
    commit_sha: str = ""
    quality: dict[str, float] = Field(default_factory=dict)
    throughput_per_s: float | None = None
    p99_ms: float | None = None
    throughput_ratio: float | None = None
    p99_ratio: float | None = None
    verdict: Verdict
    reasons: list[str] = Field(default_factory=list)


class Regression(BaseModel):
    model: str
    metric: str
    previous: float
    current: float
    previous_vllm: str
    current_vllm: str

    @property
    def text(self) -> str:
        return (f"{self.model}: {self.metric} {self.previous:.4g} (vLLM {self.previous_vllm}) -> "
                f"{self.current:.4g} (vLLM {self.current_vllm})")


def row_from_readiness(r: ModelReadiness) -> ReportRow:
    perf = r.inputs.performance
    return ReportRow(
        model=r.inputs.model, kind=r.inputs.kind, dimension=r.dimension, max_model_len=r.max_model_len,
        status=f"served on vLLM {r.inputs.vllm_version}" if r.inputs.rollout_ready else "rollout failed",
        vllm_version=r.inputs.vllm_version, commit_sha=r.inputs.commit_sha, quality=dict(r.inputs.quality_metrics),
        throughput_per_s=perf.throughput_per_s if perf else None, p99_ms=perf.p99_ms if perf else None,
        throughput_ratio=perf.throughput_ratio if perf else None, p99_ratio=perf.p99_ratio if perf else None,
        verdict=r.decision.verdict, reasons=list(r.decision.reasons),
    )


def apply_catalog_rule(rows: list[ReportRow]) -> list[ReportRow]:
    """The cross-catalog hybrid rule on report rows (verdict and reasons replaced, order kept)."""
    decisions = {r.model: ReadinessDecision(model=r.model, kind=r.kind, verdict=r.verdict, reasons=r.reasons,
                                            criteria={}) for r in rows}
    out = catalog_verdicts(decisions)
    return [r.model_copy(update={"verdict": out[r.model].verdict, "reasons": out[r.model].reasons}) for r in rows]


def catalog_verdict(rows: list[ReportRow]) -> Verdict:
    return overall_verdict({r.model: ReadinessDecision(model=r.model, kind=r.kind, verdict=r.verdict, reasons=[],
                                                       criteria={}) for r in rows})


def find_regressions(current: list[ReportRow], previous: dict[str, ReportRow], *,
                     quality_tolerance: float = 0.005, throughput_tolerance: float = 0.10) -> list[Regression]:
    """Models worse than under the previous vLLM version: a quality number down by more than
    `quality_tolerance` (absolute; quality numbers are higher-is-better), or throughput down by more than
    `throughput_tolerance` (relative; inputs/s of the vLLM server itself, so the incumbent's noise is out)."""
    found = []
    for row in current:
        before = previous.get(row.model)
        if before is None or before.vllm_version == row.vllm_version:
            continue
        for metric, value in row.quality.items():
            old = before.quality.get(metric)
            if old is not None and old - value > quality_tolerance:
                found.append(Regression(model=row.model, metric=metric, previous=old, current=value,
                                        previous_vllm=before.vllm_version, current_vllm=row.vllm_version))
        if before.throughput_per_s and row.throughput_per_s is not None and \
                (before.throughput_per_s - row.throughput_per_s) / before.throughput_per_s > throughput_tolerance:
            found.append(Regression(model=row.model, metric="throughput_per_s", previous=before.throughput_per_s,
                                    current=row.throughput_per_s, previous_vllm=before.vllm_version,
                                    current_vllm=row.vllm_version))
    return found


def _num(x: float | None, digits: int = 2) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _quality_text(q: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in sorted(q.items())) or "—"


def to_dataframe(rows: list[ReportRow]) -> pd.DataFrame:
    records = []
    for r in rows:
        rec = {
            "model": r.model, "kind": r.kind.value, "dimension": r.dimension, "max_model_len": r.max_model_len,
            "status": r.status, "vllm_version": r.vllm_version, "commit_sha": r.commit_sha,
            "throughput_per_s": r.throughput_per_s, "p99_ms": r.p99_ms,
            "throughput_ratio": r.throughput_ratio, "p99_ratio": r.p99_ratio,
            "verdict": r.verdict.value, "reasons": " | ".join(r.reasons),
        }
        rec.update({f"quality_{k}": v for k, v in r.quality.items()})
        records.append(rec)
    return pd.DataFrame.from_records(records)


def render_table(rows: list[ReportRow], thresholds: ReadinessThresholds) -> str:
    """The verdict table (kept compact: the UI shows markdown under 1000 characters inline)."""
    lines = [
        f"**Catalog verdict: `{catalog_verdict(rows).value}`** "
        f"(throughput ratio ≥ {thresholds.min_throughput_ratio:.2f}, p99 ratio ≤ {thresholds.max_p99_ratio:.2f})",
        "",
        "| model | kind | dims / max len | status | quality | throughput vs incumbent | p99 vs incumbent | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        dims = f"{r.dimension or '—'} / {r.max_model_len or '—'}"
        lines.append(
            f"| {r.model} | {r.kind.value} | {dims} | {r.status} | {_quality_text(r.quality)} | "
            f"{_num(r.throughput_ratio)}× ({_num(r.throughput_per_s, 1)}/s) | "
            f"{_num(r.p99_ratio)}× ({_num(r.p99_ms, 1)} ms) | **{r.verdict.value}** |"
        )
    return "\n".join(lines)


def render_reasons(rows: list[ReportRow]) -> str:
    return "\n".join(f"- **{r.model}** ({r.verdict.value}): " + "; ".join(r.reasons) for r in rows)


def render_regressions(regressions: list[Regression]) -> str:
    return "\n".join(f"- {g.text}" for g in regressions) or "- none"


def render_markdown(rows: list[ReportRow], regressions: list[Regression], thresholds: ReadinessThresholds) -> str:
    """The whole report as one document (written to S3 beside the CSV)."""
    return "\n".join([
        "# Migration readiness", "", render_table(rows, thresholds), "", "## Reasons", "", render_reasons(rows), "",
        "## Regressions vs the previous vLLM version", "", render_regressions(regressions), "",
    ])


def benchmark_plot_png(rows: list[ReportRow], thresholds: ReadinessThresholds) -> bytes:
    """Throughput and p99 per model: as ratios vs the incumbent against the thresholds when any model was
    compared; otherwise vLLM's own numbers (inputs/s, p99 ms), so a catalog without incumbents still shows
    what was measured. A model without a number is marked "n/a" rather than drawn as a zero bar."""
    import matplotlib

    matplotlib.use("Agg")  # no display in a run process
    import matplotlib.pyplot as plt

    compared = any(r.throughput_ratio is not None or r.p99_ratio is not None for r in rows)
    panels = (
        [("throughput_ratio", thresholds.min_throughput_ratio, "throughput vs incumbent (higher is better)"),
         ("p99_ratio", thresholds.max_p99_ratio, "p99 latency vs incumbent (lower is better)")]
        if compared else
        [("throughput_per_s", None, "vLLM peak inputs/s (no incumbent compared)"),
         ("p99_ms", None, "vLLM p99 ms at the reference load (no incumbent compared)")]
    )
    names = [r.model for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, (attr, bound, title) in zip(axes, panels, strict=True):
        measured = [getattr(r, attr) for r in rows]
        ax.bar(names, [v or 0.0 for v in measured], color=["#4c72b0" if v is not None else "#cccccc" for v in measured])
        for i, v in enumerate(measured):
            ax.annotate("n/a" if v is None else f"{v:.2f}" if compared else f"{v:.0f}", (i, v or 0.0),
                        ha="center", va="bottom", fontsize=7)
        if bound is not None:
            ax.axhline(bound, color="#c44e52", linestyle="--", label=f"bound {bound:.2f}")
            ax.axhline(1.0, color="#888888", linewidth=0.8)
            ax.legend(fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.tick_params(axis="x", labelsize=7, rotation=15)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def png_markdown(png: bytes, alt: str) -> str:
    # The Dagster UI renders data-URI images in markdown metadata: the plot travels with the event.
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"

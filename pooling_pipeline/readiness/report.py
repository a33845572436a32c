"""The migration's results: one row per catalog model, the catalog's verdict, regressions, and the report
rendered as markdown (UI and S3) and HTML (S3). Pure functions of readiness rows.

readiness/history.py gathers the rows from the Dagster instance; everything here is tested on values.
Per model the report shows what the verdict read: capacity at the SLO for each server with its interval,
the capacity ratio with its interval, p99 at a load both servers sustain, cost per million inputs, and the
benchmark profile that produced it.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import datetime

import pandas as pd
from pydantic import BaseModel, Field

from pooling_pipeline.catalog import ModelKind, Role
from pooling_pipeline.evaluation.benchmark.schemas import Interval, LoadBenchmarkResult, WorkloadComparison
from pooling_pipeline.formatting import fmt, md_cell, md_table
from pooling_pipeline.readiness.catalog_rule import (
    CatalogDecision,
    CatalogPolicy,
    ModelOutcome,
    apply_to_models,
    decide_catalog,
)
from pooling_pipeline.readiness.verdict import ReadinessDecision, ReadinessInputs, ReadinessThresholds, Verdict


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
    role: Role
    dimension: int | None = None
    max_model_len: int | None = None
    status: str  # "served on vLLM 0.32.0", "blocked by quality", "not evaluated"
    vllm_version: str = ""
    commit_sha: str = ""
    quality: dict[str, float] = Field(default_factory=dict)
    benchmark: LoadBenchmarkResult | None = None
    works: bool = False  # loads, API and quality pass (the catalog matrix's "works")
    evaluated: bool = True
    verdict: Verdict
    reasons: list[str] = Field(default_factory=list)

    @property
    def headline(self) -> WorkloadComparison | None:
        return headline_workload(self.benchmark)

    @property
    def profile(self) -> str:
        return self.benchmark.profile.value if self.benchmark else ""

    def outcome(self) -> ModelOutcome:
        head = self.headline
        return ModelOutcome(
            model=self.model,
            role=self.role,
            verdict=self.verdict,
            works=self.works,
            evaluated=self.evaluated,
            compared=head is not None and head.capacity_ratio is not None,
        )


def headline_workload(benchmark: LoadBenchmarkResult | None) -> WorkloadComparison | None:
    """The workload the verdict turned on: the lowest capacity-ratio bound, else the first measured."""
    if benchmark is None or not benchmark.workloads:
        return None
    compared = [(w, w.capacity_ratio) for w in benchmark.workloads if w.capacity_ratio is not None]
    if compared:
        return min(compared, key=lambda pair: pair[1].low)[0]
    return benchmark.workloads[0]


class Regression(BaseModel):
    model: str
    metric: str
    previous: float
    current: float
    previous_vllm: str
    current_vllm: str

    @property
    def text(self) -> str:
        return (
            f"{self.model}: {self.metric} {self.previous:.4g} (vLLM {self.previous_vllm}) -> "
            f"{self.current:.4g} (vLLM {self.current_vllm})"
        )


def row_from_readiness(r: ModelReadiness, role: Role) -> ReportRow:
    return ReportRow(
        model=r.inputs.model,
        kind=r.inputs.kind,
        role=role,
        dimension=r.dimension,
        max_model_len=r.max_model_len,
        status=f"served on vLLM {r.inputs.vllm_version}" if r.inputs.rollout_ready else "rollout failed",
        vllm_version=r.inputs.vllm_version,
        commit_sha=r.inputs.commit_sha,
        quality=dict(r.inputs.quality_metrics),
        benchmark=r.inputs.benchmark,
        works=r.decision.works,
        verdict=r.decision.verdict,
        reasons=list(r.decision.reasons),
    )


def apply_catalog_rule(
    rows: list[ReportRow], decided_at: datetime, policy: CatalogPolicy | None = None
) -> tuple[list[ReportRow], CatalogDecision]:
    """The catalog's verdict, and the rows under it (a hybrid catalog's passing embeddings say `hybrid`)."""
    outcomes = [r.outcome() for r in rows]
    decision = decide_catalog(outcomes, decided_at, policy)
    verdicts = apply_to_models(decision, outcomes)
    out = []
    for r in rows:
        if verdicts[r.model] is r.verdict:
            out.append(r)
            continue
        note = f"hybrid: {decision.reason}; move embeddings to vLLM, keep rerankers on Caikit"
        out.append(r.model_copy(update={"verdict": verdicts[r.model], "reasons": [*r.reasons, note]}))
    return out, decision


def _capacity_by_workload(row: ReportRow) -> dict[str, float]:
    if row.benchmark is None:
        return {}
    return {w.workload: w.vllm.capacity_inputs_per_s.median for w in row.benchmark.workloads}


def find_regressions(
    current: list[ReportRow],
    previous: dict[str, ReportRow],
    *,
    quality_tolerance: float = 0.005,
    capacity_tolerance: float = 0.10,
) -> list[Regression]:
    """Models worse than under the previous vLLM version: a quality number down by more than
    `quality_tolerance` (absolute; quality numbers are higher-is-better), or vLLM's own capacity at the SLO
    on a workload down by more than `capacity_tolerance` (relative, medians; the incumbent's noise is out)."""
    found = []
    for row in current:
        before = previous.get(row.model)
        if before is None or before.vllm_version == row.vllm_version:
            continue
        changes = [(m, before.quality.get(m), v, quality_tolerance, False) for m, v in row.quality.items()]
        old_capacity = _capacity_by_workload(before)
        changes += [
            (f"capacity_inputs_per_s[{w}]", old_capacity.get(w), v, capacity_tolerance, True)
            for w, v in _capacity_by_workload(row).items()
        ]
        for metric, old, new, tolerance, relative in changes:
            if old is None or (relative and old <= 0):
                continue
            drop = (old - new) / old if relative else old - new
            if drop > tolerance:
                found.append(
                    Regression(
                        model=row.model,
                        metric=metric,
                        previous=old,
                        current=new,
                        previous_vllm=before.vllm_version,
                        current_vllm=row.vllm_version,
                    )
                )
    return found


# ------------------------------------------------------------------------------------------- tables


def _interval(i: Interval | None, digits: int = 1) -> str:
    return "—" if i is None else i.fmt(digits)


def _p99_at_common_load(w: WorkloadComparison) -> str:
    if w.common_load_rps is None or not w.p99_at_common_load_ms:
        return "—"
    sides = " / ".join(f"{server} {fmt(ms, 1)} ms" for server, ms in sorted(w.p99_at_common_load_ms.items()))
    return f"{sides} at {fmt(w.common_load_rps, 1)} req/s"


def _cost(w: WorkloadComparison) -> str:
    vllm = w.vllm.cost_per_million_inputs
    incumbent = w.incumbent.cost_per_million_inputs if w.incumbent else None
    if vllm is None and incumbent is None:
        return "—"
    return f"{fmt(vllm)} / {fmt(incumbent)}"


def _quality_text(q: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in sorted(q.items())) or "—"


def performance_records(benchmarks: list[tuple[str, LoadBenchmarkResult]]) -> list[dict[str, object]]:
    """One record per (model, workload): what the performance criterion read, for the tables."""
    records: list[dict[str, object]] = []
    for model, b in benchmarks:
        for w in b.workloads:
            records.append(
                {
                    "model": model,
                    "workload": w.workload,
                    "slo p99 ms": w.slo_p99_ms,
                    "vLLM capacity req/s": _interval(w.vllm.capacity_rps),
                    "incumbent capacity req/s": _interval(w.incumbent.capacity_rps if w.incumbent else None),
                    "capacity ratio": _interval(w.capacity_ratio, 2),
                    "p99 at a common load": _p99_at_common_load(w),
                    "cost per 1M inputs vLLM / incumbent": _cost(w),
                    "profile": b.profile.value,
                }
            )
    return records


def to_dataframe(rows: list[ReportRow]) -> pd.DataFrame:
    """One row per model (the CSV/Parquet): numbers stay numbers, headline workload's intervals as columns."""
    records = []
    for r in rows:
        w = r.headline
        ratio = w.capacity_ratio if w else None
        rec: dict[str, object] = {
            "model": r.model,
            "kind": r.kind.value,
            "role": r.role.value,
            "dimension": r.dimension,
            "max_model_len": r.max_model_len,
            "status": r.status,
            "vllm_version": r.vllm_version,
            "commit_sha": r.commit_sha,
            "profile": r.profile or None,
            "workload": w.workload if w else None,
            "vllm_capacity_rps": w.vllm.capacity_rps.median if w else None,
            "vllm_capacity_rps_low": w.vllm.capacity_rps.low if w else None,
            "vllm_capacity_rps_high": w.vllm.capacity_rps.high if w else None,
            "incumbent_capacity_rps": w.incumbent.capacity_rps.median if w and w.incumbent else None,
            "capacity_ratio": ratio.median if ratio else None,
            "capacity_ratio_low": ratio.low if ratio else None,
            "capacity_ratio_high": ratio.high if ratio else None,
            "vllm_cost_per_million_inputs": w.vllm.cost_per_million_inputs if w else None,
            "verdict": r.verdict.value,
            "reasons": " | ".join(r.reasons),
        }
        rec.update({f"quality_{k}": v for k, v in r.quality.items()})
        records.append(rec)
    return pd.DataFrame.from_records(records)


def catalog_line(decision: CatalogDecision, thresholds: ReadinessThresholds) -> str:
    return (
        f"**Catalog verdict: `{decision.verdict.value}`** — {decision.action} "
        f"(performance bar: capacity ratio lower bound ≥ {thresholds.min_capacity_ratio:.2f})"
    )


def render_table(rows: list[ReportRow], decision: CatalogDecision, thresholds: ReadinessThresholds) -> str:
    """The verdict table: one row per model, the headline workload's numbers."""
    table_rows = []
    for r in rows:
        w = r.headline
        table_rows.append(
            [
                r.model,
                r.role.value,
                r.status,
                _quality_text(r.quality),
                _interval(w.vllm.capacity_rps) if w else "—",
                _interval(w.capacity_ratio, 2) if w else "—",
                r.profile or "—",
                f"**{r.verdict.value}**",
            ]
        )
    headers = ["model", "role", "status", "quality", "vLLM capacity req/s", "capacity ratio", "profile", "verdict"]
    return "\n".join([catalog_line(decision, thresholds), "", md_table(headers, table_rows)])


def benchmarks_of(rows: list[ReportRow]) -> list[tuple[str, LoadBenchmarkResult]]:
    return [(r.model, r.benchmark) for r in rows if r.benchmark is not None]


def render_performance(benchmarks: list[tuple[str, LoadBenchmarkResult]]) -> str:
    records = performance_records(benchmarks)
    if not records:
        return "- no benchmark yet"
    return md_table(list(records[0]), [list(rec.values()) for rec in records])


def render_conditions(rows: list[ReportRow]) -> str:
    """Under which conditions each benchmark ran (dtype, CPU threads ...), as load_benchmark states them."""
    lines = [
        f"- **{model}** (profile {b.profile.value}, {b.repeats_text()}, started {b.started_at}): "
        + ("; ".join(f"{k} {v}" for k, v in b.conditions.items()) or "no conditions recorded")
        for model, b in benchmarks_of(rows)
    ]
    return "\n".join(lines) or "- no benchmark yet"


def render_reasons(rows: list[ReportRow]) -> str:
    return "\n".join(f"- **{r.model}** ({r.verdict.value}): " + md_cell("; ".join(r.reasons)) for r in rows)


def render_regressions(regressions: list[Regression]) -> str:
    return "\n".join(f"- {g.text}" for g in regressions) or "- none"


def render_catalog_decision(decision: CatalogDecision) -> str:
    lines = [f"- **{decision.action}** ({decision.verdict.value}): {decision.reason}"]
    if decision.revisit_on is not None:
        lines.append(f"- revisit on **{decision.revisit_on.isoformat()}**")
    lines.append(f"- decided at {decision.decided_at.isoformat(timespec='seconds')}")
    return "\n".join(lines)


def render_markdown(
    rows: list[ReportRow],
    decision: CatalogDecision,
    regressions: list[Regression],
    thresholds: ReadinessThresholds,
    images: Sequence[str] = (),
) -> str:
    """The whole report as one document (written to S3 beside the CSV and `images`, linked relatively)."""
    performance = "\n\n".join([render_performance(benchmarks_of(rows)), *(f"![{name}]({name})" for name in images)])
    sections = [
        ("Catalog verdict", render_catalog_decision(decision)),
        ("Performance: capacity at the SLO, median [interval] over repeats", performance),
        ("Benchmark conditions", render_conditions(rows)),
        ("Reasons", render_reasons(rows)),
        ("Regressions vs the previous vLLM version", render_regressions(regressions)),
    ]
    parts = ["# Migration readiness", "", render_table(rows, decision, thresholds), ""]
    for title, body in sections:
        parts += [f"## {title}", "", body, ""]
    return "\n".join(parts)


def render_html(
    rows: list[ReportRow],
    decision: CatalogDecision,
    regressions: list[Regression],
    plots: dict[str, str],
) -> str:
    """The report as a standalone HTML page (tables by pandas, plots inline as data URIs)."""
    verdicts = pd.DataFrame.from_records(
        [
            {"model": r.model, "role": r.role.value, "status": r.status, "verdict": r.verdict.value}
            | {"reasons": "; ".join(r.reasons)}
            for r in rows
        ]
    )
    performance = pd.DataFrame.from_records(performance_records(benchmarks_of(rows)))
    esc = html.escape
    images = "".join(f'<h2>{esc(title)}</h2><img alt="{esc(title)}" src="{uri}">' for title, uri in plots.items())
    revisit = f"<p>Revisit on <b>{decision.revisit_on.isoformat()}</b></p>" if decision.revisit_on else ""
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Migration readiness</title></head><body>"
        f"<h1>Migration readiness</h1><p><b>Catalog verdict: {esc(decision.verdict.value)}</b> — "
        f"{esc(decision.action)}: {esc(decision.reason)}</p>{revisit}"
        f"<h2>Verdicts</h2>{verdicts.to_html(index=False)}"
        f"<h2>Performance: capacity at the SLO</h2>{performance.to_html(index=False) if len(performance) else '—'}"
        f"<h2>Benchmark conditions</h2><pre>{esc(render_conditions(rows))}</pre>"
        f"{images}<h2>Regressions</h2><ul>"
        + "".join(f"<li>{esc(g.text)}</li>" for g in regressions)
        + "</ul></body></html>"
    )


def console_table(rows: list[ReportRow], decision: CatalogDecision) -> str:
    """The verdict table for a terminal (`pooling-pipeline demo`): one line per model, its reasons, and the
    catalog's verdict with its reason and revisit date."""
    lines = [f"{'model':<36} {'role':<23} {'status':<24} {'capacity ratio':>19}  verdict"]
    for r in rows:
        w = r.headline
        ratio = _interval(w.capacity_ratio, 2) if w else "—"
        lines.append(f"{r.model[:36]:<36} {r.role.value:<23} {r.status[:24]:<24} {ratio:>19}  {r.verdict.value}")
        lines.extend(f"{'':<38}- {reason}" for reason in r.reasons)
    lines.append(f"catalog: {decision.action} ({decision.verdict.value}): {decision.reason}")
    return "\n".join(lines)

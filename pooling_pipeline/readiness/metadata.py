"""What the readiness assets show in the Dagster UI and write to S3: tables for people, numbers the UI
plots over runs, and the report's files. Built from the pure report functions; no instance, no S3."""

from __future__ import annotations

import io
from typing import Any

import dagster as dg

from pooling_pipeline.formatting import fmt, md_table
from pooling_pipeline.readiness.catalog_rule import CatalogDecision
from pooling_pipeline.readiness.plots import capacity_plot_png, data_uri, knee_plot_png, png_markdown
from pooling_pipeline.readiness.report import (
    ModelReadiness,
    Regression,
    ReportRow,
    benchmarks_of,
    headline_workload,
    render_catalog_decision,
    render_html,
    render_markdown,
    render_performance,
    render_reasons,
    render_regressions,
    render_table,
    to_dataframe,
)
from pooling_pipeline.readiness.verdict import ReadinessThresholds, Status, Verdict

REPORT_FILES = {
    "csv": "readiness.csv",
    "parquet": "readiness.parquet",
    "markdown": "readiness.md",
    "html": "readiness.html",
}
PLOT_FILES = {"capacity": "capacity.png", "knee": "knee.png"}


def _inputs_md(r: ModelReadiness) -> str:
    i = r.inputs
    rows: list[list[object]] = [
        ["rollout Ready", f"{i.rollout_ready}{' — ' + i.rollout_error if i.rollout_error else ''}"],
        ["cold start", "—" if i.cold_start_s is None else f"{i.cold_start_s:.1f} s"],
    ]
    rows += [
        [f"endpoint {p}", "ok" if ok else "FAILED " + i.endpoint_errors.get(p, "")] for p, ok in i.endpoints.items()
    ]
    rows += [[f"check {c.name.value}", "pass" if c.passed else "FAIL " + c.reason] for c in i.quality_checks]
    rows += [[f"quality {k}", fmt(v, 4)] for k, v in i.quality_metrics.items()]
    b = i.benchmark
    if b is None:
        rows.append(["benchmark", "not run"])
    else:
        rows += [
            ["benchmark profile", f"{b.profile.value}, {b.repeats_text()}, started {b.started_at}"],
            ["conditions", "; ".join(f"{k} {v}" for k, v in b.conditions.items()) or "—"],
            ["success rate", fmt(b.success_rate, 4)],
        ]
    rows.append(["incumbent", "yes" if i.has_incumbent else "none (not compared)"])
    return md_table(["input", "value"], rows)


def readiness_metadata(r: ModelReadiness) -> dict[str, Any]:
    """migration_readiness's UI metadata: verdict, reasons, criteria, inputs, and the numbers as floats."""
    d = r.decision
    criteria = [[c.value, f"**{s.value}**" if s is Status.FAIL else s.value] for c, s in d.criteria.items()]
    bench = r.inputs.benchmark
    meta: dict[str, Any] = {
        "verdict": dg.MetadataValue.text(d.verdict.value),
        "reasons": dg.MetadataValue.md("\n".join(f"- {x}" for x in d.reasons)),
        "criteria": dg.MetadataValue.md(md_table(["criterion", "status"], criteria)),
        "inputs": dg.MetadataValue.md(_inputs_md(r)),
        "performance": dg.MetadataValue.md(render_performance([(r.inputs.model, bench)] if bench else [])),
        "commit_sha": dg.MetadataValue.text(r.inputs.commit_sha),
        "vllm_version": dg.MetadataValue.text(r.inputs.vllm_version),
    }
    # Numbers stay numbers, so the UI plots how readiness moved across runs and vLLM releases.
    w = headline_workload(bench)
    if w is not None:
        meta["vllm_capacity_rps"] = dg.MetadataValue.float(w.vllm.capacity_rps.median)
        if w.capacity_ratio is not None:
            meta["capacity_ratio"] = dg.MetadataValue.float(w.capacity_ratio.median)
            meta["capacity_ratio_low"] = dg.MetadataValue.float(w.capacity_ratio.low)
    if r.inputs.cold_start_s is not None:
        meta["cold_start_s"] = dg.MetadataValue.float(r.inputs.cold_start_s)
    for k, v in r.inputs.quality_metrics.items():
        meta[f"quality_{k}"] = dg.MetadataValue.float(v)
    return meta


def report_files(
    rows: list[ReportRow], decision: CatalogDecision, regressions: list[Regression], thresholds: ReadinessThresholds
) -> dict[str, bytes]:
    """File name -> body: the table as CSV and Parquet, the report as markdown and HTML, the plots as PNG."""
    frame = to_dataframe(rows)
    parquet = io.BytesIO()
    frame.to_parquet(parquet, index=False)
    plots = {PLOT_FILES["capacity"]: capacity_plot_png(rows, thresholds)}
    knee = knee_plot_png(rows)
    if knee is not None:
        plots[PLOT_FILES["knee"]] = knee
    page = render_html(rows, decision, regressions, {name: data_uri(png) for name, png in plots.items()})
    return {
        REPORT_FILES["csv"]: frame.to_csv(index=False).encode(),
        REPORT_FILES["parquet"]: parquet.getvalue(),
        REPORT_FILES["markdown"]: render_markdown(rows, decision, regressions, thresholds, list(plots)).encode(),
        REPORT_FILES["html"]: page.encode(),
        **plots,
    }


def report_metadata(
    rows: list[ReportRow],
    decision: CatalogDecision,
    regressions: list[Regression],
    thresholds: ReadinessThresholds,
    files: dict[str, bytes],
    uris: dict[str, str],
) -> dict[str, Any]:
    """readiness_report's UI metadata; `uris` maps "<folder>/<file name>" to where it was written."""
    latest = {kind: uris[f"latest/{name}"] for kind, name in REPORT_FILES.items()}
    dated = next(u for k, u in uris.items() if not k.startswith("latest/"))
    meta: dict[str, Any] = {
        "catalog_verdict": dg.MetadataValue.text(decision.verdict.value),
        "catalog_action": dg.MetadataValue.text(decision.action),
        "catalog_decision": dg.MetadataValue.md(render_catalog_decision(decision)),
        "revisit_on": dg.MetadataValue.text(decision.revisit_on.isoformat() if decision.revisit_on else "—"),
        "verdicts": dg.MetadataValue.md(render_table(rows, decision, thresholds)),
        "performance": dg.MetadataValue.md(render_performance(benchmarks_of(rows))),
        "reasons": dg.MetadataValue.md(render_reasons(rows)),
        "regressions": dg.MetadataValue.md(render_regressions(regressions)),
        "regression_count": dg.MetadataValue.int(len(regressions)),
        "models": dg.MetadataValue.int(len(rows)),
        "migrate": dg.MetadataValue.int(sum(r.verdict in (Verdict.MIGRATE, Verdict.HYBRID) for r in rows)),
        "dated_copy": dg.MetadataValue.text(dated.rsplit("/", 1)[0] + "/"),
        **{kind: dg.MetadataValue.text(uri) for kind, uri in latest.items()},
    }
    for kind, name in PLOT_FILES.items():
        if name in files:
            meta[f"{kind}_plot"] = dg.MetadataValue.md(png_markdown(files[name], f"{kind} plot"))
    return meta

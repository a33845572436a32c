"""migration_readiness (per model) and readiness_report (the catalog): the verdicts, with every input shown."""


import io
import json
import os
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from pooling_pipeline.catalog import active_catalog
from pooling_pipeline.partitions import model_partitions
from pooling_pipeline.readiness.api_probe import probe_endpoints
from pooling_pipeline.readiness.report import (
    ModelReadiness,
    ReportRow,
    apply_catalog_rule,
    benchmark_plot_png,
    catalog_verdict,
    find_regressions,
    png_markdown,
    render_markdown,
    render_reasons,
    render_regressions,
    render_table,
    row_from_readiness,
    to_dataframe,
)
from pooling_pipeline.resources.s3 import S3Resource
from pooling_pipeline.readiness.verdict import (
    CheckOutcome,
    PerformanceInputs,
    ReadinessInputs,
    ReadinessThresholds,
    Status,
    Verdict,
    decide,
)

READINESS_KEY = dg.AssetKey("migration_readiness")
QUALITY_KEY = dg.AssetKey("quality_report")
# The blocking checks on quality_report (they gate load_benchmark and this asset). quality_report evaluates
# all four for every model; those that do not apply to the model's kind pass as "not applicable".
BLOCKING_CHECKS: tuple[str, ...] = ("embedding_parity", "dimension_matches", "reranker_parity", "ranking_correct")
READINESS_JSON = "readiness_json"  # metadata key the report reads the per-model result back from


def _env_float(name: str, default: float | None) -> float | None:
    value = os.environ.get(name, "").strip()
    return float(value) if value else default


class ReadinessConfig(dg.Config):
    """Thresholds of the decision matrix (defaults from POOLING_READINESS_* env, else the team's numbers)."""

    min_throughput_ratio: float = _env_float("POOLING_READINESS_MIN_THROUGHPUT_RATIO", 0.9)  # type: ignore[assignment]
    max_p99_ratio: float = _env_float("POOLING_READINESS_MAX_P99_RATIO", 1.25)  # type: ignore[assignment]
    min_success_rate: float = _env_float("POOLING_READINESS_MIN_SUCCESS_RATE", 0.99)  # type: ignore[assignment]
    max_cold_start_s: float | None = _env_float("POOLING_READINESS_MAX_COLD_START_S", None)
    require_incumbent: bool = os.environ.get("POOLING_READINESS_REQUIRE_INCUMBENT", "").lower() in {"1", "true"}

    def thresholds(self) -> ReadinessThresholds:
        return ReadinessThresholds(**self.model_dump())


class ReportConfig(dg.Config):
    quality_tolerance: float = 0.005  # absolute drop of a quality number counted as a regression
    throughput_tolerance: float = 0.10  # relative drop of vLLM inputs/s counted as a regression
    min_throughput_ratio: float = _env_float("POOLING_READINESS_MIN_THROUGHPUT_RATIO", 0.9)  # type: ignore[assignment]
    max_p99_ratio: float = _env_float("POOLING_READINESS_MAX_P99_RATIO", 1.25)  # type: ignore[assignment]


# ------------------------------------------------------------------ reading the upstream values
# The evaluation values are read by attribute with a few accepted spellings, so this module depends on
# what the numbers mean, not on one class layout.


def _attr(obj: Any, *names: str) -> Any:
    for name in names:
        value = obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)
        if value is not None:
            return value
    return None


def _float(x: Any) -> float | None:
    try:
        return None if x is None else float(x)
    except (TypeError, ValueError):
        return None


def quality_metrics_of(report: Any) -> dict[str, float]:
    """The report's headline numbers (higher is better) for the table and the regression section."""
    if report is None:
        return {}
    metrics = _attr(report, "metrics", "summary")
    if isinstance(metrics, dict):
        return {k: float(v) for k, v in metrics.items() if _float(v) is not None and not isinstance(v, bool)}
    out = {}
    for name in ("min_cosine", "mean_cosine", "ndcg_at_10", "served_ndcg", "ndcg", "spearman", "min_spearman",
                 "top1_agreement"):
        value = _float(_attr(report, name))
        if value is not None:
            out[name] = value
    return out


def performance_of(result: Any) -> PerformanceInputs | None:
    """From load_benchmark's LoadBenchmarkResult (evaluation/benchmark_assets.py)."""
    if result is None:
        return None
    invalid = _attr(result, "invalid_reasons", "invalid_reason") or ""
    return PerformanceInputs(
        valid=bool(_attr(result, "valid") if _attr(result, "valid") is not None else True),
        invalid_reason="; ".join(invalid) if isinstance(invalid, list) else str(invalid),
        success_rate=_float(_attr(result, "success_rate")),
        throughput_per_s=_float(_attr(result, "peak_inputs_per_s", "throughput_per_s")),
        p99_ms=_float(_attr(result, "p99_ms_at_reference", "p99_ms")),
        incumbent_throughput_per_s=_float(_attr(result, "incumbent_peak_inputs_per_s", "incumbent_throughput_per_s")),
        incumbent_p99_ms=_float(_attr(result, "incumbent_p99_ms_at_reference", "incumbent_p99_ms")),
        throughput_ratio=_float(_attr(result, "throughput_ratio")),
        p99_ratio=_float(_attr(result, "p99_ratio")),
        incumbent_error=str(_attr(result, "incumbent_error") or ""),
    )


def checks_of(report: Any) -> list[CheckOutcome]:
    """The blocking checks' outcomes as quality_report computed them (QualityReport.checks)."""
    checks = _attr(report, "checks") if report is not None else None
    if not isinstance(checks, dict):
        return []
    return [CheckOutcome(name=name, passed=bool(_attr(c, "passed")), reason=str(_attr(c, "reason") or ""))
            for name, c in checks.items()]


def latest_check_outcomes(instance: dg.DagsterInstance, model: str) -> list[tuple[float, CheckOutcome]]:
    """(evaluated at, outcome) of each blocking quality check's latest evaluation for this model."""
    from dagster._core.event_api import PartitionKeyFilter

    out = []
    for name in BLOCKING_CHECKS:
        key = dg.AssetCheckKey(QUALITY_KEY, name)
        try:
            records = instance.event_log_storage.get_asset_check_execution_history(
                key, limit=1, partition_filter=PartitionKeyFilter(key=model))
        except Exception:  # noqa: BLE001 - a storage without partitioned check history: treat as not evaluated
            records = []
        if not records or records[0].event is None or records[0].event.dagster_event is None:
            continue
        evaluation = records[0].event.dagster_event.event_specific_data
        passed = bool(getattr(evaluation, "passed", False))
        reason = ""
        if not passed:
            meta = getattr(evaluation, "metadata", {}) or {}
            text = getattr(evaluation, "description", None) or next(
                (str(getattr(v, "value", v)) for k, v in meta.items() if k in ("reason", "why", "summary")), "")
            reason = text[:300]
        out.append((records[0].create_timestamp, CheckOutcome(name=name, passed=passed, reason=reason)))
    return out


# ------------------------------------------------------------------ migration_readiness


def readiness_metadata(r: ModelReadiness) -> dict[str, Any]:
    d, i = r.decision, r.inputs
    perf = i.performance
    inputs_md = "\n".join([
        "| input | value |", "|---|---|",
        f"| rollout Ready | {i.rollout_ready}{' — ' + i.rollout_error if i.rollout_error else ''} |",
        f"| cold start | {'—' if i.cold_start_s is None else f'{i.cold_start_s:.1f} s'} |",
        *(f"| endpoint {p} | {'ok' if ok else 'FAILED ' + i.endpoint_errors.get(p, '')} |"
          for p, ok in i.endpoints.items()),
        *(f"| check {c.name} | {'pass' if c.passed else 'FAIL ' + c.reason} |" for c in i.quality_checks),
        *(f"| quality {k} | {v:.4f} |" for k, v in i.quality_metrics.items()),
        *([f"| benchmark valid | {perf.valid} {perf.invalid_reason} |",
           f"| success rate | {perf.success_rate if perf.success_rate is not None else '—'} |",
           f"| throughput | {perf.throughput_per_s} inputs/s vs incumbent {perf.incumbent_throughput_per_s} |",
           f"| p99 | {perf.p99_ms} ms vs incumbent {perf.incumbent_p99_ms} |"] if perf else
          ["| benchmark | not run |"]),
        f"| incumbent | {'yes' if i.has_incumbent else 'none (not compared)'} |",
    ])
    criteria_md = "| criterion | status |\n|---|---|\n" + "\n".join(
        f"| {c} | {'**' + s.value + '**' if s is Status.FAIL else s.value} |" for c, s in d.criteria.items())
    meta: dict[str, Any] = {
        "verdict": dg.MetadataValue.text(d.verdict.value),
        "reasons": dg.MetadataValue.md("\n".join(f"- {x}" for x in d.reasons)),
        "criteria": dg.MetadataValue.md(criteria_md),
        "inputs": dg.MetadataValue.md(inputs_md),
        "commit_sha": dg.MetadataValue.text(i.commit_sha),
        "vllm_version": dg.MetadataValue.text(i.vllm_version),
        READINESS_JSON: dg.MetadataValue.json(json.loads(r.model_dump_json())),
    }
    # Numbers stay numbers, so the UI plots how readiness moved across runs and vLLM releases.
    if perf:
        for name in ("throughput_ratio", "p99_ratio", "success_rate", "throughput_per_s", "p99_ms"):
            value = getattr(perf, name)
            if value is not None:
                meta[name] = dg.MetadataValue.float(float(value))
    if i.cold_start_s is not None:
        meta["cold_start_s"] = dg.MetadataValue.float(i.cold_start_s)
    for k, v in i.quality_metrics.items():
        meta[f"quality_{k}"] = dg.MetadataValue.float(v)
    return meta


def readiness_data_version(r: ModelReadiness) -> dg.DataVersion:
    """Keyed by (model revision sha, vLLM version): a new revision or release is a new version; the verdict
    is part of it so a re-validation that changes the answer also marks the report stale."""
    return dg.DataVersion(f"{r.inputs.commit_sha[:12]}-vllm{r.inputs.vllm_version}-{r.decision.verdict.value}")


def _upstream_ins() -> dict[str, dg.AssetIn]:
    """hf_snapshot, inference_service, quality_report, load_benchmark — the evaluation ones only when they
    are defined, so the code location keeps loading while an evaluation asset is being built (its
    numbers then show as missing and the verdict says which)."""
    from pooling_pipeline.evaluation.benchmark_assets import BENCHMARK_ASSETS
    from pooling_pipeline.evaluation.quality_assets import QUALITY_ASSETS

    defined = {key.to_user_string() for a in [*QUALITY_ASSETS, *BENCHMARK_ASSETS] for key in a.keys}
    names = ["hf_snapshot", "inference_service"] + [n for n in ("quality_report", "load_benchmark") if n in defined]
    return {name: dg.AssetIn() for name in names}


@dg.asset(
    group_name="readiness",
    partitions_def=model_partitions,
    code_version="1",
    ins=_upstream_ins(),
    kinds={"python"},
)
def migration_readiness(context: dg.AssetExecutionContext, config: ReadinessConfig, **upstream: Any
                        ) -> dg.Output[ModelReadiness]:
    """One partition = one catalog model's verdict on (its revision sha, the vLLM release it is served on).

    Runs after every re-validation (nightly, new vLLM release, new model revision): re-probes the API,
    reads the rollout, the quality checks and the benchmark, and applies the decision matrix
    (readiness/verdict.py). Only models whose blocking quality checks passed get here; the readiness
    report shows the blocked ones as `revisit`. The catalog-wide `hybrid` rule is applied in the report.
    """
    entry = active_catalog().get(context.partition_key)
    facts = getattr(upstream["hf_snapshot"], "facts", None)
    deployment = upstream["inference_service"]
    quality_report, load_benchmark = upstream.get("quality_report"), upstream.get("load_benchmark")
    endpoints, endpoint_errors = {}, {}
    if deployment.ready:
        endpoints, endpoint_errors = probe_endpoints(deployment.url, deployment.served_model_name, entry.kind)
    checks = checks_of(quality_report) or [c for _, c in latest_check_outcomes(context.instance, entry.name)]
    inputs = ReadinessInputs(
        model=entry.name,
        kind=entry.kind,
        commit_sha=getattr(facts, "commit_sha", "") or "",
        vllm_version=deployment.vllm_version,
        rollout_ready=deployment.ready,
        cold_start_s=deployment.cold_start_s,
        endpoints=endpoints,
        endpoint_errors=endpoint_errors,
        quality_checks=checks,
        quality_metrics=quality_metrics_of(quality_report),
        performance=performance_of(load_benchmark),
        has_incumbent=entry.incumbent is not None,
    )
    thresholds = config.thresholds()
    decision = decide(inputs, thresholds)
    result = ModelReadiness(
        inputs=inputs, decision=decision, thresholds=thresholds,
        dimension=getattr(facts, "dimension", None) or entry.dimension,
        max_model_len=getattr(facts, "effective_max_model_len", None) or entry.max_model_len,
    )
    context.log.info(f"{entry.name} on vLLM {inputs.vllm_version}: {decision.verdict.value} — "
                     + "; ".join(decision.reasons))
    return dg.Output(result, data_version=readiness_data_version(result), metadata=readiness_metadata(result),
                     tags={"pooling/verdict": decision.verdict.value})


# ------------------------------------------------------------------ readiness_report


def _readiness_history(instance: dg.DagsterInstance, model: str, limit: int = 50) -> list[tuple[float, ModelReadiness]]:
    """(timestamp, readiness) of the model's materialisations, newest first (unreadable ones skipped)."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=READINESS_KEY, asset_partitions=[model]), limit=limit).records
    out = []
    for record in records:
        mat = record.asset_materialization
        value = mat.metadata.get(READINESS_JSON) if mat else None
        if value is None:
            continue
        try:
            out.append((record.timestamp, ModelReadiness.model_validate(value.value)))
        except ValueError:
            continue  # written by an older code version
    return out


MODEL_JOBS = ("model_pipeline_job", "model_revalidation_job")


def error_text(error: Any) -> str:
    """The root cause's first line (Dagster wraps the asset's exception in 'Error occurred while executing')."""
    while getattr(error, "cause", None) is not None:
        error = error.cause
    message = (getattr(error, "message", "") or "").strip()
    head, sep, rest = message.partition(": ")
    cls_name = getattr(error, "cls_name", None)
    if sep and cls_name and head.endswith(cls_name):  # "pkg.module.RolloutError: ..." -> "..."
        message = rest
    return message.splitlines()[0][:300] if message else "see the run's logs"


def latest_failure(instance: dg.DagsterInstance, model: str) -> tuple[float, str, str] | None:
    """(ended at, failed step, root cause) of the model's latest run, if that run failed."""
    runs = instance.get_run_records(dg.RunsFilter(tags={"dagster/partition": model}, job_name=None), limit=10)
    runs = [r for r in runs if r.dagster_run.job_name in MODEL_JOBS]
    if not runs or runs[0].dagster_run.status != dg.DagsterRunStatus.FAILURE:
        return None
    run = runs[0]
    step, cause = "run", "see the run's logs"
    for record in instance.all_logs(run.dagster_run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
        event = record.dagster_event
        step = event.step_key or step
        cause = error_text(getattr(event.event_specific_data, "error", None))
        break
    return (run.end_time or run.create_timestamp.timestamp(), step, cause)


def gather_rows(instance: dg.DagsterInstance) -> tuple[list[ReportRow], dict[str, ReportRow]]:
    """(current row per catalog model, latest row under the previous vLLM version per model)."""
    rows, previous = [], {}
    for entry in active_catalog().models:
        history = _readiness_history(instance, entry.name)
        checks = latest_check_outcomes(instance, entry.name)
        latest_ts, latest = history[0] if history else (0.0, None)
        failed_after = [c for ts, c in checks if not c.passed and ts >= latest_ts]
        failure = latest_failure(instance, entry.name)
        if failure is not None and failure[0] >= latest_ts and not failed_after:
            # The latest run failed before a verdict: a rollout that never became Ready keeps the incumbent.
            _, step, cause = failure
            rollout = step == "inference_service"
            rows.append(ReportRow(
                model=entry.name, kind=entry.kind, dimension=entry.dimension, max_model_len=entry.max_model_len,
                status="rollout failed" if rollout else f"run failed at {step}",
                verdict=Verdict.KEEP_INCUMBENT if rollout else Verdict.REVISIT,
                reasons=[("loads and serves: rollout failed: " if rollout else f"{step} failed: ") + cause],
            ))
        elif failed_after:
            # Blocked by a quality check: migration_readiness never ran on this evaluation.
            base = row_from_readiness(latest) if latest else None
            rows.append(ReportRow(
                model=entry.name, kind=entry.kind, dimension=entry.dimension, max_model_len=entry.max_model_len,
                status="blocked by quality", vllm_version=base.vllm_version if base else "",
                commit_sha=base.commit_sha if base else "", verdict=Verdict.REVISIT,
                reasons=[f"quality check {c.name} failed" + (f": {c.reason}" if c.reason else "")
                         for c in failed_after],
            ))
        elif latest is not None:
            rows.append(row_from_readiness(latest))
        else:
            rows.append(ReportRow(
                model=entry.name, kind=entry.kind, dimension=entry.dimension, max_model_len=entry.max_model_len,
                status="not evaluated", verdict=Verdict.REVISIT,
                reasons=[f"no readiness yet: run model_pipeline_job for partition {entry.name}"],
            ))
        if latest is not None:
            older = next((r for _, r in history if r.inputs.vllm_version != latest.inputs.vllm_version), None)
            if older is not None:
                previous[entry.name] = row_from_readiness(older)
    return rows, previous


def _report_deps() -> list[dg.AssetKey]:
    """migration_readiness, and quality_report (when defined): a model blocked by its quality checks never
    updates its readiness, yet the report must show it."""
    from pooling_pipeline.evaluation.quality_assets import QUALITY_ASSETS

    quality_defined = any(QUALITY_KEY in a.keys for a in QUALITY_ASSETS)
    return [READINESS_KEY, *([QUALITY_KEY] if quality_defined else [])]


# Refresh once the per-model runs of a nightly or release re-validation are done. Not `eager()`: that waits
# for every upstream partition to exist, and a model blocked by quality has no readiness to wait for.
REPORT_AUTOMATION = (
    dg.AutomationCondition.any_deps_updated().since_last_handled()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("after any model's re-validation, once none is in progress")


@dg.asset(
    group_name="readiness",
    deps=_report_deps(),
    code_version="1",
    kinds={"pandas", "s3"},
    automation_condition=REPORT_AUTOMATION,
)
def readiness_report(context: dg.AssetExecutionContext, config: ReportConfig, s3: S3Resource
                     ) -> dg.MaterializeResult:
    """The migration's results table: one row per catalog model, from the instance's latest readiness.

    Runs after re-validations (and on demand). A model blocked by a failing quality check shows up as
    `revisit` with the failing check; the catalog-wide `hybrid` rule is applied here. Written as CSV and
    Parquet to `s3://<bucket>/reports/readiness/` (a dated copy and `latest/`), with a regression section:
    models whose quality or throughput got worse than under the previous vLLM version.
    """
    thresholds = ReadinessThresholds(min_throughput_ratio=config.min_throughput_ratio,
                                     max_p99_ratio=config.max_p99_ratio)
    rows, previous = gather_rows(context.instance)
    rows = apply_catalog_rule(rows)
    regressions = find_regressions(rows, previous, quality_tolerance=config.quality_tolerance,
                                   throughput_tolerance=config.throughput_tolerance)
    frame = to_dataframe(rows)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    client = s3.client()
    uris = []
    parquet = io.BytesIO()
    frame.to_parquet(parquet, index=False)
    bodies = {"csv": frame.to_csv(index=False).encode(), "parquet": parquet.getvalue(),
              "md": render_markdown(rows, regressions, thresholds).encode()}
    for folder in (stamp, "latest"):
        for fmt, body in bodies.items():
            key = f"reports/readiness/{folder}/readiness.{fmt}"
            client.put_object(Bucket=s3.bucket, Key=key, Body=body)
            uris.append(f"s3://{s3.bucket}/{key}")
    verdict = catalog_verdict(rows)
    plot = png_markdown(benchmark_plot_png(rows, thresholds), "benchmark: throughput and p99 vs incumbent")
    context.log.info(f"catalog verdict {verdict.value}: " + ", ".join(f"{r.model}={r.verdict.value}" for r in rows))
    return dg.MaterializeResult(metadata={
        "catalog_verdict": dg.MetadataValue.text(verdict.value),
        "verdicts": dg.MetadataValue.md(render_table(rows, thresholds)),
        "reasons": dg.MetadataValue.md(render_reasons(rows)),
        "benchmark_plot": dg.MetadataValue.md(plot),
        "regressions": dg.MetadataValue.md(render_regressions(regressions)),
        "regression_count": dg.MetadataValue.int(len(regressions)),
        "models": dg.MetadataValue.int(len(rows)),
        "migrate": dg.MetadataValue.int(sum(r.verdict in (Verdict.MIGRATE, Verdict.HYBRID) for r in rows)),
        "csv": dg.MetadataValue.text(uris[3]),
        "parquet": dg.MetadataValue.text(uris[4]),
        "markdown": dg.MetadataValue.text(uris[5]),
        "dated_copy": dg.MetadataValue.text(uris[0].rsplit("/", 1)[0] + "/"),
    })

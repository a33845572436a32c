"""What the Dagster instance remembers about each model, read through Dagster's public API only.

- `readiness_history`: migration_readiness materialisations (the ModelReadiness JSON in their metadata);
- `latest_check_outcomes`: the quality checks of the latest quality_report materialisation, read from its
  metadata (quality_report stores them under CHECKS_METADATA_KEY): Dagster 1.13 has no public API for a
  partition's asset-check history, and a model blocked by a check never reaches migration_readiness;
- `latest_failure`: the model's latest run, if it failed, with the failed step and root cause (the
  RUN_FAILURE event carries its first step failure);
- `gather_rows`: one report row per catalog model from the three.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dagster as dg
from pydantic import ValidationError

from pooling_pipeline.catalog import Catalog, CatalogEntry
from pooling_pipeline.evaluation.quality.checks import CHECKS_METADATA_KEY, CheckOutcome
from pooling_pipeline.readiness.report import ModelReadiness, ReportRow, row_from_readiness
from pooling_pipeline.readiness.verdict import Verdict

READINESS_KEY = dg.AssetKey("migration_readiness")
QUALITY_KEY = dg.AssetKey("quality_report")
READINESS_JSON = "readiness_json"  # metadata key migration_readiness stores its ModelReadiness under
MODEL_JOBS = ("model_pipeline_job", "model_revalidation_job")
# A run that failed at one of these steps got past quality_report's blocking checks: the model works.
STEPS_AFTER_QUALITY = ("load_benchmark", "migration_readiness")


@dataclass(frozen=True)
class RunFailure:
    ended_at: float
    step: str
    cause: str


def _latest_records(instance: dg.DagsterInstance, key: dg.AssetKey, model: str, limit: int) -> list[Any]:
    return list(
        instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=[model]), limit=limit
        ).records
    )


def readiness_history(instance: dg.DagsterInstance, model: str, limit: int = 50) -> list[tuple[float, ModelReadiness]]:
    """(timestamp, readiness) of the model's materialisations, newest first (unreadable ones skipped)."""
    out = []
    for record in _latest_records(instance, READINESS_KEY, model, limit):
        mat = record.asset_materialization
        value = mat.metadata.get(READINESS_JSON) if mat else None
        if value is None:
            continue
        try:
            out.append((record.timestamp, ModelReadiness.model_validate(value.value)))
        except ValidationError:
            continue  # written by an older code version
    return out


def latest_check_outcomes(instance: dg.DagsterInstance, model: str) -> tuple[float, list[CheckOutcome]] | None:
    """(evaluated at, outcomes) of the latest quality_report materialisation's checks, if there is one."""
    records = _latest_records(instance, QUALITY_KEY, model, 1)
    mat = records[0].asset_materialization if records else None
    value = mat.metadata.get(CHECKS_METADATA_KEY) if mat else None
    if value is None or not isinstance(value.value, dict):
        return None
    try:
        return records[0].timestamp, [CheckOutcome.model_validate(c) for c in value.value.values()]
    except ValidationError:
        return None  # written by an older code version


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


def latest_failure(instance: dg.DagsterInstance, model: str) -> RunFailure | None:
    """The model's latest model run, if it failed: when, at which step, and the root cause."""
    runs = instance.get_run_records(dg.RunsFilter(tags={"dagster/partition": model}, job_name=None), limit=10)
    runs = [r for r in runs if r.dagster_run.job_name in MODEL_JOBS]
    if not runs or runs[0].dagster_run.status != dg.DagsterRunStatus.FAILURE:
        return None
    run = runs[0]
    ended_at = run.end_time or run.create_timestamp.timestamp()
    failures = instance.fetch_run_status_changes(
        dg.RunStatusChangeRecordsFilter(
            event_type=dg.DagsterEventType.RUN_FAILURE,
            job_names=[run.dagster_run.job_name],
            after_timestamp=run.create_timestamp.timestamp() - 1,
        ),
        limit=20,
    ).records
    for record in failures:
        entry = record.event_log_entry
        if entry.run_id != run.dagster_run.run_id or entry.dagster_event is None:
            continue
        step_event = getattr(entry.dagster_event.event_specific_data, "first_step_failure_event", None)
        if step_event is not None:
            cause = error_text(getattr(step_event.event_specific_data, "error", None))
            return RunFailure(ended_at, step_event.step_key or "run", cause)
    return RunFailure(ended_at, "run", "see the run's logs")


def _row(entry: CatalogEntry, status: str, verdict: Verdict, reasons: list[str], **extra: Any) -> ReportRow:
    return ReportRow(
        model=entry.name,
        kind=entry.kind,
        role=entry.role,
        dimension=entry.dimension,
        max_model_len=entry.max_model_len,
        status=status,
        verdict=verdict,
        reasons=reasons,
        **extra,
    )


def failure_row(entry: CatalogEntry, failure: RunFailure) -> ReportRow:
    """The latest run failed before a verdict: a rollout that never became Ready keeps the incumbent."""
    if failure.step == "inference_service":
        reason = f"loads and serves: rollout failed: {failure.cause}"
        return _row(entry, "rollout failed", Verdict.KEEP_INCUMBENT, [reason], works=False)
    reason = f"{failure.step} failed: {failure.cause}"
    works = failure.step in STEPS_AFTER_QUALITY
    return _row(entry, f"run failed at {failure.step}", Verdict.REVISIT, [reason], works=works)


def blocked_row(entry: CatalogEntry, failed: list[CheckOutcome], latest: ModelReadiness | None) -> ReportRow:
    """Blocked by a quality check: migration_readiness never ran on this evaluation."""
    reasons = [f"quality check {c.name.value} failed" + (f": {c.reason}" if c.reason else "") for c in failed]
    versions = {"vllm_version": latest.inputs.vllm_version, "commit_sha": latest.inputs.commit_sha} if latest else {}
    return _row(entry, "blocked by quality", Verdict.REVISIT, reasons, **versions)


def model_row(
    instance: dg.DagsterInstance, entry: CatalogEntry, history: list[tuple[float, ModelReadiness]]
) -> ReportRow:
    latest_ts, latest = history[0] if history else (0.0, None)
    checks = latest_check_outcomes(instance, entry.name)
    failed = [c for c in checks[1] if not c.passed] if checks and checks[0] >= latest_ts else []
    failure = latest_failure(instance, entry.name)
    if failure is not None and failure.ended_at >= latest_ts and not failed:
        return failure_row(entry, failure)
    if failed:
        return blocked_row(entry, failed, latest)
    if latest is not None:
        return row_from_readiness(latest, entry.role)
    reason = f"no readiness yet: run model_pipeline_job for partition {entry.name}"
    return _row(entry, "not evaluated", Verdict.REVISIT, [reason], evaluated=False)


def gather_rows(instance: dg.DagsterInstance, catalog: Catalog) -> tuple[list[ReportRow], dict[str, ReportRow]]:
    """(current row per catalog model, latest row under the previous vLLM version per model)."""
    rows, previous = [], {}
    for entry in catalog.models:
        history = readiness_history(instance, entry.name)
        rows.append(model_row(instance, entry, history))
        if history:
            current = history[0][1].inputs.vllm_version
            older = next((r for _, r in history if r.inputs.vllm_version != current), None)
            if older is not None:
                previous[entry.name] = row_from_readiness(older, entry.role)
    return rows, previous

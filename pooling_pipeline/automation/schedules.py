"""The nightly re-validation: every catalog model, end to end, then the readiness report.

The cron is POOLING_NIGHTLY_CRON (default 02:00 every day) in POOLING_NIGHTLY_TZ (default UTC). The report
refreshes itself once the model runs finish (eager automation on readiness_report); a second schedule,
POOLING_REPORT_CRON (default 06:00), rebuilds it anyway so every night leaves a dated copy in S3 even
with automation off (a Dagster schedule targets one job, hence two). Ingest is
part of it on purpose: an unchanged revision resolves to the same sha and uploads 0 bytes, and a changed
one is caught even when the revision sensor is off.
"""

import dagster as dg

from pooling_pipeline.automation.jobs import TRIGGER_TAG, model_pipeline_job, model_tags, readiness_report_job
from pooling_pipeline.catalog import active_catalog
from pooling_pipeline.resources.config import DEFAULT_NIGHTLY_CRON, AutomationSettings, load_settings

DEFAULT_CRON = DEFAULT_NIGHTLY_CRON
# Schedules are definitions: their crons are read once, when the code location loads.
_SETTINGS: AutomationSettings = load_settings().automation


def nightly_cron() -> str:
    return _SETTINGS.nightly_cron


def nightly_run_requests(scheduled_for: str) -> list[dg.RunRequest]:
    """One run per catalog model; run keys make a re-evaluated tick a no-op."""
    return [
        dg.RunRequest(
            run_key=f"nightly-{scheduled_for}-{name}",
            job_name=model_pipeline_job.name,
            partition_key=name,
            tags=model_tags(name, **{TRIGGER_TAG: "nightly"}),
        )
        for name in active_catalog().names()
    ]


@dg.schedule(
    name="nightly_revalidation",
    cron_schedule=nightly_cron(),
    execution_timezone=_SETTINGS.nightly_tz,
    job=model_pipeline_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Re-validates every catalog model (serving, quality, benchmark, readiness) every night.",
)
def nightly_revalidation(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
    scheduled = context.scheduled_execution_time
    stamp = scheduled.strftime("%Y-%m-%dT%H%M") if scheduled else "manual"
    return nightly_run_requests(stamp)


@dg.schedule(
    name="nightly_readiness_report",
    cron_schedule=_SETTINGS.report_cron,
    execution_timezone=_SETTINGS.nightly_tz,
    job=readiness_report_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Rebuilds the readiness report after the nightly re-validation (dated copy in S3).",
)
def nightly_readiness_report(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    scheduled = context.scheduled_execution_time
    stamp = scheduled.strftime("%Y-%m-%dT%H%M") if scheduled else "manual"
    return dg.RunRequest(run_key=f"nightly-{stamp}-report", tags={TRIGGER_TAG: "nightly"})

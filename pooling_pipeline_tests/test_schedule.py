"""The nightly schedule re-validates every catalog model, and runs of one model can never overlap."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import yaml

from pooling_pipeline.automation.jobs import MODEL_TAG, model_pipeline_job, readiness_report_job
from pooling_pipeline.automation.schedules import (
    DEFAULT_CRON,
    nightly_readiness_report,
    nightly_revalidation,
)
from pooling_pipeline.catalog import active_catalog

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def test_nightly_schedule_requests_a_run_for_every_catalog_model() -> None:
    context = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 11, 24, 2, 0, tzinfo=UTC))
    requests = nightly_revalidation(context)
    names = active_catalog().names()
    assert sorted(r.partition_key for r in requests) == sorted(names)
    assert all(r.tags[MODEL_TAG] == r.partition_key for r in requests)
    assert len({r.run_key for r in requests}) == len(names)
    assert all("2026-11-24T0200" in r.run_key for r in requests)
    assert nightly_revalidation.job_name == model_pipeline_job.name
    assert nightly_revalidation.cron_schedule == DEFAULT_CRON


def test_nightly_report_follows_the_model_runs() -> None:
    context = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 11, 24, 6, 0, tzinfo=UTC))
    request = nightly_readiness_report(context)
    assert nightly_readiness_report.job_name == readiness_report_job.name
    assert request.run_key == "nightly-2026-11-24T0600-report"


def test_model_pipeline_job_covers_ingest_to_readiness_but_not_the_release_or_report() -> None:
    from pooling_pipeline.definitions import defs

    job = defs.resolve_job_def(model_pipeline_job.name)
    keys = {k.to_user_string() for k in job.asset_layer.executable_asset_keys}
    assert {"hf_snapshot", "s3_model", "inference_service", "migration_readiness"} <= keys
    assert not {"serving_runtime", "readiness_report"} & keys
    revalidate = defs.resolve_job_def("model_revalidation_job")
    revalidated = {k.to_user_string() for k in revalidate.asset_layer.executable_asset_keys}
    # A new vLLM release must not re-download or re-upload models.
    assert not {"hf_snapshot", "s3_model"} & revalidated
    assert {"inference_service", "migration_readiness"} <= revalidated


def test_runs_of_the_same_model_or_gpu_pool_are_serialised() -> None:
    config = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text())
    limits = config["concurrency"]["runs"]["tag_concurrency_limits"]
    per_value = {
        (lim["key"], lim["limit"])
        for lim in limits
        if isinstance(lim.get("value"), dict) and lim["value"].get("applyLimitPerUniqueValue")
    }
    assert (MODEL_TAG, 1) in per_value
    assert ("dagster/partition", 1) in per_value  # runs launched by hand from the UI carry only this tag
    assert config["concurrency"]["pools"]["default_limit"] == 1
    # Dagster accepts the file (it refuses run limits under both run_coordinator and concurrency).
    from dagster._core.instance.config import dagster_instance_config

    dagster_instance_config(str(PROJECT_ROOT))

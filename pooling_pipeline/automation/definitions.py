"""Dagster definitions of the `automation` domain (merged in pooling_pipeline/definitions.py):
the jobs, the nightly schedule and the release / revision sensors."""

import dagster as dg

from pooling_pipeline.automation.jobs import JOBS
from pooling_pipeline.automation.promotion import runtime_promotion
from pooling_pipeline.automation.schedules import nightly_readiness_report, nightly_revalidation
from pooling_pipeline.automation.sensors import hf_revision_sensor, vllm_release_sensor

defs = dg.Definitions(
    assets=[runtime_promotion],
    jobs=JOBS,
    schedules=[nightly_revalidation, nightly_readiness_report],
    sensors=[vllm_release_sensor, hf_revision_sensor],
)

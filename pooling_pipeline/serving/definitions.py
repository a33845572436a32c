"""Dagster definitions of the `serving` domain (merged in pooling_pipeline/definitions.py)."""

import dagster as dg

from pooling_pipeline.serving.assets import deployment_released, inference_service, serving_runtime

defs = dg.Definitions(assets=[serving_runtime, inference_service, deployment_released])

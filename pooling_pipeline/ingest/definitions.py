"""Dagster definitions of the `ingest` domain (merged in pooling_pipeline/definitions.py)."""

import dagster as dg

from pooling_pipeline.ingest.assets import hf_snapshot, s3_model

defs = dg.Definitions(assets=[hf_snapshot, s3_model])

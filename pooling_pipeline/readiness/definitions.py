"""Dagster definitions of the `readiness` domain (merged in pooling_pipeline/definitions.py)."""

import dagster as dg

from pooling_pipeline.readiness.assets import migration_readiness, readiness_report

defs = dg.Definitions(assets=[migration_readiness, readiness_report])

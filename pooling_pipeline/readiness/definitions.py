"""Dagster definitions of the `readiness` domain (merged in pooling_pipeline/definitions.py)."""

import dagster as dg

defs = dg.Definitions()

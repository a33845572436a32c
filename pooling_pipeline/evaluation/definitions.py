"""Dagster definitions of the `evaluation` domain (merged in pooling_pipeline/definitions.py)."""

import dagster as dg

defs = dg.Definitions()

"""Dagster definitions of the `evaluation` domain: quality (served vs reference) and load benchmark."""

import dagster as dg

from pooling_pipeline.evaluation.benchmark_assets import BENCHMARK_ASSETS
from pooling_pipeline.evaluation.quality_assets import QUALITY_ASSETS

defs = dg.Definitions(assets=[*QUALITY_ASSETS, *BENCHMARK_ASSETS])

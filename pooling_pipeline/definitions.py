"""The pooling_pipeline code location: every domain's definitions, merged, with the target's resources."""

import dagster as dg

from pooling_pipeline.automation.definitions import defs as automation_defs
from pooling_pipeline.evaluation.definitions import defs as evaluation_defs
from pooling_pipeline.ingest.definitions import defs as ingest_defs
from pooling_pipeline.readiness.definitions import defs as readiness_defs
from pooling_pipeline.resources.config import build_resources
from pooling_pipeline.serving.definitions import defs as serving_defs

defs = dg.Definitions.merge(
    ingest_defs,
    serving_defs,
    evaluation_defs,
    readiness_defs,
    automation_defs,
    dg.Definitions(resources=build_resources()),
)

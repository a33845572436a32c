"""The pooling_pipeline code location: every domain's definitions, merged, with the target's resources.

Domains are imported as modules (not `from ... import defs`) because Dagster's loaders refuse a module
with more than one `Definitions` object at module scope.
"""

import warnings

import dagster as dg

from pooling_pipeline.automation import definitions as automation
from pooling_pipeline.evaluation import definitions as evaluation
from pooling_pipeline.ingest import definitions as ingest
from pooling_pipeline.readiness import definitions as readiness
from pooling_pipeline.resources.config import build_resources
from pooling_pipeline.serving import definitions as serving

# Data versions on outputs (commit sha, spec hash) are how unchanged models stay fresh; the API is marked beta
# and would otherwise warn on every materialisation.
warnings.filterwarnings("ignore", category=dg.BetaWarning, message=".*data_version.*")

defs = dg.Definitions.merge(
    ingest.defs,
    serving.defs,
    evaluation.defs,
    readiness.defs,
    automation.defs,
    dg.Definitions(resources=build_resources()),
)

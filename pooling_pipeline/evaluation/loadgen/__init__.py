"""An open-loop (and closed-loop) HTTP load generator for pooling endpoints that is never the bottleneck.

schedule.py plans send times, workloads.py builds the request bodies, runner.py sends them (aiohttp +
uvloop, over worker processes) and keeps one record per request, summary.py turns records into numbers.
Nothing here knows about Dagster; the load_benchmark asset and benchmarks/ use it the same way.
"""

from pooling_pipeline.evaluation.loadgen.runner import (
    LoadResult,
    RequestRecord,
    StopRule,
    run_closed_loop,
    run_open_loop,
)
from pooling_pipeline.evaluation.loadgen.schedule import (
    Arrival,
    Schedule,
    constant_schedule,
    poisson_schedule,
)
from pooling_pipeline.evaluation.loadgen.summary import LoadSummary, summarize
from pooling_pipeline.evaluation.loadgen.workloads import Dialect, PreparedRequest, Workload, WorkloadKind, prepare

__all__ = [
    "Arrival",
    "Dialect",
    "LoadResult",
    "LoadSummary",
    "PreparedRequest",
    "RequestRecord",
    "Schedule",
    "StopRule",
    "Workload",
    "WorkloadKind",
    "constant_schedule",
    "poisson_schedule",
    "prepare",
    "run_closed_loop",
    "run_open_loop",
    "summarize",
]

"""From the upstream assets' own models to the verdict's inputs: typed, so a field renamed upstream fails
the type check here, never silently at run time."""

from __future__ import annotations

from pooling_pipeline.catalog import CatalogEntry
from pooling_pipeline.evaluation.benchmark.schemas import LoadBenchmarkResult
from pooling_pipeline.evaluation.quality.models import QualityReport
from pooling_pipeline.ingest.model_facts import Snapshot
from pooling_pipeline.readiness.verdict import ReadinessInputs
from pooling_pipeline.serving.target import Deployment


def compact_benchmark(result: LoadBenchmarkResult) -> LoadBenchmarkResult:
    """The result without each search's windows: what the verdict and the report read (intervals, knee
    points, costs) stays; the per-window detail lives in load_benchmark's own output and results files."""
    workloads = [
        w.model_copy(
            update={
                "vllm": w.vllm.model_copy(update={"searches": []}),
                "incumbent": w.incumbent.model_copy(update={"searches": []}) if w.incumbent else None,
            }
        )
        for w in result.workloads
    ]
    return result.model_copy(update={"workloads": workloads})


def readiness_inputs(
    entry: CatalogEntry,
    snapshot: Snapshot,
    deployment: Deployment,
    quality: QualityReport,
    benchmark: LoadBenchmarkResult | None,
    probe: tuple[dict[str, bool], dict[str, str]],
) -> ReadinessInputs:
    """`probe`: what api_probe.probe_endpoints answered (endpoint -> worked, endpoint -> why not)."""
    endpoints, endpoint_errors = probe
    return ReadinessInputs(
        model=entry.name,
        kind=entry.kind,
        commit_sha=snapshot.facts.commit_sha,
        vllm_version=deployment.vllm_version,
        rollout_ready=deployment.ready,
        cold_start_s=deployment.cold_start_s,
        endpoints=endpoints,
        endpoint_errors=endpoint_errors,
        quality_checks=list(quality.checks.values()),
        quality_metrics=quality.metrics,
        benchmark=compact_benchmark(benchmark) if benchmark is not None else None,
        has_incumbent=entry.incumbent is not None,
    )

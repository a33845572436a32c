"""migration_readiness (per model) and readiness_report (the catalog): the verdicts, with every input shown.

Thin: the inputs are the upstream assets' own models (readiness/inputs.py), the verdict is pure
(verdict.py, catalog_rule.py), the history comes from the instance's public API (history.py) and the report
is rendered by report.py / plots.py.
"""

import json
from datetime import UTC, datetime

import dagster as dg
from pydantic import Field

from pooling_pipeline.catalog import active_catalog
from pooling_pipeline.evaluation.benchmark.schemas import LoadBenchmarkResult
from pooling_pipeline.evaluation.quality import QualityReport
from pooling_pipeline.ingest.model_facts import Snapshot
from pooling_pipeline.partitions import model_partitions
from pooling_pipeline.readiness.api_probe import probe_endpoints
from pooling_pipeline.readiness.catalog_rule import CatalogPolicy
from pooling_pipeline.readiness.history import QUALITY_KEY, READINESS_JSON, READINESS_KEY, gather_rows
from pooling_pipeline.readiness.inputs import readiness_inputs
from pooling_pipeline.readiness.metadata import readiness_metadata, report_files, report_metadata
from pooling_pipeline.readiness.report import ModelReadiness, apply_catalog_rule, find_regressions
from pooling_pipeline.readiness.verdict import ReadinessThresholds, decide
from pooling_pipeline.resources.config import load_settings, readiness_defaults
from pooling_pipeline.resources.s3 import S3Resource
from pooling_pipeline.serving.endpoint_auth import request_headers, tls_verify
from pooling_pipeline.serving.target import Deployment


def _require_incumbent() -> bool:
    """On a cluster a verdict needs the comparison (issue 11): true there unless the settings say otherwise."""
    settings = load_settings()
    explicit = settings.readiness.require_incumbent
    return settings.target == "cluster" if explicit is None else explicit


class ReadinessConfig(dg.Config):
    """Thresholds of the per-model matrix; defaults from the settings (resources/config.py) when the run starts."""

    min_capacity_ratio: float = Field(
        default_factory=lambda: readiness_defaults().min_capacity_ratio,
        gt=0,
        description="performance bar: lower bound of vLLM / incumbent capacity",
    )
    max_cold_start_s: float | None = Field(default_factory=lambda: readiness_defaults().max_cold_start_s)
    require_incumbent: bool = Field(default_factory=_require_incumbent, description="default: true on a cluster")

    def thresholds(self) -> ReadinessThresholds:
        return ReadinessThresholds(**self.model_dump())


class ReportConfig(dg.Config):
    quality_tolerance: float = 0.005  # absolute drop of a quality number counted as a regression
    capacity_tolerance: float = 0.10  # relative drop of vLLM capacity at the SLO counted as a regression
    min_capacity_ratio: float = Field(
        default_factory=lambda: readiness_defaults().min_capacity_ratio, gt=0, description="the performance bar"
    )
    revisit_months: int = Field(
        default_factory=lambda: readiness_defaults().revisit_months, ge=1, description="keep Caikit, revisit after"
    )


def readiness_data_version(r: ModelReadiness) -> dg.DataVersion:
    """Keyed by (model revision sha, vLLM version): a new revision or release is a new version; the verdict
    is part of it so a re-validation that changes the answer also marks the report stale."""
    return dg.DataVersion(f"{r.inputs.commit_sha[:12]}-vllm{r.inputs.vllm_version}-{r.decision.verdict.value}")


@dg.asset(group_name="readiness", partitions_def=model_partitions, code_version="2", kinds={"python"})
def migration_readiness(
    context: dg.AssetExecutionContext,
    config: ReadinessConfig,
    hf_snapshot: Snapshot,
    inference_service: Deployment,
    quality_report: QualityReport,
    load_benchmark: LoadBenchmarkResult,
) -> dg.Output[ModelReadiness]:
    """One partition = one catalog model's verdict on (its revision sha, the vLLM release it is served on).

    Runs after every re-validation (nightly, new vLLM release, new model revision): re-probes the API,
    reads the rollout, the quality checks and the benchmark, and applies the decision matrix
    (readiness/verdict.py). Only models whose blocking quality checks passed get here; the readiness
    report shows the blocked ones as `revisit`, and applies the catalog-wide matrix.
    """
    entry = active_catalog().get(context.partition_key)
    d = inference_service
    # The same token and CA as every other client of a token-authenticated endpoint (issue 14).
    probe = (
        probe_endpoints(d.url, d.served_model_name, entry.kind, headers=request_headers(d), verify=tls_verify(d))
        if d.ready
        else ({}, {})
    )
    inputs = readiness_inputs(entry, hf_snapshot, d, quality_report, load_benchmark, probe)
    thresholds = config.thresholds()
    decision = decide(inputs, thresholds)
    facts = hf_snapshot.facts
    dims = {"dimension": facts.dimension or entry.dimension, "max_model_len": facts.effective_max_model_len}
    result = ModelReadiness(inputs=inputs, decision=decision, thresholds=thresholds, **dims)
    context.log.info(
        f"{entry.name} on vLLM {d.vllm_version}: {decision.verdict.value} — " + "; ".join(decision.reasons)
    )
    return dg.Output(
        result,
        data_version=readiness_data_version(result),
        metadata={
            **readiness_metadata(result),
            READINESS_JSON: dg.MetadataValue.json(json.loads(result.model_dump_json())),
        },
        tags={"pooling/verdict": decision.verdict.value},
    )


# Refresh once the per-model runs of a nightly or release re-validation are done. Not `eager()`: that waits
# for every upstream partition to exist, and a model blocked by quality has no readiness to wait for.
REPORT_AUTOMATION = (
    dg.AutomationCondition.any_deps_updated().since_last_handled()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("after any model's re-validation, once none is in progress")


@dg.asset(
    group_name="readiness",
    # quality_report too: a model blocked by its quality checks never updates its readiness, yet the report
    # must show it.
    deps=[READINESS_KEY, QUALITY_KEY],
    code_version="2",
    kinds={"pandas", "s3"},
    automation_condition=REPORT_AUTOMATION,
)
def readiness_report(context: dg.AssetExecutionContext, config: ReportConfig, s3: S3Resource) -> dg.MaterializeResult:
    """The migration's results: one row per catalog model, from the instance's latest readiness, and the
    catalog's verdict (seed 000's matrix over the catalog's roles, with its revisit date).

    Runs after re-validations (and on demand). A model blocked by a failing quality check shows up as
    `revisit` with the failing check. Written as CSV, Parquet, markdown, HTML and PNG plots to
    `s3://<bucket>/reports/readiness/` (a dated copy and `latest/`), with a regression section: models whose
    quality or capacity got worse than under the previous vLLM version.
    """
    now = datetime.now(UTC)
    rows, previous = gather_rows(context.instance, active_catalog())
    policy = CatalogPolicy(revisit_months=config.revisit_months, performance_bar=config.min_capacity_ratio)
    rows, decision = apply_catalog_rule(rows, now, policy)
    regressions = find_regressions(
        rows, previous, quality_tolerance=config.quality_tolerance, capacity_tolerance=config.capacity_tolerance
    )
    thresholds = ReadinessThresholds(min_capacity_ratio=config.min_capacity_ratio)
    files = report_files(rows, decision, regressions, thresholds)
    client = s3.client()
    uris: dict[str, str] = {}
    for folder in (now.strftime("%Y%m%dT%H%M%SZ"), "latest"):
        for name, body in files.items():
            key = f"reports/readiness/{folder}/{name}"
            client.put_object(Bucket=s3.bucket, Key=key, Body=body)
            uris[f"{folder}/{name}"] = f"s3://{s3.bucket}/{key}"
    context.log.info(f"catalog verdict {decision.headline}: " + ", ".join(f"{r.model}={r.verdict.value}" for r in rows))
    return dg.MaterializeResult(metadata=report_metadata(rows, decision, regressions, thresholds, files, uris))


__all__ = ["ReadinessConfig", "ReportConfig", "migration_readiness", "readiness_report"]

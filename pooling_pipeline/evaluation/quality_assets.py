"""quality_report and its blocking checks: a model is only "ready" if what vLLM serves is what the model is.

The checks (evaluation/quality/checks.py) are declared on the asset and evaluated by it (one evaluation per
model partition, each ERROR severity and blocking): a failed check stops load_benchmark and
migration_readiness for that model in the same run, and its description says why. Checks that do not apply
to the model's kind pass with "not applicable for ...", so every model reports the same rows.
"""

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg

from pooling_pipeline.catalog import CatalogEntry, active_catalog
from pooling_pipeline.evaluation.clients import CaikitClient, EndpointError, OpenAIPoolingClient
from pooling_pipeline.evaluation.quality import (
    CHECK_DESCRIPTIONS,
    CHECKS_METADATA_KEY,
    CheckName,
    QualityReport,
    evaluate,
)
from pooling_pipeline.evaluation.quality.reference_files import fetch_reference_model
from pooling_pipeline.evaluation.quality.render import (
    checks_table_md,
    over_length_md,
    probe_table_md,
    ranking_table_md,
    reranker_table_md,
)
from pooling_pipeline.ingest.model_facts import Snapshot
from pooling_pipeline.ingest.s3_transfer import S3ModelLocation
from pooling_pipeline.partitions import model_partitions
from pooling_pipeline.resources.s3 import S3Resource
from pooling_pipeline.resources.scratch import ScratchResource
from pooling_pipeline.serving.endpoint_auth import request_headers, tls_verify
from pooling_pipeline.serving.target import Deployment
from pooling_pipeline.stack.host_lock import HostUse, hold_local_host

QUALITY_CHECK_SPECS = [
    dg.AssetCheckSpec(name.value, asset="quality_report", blocking=True, description=CHECK_DESCRIPTIONS[name])
    for name in CheckName
]


class QualityConfig(dg.Config):
    compare_incumbent: bool = True  # also probe the catalog's incumbent (Caikit) when it names one
    timeout_s: float = 120.0  # per request; a CPU server under load answers slowly


def report_metadata(report: QualityReport) -> dict[str, Any]:
    """Tables for people, floats the UI plots over time (min cosine, nDCG@10 ...), the checks as JSON."""
    meta: dict[str, Any] = {
        "checks": dg.MetadataValue.md(checks_table_md(report)),
        CHECKS_METADATA_KEY: dg.MetadataValue.json(
            {n.value: json.loads(c.model_dump_json()) for n, c in report.checks.items()}
        ),
        "ranking": dg.MetadataValue.md(ranking_table_md(report)),
        "served_url": dg.MetadataValue.url(report.served_url),
        "commit_sha": report.commit_sha,
        "vllm_version": report.served_version or "unknown",
        "findings": dg.MetadataValue.md("\n".join(f"- {f}" for f in report.findings) or "none"),
        "known_gaps": dg.MetadataValue.md("\n".join(f"- {g}" for g in report.known_gaps) or "none"),
    }
    if report.probes:
        meta["probes"] = dg.MetadataValue.md(probe_table_md(report))
        meta["dimension"] = dg.MetadataValue.int(report.dimension_served or 0)
        meta["normalised"] = dg.MetadataValue.bool(bool(report.normalised_served))
    if report.reranker is not None:
        meta["reranker"] = dg.MetadataValue.md(reranker_table_md(report))
        meta["max_abs_diff"] = dg.MetadataValue.float(report.reranker.max_abs_diff)
    if report.over_length is not None:
        meta["over_length"] = dg.MetadataValue.md(over_length_md(report))
    for key, value in report.metrics.items():
        meta[key] = dg.MetadataValue.float(float(value))
    for src in ("reference", "incumbent"):
        if src in report.ranking:
            meta[f"ndcg_at_10_{src}"] = dg.MetadataValue.float(report.ranking[src].ndcg_at_10)
    if report.incumbent_min_cosine is not None:
        meta["incumbent_min_cosine"] = dg.MetadataValue.float(report.incumbent_min_cosine)
    return meta


def check_results(report: QualityReport) -> list[dg.AssetCheckResult]:
    return [
        dg.AssetCheckResult(
            check_name=name.value,
            asset_key="quality_report",
            passed=outcome.passed,
            severity=dg.AssetCheckSeverity.ERROR,
            description=outcome.reason,
            metadata={"reason": outcome.reason, "applicable": outcome.applicable},
        )
        for name, outcome in report.checks.items()
    ]


def incumbent_client(entry: CatalogEntry, config: QualityConfig, log: Any) -> CaikitClient | None:
    """The catalog's incumbent when it is to be compared and answers /health; None (with a warning) otherwise."""
    if not config.compare_incumbent or entry.incumbent is None:
        return None
    candidate = CaikitClient(entry.incumbent.url, entry.incumbent.model_id, timeout_s=config.timeout_s)
    if candidate.health():
        return candidate
    log.warning(
        f"incumbent {entry.incumbent.url} is not answering /health: comparing with the reference only "
        "(start it with `pooling-pipeline stack up --with-incumbent`)"
    )
    candidate.close()
    return None


@contextmanager
def clients(
    entry: CatalogEntry, deployment: Deployment, config: QualityConfig, log: Any
) -> Iterator[tuple[OpenAIPoolingClient, CaikitClient | None]]:
    """(served, incumbent) clients, closed on the way out."""
    # A token-authenticated endpoint (issue 14): the deployment names where the token is, never the token.
    served = OpenAIPoolingClient(deployment.url, deployment.served_model_name, timeout_s=config.timeout_s).authorize(
        request_headers(deployment), tls_verify(deployment)
    )
    incumbent = incumbent_client(entry, config, log)
    try:
        yield served, incumbent
    finally:
        served.close()
        if incumbent is not None:
            incumbent.close()


@dg.asset(
    group_name="evaluation",
    partitions_def=model_partitions,
    code_version="2",
    kinds={"python"},
    check_specs=QUALITY_CHECK_SPECS,
)
def quality_report(
    context: dg.AssetExecutionContext,
    config: QualityConfig,
    hf_snapshot: Snapshot,
    s3_model: S3ModelLocation,
    inference_service: Deployment,
    s3: S3Resource,
    scratch: ScratchResource,
):
    """One partition = one catalog model as vLLM serves it now, compared with the model itself.

    Runs after every (re)deployment of the model (new revision or vLLM release). The reference is
    sentence-transformers on the model's S3 copy (the bytes vLLM serves, checked against the manifest,
    downloaded and its results cached per commit, so only the servers are probed again); the incumbent
    Caikit gets the same probes when the catalog names one. Blocking checks gate the benchmark and the verdict.
    """
    entry = active_catalog().get(context.partition_key)
    files = fetch_reference_model(s3.client(), s3_model, entry.name, Path(scratch.root))
    context.log.info(
        f"reference files {files.dest_dir}: " + ("reused" if files.reused else f"{files.mb_per_s:.0f} MB/s")
    )
    try:
        # Shared: the reference model runs here, beside another model's rollout but never a benchmark.
        with (
            hold_local_host(inference_service.target, HostUse.SHARED, f"{entry.name} quality", context.log.info),
            clients(entry, inference_service, config, context.log) as (served, incumbent),
        ):
            report = evaluate(
                entry, hf_snapshot.facts, files.dest_dir, served, incumbent, cache_dir=scratch.reference_cache_dir()
            )
    except EndpointError as exc:
        raise dg.Failure(
            description=f"{entry.name}: the served model could not be evaluated: {exc}",
            metadata={"served_url": inference_service.url},
        ) from None
    if incumbent is None and entry.incumbent is not None:
        report.findings.append(f"incumbent {entry.incumbent.url} was not compared (not answering or disabled)")
    failed = [n.value for n, c in report.checks.items() if not c.passed]
    context.log.info(f"{entry.name}: " + ("all quality checks passed" if not failed else f"FAILED {failed}"))
    yield dg.Output(
        report,
        metadata={**report_metadata(report), "reference_files": dg.MetadataValue.path(files.dest_dir)},
        data_version=dg.DataVersion(f"{report.commit_sha[:12]}-{inference_service.spec_hash[:12]}"),
    )
    yield from check_results(report)


QUALITY_ASSETS = [quality_report]
__all__ = ["QUALITY_ASSETS", "quality_report"]

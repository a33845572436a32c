"""quality_report and its blocking checks: a model is only "ready" if what vLLM serves is what the model is.

The four checks are declared on the asset and evaluated by it (one evaluation per model partition, each
ERROR severity and blocking): a failed check stops load_benchmark and migration_readiness for that model
in the same run, and its description says why. Checks that do not apply to the model's kind pass with
"not applicable for rerankers" / "... embedding models", so every model reports the same four rows.
"""


from typing import Any

import dagster as dg

from pooling_pipeline.catalog import active_catalog
from pooling_pipeline.evaluation.clients import CaikitClient, EndpointError, OpenAIPoolingClient
from pooling_pipeline.evaluation.quality import CHECK_NAMES, QualityReport, evaluate
from pooling_pipeline.ingest.model_facts import Snapshot
from pooling_pipeline.partitions import model_partitions
from pooling_pipeline.serving.target import Deployment

QUALITY_CHECK_SPECS = [
    dg.AssetCheckSpec(name, asset="quality_report", blocking=True, description=description)
    for name, description in (
        ("embedding_parity", "per-probe cosine of served vs sentence-transformers embeddings ≥ catalog min_cosine"),
        ("dimension_matches", "served embedding size equals the catalog's dimension and the model's"),
        ("reranker_parity", "served scores match CrossEncoder.predict: Spearman, max |diff|, top-1 agreement"),
        ("ranking_correct", "nDCG@10 / MRR@10 on the labelled retrieval set within tolerance of the reference"),
    )
]


class QualityConfig(dg.Config):
    compare_incumbent: bool = True  # also probe the catalog's incumbent (Caikit) when it names one
    timeout_s: float = 120.0  # per request; a CPU server under load answers slowly


def _fmt(x: float | None, digits: int = 5) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def probe_table_md(report: QualityReport) -> str:
    """Markdown: one row per probe, reference vs served vs incumbent."""
    inc = report.incumbent_url is not None
    head = ("| probe | tokens | served vs reference | "
            + ("incumbent vs reference | served vs incumbent | " if inc else "") + "served norm | note |")
    sep = "|" + "---|" * (head.count("|") - 1)
    rows = []
    for p in report.probes:
        note = "; ".join(x for x in (p.served_error and f"served: {p.served_error}",
                                     p.incumbent_error and f"incumbent: {p.incumbent_error}") if x)
        cells = [p.probe, str(p.tokens), _fmt(p.served_cosine)]
        if inc:
            cells += [_fmt(p.incumbent_cosine), _fmt(p.served_vs_incumbent_cosine)]
        cells += [_fmt(p.served_norm, 4), note.replace("|", "/")[:160]]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join([head, sep, *rows])


def ranking_table_md(report: QualityReport) -> str:
    rows = [f"| {src} | {r.ndcg_at_10:.4f} | {r.mrr_at_10:.4f} |" for src, r in report.ranking.items()]
    return "\n".join(["| ranked by | nDCG@10 | MRR@10 |", "|---|---|---|", *rows])


def reranker_table_md(report: QualityReport) -> str:
    r = report.reranker
    if r is None:
        return ""
    rows = [f"| served (vLLM) | {r.spearman:.5f} | {r.max_abs_diff:.5f} | {r.top1_agreement:.2f} |"]
    if r.incumbent_spearman is not None:
        rows.append(f"| incumbent | {r.incumbent_spearman:.5f} | {_fmt(r.incumbent_max_abs_diff)} | "
                    f"{_fmt(r.incumbent_top1_agreement, 2)} |")
    return "\n".join([f"Scores compared on the **{r.scale}** scale over {r.pairs} pairs; {r.rerank_note}.", "",
                      "| vs CrossEncoder.predict | Spearman | max abs diff | top-1 agreement |", "|---|---|---|---|",
                      *rows])


def checks_table_md(report: QualityReport) -> str:
    rows = [f"| {name} | {'pass' if c.passed else '**FAIL**'} | {c.reason.replace('|', '/')} |"
            for name, c in report.checks.items()]
    return "\n".join(["| check | outcome | why |", "|---|---|---|", *rows])


def report_metadata(report: QualityReport) -> dict[str, Any]:
    """Tables for people, floats the UI plots over time (min cosine, nDCG@10 ...)."""
    meta: dict[str, Any] = {
        "checks": dg.MetadataValue.md(checks_table_md(report)),
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
        o = report.over_length
        meta["over_length"] = dg.MetadataValue.md(
            f"{o.tokens} tokens (max_model_len {o.max_model_len}): vLLM **{o.served_behaviour}** "
            f"(HTTP {o.served_status}){': ' + o.served_message if o.served_message else ''}; "
            f"truncate_prompt_tokens={o.max_model_len}: HTTP {o.truncated_status}, cosine {_fmt(o.truncated_cosine)}"
            + (f"; Caikit: HTTP {o.incumbent_status} {o.incumbent_message or ''}" if o.incumbent_status else "")
        )
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
            check_name=name,
            asset_key="quality_report",
            passed=report.checks[name].passed,
            severity=dg.AssetCheckSeverity.ERROR,
            description=report.checks[name].reason,
            metadata={"reason": report.checks[name].reason, "applicable": report.checks[name].applicable},
        )
        for name in CHECK_NAMES
    ]


@dg.asset(
    group_name="evaluation",
    partitions_def=model_partitions,
    code_version="1",
    kinds={"python"},
    check_specs=QUALITY_CHECK_SPECS,
    ins={"hf_snapshot": dg.AssetIn(), "inference_service": dg.AssetIn()},
)
def quality_report(
    context: dg.AssetExecutionContext, config: QualityConfig, hf_snapshot: Snapshot, inference_service: Deployment
):
    """One partition = one catalog model as vLLM serves it now, compared with the model itself.

    Runs after every (re)deployment of the model (new revision or vLLM release): the reference is
    sentence-transformers on the same snapshot (cached per commit, so only the servers are probed again), the
    incumbent Caikit gets the same probes when the catalog names one. Blocking checks gate the benchmark and
    the readiness verdict.
    """
    entry = active_catalog().get(context.partition_key)
    served = OpenAIPoolingClient(inference_service.url, inference_service.served_model_name, timeout_s=config.timeout_s)
    incumbent = None
    if config.compare_incumbent and entry.incumbent is not None:
        candidate = CaikitClient(entry.incumbent.url, entry.incumbent.model_id, timeout_s=config.timeout_s)
        if candidate.health():
            incumbent = candidate
        else:
            context.log.warning(f"incumbent {entry.incumbent.url} is not answering /health: comparing with the "
                                "reference only (start it with `pooling-pipeline stack up --with-incumbent`)")
    try:
        report = evaluate(entry, hf_snapshot.facts, hf_snapshot.local_path, served, incumbent)
    except EndpointError as exc:
        raise dg.Failure(
            description=f"{entry.name}: the served model could not be evaluated: {exc}",
            metadata={"served_url": inference_service.url},
        ) from None
    finally:
        served.close()
        if incumbent is not None:
            incumbent.close()
    if incumbent is None and entry.incumbent is not None:
        report.findings.append(f"incumbent {entry.incumbent.url} was not compared (not answering or disabled)")
    failed = [n for n, c in report.checks.items() if not c.passed]
    context.log.info(f"{entry.name}: " + ("all quality checks passed" if not failed else f"FAILED {failed}"))
    yield dg.Output(report, metadata=report_metadata(report),
                    data_version=dg.DataVersion(f"{report.commit_sha[:12]}-{inference_service.spec_hash[:12]}"))
    yield from check_results(report)


QUALITY_ASSETS = [quality_report]
# The checks are evaluated by quality_report itself (check_specs), so there is no separate check definition.
QUALITY_CHECKS: list = []

__all__ = ["QUALITY_ASSETS", "QUALITY_CHECKS", "quality_report"]

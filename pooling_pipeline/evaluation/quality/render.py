"""A QualityReport as markdown tables for people (the quality_report asset's metadata)."""

from __future__ import annotations

from pooling_pipeline.evaluation.quality.models import QualityReport
from pooling_pipeline.formatting import fmt, md_cell, md_table


def probe_table_md(report: QualityReport) -> str:
    """One row per probe, reference vs served vs incumbent."""
    inc = report.incumbent_url is not None
    headers = ["probe", "tokens", "served vs reference"]
    headers += ["incumbent vs reference", "served vs incumbent"] if inc else []
    headers += ["served norm", "note"]
    rows = []
    for p in report.probes:
        notes = (
            p.served_error and f"served: {p.served_error}",
            p.incumbent_error and f"incumbent: {p.incumbent_error}",
        )
        cells = [p.probe, str(p.tokens), fmt(p.served_cosine, 5)]
        if inc:
            cells += [fmt(p.incumbent_cosine, 5), fmt(p.served_vs_incumbent_cosine, 5)]
        cells += [fmt(p.served_norm, 4), md_cell("; ".join(n for n in notes if n), limit=160)]
        rows.append(cells)
    return md_table(headers, rows)


def ranking_table_md(report: QualityReport) -> str:
    rows = [[src, fmt(r.ndcg_at_10, 4), fmt(r.mrr_at_10, 4)] for src, r in report.ranking.items()]
    return md_table(["ranked by", "nDCG@10", "MRR@10"], rows)


def reranker_table_md(report: QualityReport) -> str:
    r = report.reranker
    if r is None:
        return ""
    rows = [["served (vLLM)", fmt(r.spearman, 5), fmt(r.max_abs_diff, 5), fmt(r.top1_agreement)]]
    if r.incumbent_spearman is not None:
        rows.append(
            [
                "incumbent",
                fmt(r.incumbent_spearman, 5),
                fmt(r.incumbent_max_abs_diff, 5),
                fmt(r.incumbent_top1_agreement),
            ]
        )
    table = md_table(["vs CrossEncoder.predict", "Spearman", "max abs diff", "top-1 agreement"], rows)
    return f"Scores compared on the **{r.scale}** scale over {r.pairs} pairs; {r.rerank_note}.\n\n{table}"


def checks_table_md(report: QualityReport) -> str:
    rows = [[name.value, "pass" if c.passed else "**FAIL**", c.reason] for name, c in report.checks.items()]
    return md_table(["check", "outcome", "why"], rows)


def over_length_md(report: QualityReport) -> str:
    o = report.over_length
    if o is None:
        return ""
    text = (
        f"{o.tokens} tokens (max_model_len {o.max_model_len}): vLLM **{o.served_behaviour}** "
        f"(HTTP {o.served_status}){': ' + o.served_message if o.served_message else ''}"
    )
    if o.truncated_status is not None:
        cosine = fmt(o.truncated_cosine, 5)
        text += f"; truncate_prompt_tokens={o.max_model_len}: HTTP {o.truncated_status}, cosine {cosine}"
    if o.incumbent_status:
        text += f"; Caikit: HTTP {o.incumbent_status} {o.incumbent_message or ''}"
    return text

"""Pure: the blocking checks' outcomes from a QualityReport's measurements, each with a reason a person can
act on. Tested without a server (pooling_pipeline_tests/test_quality.py)."""

from __future__ import annotations

from pooling_pipeline.catalog import ModelKind, QualityThresholds
from pooling_pipeline.evaluation.quality.checks import CheckName, CheckOutcome
from pooling_pipeline.evaluation.quality.models import QualityReport

# Largest |served - reference| on the score scale both share (sigmoid for ms-marco-style heads).
MAX_SCORE_DIFF = 0.02
MIN_TOP1_AGREEMENT = 0.9


def decide_checks(
    report: QualityReport, thresholds: QualityThresholds, expected_dimension: int | None
) -> dict[CheckName, CheckOutcome]:
    """Every check, in CheckName order. A check that does not apply to the model's kind passes."""
    if report.kind is ModelKind.EMBEDDING:
        outcomes = [
            _embedding_parity(report, thresholds),
            _dimension_matches(report, expected_dimension),
            _not_applicable(CheckName.RERANKER_PARITY, "embedding models"),
            _ranking_correct(report, thresholds),
        ]
    else:
        outcomes = [
            _not_applicable(CheckName.EMBEDDING_PARITY, "rerankers"),
            _not_applicable(CheckName.DIMENSION_MATCHES, "rerankers"),
            _reranker_parity(report, thresholds),
            _ranking_correct(report, thresholds),
        ]
    by_name = {o.name: o for o in outcomes}
    return {name: by_name[name] for name in CheckName}


def _not_applicable(name: CheckName, kind: str) -> CheckOutcome:
    return CheckOutcome(name=name, passed=True, applicable=False, reason=f"not applicable for {kind}")


def _embedding_parity(report: QualityReport, t: QualityThresholds) -> CheckOutcome:
    name = CheckName.EMBEDDING_PARITY
    failed = [p for p in report.probes if p.served_error]
    if failed:
        names = ", ".join(f"{p.probe} ({p.served_error})" for p in failed[:3])
        return CheckOutcome(
            name=name, passed=False, reason=f"the server failed {len(failed)} probe(s): {names}; see its log"
        )
    if report.min_cosine is None:
        return CheckOutcome(name=name, passed=False, reason="no probe was compared: nothing to judge")
    problems = []
    if report.min_cosine < t.min_cosine:
        compared = [(p.probe, p.served_cosine) for p in report.probes if p.served_cosine is not None]
        listed = ", ".join(f"{probe} {cosine:.4f}" for probe, cosine in sorted(compared, key=lambda x: x[1])[:3])
        problems.append(
            f"min cosine to the sentence-transformers reference is {report.min_cosine:.4f} < {t.min_cosine} "
            f"(worst: {listed}); the served vectors are not the model's: check pooling (--pooler-config), "
            "normalisation and dtype against the model's modules.json"
        )
    if report.normalize_expected and report.normalised_served is False:
        problems.append(
            "the model normalises its embeddings (Normalize module) but the served vectors are not "
            "unit length: enable normalisation in the pooler config"
        )
    if problems:
        return CheckOutcome(name=name, passed=False, reason="; ".join(problems))
    return CheckOutcome(
        name=name,
        passed=True,
        reason=f"min cosine {report.min_cosine:.5f} (mean {report.mean_cosine or report.min_cosine:.5f}) ≥ "
        f"{t.min_cosine} over {len(report.probes)} probes",
    )


def _dimension_matches(report: QualityReport, expected: int | None) -> CheckOutcome:
    name = CheckName.DIMENSION_MATCHES
    served, ref = report.dimension_served, report.dimension_reference
    if served is None:
        return CheckOutcome(
            name=name, passed=False, reason="the server returned no embedding, so its dimension is unknown"
        )
    if expected is not None and served != expected:
        return CheckOutcome(
            name=name,
            passed=False,
            reason=f"served vectors have {served} dimensions but the catalog says dimension: {expected}"
            + (f" (the model itself gives {ref})" if ref is not None else "")
            + "; fix `dimension` in the catalog or the served model",
        )
    if ref is not None and served != ref:
        return CheckOutcome(
            name=name,
            passed=False,
            reason=f"served vectors have {served} dimensions, the reference {ref}: "
            "the server is not serving this model's output layer (Dense module?)",
        )
    return CheckOutcome(
        name=name, passed=True, reason=f"{served} dimensions" + (", as the catalog says" if expected else "")
    )


def _ranking_correct(report: QualityReport, t: QualityThresholds) -> CheckOutcome:
    name = CheckName.RANKING_CORRECT
    ref, served = report.ranking.get("reference"), report.ranking.get("served")
    if ref is None or served is None:
        return CheckOutcome(
            name=name, passed=False, reason="the retrieval set was not ranked by both the server and the reference"
        )
    summary = (
        f"nDCG@10 {served.ndcg_at_10:.4f} vs reference {ref.ndcg_at_10:.4f}, "
        f"MRR@10 {served.mrr_at_10:.4f} vs {ref.mrr_at_10:.4f}"
    )
    if max(ref.ndcg_at_10 - served.ndcg_at_10, ref.mrr_at_10 - served.mrr_at_10) > t.ndcg_tolerance:
        return CheckOutcome(
            name=name,
            passed=False,
            reason=f"served ranking is worse than the reference beyond the tolerance {t.ndcg_tolerance}: {summary}; "
            "the served model retrieves differently from the model itself",
        )
    return CheckOutcome(name=name, passed=True, reason=f"{summary} (tolerance {t.ndcg_tolerance})")


def _reranker_parity(report: QualityReport, t: QualityThresholds) -> CheckOutcome:
    name = CheckName.RERANKER_PARITY
    r = report.reranker
    if r is None:
        return CheckOutcome(name=name, passed=False, reason="no reranker scores were compared")
    problems = []
    if r.spearman < t.min_spearman:
        problems.append(f"Spearman {r.spearman:.4f} < {t.min_spearman}")
    if r.max_abs_diff > MAX_SCORE_DIFF:
        problems.append(f"max |score diff| {r.max_abs_diff:.4f} > {MAX_SCORE_DIFF} on the {r.scale} scale")
    if r.top1_agreement < MIN_TOP1_AGREEMENT:
        problems.append(f"top-1 agreement {r.top1_agreement:.2f} < {MIN_TOP1_AGREEMENT}")
    if not r.rerank_consistent:
        problems.append(f"/rerank disagrees with /v1/score ({r.rerank_note})")
    summary = (
        f"Spearman {r.spearman:.5f}, max |diff| {r.max_abs_diff:.5f} ({r.scale}), "
        f"top-1 agreement {r.top1_agreement:.2f} over {r.pairs} pairs"
    )
    if problems:
        return CheckOutcome(
            name=name,
            passed=False,
            reason="served scores differ from CrossEncoder.predict on the same snapshot: "
            + "; ".join(problems)
            + f" ({summary}); check the activation (use_activation) and the classifier head the server loaded",
        )
    return CheckOutcome(name=name, passed=True, reason=summary)

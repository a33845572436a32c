"""Quality metrics: pure functions on numbers, no I/O, so each is tested on inputs with known answers.

Rankings follow the usual IR conventions: graded relevance labels (0 = not relevant), ties in scores broken
by document order (stable sort), the cut-off `k` applied to the ranked list.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats


def cosine(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Cosine similarity of two vectors; raises ValueError on a length mismatch or a zero vector."""
    va = np.asarray(a, dtype=np.float64)
    vb = np.asarray(b, dtype=np.float64)
    if va.shape != vb.shape:
        raise ValueError(f"cannot compare vectors of shapes {va.shape} and {vb.shape}")
    na, nb = float(np.linalg.norm(va)), float(np.linalg.norm(vb))
    if na == 0.0 or nb == 0.0:
        raise ValueError("cosine of a zero vector is undefined")
    return float(np.dot(va, vb) / (na * nb))


def l2_norm(a: Sequence[float] | np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(a, dtype=np.float64)))


def is_normalised(a: Sequence[float] | np.ndarray, tol: float = 1e-3) -> bool:
    return abs(l2_norm(a) - 1.0) <= tol


def rank_order(scores: Sequence[float]) -> list[int]:
    """Indices of `scores`, best first (ties keep document order)."""
    return sorted(range(len(scores)), key=lambda i: -scores[i])


def dcg_at_k(gains_in_rank_order: Sequence[float], k: int = 10) -> float:
    return float(sum((2.0**g - 1.0) / math.log2(i + 2) for i, g in enumerate(gains_in_rank_order[:k])))


def ndcg_at_k(scores: Sequence[float], labels: Sequence[float], k: int = 10) -> float:
    """nDCG@k of ranking documents by `scores` against graded `labels` (exponential gain 2^rel - 1).

    0.0 when no document is relevant (nothing to find, nothing found).
    """
    if len(scores) != len(labels):
        raise ValueError(f"{len(scores)} scores for {len(labels)} labels")
    ideal = dcg_at_k(sorted(labels, reverse=True), k)
    if ideal == 0.0:
        return 0.0
    ranked = [labels[i] for i in rank_order(scores)]
    return dcg_at_k(ranked, k) / ideal


def mrr_at_k(scores: Sequence[float], labels: Sequence[float], k: int = 10) -> float:
    """Reciprocal rank of the first relevant (label > 0) document within the top k, else 0."""
    if len(scores) != len(labels):
        raise ValueError(f"{len(scores)} scores for {len(labels)} labels")
    for rank, idx in enumerate(rank_order(scores)[:k], start=1):
        if labels[idx] > 0:
            return 1.0 / rank
    return 0.0


def mean_over_queries(
    metric, scores_by_query: Mapping[str, Sequence[float]], labels_by_query: Mapping[str, Sequence[float]], k: int = 10
) -> float:
    """Average `metric` (ndcg_at_k / mrr_at_k) over the queries present in both mappings."""
    qids = [q for q in labels_by_query if q in scores_by_query]
    if not qids:
        raise ValueError("no query has both scores and labels")
    return float(np.mean([metric(scores_by_query[q], labels_by_query[q], k) for q in qids]))


def spearman(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Spearman rank correlation; 1.0 for identical constant inputs, NaN-free."""
    if len(a) != len(b):
        raise ValueError(f"{len(a)} vs {len(b)} values")
    if len(a) < 2:
        raise ValueError("Spearman needs at least two values")
    if np.allclose(a, a[0]) or np.allclose(b, b[0]):
        return 1.0 if np.allclose(a, b) else 0.0
    return float(stats.spearmanr(a, b).statistic)


def top1_agreement(rankings_a: Sequence[Sequence[float]], rankings_b: Sequence[Sequence[float]]) -> float:
    """Fraction of score lists (one per query) whose best document is the same in a and b."""
    if len(rankings_a) != len(rankings_b) or not rankings_a:
        raise ValueError("top-1 agreement needs the same, non-zero number of score lists on both sides")
    same = sum(rank_order(x)[0] == rank_order(y)[0] for x, y in zip(rankings_a, rankings_b, strict=True))
    return same / len(rankings_a)


def max_abs_diff(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    va, vb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if va.shape != vb.shape:
        raise ValueError(f"cannot compare shapes {va.shape} and {vb.shape}")
    return float(np.max(np.abs(va - vb))) if va.size else 0.0


def sigmoid(x: Sequence[float] | np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))

"""Quality metrics on inputs whose answers are known by hand."""

import math

import numpy as np
import pytest

from pooling_pipeline.evaluation import metrics


def test_cosine_of_orthogonal_parallel_and_opposite_vectors():
    assert metrics.cosine([1, 0], [0, 1]) == 0.0
    assert metrics.cosine([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0, abs=1e-12)
    assert metrics.cosine([1, 0], [-3, 0]) == pytest.approx(-1.0)
    assert metrics.cosine([1, 1], [1, 0]) == pytest.approx(1 / math.sqrt(2))


def test_cosine_rejects_mismatched_lengths_and_zero_vectors():
    with pytest.raises(ValueError, match="shapes"):
        metrics.cosine([1, 0, 0], [1, 0])
    with pytest.raises(ValueError, match="zero vector"):
        metrics.cosine([0, 0], [1, 0])


def test_ndcg_is_one_for_the_ideal_order_and_exact_for_a_swap():
    labels = [0, 2, 1]
    assert metrics.ndcg_at_k([0.1, 0.9, 0.5], labels) == pytest.approx(1.0)
    # ranking: doc0 (0), doc1 (2), doc2 (1): DCG = 0 + 3/log2(3) + 1/log2(4); IDCG = 3 + 1/log2(3)
    dcg = 3 / math.log2(3) + 1 / 2
    idcg = 3 + 1 / math.log2(3)
    assert metrics.ndcg_at_k([0.9, 0.5, 0.1], labels) == pytest.approx(dcg / idcg)


def test_ndcg_only_counts_the_top_k_and_is_zero_without_relevant_documents():
    scores = list(range(12, 0, -1))  # doc i ranked i+1
    labels = [0] * 11 + [1]  # the only relevant document is ranked 12th
    assert metrics.ndcg_at_k(scores, labels, k=10) == 0.0
    assert metrics.ndcg_at_k([1, 2], [0, 0]) == 0.0


def test_mrr_is_the_reciprocal_rank_of_the_first_relevant_document():
    assert metrics.mrr_at_k([0.9, 0.8, 0.7], [0, 0, 1]) == pytest.approx(1 / 3)
    assert metrics.mrr_at_k([0.9, 0.8, 0.7], [1, 0, 1]) == 1.0
    assert metrics.mrr_at_k(list(range(11, 0, -1)), [0] * 10 + [1], k=10) == 0.0


def test_ties_keep_document_order():
    assert metrics.rank_order([0.5, 0.5, 0.7]) == [2, 0, 1]
    assert metrics.mrr_at_k([0.5, 0.5], [0, 1]) == 0.5


def test_mean_over_queries_averages_per_query_values():
    scores = {"a": [1.0, 0.0], "b": [0.0, 1.0]}
    labels = {"a": [1, 0], "b": [1, 0]}
    assert metrics.mean_over_queries(metrics.mrr_at_k, scores, labels) == pytest.approx(0.75)


def test_spearman_of_monotone_reversed_and_constant_inputs():
    assert metrics.spearman([1, 2, 3, 4], [10, 20, 25, 100]) == pytest.approx(1.0)
    assert metrics.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert metrics.spearman([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    assert metrics.spearman([1, 1, 1], [1, 1, 1]) == 1.0
    assert metrics.spearman([1, 1, 1], [1, 2, 3]) == 0.0


def test_top1_agreement_counts_queries_with_the_same_best_document():
    a = [[0.9, 0.1], [0.2, 0.8], [0.5, 0.4]]
    b = [[0.7, 0.3], [0.9, 0.1], [0.6, 0.1]]
    assert metrics.top1_agreement(a, b) == pytest.approx(2 / 3)


def test_max_abs_diff_and_sigmoid():
    assert metrics.max_abs_diff([0.1, 0.5, 0.9], [0.1, 0.45, 1.0]) == pytest.approx(0.1)
    assert metrics.sigmoid([0.0])[0] == 0.5
    np.testing.assert_allclose(metrics.sigmoid([-2.0, 2.0]), [1 / (1 + math.e**2), 1 / (1 + math.e**-2)])


def test_is_normalised_tolerates_float_noise_only():
    assert metrics.is_normalised([0.6, 0.8])
    assert metrics.is_normalised([0.6, 0.8000001])
    assert not metrics.is_normalised([1.2, 0.5])

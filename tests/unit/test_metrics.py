"""Metrics on tiny hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ranker.metrics import (
    auc,
    catalog_coverage,
    cross_category_share,
    f1_at_k,
    mrr,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
    summarize,
    target_ranks,
)


def test_target_ranks_with_ties_and_exclusions() -> None:
    scores = np.array(
        [
            [0.9, 0.5, 0.7, 0.1],  # target 2 -> one item above: rank 1
            [0.5, 0.5, 0.2, 0.5],  # target 0 ties two others: pessimistic rank 2
            [0.9, 0.8, 0.3, 0.95],
        ]
    )  # target 2, items 0 and 3 excluded -> rank 1 of 2
    ranks, n = target_ranks(scores, np.array([2, 0, 2]), exclude=[[], [], [0, 3]])
    assert ranks.tolist() == [1, 2, 1]
    assert n.tolist() == [4, 4, 2]
    # a target in the excluded history is never shown: a miss (rank = n_items), 1 candidate left
    ranks, n = target_ranks(scores[2:], np.array([2]), exclude=[[0, 3, 2]])
    assert ranks.tolist() == [4] and n.tolist() == [1]


def test_hand_computed_values() -> None:
    ranks = np.array([0, 3, 12])
    assert recall_at_k(ranks, 10) == pytest.approx(2 / 3)
    assert ndcg_at_k(ranks, 10) == pytest.approx((1.0 + 1 / math.log2(5)) / 3)
    assert ndcg_at_k(ranks, 3) == pytest.approx(1 / 3)
    assert mrr(ranks) == pytest.approx((1 + 1 / 4 + 1 / 13) / 3)
    assert precision_at_k(ranks, 10) == pytest.approx(2 / 30)
    assert f1_at_k(ranks, 10) == pytest.approx((2 / 11) * 2 / 3)
    assert auc(ranks, np.array([101, 101, 101])) == pytest.approx(np.mean([1.0, 0.97, 0.88]))
    assert catalog_coverage(np.array([[1, 2], [2, 3]]), 10) == pytest.approx(0.3)
    assert cross_category_share(ranks, 10, np.array([True, False, True])) == pytest.approx(0.5)


def test_edges() -> None:
    empty = np.array([], dtype=np.int64)
    assert recall_at_k(empty, 10) == 0.0 and ndcg_at_k(empty, 10) == 0.0 and mrr(empty) == 0.0
    assert cross_category_share(np.array([50]), 10, np.array([True])) == 0.0
    out = summarize(np.array([0]), np.array([5]), np.array([[0, 1]]), 5)
    assert out["recall@10"] == 1.0 and out["ndcg@10"] == 1.0 and out["auc"] == 1.0
    assert "cross_category_hits@10" not in out

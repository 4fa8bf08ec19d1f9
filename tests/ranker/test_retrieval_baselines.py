from __future__ import annotations

import numpy as np
import pytest

from ranker.baselines import ItemKNN, popularity_scores, recency_weights, text_profile_scores
from ranker.ranking import RankingPolicy, rank_candidates
from ranker.retrieval import ExactRetriever, make_retriever


def test_exact_retrieval_matches_brute_force_and_excludes() -> None:
    rng = np.random.default_rng(0)
    items, queries = rng.normal(size=(200, 16)), rng.normal(size=(7, 16))
    rows, scores = ExactRetriever(items).search(queries, 5, exclude=[[0, 1]] * 7)
    brute = queries @ items.T
    brute[:, [0, 1]] = -np.inf
    assert np.array_equal(rows, np.argsort(-brute, axis=1, kind="stable")[:, :5])
    assert np.allclose(scores, np.sort(brute, axis=1)[:, ::-1][:, :5], atol=1e-5)
    assert isinstance(make_retriever(items), ExactRetriever)


def test_ranking_filters_and_diversity() -> None:
    cats = np.array([0, 0, 0, 1, 1, 2])
    rows, scores = [0, 1, 2, 3, 4, 5], [6.0, 5.0, 4.0, 3.0, 2.0, 1.0]
    assert [r for r, _ in rank_candidates(rows, scores, 3, RankingPolicy(), seen={0}, item_categories=cats)] == [
        1,
        2,
        3,
    ]
    diverse = RankingPolicy(max_per_category=1)
    assert [r for r, _ in rank_candidates(rows, scores, 3, diverse, seen=set(), item_categories=cats)] == [0, 3, 5]
    only = RankingPolicy(categories={1}, unavailable={3})
    assert [r for r, _ in rank_candidates(rows, scores, 3, only, seen=set(), item_categories=cats)] == [4]


def test_baselines_hand_cases() -> None:
    pop = popularity_scores([[1, 2], [2, 3], [2]], n_items=3, n_users=2)
    assert pop.shape == (2, 3) and pop[0].tolist() == [1, 3, 1]
    knn = ItemKNN([[1, 2], [1, 2], [3, 4]], n_items=4, window=1)
    s = knn.scores([[1]])
    assert s[0].argmax() == 1 and s[0][3] < 1e-3  # item 2 co-occurs with item 1; item 4 never does
    assert recency_weights(3, 0.5).tolist() == pytest.approx([1 / 7, 2 / 7, 4 / 7])
    text = np.array([[0, 0], [1, 0], [0, 1], [0.6, 0.8]], dtype=np.float32)
    prof = text_profile_scores([[1]], text)
    assert prof[0].tolist() == pytest.approx([1.0, 0.0, 0.6])


def test_sampled_softmax_matches_full_softmax_when_every_item_is_sampled() -> None:
    import torch

    from ranker.model import ModelConfig, SeqRecModel
    from ranker.train import _loss

    torch.manual_seed(0)
    cfg = ModelConfig(n_items=6, n_categories=1, n_brands=1, text_dim=4, dim=8, layers=1, heads=2, dropout=0.0)
    model = SeqRecModel(
        cfg,
        torch.randn(7, 4),
        torch.ones(7, dtype=torch.long),
        torch.ones(7, dtype=torch.long),
        torch.zeros(7, dtype=torch.long),
    ).eval()
    inputs = torch.tensor([[0, 1, 2], [3, 4, 5]])
    types = torch.full_like(inputs, 4)
    targets = torch.tensor([[0, 2, 3], [4, 5, 6]])
    full = _loss(model, inputs, types, targets)
    gen = torch.Generator().manual_seed(0)
    sampled = _loss(model, inputs, types, targets, sampled=500, generator=gen)  # every item drawn
    assert torch.allclose(full, sampled, atol=1e-5)

from __future__ import annotations

from importlib import resources

import numpy as np
import pytest

from encoders.topk import OnnxExactRetriever, build_topk_model
from ranker.baselines import ItemKNN, popularity_scores, recency_weights, text_profile_scores
from ranker.ranking import RankingPolicy, first_unseen, rank_candidates
from ranker.retrieval import ExactRetriever, make_retriever

EXACT = [ExactRetriever, OnnxExactRetriever]  # one suite for every exact implementation


@pytest.mark.parametrize("impl", EXACT, ids=lambda c: c.__name__)
def test_exact_retrieval_matches_brute_force_and_excludes(impl: type) -> None:
    rng = np.random.default_rng(0)
    items, queries = rng.normal(size=(200, 16)), rng.normal(size=(7, 16))
    exclude = [[0, 1]] * 6 + [[int(i) for i in np.argsort(-(queries[6] @ items.T))[:3]]]  # the 3 best of user 6
    rows, scores = impl(items).search(queries, 5, exclude=exclude)
    brute = (queries @ items.T).astype(np.float32)
    for r, banned in enumerate(exclude):
        brute[r, banned] = -np.inf
    assert np.array_equal(rows, np.argsort(-brute, axis=1, kind="stable")[:, :5])
    assert np.allclose(scores, np.sort(brute, axis=1)[:, ::-1][:, :5], atol=1e-4)
    plain_rows, _ = impl(items).search(queries, 5)
    assert np.array_equal(plain_rows, np.argsort(-(queries @ items.T), axis=1, kind="stable")[:, :5])
    assert isinstance(make_retriever(items), ExactRetriever)


@pytest.mark.parametrize("impl", EXACT, ids=lambda c: c.__name__)
def test_exact_retrieval_edges(impl: type) -> None:
    items = np.eye(4, dtype=np.float32)
    rows, scores = impl(items).search(np.ones((2, 4), dtype=np.float32), 10, exclude=[[0, 1, 2], []])
    assert rows.shape == (2, 4)  # k is capped at the catalog size
    assert rows[0, 0] == 3 and np.isneginf(scores[0, 1:]).all()  # banned rows can only come last, at -inf
    empty_rows, _ = impl(items).search(np.zeros((0, 4), dtype=np.float32), 3)
    assert empty_rows.shape[0] == 0


def test_onnx_topk_breaks_ties_by_lower_row_and_ships_the_built_graph() -> None:
    rows, _ = OnnxExactRetriever(np.zeros((50, 8), dtype=np.float32)).search(np.ones((2, 8), dtype=np.float32), 5)
    assert rows.tolist() == [[0, 1, 2, 3, 4]] * 2
    assert build_topk_model() == resources.files("encoders").joinpath("topk.onnx").read_bytes()


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


def test_first_unseen_equals_rank_candidates_row_by_row() -> None:
    """The worker's vectorised default policy must pick exactly what the per-user loop picks."""
    rng = np.random.default_rng(3)
    n, width, n_items, k = 40, 30, 60, 8
    rows = np.stack([rng.permutation(n_items)[:width] for _ in range(n)])
    scores = -np.sort(-rng.random((n, width)), axis=1)
    scores[5, 3:] = -np.inf  # a user with only 3 finite candidates
    seen = [rng.choice(n_items, size=int(rng.integers(0, 25)), replace=False).tolist() for _ in range(n)]
    seen[7] = rows[7].tolist()  # every candidate already seen: an empty pick
    cats = np.zeros(n_items, dtype=np.int64)
    got = first_unseen(rows, scores, k, seen)
    for j in range(n):
        want = rank_candidates(rows[j], scores[j], k, RankingPolicy(), seen[j], cats)
        assert list(zip(got[j][0].tolist(), got[j][1].tolist(), strict=True)) == want
    assert len(got[5][0]) <= 3 and len(got[7][0]) == 0
    no_seen = first_unseen(rows, scores, k)
    assert all(r.tolist() == rows[j, : len(r)].tolist() for j, (r, _) in enumerate(no_seen))


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
        torch.tensor([0, 2, 2, 2, 2, 2, 2]),  # every item has training events (bucket 0: padding)
    ).eval()
    inputs = torch.tensor([[0, 1, 2], [3, 4, 5]])
    types = torch.full_like(inputs, 4)
    targets = torch.tensor([[0, 2, 3], [4, 5, 6]])
    full = _loss(model, inputs, types, targets)
    gen = torch.Generator().manual_seed(0)
    sampled = _loss(model, inputs, types, targets, sampled=500, generator=gen)  # every item drawn
    assert torch.allclose(full, sampled, atol=1e-5)

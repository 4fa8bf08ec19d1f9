"""The evaluation protocols on hand-made cases (issue 13): `published` removes nothing,
`production` removes the history and counts a target found there as a miss, `cold-items` picks the
same items on every run from their ids alone; plus training windows and multi-valued categories."""

from __future__ import annotations

import numpy as np

from ranker.data import Catalog, Split, SplitData, cold_item_ids, cold_items_salt, drop_cold_items
from ranker.evaluate import _score_model
from ranker.metrics import auc, recall_at_k, target_ranks
from ranker.train import auto_max_len, training_windows
from shopdata.loader import category_labels

# 5 items (0-based columns); user 0's target 2 is not in its history, user 1's target 1 is.
SCORES = np.array([[0.9, 0.8, 0.5, 0.1, 0.0], [0.9, 0.8, 0.5, 0.1, 0.0]], dtype=np.float32)
TARGETS = np.array([2, 1])
HISTORY = [[0, 1], [0, 1]]


def test_published_removes_nothing() -> None:
    ranks, n_cand = target_ranks(SCORES, TARGETS, None)
    assert ranks.tolist() == [2, 1]
    assert n_cand.tolist() == [5, 5]


def test_production_removes_history_and_a_target_in_it_is_a_miss() -> None:
    ranks, n_cand = target_ranks(SCORES, TARGETS, HISTORY)
    assert ranks[0] == 0  # items 0 and 1 gone: item 2 comes first
    assert ranks[1] == 5  # target 1 is in the history: never shown, rank = n_items
    assert n_cand.tolist() == [3, 3]
    assert recall_at_k(ranks, 5) == 0.5  # 5 items: every shown item is in the top 5, the miss is not
    assert 0.0 <= auc(ranks, n_cand) <= 1.0


def test_ties_count_against_the_target() -> None:
    ranks, _ = target_ranks(np.zeros((1, 4), np.float32), np.array([2]), [[0]])
    assert ranks.tolist() == [2]  # two other candidates tie with it


def _catalog(n: int) -> Catalog:
    return Catalog(
        ids=[f"I{i}" for i in range(n)],
        texts=[""] * n,
        categories=np.zeros(n + 1, np.int64),
        brands=np.zeros(n + 1, np.int64),
        category_names=[""],
        brand_names=[""],
    )


def test_score_model_under_both_protocols() -> None:
    scores = np.tile(np.arange(20, 0, -1, dtype=np.float32), (2, 1))  # item 0 best, item 19 worst
    split = Split(users=["a", "b"], histories=[[1, 2], [1, 3]], history_types=[[1, 1], [1, 1]],
                  targets=np.array([3, 3]))  # fmt: skip
    published, p_ranks = _score_model(scores, split, _catalog(20), remove_history=False)
    production, q_ranks = _score_model(scores, split, _catalog(20), remove_history=True)
    assert p_ranks.tolist() == [2, 2]
    assert q_ranks.tolist() == [0, 20]  # user b bought item 3 before: a miss in production
    assert published["recall@10"] == 1.0 and production["recall@10"] == 0.5


def test_cold_items_are_deterministic_and_about_the_share() -> None:
    ids = [f"item-{i}" for i in range(5000)]
    cold = cold_item_ids(ids, 0.1)
    assert cold == cold_item_ids(list(reversed(ids)), 0.1)[::-1]  # by id, not by position
    assert 400 < len(cold) < 600
    assert set(cold_item_ids(ids, 0.05)) < set(cold)  # nested shares
    assert cold_item_ids(ids, 0.0) == []


def test_another_cold_draw_is_another_share_and_the_default_is_unchanged() -> None:
    """`train --cold-items-draw`: "" keeps the protocol's items of every earlier bundle; another text
    holds out other items (to check a figure on items it was not chosen on), not the ranking stage's."""
    ids = [f"item-{i}" for i in range(5000)]
    default = set(cold_item_ids(ids, 0.1, cold_items_salt("")))
    assert default == set(cold_item_ids(ids, 0.1))
    other = set(cold_item_ids(ids, 0.1, cold_items_salt("b")))
    assert 400 < len(other) < 600 and len(default & other) < 100  # independent draws overlap by ~share
    assert other == set(cold_item_ids(ids, 0.1, cold_items_salt("b")))
    assert other != set(cold_item_ids(ids, 0.1, b"stage-new:"))


def test_cold_items_leave_every_training_sequence_and_validation() -> None:
    valid = Split(users=["a", "b"], histories=[[1, 2], [3]], history_types=[[1, 1], [1]], targets=np.array([5, 4]))
    data = SplitData("leave-one-out", [[1, 5, 2, 5], [5], [4, 3]], [[1, 2, 3, 4], [2], [1, 2]], valid, valid)
    out = drop_cold_items(data, {5})
    # a sequence of cold items only is gone (it crashed training on the Scientific data)
    assert out.train == [[1, 2], [4, 3]] and out.train_types == [[1, 3], [1, 2]]
    assert out.valid.users == ["b"] and out.valid.targets.tolist() == [4]
    assert out.test is valid  # the test split is evaluate's business


def test_windows_cover_a_long_history_once() -> None:
    max_len = 4
    seq = list(range(1, 3 * max_len + 1))  # 12 events
    windows = training_windows([seq], [[1] * len(seq)], max_len)
    assert [w[0] for w in windows] == [seq[7:12], seq[3:8], seq[0:4]]
    # every event but the first is a target exactly once
    targets = [t for w, _ in windows for t in w[1:]]
    assert sorted(targets) == seq[1:]


def test_short_histories_give_one_window_and_single_events_none() -> None:
    windows = training_windows([[1, 2, 3], [7]], [[1, 1, 1], [1]], 10)
    assert windows == [([1, 2, 3], [1, 1, 1])]


def test_max_len_follows_the_data() -> None:
    assert auto_max_len([[1] * n for n in range(1, 101)]) == 50  # p90 = 90, capped
    assert auto_max_len([[1] * 3] * 20) == 20  # floor: short histories still get room to grow
    assert auto_max_len([[1] * n for n in (5, 20, 22, 24, 25, 26, 28, 30, 31, 32)]) == 32  # p90 = 31.1, rounded up


def test_multi_valued_categories() -> None:
    assert category_labels("Adventure, Comedy") == ["Adventure", "Comedy"]
    assert category_labels("Tools | Sanding|Tools") == ["Tools", "Sanding"]
    assert category_labels("Science Fiction, Drama|Kids") == ["Science Fiction", "Drama", "Kids"]
    # paths keep their commas: Amazon's space-joined paths (the Scientific data) and > / paths
    path = "Industrial & Scientific Tapes, Adhesives & Sealants Adhesive Tapes Duct Tape"
    assert category_labels(path) == [path]
    assert category_labels("Home > Bed, Bath") == ["Home > Bed, Bath"]
    assert category_labels("Home/Bed, Bath | Sale") == ["Home/Bed, Bath", "Sale"]
    assert category_labels("") == [] and category_labels(" , ") == []

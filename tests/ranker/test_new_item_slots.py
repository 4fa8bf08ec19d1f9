"""The new-arrival slots (ranker.ranking.with_new_item_slots, RankingStage.new_eligible): from
position `after` on, at least one in every `every` positions is a new item worth showing, while one
is left; the top of the list stays the model's; offline (evaluate) and online lists agree."""

from __future__ import annotations

import numpy as np

from ranker.data import Split
from ranker.evaluate import _with_new_slots
from ranker.ranking import RankingPolicy, new_item_slots, slot_order, with_new_item_slots
from ranker.stage import FEATURES, CoVisitation, RankingStage, StageConfig


def test_slot_positions() -> None:
    assert new_item_slots(20, 10, 3) == [12, 15, 18]
    assert new_item_slots(12, 10, 3) == []
    assert new_item_slots(50, 10, 0) == []
    assert new_item_slots(8, 0, 4) == [3, 7]


def test_a_new_item_is_promoted_to_its_slot_and_the_rest_keep_their_order() -> None:
    eligible = [False] * 8 + [True, False, True]
    # slots at 2 and 5 (after=0, every=3): the best eligible (8) goes to 2, the next (10) to 5
    assert slot_order(eligible, 7, 0, 3) == [0, 1, 8, 2, 3, 10, 4, 5, 6, 7, 9]


def test_a_quota_not_seats_new_items_that_rank_high_keep_their_places() -> None:
    eligible = [True, False, False, False, False, False, False]
    assert slot_order(eligible, 7, 0, 3) == list(range(7))  # one new item by position 2: met
    eligible = [False, True, False, False, False, False, False]
    # by slot 2 one is shown (1); by slot 5 two are needed and none is left: the model's order
    assert slot_order(eligible, 7, 0, 3) == list(range(7))


def test_the_top_positions_stay_the_models() -> None:
    eligible = [False] * 12 + [True] * 3
    order = slot_order(eligible, 15, 10, 3)
    assert order[:10] == list(range(10))
    assert order[12] == 12 and order[10:12] == [10, 11]


def test_batch_rule_removes_seen_and_invalid_and_fixes_only_who_needs_it() -> None:
    rows = np.array([[5, 6, 7, 8, 9, 1], [1, 2, 3, 4, 5, 6]])
    scores = np.array([[6.0, 5, 4, 3, 2, 1], [6.0, 5, -np.inf, 3, 2, 1]])
    eligible = np.zeros(rows.shape, dtype=bool)
    eligible[0, 5] = True  # user 0: row 1, last
    eligible[1, 3] = True  # user 1: row 4, already at its slot once row 3 (invalid) is out
    out_rows, out_scores = with_new_item_slots(rows, scores, eligible, k=4, after=0, every=3, seen=[[6], []])
    assert out_rows[0, :5].tolist() == [5, 7, 1, 8, 9]  # 6 seen: out; new row 1 promoted to slot 2
    assert out_scores[0, 2] == 1.0  # a promoted item keeps its own score
    assert np.isneginf(out_scores[0, 5]) and out_rows[0, 5] == 6
    assert out_rows[1].tolist() == [1, 2, 4, 5, 6, 3]  # nothing to fix: the model's order, invalid last
    assert np.isneginf(out_scores[1, 5])


def test_the_batch_rule_equals_the_rule_user_by_user() -> None:
    rng = np.random.default_rng(5)
    for _ in range(30):
        users, width = 7, int(rng.integers(1, 40))
        rows = np.stack([rng.permutation(60)[:width] for _ in range(users)])
        scores = np.sort(rng.normal(size=(users, width)), axis=1)[:, ::-1].copy()
        scores[rng.random((users, width)) < 0.1] = -np.inf
        eligible = rng.random((users, width)) < rng.uniform(0.05, 0.6)
        seen = [rng.choice(60, int(rng.integers(0, 5)), replace=False).tolist() for _ in range(users)]
        k, after, every = int(rng.integers(1, 30)), int(rng.integers(0, 12)), int(rng.integers(1, 5))
        out_rows, out_scores = with_new_item_slots(rows, scores, eligible, k, after, every, seen)
        for u in range(users):
            keep = [c for c in range(width) if np.isfinite(scores[u, c]) and rows[u, c] not in seen[u]]
            order = slot_order([bool(eligible[u, c]) for c in keep], k, after, every)
            expect = [int(rows[u, keep[i]]) for i in order]
            n = len(expect)
            assert out_rows[u, :n].tolist() == expect
            assert np.isfinite(out_scores[u, :n]).all() and np.isneginf(out_scores[u, n:]).all()


def _stage(n: int = 40, dim: int = 8) -> RankingStage:
    rng = np.random.default_rng(1)
    text = rng.normal(size=(n, dim)).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    cov = CoVisitation.fit([[0, 1, 2, 3], [4, 5, 6], [1, 2, 7]], n)
    pop = np.log1p(np.arange(1, n + 1, dtype=np.float32))
    pop[30:] = 0.0  # rows 30-39: no events
    cfg = StageConfig(seq_top=3, cov_top=3, text_top=3, popular_top=2, history_top=3, history_window=6, new_top=2)
    return RankingStage(cfg, cov, text, pop, np.arange(n) % 3, booster=_ByCosine())


class _ByCosine:  # a stand-in model: text cosine to the last item
    def predict(self, x: np.ndarray, num_threads: int = 1) -> np.ndarray:
        return x[:, FEATURES.index("cos_last")]


def test_eligible_new_items_are_new_and_in_the_users_text_top_share() -> None:
    stage = _stage()
    text_all = stage.text[[3]] @ stage.text.T  # a user whose profile is row 3's text
    rows = np.arange(40)[None, :]
    eligible = stage.new_eligible(text_all, rows, 0.25)
    cut = np.sort(text_all[0])[::-1][9]  # the user's 10th best score: the top quarter of 40
    expect = (np.arange(40) >= 30) & (text_all[0] >= cut)
    assert eligible[0].tolist() == expect.tolist()
    assert not stage.new_eligible(text_all, rows, 0.0).any()
    stage.log_popularity[:] = 1.0  # no new items: nothing is eligible
    assert not stage.new_eligible(text_all, rows, 1.0).any()


def test_rerank_new_appends_more_new_items_once_each() -> None:
    stage = _stage()
    vectors = np.eye(40, 5, dtype=np.float32)
    categories = np.zeros(40, np.int64)
    seq_rows = np.array([[1, 2, 3, 4]])
    args = (vectors[[1]], vectors, categories, [[3, 7]], [[1, 1]], seq_rows)
    rows, _ = stage.rerank(*args)  # the candidates, then the rest of seq_rows (one row here)
    c = rows.shape[1] - 1
    more_rows, more_scores, new = stage.rerank_new(*args, new_share=1.0, new_extra=5)
    assert more_rows[:, :c].tolist() == rows[:, :c].tolist()
    assert more_rows.shape[1] == c + 2 + 5 + 1  # the new-items retriever's 2 + 5 more, then the rest
    extra = more_rows[0, c : c + 7]
    assert set(extra.tolist()) <= set(range(30, 40))
    fresh = np.isfinite(more_scores[0, c : c + 7])
    assert set(extra[fresh].tolist()).isdisjoint(rows[0, :c].tolist())  # each new item once
    assert len(set(extra[fresh].tolist())) == fresh.sum()
    assert more_rows[0, -1] == rows[0, -1] and not new[0, -1]  # the rest never takes a slot
    listed = more_rows[0, : c + 7][np.isfinite(more_scores[0, : c + 7])].tolist()
    assert new[0, : c + 7][np.isfinite(more_scores[0, : c + 7])].sum() == len({r for r in listed if r >= 30})


def test_evaluate_lists_follow_the_same_slots() -> None:
    """`evaluate`'s score matrix after `_with_new_slots` orders each user's first positions as the
    batch rule lists them."""
    rng = np.random.default_rng(2)
    scores = rng.normal(size=(3, 30))
    new = np.zeros((3, 30), dtype=bool)
    new[:, 25:] = True
    split = Split(users=["a", "b", "c"], histories=[[1, 2], [3], [4]], history_types=[[1, 1], [1], [1]],
                  targets=np.array([5, 6, 7]))  # fmt: skip
    policy = RankingPolicy(new_items_after=2, new_items_every=2)
    listed = _with_new_slots(scores, new, split, True, policy, depth=8)
    for u in range(3):
        masked = scores[u].copy()
        masked[[i - 1 for i in split.histories[u]]] = -np.inf
        order = np.argsort(-masked, kind="stable")
        expect = order[slot_order(new[u, order].tolist(), 8, 2, 2)][:8]
        got = np.argsort(-listed[u], kind="stable")
        got = [r for r in got if r not in {i - 1 for i in split.histories[u]}][:8]
        assert got == expect.tolist()
        assert sum(new[u, got]) >= len(new_item_slots(8, 2, 2))

from __future__ import annotations

import pytest

from ranker.cooccurrence import fit_cooccurrence
from ranker.state import UserState


def test_hand_computed_neighbours() -> None:
    # a-b adjacent twice (distance 1), a-c at distance 2 once; counts: a=2, b=2, c=1
    model = fit_cooccurrence([["a", "b"], ["a", "b", "c"]], window=3)
    nb = dict(model.neighbours["a"])
    assert nb["b"] == pytest.approx(2 / (2 * 2) ** 0.5)
    assert nb["c"] == pytest.approx(0.5 / (2 * 1) ** 0.5)
    assert [i for i, _ in model.popular] == ["a", "b", "c"]


def test_recommend_excludes_seen_and_weights_recent() -> None:
    model = fit_cooccurrence([["a", "x"], ["a", "x"], ["b", "y"]], window=1)
    ranked, source = model.recommend(["a", "b"], k=2)
    assert source == "personal"
    assert [i for i, _ in ranked] == ["y", "x"]  # b is the most recent item, so its neighbour leads
    assert "a" not in dict(ranked) and "b" not in dict(ranked)


def test_unknown_user_gets_popular_fallback() -> None:
    model = fit_cooccurrence([["a", "b"], ["a", "c"]])
    ranked, source = model.rank(UserState("new"), k=3)
    assert source == "popular"
    assert [i for i, _ in ranked] == ["a", "b", "c"]


def test_popularity_fills_below_personal_scores() -> None:
    model = fit_cooccurrence([["a", "b"], ["c", "d"], ["c", "e"]], window=1)
    ranked, _ = model.recommend(["a"], k=3)
    assert ranked[0][0] == "b"
    assert all(s < ranked[0][1] for _, s in ranked[1:])
    assert len(ranked) == 3


def test_version_depends_on_data() -> None:
    assert fit_cooccurrence([["a", "b"]]).version != fit_cooccurrence([["a", "c"]]).version
    assert fit_cooccurrence([["a", "b"]]).version == fit_cooccurrence([["a", "b"]]).version

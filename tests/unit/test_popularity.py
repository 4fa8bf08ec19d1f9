"""The one popularity order and the fallback rows built from it (worker cold starts, API fallback)."""

from __future__ import annotations

from ranker.popularity import popular_items, popular_rows


def test_popular_items_most_events_first_ties_by_id() -> None:
    assert popular_items({"b": 3, "a": 3, "c": 5, "z": 0}) == ["c", "a", "b"]
    assert popular_items({"b": 3, "a": 3, "c": 5}, n=2) == ["c", "a"]


def test_popular_rows_then_the_rest_in_catalog_order() -> None:
    rows = {"a": 0, "b": 1, "c": 2, "d": 3, "e": 4}
    # ids the catalog lacks are skipped, a repeated id counts once, unlisted rows follow in row order
    assert popular_rows(["c", "nope", "a", "c"], rows, 5) == [2, 0, 1, 3, 4]
    assert popular_rows(["c", "a"], rows, 5, limit=3) == [2, 0, 1]
    assert popular_rows([], rows, 5, limit=2) == [0, 1]

"""RecommendationStore contract: the stored lists downstream services read, over every store."""

from __future__ import annotations

import pytest

from streams.stores.base import RecommendationStore
from tests.contract.conftest import make_list


def test_unknown_users_have_no_list(recommendation_store: RecommendationStore) -> None:
    assert recommendation_store.get_recommendations("nobody") is None


def test_recommendations_round_trip_and_upsert(recommendation_store: RecommendationStore) -> None:
    store = recommendation_store
    store.put_recommendations([make_list("alice", ["x", "y", "z"])])
    got = store.get_recommendations("alice")
    assert got is not None
    assert got.item_ids() == ["x", "y", "z"]
    assert [s.score for s in got.items] == pytest.approx([1.0, 0.5, 1 / 3], rel=1e-6)
    assert (got.model_version, got.config_digest, got.source) == ("m1", "c1", "personal")
    assert got.generated_at == 1_767_225_600_123  # millisecond precision survives
    assert got.newest_event_ts == 1_767_225_600_118
    store.put_recommendations([make_list("alice", ["q"], generated_at=1_767_225_700_000)])
    again = store.get_recommendations("alice")
    assert again is not None and again.item_ids() == ["q"]


def test_empty_writes_are_noops(recommendation_store: RecommendationStore) -> None:
    recommendation_store.put_recommendations([])
    assert recommendation_store.get_recommendations("alice") is None

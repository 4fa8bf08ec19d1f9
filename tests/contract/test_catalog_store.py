"""CatalogStore contract: item tags, read by the API with every item it returns."""

from __future__ import annotations

import pytest

from streams.stores.base import CatalogStore


def test_unknown_items_have_no_tags(catalog_store: CatalogStore) -> None:
    assert catalog_store.get_item_tags(["nothing"]) == {}
    assert catalog_store.get_item_tags([]) == {}


def test_item_tags_round_trip_and_upsert(catalog_store: CatalogStore) -> None:
    store = catalog_store
    store.put_item_tags({"a": [("sanding roll", 0.8), ("grit", 0.5)], "b": [("pipette", 0.7)]}, model="m")
    got = store.get_item_tags(["a", "b", "c", "a"])
    assert set(got) == {"a", "b"}
    assert [t for t, _ in got["a"]] == ["sanding roll", "grit"]
    assert got["a"][0][1] == pytest.approx(0.8, abs=1e-6)
    store.put_item_tags({"a": [("adhesive", 0.9)]}, model="m2")
    assert [t for t, _ in store.get_item_tags(["a"])["a"]] == ["adhesive"]
    assert [t for t, _ in store.get_item_tags(["b"])["b"]] == ["pipette"]  # other items untouched
    store.put_item_tags({}, model="m")

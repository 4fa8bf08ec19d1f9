"""Serving fixtures: resources from the test shop and a small bundle, and stores (SQLite file,
real Cassandra keyspace) filled by the real pipeline, as the worker fills them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ranker.bundle import ModelBundle
from ranker.online import BundleRanker
from schemas.codec import encode_event
from serving.resources import ServingResources, load_resources
from shopdata.loader import Dataset, load_dataset
from streams.core import Pipeline, RawRecord
from streams.stores import SQLiteStore, UrlStore

TAGGED = {"I00001": [("trail runner", 0.71), ("cushioned", 0.55)]}


@pytest.fixture(scope="session")
def shop(shop_dir: Path) -> Dataset:
    return load_dataset(shop_dir)


@pytest.fixture(scope="session")
def resources(shop: Dataset, bundles: list[Path], tmp_path_factory: pytest.TempPathFactory) -> ServingResources:
    return load_resources(
        shop.items,
        bundle=bundles[0],
        encoder=None,
        cache=tmp_path_factory.mktemp("serving-cache"),
        popularity=shop.item_counts(),
        progress=False,
    )


def fill(store: UrlStore, shop: Dataset, bundle: Path) -> None:
    """Every shop user's state and list, written by the streaming pipeline with the bundle's ranker."""
    pipeline = Pipeline(store, BundleRanker(ModelBundle.load(bundle)), k=20)
    records = [RawRecord(encode_event(e), "clickstream:0", n) for n, e in enumerate(shop.events)]
    for start in range(0, len(records), 500):
        pipeline.process(records[start : start + 500])
    store.put_item_tags(TAGGED, model="test")


@pytest.fixture(params=["sqlite", pytest.param("cassandra", marks=pytest.mark.integration)])
def filled_store(
    request: pytest.FixtureRequest, shop: Dataset, bundles: list[Path], tmp_path: Path
) -> Iterator[UrlStore]:
    s: UrlStore
    if request.param == "sqlite":
        s = SQLiteStore(tmp_path / "serving.db")
    else:
        services = request.getfixturevalue("services")
        from streams.stores.cassandra import CassandraStore

        s = CassandraStore(
            [services["cassandra_host"]], int(services["cassandra_port"]), request.getfixturevalue("cassandra_keyspace")
        )
    s.setup()
    fill(s, shop, bundles[0])
    yield s
    s.close()

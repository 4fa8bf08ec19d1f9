"""Wiring: builds the same pipeline object for every mode from settings and a dataset."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

from fusionrec.datasets import Dataset, load_dataset
from fusionrec.settings import Settings
from fusionrec.synthetic import generate_shop
from ranker.cooccurrence import fit_cooccurrence
from schemas.codec import encode_event
from streams.core import Pipeline, PipelineSensor, Ranker, RetryPolicy
from streams.state_cache import StateCache
from streams.stores import Store, open_store

__all__ = ["build_pipeline", "build_ranker", "event_records", "load_data", "open_results_store"]


def load_data(data: str | None, limit_users: int | None = None) -> Dataset:
    """A dataset folder, or the built-in synthetic shop when none is given."""
    if data is None or data in {"", "synthetic"}:
        return generate_shop()
    return load_dataset(data, limit_users=limit_users)


def build_ranker(dataset: Dataset, bundle: str | Path | None = None) -> Ranker:
    """The model bundle's ranker when a bundle is given (ONNX user encoder, batched), else the
    co-occurrence baseline fitted on the dataset. Popular items from the dataset back cold starts."""
    if bundle is None:
        return fit_cooccurrence(dataset.item_sequences())
    from encoders.session import SessionConfig
    from ranker.bundle import ModelBundle
    from ranker.online import BundleRanker

    counts = dataset.item_counts()
    popular = sorted(counts, key=lambda i: (-counts[i], i))[:500]
    # no spinning: a worker shares its cores with the Kafka client, the store driver and (here)
    # the services; idle ONNX threads busy-waiting for the next batch cost ~10% throughput
    session = SessionConfig(allow_spinning=False)
    return BundleRanker(ModelBundle.load(bundle, session), popular=popular, retrieval=session)


def event_records(dataset: Dataset) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) pairs for Kafka: keyed by user so one user's events stay in order."""
    for ev in dataset.events:
        yield ev.user_id.encode(), encode_event(ev)


def open_results_store(settings: Settings, url: str | None = None) -> Store:
    url = url or settings.worker.store_url or settings.cassandra.url
    return open_store(url, replication=settings.cassandra.replication())


def build_pipeline(
    store: Store,
    ranker: Ranker,
    k: int,
    stopping: threading.Event | None = None,
    sensor: PipelineSensor | None = None,
    state_cache_users: int = 0,
) -> Pipeline:
    """`state_cache_users` > 0 keeps that many user states in process (streams.state_cache)."""
    stop = stopping or threading.Event()
    return Pipeline(
        store,
        ranker,
        k=k,
        retry=RetryPolicy(should_stop=stop.is_set),
        sensor=sensor,
        state_cache=StateCache(state_cache_users) if state_cache_users > 0 else None,
    )

"""Wiring: builds the same pipeline object for every mode from settings and a dataset."""

from __future__ import annotations

import threading
from pathlib import Path

from fusionrec.settings import Settings
from ranker.cooccurrence import fit_cooccurrence
from shopdata.loader import Dataset
from streams.core import Pipeline, PipelineSensor, Ranker, RetryPolicy
from streams.state_cache import StateCache
from streams.stores import Store, open_store

__all__ = ["build_pipeline", "build_ranker", "open_results_store"]


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

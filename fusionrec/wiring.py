"""Wiring: builds the same pipeline object for every mode from settings, a bundle or a dataset."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from encoders.session import SessionConfig
from fusionrec.settings import Settings
from ranker.bundle import ModelBundle
from ranker.cooccurrence import fit_cooccurrence
from ranker.online import BundleRanker
from schemas.errors import ConfigError, StoreUnavailable
from shopdata import Dataset
from streams.core import Pipeline, PipelineSensor, Ranker, RetryPolicy
from streams.state_cache import StateCache
from streams.stores import UrlStore, open_store
from streams.stores.base import ResultsStore

__all__ = ["build_pipeline", "build_ranker", "open_results_store", "wait_for_store"]

log = logging.getLogger("fusionrec.wiring")


def build_ranker(dataset: Dataset | None = None, bundle: str | Path | None = None) -> Ranker:
    """The bundle's ranker when a bundle is given (ONNX user encoder, batched; its own catalog and
    popularity, so no dataset is read), else the co-occurrence baseline fitted on the dataset."""
    if bundle is not None:
        # no spinning: a worker shares its cores with the Kafka client, the store driver and (here)
        # the services; idle ONNX threads busy-waiting for the next batch cost ~10% throughput
        session = SessionConfig(allow_spinning=False)
        return BundleRanker(ModelBundle.load(bundle, session), retrieval=session)
    if dataset is None:
        raise ConfigError(
            "no model: give a bundle (--bundle, from `fusionrec train`) or a dataset to fit co-occurrence"
        )
    return fit_cooccurrence(dataset.item_sequences())


def open_results_store(settings: Settings, url: str | None = None, *, create: bool = True) -> UrlStore:
    """The store a URL names (default: the worker's `store_url`, else Cassandra from settings), not
    yet connected. `create=False` for readers: a missing database is an error, never made empty."""
    url = url or settings.worker.store_url or settings.cassandra.url
    return open_store(url, replication=settings.cassandra.replication(), create=create)


def wait_for_store(store: ResultsStore, timeout_s: float = 120.0) -> None:
    """`setup()` until it answers: at deploy time the store may still be starting; wait, don't crash."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            store.setup()
            return
        except StoreUnavailable as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("store_not_ready url=%s error=%s", store.url, exc)
            time.sleep(2)


def build_pipeline(
    store: ResultsStore,
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

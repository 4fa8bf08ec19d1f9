"""Wiring: builds the same pipeline object for every mode from settings, a bundle or a dataset."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from encoders.manifest import EncoderManifest
from encoders.session import SessionConfig
from encoders.text import TextEncoder
from fusionrec.settings import Settings
from ranker.bundle import ModelBundle
from ranker.cooccurrence import fit_cooccurrence
from ranker.online import BundleRanker
from ranker.ranking import RankingPolicy
from ranker.text_fusion import TextFusionModel, because, fit_text_fusion
from schemas.errors import ConfigError, StoreUnavailable
from shopdata import Dataset
from streams.core import Pipeline, PipelineSensor, Ranker, RetryPolicy
from streams.settings import WorkerSettings
from streams.state_cache import StateCache
from streams.stores import UrlStore, open_store
from streams.stores.base import ResultsStore

__all__ = [
    "build_pipeline",
    "build_ranker",
    "build_text_fusion",
    "ensure_encoder",
    "explainer",
    "open_results_store",
    "wait_for_store",
]

Explainer = Callable[[Sequence[str], Sequence[str]], list[tuple[str | None, float]]]

log = logging.getLogger("fusionrec.wiring")


def build_ranker(
    dataset: Dataset | None = None,
    bundle: str | Path | None = None,
    ranking_stage: bool = True,
    policy: RankingPolicy = RankingPolicy(),
    threads: int = 1,
) -> Ranker:
    """The bundle's ranker when a bundle is given (ONNX user encoder, batched; its own catalog and
    popularity, so no dataset is read; its learned ranking stage unless `ranking_stage` is false;
    a large batch ranked on `threads` threads), else the co-occurrence baseline fitted on the dataset."""
    if bundle is not None:
        # no spinning: a worker shares its cores with the Kafka client, the store driver and (here)
        # the services; idle ONNX threads busy-waiting for the next batch cost ~10% throughput
        session = SessionConfig(allow_spinning=False)
        return BundleRanker(
            ModelBundle.load(bundle, session),
            policy=policy,
            retrieval=session,
            ranking_stage=ranking_stage,
            threads=threads,
        )
    if dataset is None:
        raise ConfigError(
            "no model: give a bundle (--bundle, from `fusionrec train`) or a dataset to fit co-occurrence"
        )
    return fit_cooccurrence(dataset.item_sequences())


def rank_threads(worker: WorkerSettings) -> int:
    """worker.rank_threads, with 0 read as one thread per core this process may run on, at most 4."""
    if worker.rank_threads:
        return worker.rank_threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(4, cores))


def new_items_policy(worker: WorkerSettings) -> RankingPolicy:
    """The ranking policy with the worker's new-arrival slots (worker.new_items_*)."""
    return RankingPolicy(
        new_items_after=worker.new_items_after,
        new_items_every=worker.new_items_every,
        new_items_share=worker.new_items_share,
    )


def ensure_encoder(folder: str | Path) -> Path:
    """The text encoder export at `folder`, exported there first (int8, from the MiniLM model the
    runtime install ships) when the folder holds none; the export needs no torch."""
    out = Path(folder)
    if not (out / "manifest.json").is_file():
        from encoders.export import export_encoder  # lazy: onnx + the ORT optimizer, first run only

        log.info("exporting the text encoder to %s (first run only)", out)
        export_encoder(None, out, "int8")
    EncoderManifest.read(out)
    return out


def build_text_fusion(dataset: Dataset, encoder_dir: str | Path, progress: bool = False) -> TextFusionModel:
    """The text-fused model (ranker.text_fusion) over the dataset: item texts through the ONNX
    BERT encoder, behaviour embeddings from the histories, α chosen by validation."""
    encoder = TextEncoder(encoder_dir, SessionConfig(allow_spinning=False))
    texts = [it.text() for it in dataset.items]
    vectors = encoder.encode(texts, batch_size=64, progress=progress)
    return fit_text_fusion(
        list(dataset.item_sequences()),
        [it.item_id for it in dataset.items],
        vectors,
        text_digest=encoder.weights_digest,
        query_encoder=lambda qs: encoder.encode(list(qs)),
    )


def explainer(ranker: Ranker) -> Explainer | None:
    """`(listed ids, history ids) -> per listed item (closest history item, similarity)` in the
    ranker's own item space: the "because you viewed" line. None for rankers without vectors."""
    if isinstance(ranker, TextFusionModel):
        return ranker.explain
    if isinstance(ranker, BundleRanker):
        rows, vectors, ids = ranker.rows, ranker.bundle.item_vectors, ranker.bundle.item_ids

        def explain(listed: Sequence[str], history: Sequence[str]) -> list[tuple[str | None, float]]:
            hist = [rows[i] for i in history if i in rows]
            out: list[tuple[str | None, float]] = []
            for item_id in listed:
                row = rows.get(item_id)
                if row is None or not hist:
                    out.append((None, 0.0))
                    continue
                near, sim = because([row], hist, vectors)[0]
                out.append((ids[near], sim))
            return out

        return explain
    return None


def open_results_store(settings: Settings, url: str | None = None, *, create: bool = True) -> UrlStore:
    """The store a URL names (default: the worker's `store_url`, else Cassandra from settings), not
    yet connected. `create=False` for readers: a missing database is an error, never made empty."""
    url = url or settings.worker.store_url or settings.cassandra.url
    return open_store(url, replication=settings.cassandra.replication(), create=create, cassandra=settings.cassandra)


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

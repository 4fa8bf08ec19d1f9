"""Wiring for `fusionrec serve`: the settings' `[serve]` section -> resources + stores -> the app.

With several worker processes uvicorn imports `app_from_env` in each; every process reads the
same settings (the parent exports its command-line flags as FUSIONREC_SERVE__* variables, the
settings' own override channel) and loads its own copy of the resources.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from threadpoolctl import threadpool_limits

from encoders.session import SessionConfig
from fusionrec.settings import ENV_PREFIX, Settings, load_settings
from fusionrec.wiring import open_results_store
from ranker.search import SearchWeights
from schemas.errors import ConfigError
from schemas.items import Item
from serving.app import create_app
from serving.auth import load_guard
from serving.live import LiveScraper
from serving.resources import ServingResources, load_resources
from serving.service import ServingService
from shopdata import load_data, load_items_file
from streams.stores.base import ResultsStore

__all__ = ["DEFAULT_ENCODER", "app_from_env", "build_app", "export_to_children"]

DEFAULT_ENCODER = Path("models/encoder-int8")


def _catalog(s: Settings) -> tuple[list[Item] | None, dict[str, int] | None]:
    """Items and popularity: none needed with a bundle (it holds both), else an items file or a dataset."""
    if s.serve.bundle is not None:
        return None, None
    if s.serve.items is not None:
        return load_items_file(s.serve.items), None
    ds = load_data(s.data)
    return ds.items, ds.item_counts()


def _encoder(s: Settings) -> str | None:
    if s.serve.encoder is not None or s.serve.bundle is not None:
        return s.serve.encoder
    if not (DEFAULT_ENCODER / "manifest.json").is_file():
        raise ConfigError(
            f"no text encoder at {DEFAULT_ENCODER}: `fusionrec export-encoder --out {DEFAULT_ENCODER} --variant int8`"
        )
    return str(DEFAULT_ENCODER)


def build_app(s: Settings, progress: bool = True) -> tuple[Any, ServingResources, ResultsStore]:
    """(app, resources, store); the store is connected (read-only: it is never created here).
    Sets this process's BLAS to one thread."""
    # Request threads each run small matrix products: a multi-threaded BLAS under many concurrent
    # callers spends its time in lock contention (measured: 21 vs 439 searches/s on 2 cores).
    threadpool_limits(1)
    cfg = s.serve
    guard = load_guard(cfg)  # first: a bad keys file fails before the models load
    items, popularity = _catalog(s)
    res = load_resources(
        items,
        bundle=cfg.bundle,
        encoder=_encoder(s),
        cache=cfg.cache,
        popularity=popularity,
        weights=SearchWeights(dense=cfg.dense_weight, personal=cfg.personal_weight),
        session=SessionConfig(intra_op_threads=cfg.threads, allow_spinning=False),
        progress=progress,
        text_model=cfg.text_model,
    )
    store = open_results_store(s, cfg.store_url, create=False)
    store.setup()
    service = ServingService(
        res,
        lists=store,
        catalog=store,
        states=store,  # read-only, for the console's activity view
        live=LiveScraper(cfg.worker_metrics_urls),
        reports_dir=cfg.reports_dir,
        query_cache=cfg.query_cache,
    )
    return create_app(service, worker_threads=cfg.request_threads, guard=guard), res, store


def export_to_children(s: Settings) -> None:
    """Put the resolved `[serve]` section (and `data`) where uvicorn's worker processes read settings."""
    for key, value in s.serve.model_dump().items():
        if value is not None:  # lists as JSON, which every list setting reads back
            text = json.dumps(list(value)) if isinstance(value, list | tuple) else str(value)
            os.environ[f"{ENV_PREFIX}SERVE__{key.upper()}"] = text
    if s.data is not None:
        os.environ[f"{ENV_PREFIX}DATA"] = s.data


def app_from_env() -> Any:
    return build_app(load_settings(), progress=False)[0]

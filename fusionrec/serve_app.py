"""Wiring for `fusionrec serve`: options -> resources + store -> the FastAPI app. With several
worker processes uvicorn imports `app_from_env` in each, so the options travel as JSON in the
environment and every worker loads its own copy (the text-vector cache is filled once, first)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["ENV", "ServeOptions", "app_from_env", "build_app", "prepare"]

ENV = "FUSIONREC_SERVE_OPTIONS"


@dataclass(frozen=True)
class ServeOptions:
    data: str | None = None
    items: str | None = None
    bundle: str | None = None
    encoder: str | None = None
    store: str | None = None
    cache: str = "out/serving-cache"
    dense_weight: float = 0.2
    personal_weight: float = 0.5
    threads: int = 1
    request_threads: int = 4


def _catalog(opts: ServeOptions) -> tuple[list[Any], dict[str, int]]:
    from fusionrec.settings import load_settings
    from shopdata import load_data
    from shopdata.loader import load_items_file

    if opts.items is not None:
        return load_items_file(opts.items), {}
    ds = load_data(opts.data or load_settings().data)
    return ds.items, ds.item_counts()


def _encoder(opts: ServeOptions) -> str | None:
    if opts.encoder is not None or opts.bundle is not None:
        return opts.encoder
    default = Path("models/encoder-int8")
    if not (default / "manifest.json").is_file():
        from schemas.errors import ConfigError

        raise ConfigError(f"no text encoder at {default}: `fusionrec export-encoder --out {default} --variant int8`")
    return str(default)


def build_app(opts: ServeOptions, progress: bool = True) -> tuple[Any, Any, Any]:
    """(app, resources, store); the store is connected. Sets this process's BLAS to one thread."""
    from threadpoolctl import threadpool_limits

    from encoders.session import SessionConfig
    from fusionrec.settings import load_settings
    from fusionrec.wiring import open_results_store
    from serving.app import create_app
    from serving.resources import load_resources
    from serving.search import SearchWeights
    from serving.service import ServingService

    # Request threads each run small matrix products: a multi-threaded BLAS under many concurrent
    # callers spends its time in lock contention (measured: 21 vs 439 searches/s on 2 cores).
    threadpool_limits(1)
    items, popularity = _catalog(opts)
    res = load_resources(
        items,
        bundle=opts.bundle,
        encoder=_encoder(opts),
        cache=opts.cache,
        popularity=popularity,
        weights=SearchWeights(dense=opts.dense_weight, personal=opts.personal_weight),
        session=SessionConfig(intra_op_threads=opts.threads, allow_spinning=False),
        progress=progress,
    )
    store = open_results_store(load_settings(), opts.store)
    store.setup()
    return create_app(ServingService(res, store), worker_threads=opts.request_threads), res, store


def prepare(opts: ServeOptions) -> None:
    """Put the options where worker processes find them (called once, in the parent)."""
    os.environ[ENV] = json.dumps(asdict(opts))


def app_from_env() -> Any:
    opts = ServeOptions(**json.loads(os.environ[ENV]))
    return build_app(opts, progress=False)[0]

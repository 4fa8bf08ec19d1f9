"""The HTTP API (FastAPI): a thin shell over ServingService with bounds, clear 4xx errors,
Prometheus metrics, health and readiness. OpenAPI docs at /docs, the schema at /openapi.json."""

import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path as PathLib
from typing import Annotated, Any

import anyio.to_thread
import orjson
from fastapi import FastAPI, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.staticfiles import StaticFiles

from serving.auth import Guard, GuardMiddleware
from serving.service import NotFound, ServingService

__all__ = ["create_app"]

CONSOLE = PathLib(__file__).resolve().parent / "console"  # the console's static files (package data)

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.1, 0.25, 0.5, 1.0, 2.5)


class _Metrics:
    """Pure ASGI middleware (no per-request task like BaseHTTPMiddleware): latency and status per route."""

    def __init__(self, app: Any, latency: Histogram, requests: Counter) -> None:
        self.app, self.latency, self.requests = app, latency, requests

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            endpoint = getattr(scope.get("route"), "path", "unmatched")
            self.latency.labels(endpoint).observe(time.perf_counter() - started)
            self.requests.labels(endpoint, str(status)).inc()


def _json(answer: dict[str, Any]) -> Response:
    """orjson straight to bytes: the answers are plain dicts, no model validation on the way out."""
    return Response(orjson.dumps(answer), media_type="application/json")


def create_app(service: ServingService, worker_threads: int = 4, guard: Guard | None = None) -> FastAPI:
    """`guard`: API keys, rate and size limits, CORS (serving.auth.load_guard); None: no keys, default limits."""
    lim = service.limits

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Few request threads: the work is CPU-bound (ONNX, numpy), and dozens of threads fighting
        # for the GIL and two cores only lengthen the tail. I/O waits (Cassandra) release the GIL.
        anyio.to_thread.current_default_thread_limiter().total_tokens = worker_threads
        yield

    app = FastAPI(
        lifespan=lifespan,
        title="fusionrec serving API",
        version="1",
        description="Per-user recommendation lists (stored by the streaming worker), similar items and "
        "personalised hybrid search over the catalog.",
    )
    registry = CollectorRegistry()
    requests = Counter("fusionrec_api_requests", "API requests", ["endpoint", "status"], registry=registry)
    latency = Histogram(
        "fusionrec_api_request_seconds", "API request latency", ["endpoint"], buckets=_BUCKETS, registry=registry
    )
    sources = Counter("fusionrec_api_list_source", "Which source served a list", ["source"], registry=registry)
    app.state.service = service
    app.state.registry = registry

    # Added first, so it runs inside _Metrics (refusals are counted) and outside every route.
    guard = guard or Guard()
    app.add_middleware(GuardMiddleware, guard=guard)
    app.add_middleware(_Metrics, latency=latency, requests=requests)
    if guard.cors_origins:  # outermost: a browser's preflight carries no key, and refusals need CORS headers
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(guard.cors_origins),
            allow_methods=["GET", "HEAD"],
            allow_headers=["Authorization", "X-API-Key"],
            expose_headers=["Retry-After"],
            max_age=600,
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"field": ".".join(str(p) for p in e.get("loc", ())[1:]) or "request", "message": e.get("msg", "")}
            for e in exc.errors()
        ]
        return JSONResponse({"error": "invalid_request", "problems": problems}, status_code=422)

    @app.exception_handler(NotFound)
    async def not_found(_: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse({"error": "not_found", "detail": str(exc)}, status_code=404)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": "http_error", "detail": exc.detail}, status_code=exc.status_code)

    UserId = Annotated[str, Path(min_length=1, max_length=lim.max_id_chars, description="The user's id.")]
    K = Annotated[int, Query(ge=1, le=lim.max_k, description=f"How many items (1..{lim.max_k}).")]

    @app.get("/v1/users/{user_id}/recommendations", summary="A user's stored list, with fallback")
    def recommendations(
        user_id: UserId,
        k: K = 20,
        category: Annotated[
            str | None,
            Query(max_length=lim.max_query_chars, description="Keep items whose category path contains this."),
        ] = None,
    ) -> Response:
        """The list the streaming worker stored for the user (one key lookup), filtered by category
        and topped up with popular items; `source` says which: stored, stored+popular or popular."""
        answer = service.recommendations(user_id, k, category or None)
        sources.labels(answer["source"]).inc()
        return _json(answer)

    @app.get("/v1/items/{item_id}/similar", summary="Items like this one")
    def similar(
        item_id: Annotated[str, Path(min_length=1, max_length=lim.max_id_chars)],
        k: K = 20,
    ) -> Response:
        """Nearest items by the model's fused item vectors (text vectors for items the model lacks)."""
        return _json(service.similar(item_id, k))

    @app.get("/v1/search", summary="Hybrid search, personalised when user_id is given")
    def search(
        q: Annotated[
            str,
            Query(
                min_length=1,
                max_length=lim.max_query_chars,
                pattern=r"\S",
                description=f"The query text (1..{lim.max_query_chars} characters, not blank).",
            ),
        ],
        k: K = 20,
        user_id: Annotated[str | None, Query(min_length=1, max_length=lim.max_id_chars)] = None,
        explain: Annotated[
            bool, Query(description="Also return each item's BM25, dense, hybrid and personal scores.")
        ] = False,
    ) -> Response:
        """BM25 + dense (ONNX text encoder) retrieval fused by z-scored scores; with user_id, the
        user's stored list (the mean vector of its items) re-ranks the candidates."""
        return _json(service.search(q.strip(), k, user_id, explain))

    @app.get("/v1/users/{user_id}/activity", summary="A user's recent events beside their list, with reasons")
    def activity(user_id: UserId, k: K = 20) -> Response:
        """The user's recent events (titles, types, times; read-only from their state), their list
        as /recommendations answers it, and per listed item the recent item it is closest to
        (`because`). What the console's user view shows."""
        return _json(service.activity(user_id, k))

    @app.get("/v1/items/{item_id}", summary="An item's text and tags")
    def item(item_id: Annotated[str, Path(min_length=1, max_length=lim.max_id_chars)]) -> Response:
        return _json(service.item(item_id))

    @app.get("/v1/model", summary="The model in use: version, variant, validation metrics, report plots")
    def model() -> Response:
        return _json(service.model())

    @app.get("/v1/model/reports/{name}", summary="An evaluation report plot (PNG)")
    def report(name: Annotated[str, Path(min_length=1, max_length=200)]) -> FileResponse:
        return FileResponse(service.report_file(name), media_type="image/png")

    @app.get("/v1/console/live", summary="The streaming workers' live metrics (scraped by the API)")
    def live() -> Response:
        """Counters (the console turns them into rates), consumer lag, and freshness and batch
        latency p50/p99 over the last few seconds, per worker URL of `serve.worker_metrics_urls`."""
        return _json(service.live.snapshot())

    @app.get("/", include_in_schema=False)
    def console() -> FileResponse:
        return FileResponse(CONSOLE / "index.html", media_type="text/html")

    app.mount("/console", StaticFiles(directory=CONSOLE), name="console")

    # HEAD too: uptime monitors and some load balancers probe with HEAD, and expect what GET answers.
    # A route of its own, out of the schema (one route with both methods gives one operation id twice).
    @app.get("/healthz", summary="Liveness")
    @app.head("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: the store answers")
    @app.head("/readyz", include_in_schema=False)
    def readyz() -> JSONResponse:
        ok, detail = service.ready()
        return JSONResponse(
            {"status": "ready" if ok else "unavailable", "detail": detail, "model_version": service.res.model_version},
            status_code=200 if ok else 503,
        )

    @app.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
    def metrics() -> Response:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # several worker processes: add them all up
            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged)
            return Response(generate_latest(merged), media_type=CONTENT_TYPE_LATEST)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app

"""Prometheus sensor for the pipeline: events/s, batch latency, freshness, consumer lag, dead
letters, store errors. Plugged into the pipeline through the narrow PipelineSensor port. Its port
also answers `/ready` (200 once warmed up, 503 before): what an orchestrator waits for before it
stops the worker being replaced, so a rolling deploy never leaves partitions without a warm owner."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app

from schemas.errors import StoreUnavailable
from streams.core import BatchOutcome

__all__ = ["PrometheusSensor"]

_LATENCY = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_FRESHNESS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)


class PrometheusSensor:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events = Counter("fusionrec_events_total", "Records consumed", registry=r)
        self.applied = Counter("fusionrec_events_applied_total", "Events folded into user state", registry=r)
        self.duplicates = Counter("fusionrec_events_duplicate_total", "Redelivered events skipped", registry=r)
        self.dead = Counter("fusionrec_dead_letters_total", "Records sent to the dead-letter topic", registry=r)
        self.store_errors = Counter("fusionrec_store_errors_total", "Store calls that failed (retried)", registry=r)
        self.batch = Histogram("fusionrec_batch_seconds", "Micro-batch processing time", buckets=_LATENCY, registry=r)
        self.freshness = Histogram(
            "fusionrec_freshness_seconds", "Event time to refreshed list written", buckets=_FRESHNESS, registry=r
        )
        self.ready = Gauge("fusionrec_worker_ready", "1 once the worker is warmed up and joining its group", registry=r)
        self.is_ready = False
        self.lag = Gauge(
            "fusionrec_consumer_lag", "Records behind the partition high-water mark", ["partition"], registry=r
        )

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        """Serves /metrics and /ready on host:port, from a daemon thread; loopback unless asked, as
        the endpoint has no authentication."""
        metrics = make_wsgi_app(self.registry)

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            if environ.get("PATH_INFO") == "/ready":
                ok = self.is_ready
                start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")])
                return [b"ready\n" if ok else b"warming up\n"]
            return metrics(environ, start_response)

        server = make_server(host, port, app, _ThreadingServer, handler_class=_Quiet)
        threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()

    def on_batch(self, outcome: BatchOutcome) -> None:
        self.events.inc(outcome.n_records)
        self.applied.inc(outcome.n_applied)
        self.duplicates.inc(outcome.n_duplicates)
        self.dead.inc(len(outcome.dead_letters))
        self.batch.observe(outcome.elapsed_s)
        for ms in outcome.freshness_ms:
            self.freshness.observe(ms / 1000)

    def on_store_error(self, exc: StoreUnavailable) -> None:
        self.store_errors.inc()

    def set_ready(self, ready: bool) -> None:
        self.is_ready = ready
        self.ready.set(1 if ready else 0)

    def set_lag(self, partition: str, lag: int) -> None:
        self.lag.labels(partition=partition).set(max(lag, 0))


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    """One thread per request: a slow scrape never holds up a readiness probe."""

    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    """No access log line per scrape and probe."""

    def log_message(self, format: str, *args: Any) -> None:
        return

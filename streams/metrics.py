"""Prometheus sensor for the pipeline: events/s, batch latency, freshness, consumer lag, dead
letters, store errors. Plugged into the pipeline through the narrow PipelineSensor port."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

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
        self.lag = Gauge(
            "fusionrec_consumer_lag", "Records behind the partition high-water mark", ["partition"], registry=r
        )

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        """Serves /metrics on host:port; loopback unless asked, as the endpoint has no authentication."""
        start_http_server(port, addr=host, registry=self.registry)

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
        self.ready.set(1 if ready else 0)

    def set_lag(self, partition: str, lag: int) -> None:
        self.lag.labels(partition=partition).set(max(lag, 0))

"""The console's live view: the streaming workers' Prometheus metrics, scraped by the API.

Why the API scrapes (and not the browser): the workers' /metrics bind to loopback or a private
network, carry no CORS headers and no auth; the API is what the console may reach. Counters are
returned as they are (the browser turns consecutive samples into rates); latency quantiles are
computed from the histogram buckets over the window since the previous scrape of that worker (at
least `window_s` back), so the charts show now, not the average since the worker started.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["LiveScraper", "WorkerSample", "histogram_quantile", "parse_worker_metrics"]

COUNTERS = {
    "fusionrec_events": "events_total",
    "fusionrec_events_applied": "applied_total",
    "fusionrec_events_duplicate": "duplicates_total",
    "fusionrec_dead_letters": "dead_letters_total",
}
HISTOGRAMS = {"fusionrec_freshness_seconds": "freshness_ms", "fusionrec_batch_seconds": "batch_ms"}


@dataclass(frozen=True)
class WorkerSample:
    """One scrape of one worker: counters, the consumer lag, cumulative histogram buckets."""

    counters: dict[str, float]
    lag: float | None
    buckets: dict[str, list[tuple[float, float]]]  # name -> [(upper bound s, cumulative count)]


def parse_worker_metrics(text: str) -> WorkerSample:
    """The fusionrec_* families of a worker's /metrics text (unknown families are ignored)."""
    counters = dict.fromkeys(COUNTERS.values(), 0.0)
    lag: float | None = None
    buckets: dict[str, list[tuple[float, float]]] = {v: [] for v in HISTOGRAMS.values()}
    for family in text_string_to_metric_families(text):
        if family.name in COUNTERS:
            counters[COUNTERS[family.name]] = sum(s.value for s in family.samples if s.name.endswith("_total"))
        elif family.name == "fusionrec_consumer_lag":
            lag = sum(s.value for s in family.samples) if family.samples else None
        elif family.name in HISTOGRAMS:
            name = HISTOGRAMS[family.name]
            buckets[name] = sorted(
                (float(s.labels["le"]), s.value) for s in family.samples if s.name.endswith("_bucket")
            )
    return WorkerSample(counters, lag, buckets)


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """Prometheus' histogram_quantile: linear within the bucket that holds the q-th observation;
    the +Inf bucket answers with the highest finite bound. None without observations."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return prev_bound
            if count == prev_count:
                return bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / (count - prev_count)
        prev_bound, prev_count = bound, count
    return prev_bound


def _delta(now: list[tuple[float, float]], before: list[tuple[float, float]] | None) -> list[tuple[float, float]]:
    if not before or [b for b, _ in before] != [b for b, _ in now]:
        return now
    diff = [(b, c - p) for (b, c), (_, p) in zip(now, before, strict=True)]
    return diff if diff[-1][1] > 0 else now


@dataclass
class LiveScraper:
    """Scrapes each worker URL (a short timeout: a dead worker must not stall the console)."""

    urls: Sequence[str]
    timeout_s: float = 1.0
    window_s: float = 2.0
    clock: Callable[[], float] = time.monotonic
    fetch: Callable[[str, float], str] | None = None
    _previous: dict[str, tuple[float, WorkerSample]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _get(self, url: str) -> str:
        if self.fetch is not None:
            return self.fetch(url, self.timeout_s)
        answer = httpx.get(url, timeout=self.timeout_s)
        answer.raise_for_status()
        return answer.text

    def snapshot(self) -> dict[str, Any]:
        workers = []
        for url in self.urls:
            try:
                sample = parse_worker_metrics(self._get(url))
            except (httpx.HTTPError, ValueError) as exc:
                down: dict[str, Any] = {"url": url, "up": False, "error": f"{type(exc).__name__}: {exc}"}
                workers.append(down | dict.fromkeys([*COUNTERS.values(), "lag", *HISTOGRAMS.values()]))
                continue
            now = self.clock()
            with self._lock:
                before = self._previous.get(url)
                if before is None or now - before[0] >= self.window_s:
                    self._previous[url] = (now, sample)
            base = before[1] if before is not None else None
            row: dict[str, Any] = {"url": url, "up": True, "error": None, **sample.counters, "lag": sample.lag}
            for name, cumulative in sample.buckets.items():
                window = _delta(cumulative, base.buckets.get(name) if base else None)
                p50, p99 = histogram_quantile(0.5, window), histogram_quantile(0.99, window)
                row[name] = None if p50 is None or p99 is None else {"p50": p50 * 1000, "p99": p99 * 1000}
            workers.append(row)
        return {"ts": int(time.time() * 1000), "workers": workers}

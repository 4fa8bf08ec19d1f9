"""The pipeline core shared by every runtime: records in, folded states and fresh lists out.

It decodes and validates, de-duplicates, folds events into user state, ranks every touched
user and writes lists then states through the store port. No Kafka, no Cassandra here: runtimes
(faust worker, embedded replay) feed it records and handle dead letters and offsets.

Write order matters for crash safety: lists first, then states. A crash between the two
replays the batch; the states were not written, so the replay folds the events once.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from ranker.state import Delivery, UserState, apply_events
from schemas.codec import decode_event
from schemas.errors import InvalidEvent, StoreUnavailable
from schemas.recommendations import RecommendationList, ScoredItem
from streams.state_cache import StateCache
from streams.stores.base import Store

__all__ = [
    "BatchOutcome",
    "DeadLetterRecord",
    "NullSensor",
    "Pipeline",
    "PipelineSensor",
    "Ranker",
    "RawRecord",
    "RetryPolicy",
    "StoppedError",
    "config_digest",
]

log = logging.getLogger("fusionrec.pipeline")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RawRecord:
    """Bytes as they arrived, and where from (`source` is topic:partition or a file name)."""

    value: bytes
    source: str
    offset: int


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    source: str
    offset: int
    field: str
    reason: str
    raw: bytes


@dataclass(slots=True)
class BatchOutcome:
    n_records: int = 0
    n_valid: int = 0
    n_applied: int = 0
    n_duplicates: int = 0
    n_users: int = 0
    newest_event_ts: int = 0
    dead_letters: list[DeadLetterRecord] = field(default_factory=list)
    store_retries: int = 0
    elapsed_s: float = 0.0
    freshness_ms: list[int] = field(default_factory=list)  # list written - newest event, per touched user


class Ranker(Protocol):
    @property
    def version(self) -> str: ...

    def rank_many(self, states: Sequence[UserState], k: int) -> list[tuple[list[tuple[str, float]], str]]:
        """Top-k (item_id, score) and its source per state, all touched users of a batch at once."""
        ...


class PipelineSensor(Protocol):
    """Narrow metrics port (faust calls these sensors); runtimes plug Prometheus or logs in."""

    def on_batch(self, outcome: BatchOutcome) -> None: ...

    def on_store_error(self, exc: StoreUnavailable) -> None: ...


class NullSensor:
    def on_batch(self, outcome: BatchOutcome) -> None:
        pass

    def on_store_error(self, exc: StoreUnavailable) -> None:
        pass


class StoppedError(RuntimeError):
    """Raised when the runtime asked to stop while the pipeline was waiting out a store outage."""


@dataclass(frozen=True)
class RetryPolicy:
    """Back-pressure on store outages: wait and retry, doubling up to `max_delay_s`, never drop."""

    initial_delay_s: float = 0.1
    max_delay_s: float = 5.0
    sleep: Callable[[float], None] = time.sleep
    should_stop: Callable[[], bool] = lambda: False


def config_digest(**settings: object) -> str:
    text = ",".join(f"{k}={settings[k]!r}" for k in sorted(settings))
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


class Pipeline:
    def __init__(
        self,
        store: Store,
        ranker: Ranker,
        *,
        k: int = 20,
        retry: RetryPolicy | None = None,
        sensor: PipelineSensor | None = None,
        clock: Callable[[], float] = time.time,
        state_cache: StateCache | None = None,
    ) -> None:
        self.store = store
        self.state_cache = state_cache
        self.ranker = ranker
        self.k = k
        self.retry = retry or RetryPolicy()
        self.sensor: PipelineSensor = sensor or NullSensor()
        self.clock = clock
        self.config_digest = config_digest(k=k, ranker=ranker.version)

    def _with_retry(self, what: str, fn: Callable[[], T], outcome: BatchOutcome) -> T:
        delay = self.retry.initial_delay_s
        while True:
            try:
                return fn()
            except StoreUnavailable as exc:
                self.sensor.on_store_error(exc)
                outcome.store_retries += 1
                if self.retry.should_stop():
                    raise StoppedError(f"stopped while {what} was failing: {exc}") from exc
                log.warning("store_unavailable op=%s retry_in_s=%.2f error=%s", what, delay, exc)
                self.retry.sleep(delay)
                delay = min(delay * 2, self.retry.max_delay_s)

    def decode(self, records: Sequence[RawRecord], outcome: BatchOutcome) -> dict[str, list[Delivery]]:
        by_user: dict[str, list[Delivery]] = defaultdict(list)
        for rec in records:
            try:
                event = decode_event(rec.value)
            except InvalidEvent as exc:
                outcome.dead_letters.append(DeadLetterRecord(rec.source, rec.offset, exc.field, exc.reason, rec.value))
                continue
            outcome.n_valid += 1
            by_user[event.user_id].append(Delivery(event, rec.source, rec.offset))
        return by_user

    def process(self, records: Sequence[RawRecord]) -> BatchOutcome:
        """Process one micro-batch; returns counts and the dead letters the runtime must publish."""
        started = time.perf_counter()
        outcome = BatchOutcome(n_records=len(records))
        by_user = self.decode(records, outcome)
        if by_user:
            users = list(by_user)
            cache = self.state_cache
            generation = cache.generation if cache is not None else 0
            if cache is not None:
                stored, missing = cache.get_many(users)
            else:
                stored, missing = {}, users
            if missing:
                stored.update(self._with_retry("get_states", lambda: self.store.get_states(missing), outcome))
            changed: list[UserState] = []
            for user_id, deliveries in by_user.items():
                deliveries.sort(key=lambda d: (d.source, d.offset))
                before = stored.get(user_id) or UserState(user_id=user_id)
                after, applied = apply_events(before, deliveries)
                outcome.n_applied += applied
                outcome.n_duplicates += len(deliveries) - applied
                if after is not before:
                    changed.append(after)
            now_ms = int(self.clock() * 1000)
            lists = self._rank(changed, now_ms)
            outcome.n_users = len(changed)
            outcome.newest_event_ts = max((s.last_ts for s in changed), default=0)
            self._with_retry("put_results", lambda: self.store.put_results(lists, changed), outcome)
            if cache is not None:
                cache.put_many(changed, generation)
            written_ms = int(self.clock() * 1000)
            outcome.freshness_ms = [max(0, written_ms - s.last_ts) for s in changed]
        outcome.elapsed_s = time.perf_counter() - started
        self.sensor.on_batch(outcome)
        return outcome

    def _rank(self, states: list[UserState], now_ms: int) -> list[RecommendationList]:
        if not states:
            return []
        ranked = self.ranker.rank_many(states, self.k)
        return [
            RecommendationList(
                user_id=state.user_id,
                items=tuple(ScoredItem(i, round(float(s), 6)) for i, s in items),
                model_version=self.ranker.version,
                config_digest=self.config_digest,
                generated_at=now_ms,
                newest_event_ts=state.last_ts,
                source=source,
            )
            for state, (items, source) in zip(states, ranked, strict=True)
        ]

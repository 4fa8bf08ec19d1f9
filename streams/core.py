"""The pipeline core shared by every runtime: records in, folded states and fresh lists out.

It decodes and validates, de-duplicates, folds events into user state, ranks every touched
user and writes each user's list and state together through the store port (`put_results`: one
mutation per user in Cassandra, one transaction in SQLite). No Kafka, no Cassandra here: runtimes
(faust worker, embedded replay) feed it records and handle dead letters and offsets.

Crash safety: offsets are committed only after a batch's writes; a crash replays the uncommitted
events, and each state's offset watermark skips what it already holds, so nothing is counted twice.
`prepare`/`write` split a batch so a runtime can rank batch N+1 while batch N is written.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol, TypeVar

from ranker.state import Delivery, UserState, apply_events
from schemas.codec import decode_event
from schemas.errors import InvalidEvent, StoreUnavailable
from schemas.recommendations import RecommendationList, ScoredItem
from streams.state_cache import StateCache
from streams.stores.base import DeadLetterRecord, ResultsStore

__all__ = [
    "BatchOutcome",
    "DeadLetterRecord",
    "NullSensor",
    "Pipeline",
    "PipelineSensor",
    "PreparedBatch",
    "Ranker",
    "RawRecord",
    "RetryPolicy",
    "StoppedError",
    "config_digest",
]

log = logging.getLogger("fusionrec.pipeline")
# (item_id, score) pairs -> ScoredItem named tuples without a Python-level __new__ per item: the
# worker builds ~20 per touched user, and the generated __new__ was a sixth of its ranking time
_scored = partial(tuple.__new__, ScoredItem)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RawRecord:
    """Bytes as they arrived, and where from (`source` is topic:partition or a file name)."""

    value: bytes
    source: str
    offset: int


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
    # where the time went (`batch_slow` log lines): state reads, ranking, the store write
    read_s: float = 0.0
    rank_s: float = 0.0
    write_s: float = 0.0
    freshness_ms: list[int] = field(default_factory=list)  # list written - newest event, per touched user


@dataclass(slots=True)
class PreparedBatch:
    """A folded and ranked micro-batch waiting to be written (`Pipeline.prepare` -> `Pipeline.write`)."""

    outcome: BatchOutcome
    lists: list[RecommendationList]
    states: list[UserState]
    generation: int
    started: float
    partitions: dict[str, str] = field(default_factory=dict)  # user -> the partition its events came from


def _partition_of(deliveries: Sequence[Delivery]) -> str:
    """The one partition a user's deliveries came from; "" when they came from several (a topic given
    more partitions moves keys), which no cache entry matches."""
    sources = {d.source for d in deliveries}
    return sources.pop() if len(sources) == 1 else ""


class Ranker(Protocol):
    @property
    def version(self) -> str: ...

    def rank_many(self, states: Sequence[UserState], k: int) -> list[tuple[list[tuple[str, float]], str]]:
        """Top-k (item_id, score) and its source per state, all touched users of a batch at once;
        scores are Python floats rounded to 6 decimals (so a replay stores the same bytes)."""
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
        store: ResultsStore,
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
        self._unwritten: dict[str, UserState] = {}  # prepared, not yet written (see `prepare`)
        self._unwritten_lock = threading.Lock()  # prepare and write may run on different threads

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
        return self.write(self.prepare(records))

    def prepare(self, records: Sequence[RawRecord]) -> PreparedBatch:
        """Decode, fold and rank one micro-batch; nothing is written yet.

        A runtime may prepare batch N+1 while batch N is being written (`write`), as long as it
        writes the batches one at a time and in order: states prepared but not yet written are kept
        in process and take precedence over the cache and the store, so batch N+1 folds onto batch
        N's states even before they are stored."""
        started = time.perf_counter()
        outcome = BatchOutcome(n_records=len(records))
        by_user = self.decode(records, outcome)
        cache = self.state_cache
        generation = cache.generation if cache is not None else 0
        if not by_user:
            return PreparedBatch(outcome, [], [], generation, started)
        users = list(by_user)
        with self._unwritten_lock:
            stored = {u: self._unwritten[u] for u in users if u in self._unwritten}
        rest = [u for u in users if u not in stored]
        partitions = {u: _partition_of(by_user[u]) for u in users}
        if cache is not None:
            cached, missing = cache.get_many(rest, partitions)
            stored.update(cached)
        else:
            missing = rest
        if missing:
            t = time.perf_counter()
            stored.update(self._with_retry("get_states", lambda: self.store.get_states(missing), outcome))
            outcome.read_s = time.perf_counter() - t
        changed: list[UserState] = []
        for user_id, deliveries in by_user.items():
            deliveries.sort(key=lambda d: (d.source, d.offset))
            before = stored.get(user_id) or UserState(user_id=user_id)
            after, applied = apply_events(before, deliveries)
            outcome.n_applied += applied
            outcome.n_duplicates += len(deliveries) - applied
            if after is not before:
                changed.append(after)
        t = time.perf_counter()
        lists = self._rank(changed, int(self.clock() * 1000))
        outcome.rank_s = time.perf_counter() - t
        outcome.n_users = len(changed)
        outcome.newest_event_ts = max((s.last_ts for s in changed), default=0)
        with self._unwritten_lock:
            for s in changed:
                self._unwritten[s.user_id] = s
        return PreparedBatch(outcome, lists, changed, generation, started, partitions)

    def write(self, batch: PreparedBatch) -> BatchOutcome:
        """Store a prepared batch's lists and states (retrying through outages: back-pressure), then
        let its states into the cache. Only after this returns may the batch's offsets be committed."""
        outcome = batch.outcome
        if batch.states or batch.lists:
            t = time.perf_counter()
            self._with_retry("put_results", lambda: self.store.put_results(batch.lists, batch.states), outcome)
            outcome.write_s = time.perf_counter() - t
            if self.state_cache is not None:
                self.state_cache.put_many(batch.states, batch.generation, batch.partitions)
            with self._unwritten_lock:
                for s in batch.states:
                    if self._unwritten.get(s.user_id) is s:  # a later batch may have folded onto it already
                        del self._unwritten[s.user_id]
            written_ms = int(self.clock() * 1000)
            outcome.freshness_ms = [max(0, written_ms - s.last_ts) for s in batch.states]
        outcome.elapsed_s = time.perf_counter() - batch.started
        self.sensor.on_batch(outcome)
        return outcome

    def _rank(self, states: list[UserState], now_ms: int) -> list[RecommendationList]:
        if not states:
            return []
        ranked = self.ranker.rank_many(states, self.k)
        return [
            RecommendationList(
                user_id=state.user_id,
                items=tuple(map(_scored, items)),
                model_version=self.ranker.version,
                config_digest=self.config_digest,
                generated_at=now_ms,
                newest_event_ts=state.last_ts,
                source=source,
            )
            for state, (items, source) in zip(states, ranked, strict=True)
        ]

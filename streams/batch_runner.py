"""The Kafka worker's batch loop, without faust: batch N+1 is prepared while batch N is written, a
batch is acked only after its own write and its dead letters are confirmed, progress and lag are
reported, live items reach the ranker, a rebalance invalidates the state cache, and a batch whose
events would be late is ranked without the ranking stage (`StageShedding`).

The runtime adapter (`streams.faust_worker`) feeds it batches of delivered events and hands it three
narrow callables: `ack`, `send_dead_letter` and `highwater`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, TypeVar

import numpy as np

from ranker.state import UserState
from schemas.codec import decode_item
from schemas.errors import InvalidItem, StoreUnavailable
from schemas.items import Item
from streams.background import Background
from streams.core import BatchOutcome, PreparedBatch, RawRecord
from streams.state_cache import StateCache

__all__ = [
    "WARM_UP_USER",
    "BatchRunner",
    "Delivered",
    "LagSensor",
    "Message",
    "Progress",
    "ReadySensor",
    "SendDeadLetter",
    "StageShedding",
    "StagedPipeline",
    "TopicPartition",
    "batch_limit",
    "warm_up",
]

log = logging.getLogger("fusionrec.worker")


class StagedPipeline(Protocol):
    """What the runner needs of `streams.core.Pipeline`: its two stages, its cache and its ranker."""

    @property
    def state_cache(self) -> StateCache | None: ...

    @property
    def ranker(self) -> object: ...

    def prepare(self, records: Sequence[RawRecord]) -> PreparedBatch: ...

    def write(self, batch: PreparedBatch) -> BatchOutcome: ...


class TopicPartition(Protocol):
    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...


class Message(Protocol):
    """A consumed record as the runtime delivers it (faust: `event.message`)."""

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...

    @property
    def value(self) -> bytes | None: ...

    @property
    def timestamp(self) -> float | None:
        """Seconds since the epoch: when the record entered Kafka (its create or append time)."""
        ...

    @property
    def tp(self) -> TopicPartition: ...


class Delivered(Protocol):
    """An event taken without being acked; the runner acks it once its batch is written."""

    @property
    def message(self) -> Message: ...


E = TypeVar("E", bound=Delivered)
Ack = Callable[[E], Awaitable[object]]


class SendDeadLetter(Protocol):
    """Produces one dead letter; awaiting the returned awaitable waits for the broker's confirmation."""

    def __call__(self, *, key: bytes, value: bytes, headers: Mapping[str, bytes]) -> Awaitable[Awaitable[object]]: ...


class LagSensor(Protocol):
    def set_lag(self, partition: str, lag: int) -> None: ...


class ReadySensor(Protocol):
    def set_ready(self, ready: bool) -> None: ...


#: prefix of the synthetic users of the warm-up: only ever read, never written
WARM_UP_USER = "__warm_up__"

#: the ranker's search path warms once the worker has caught up (its lag after a batch is smaller
#: than that batch) and stayed so this long, or at this batch if it never does: warmed during the
#: backlog after a start, its 0.2-0.4 s of Python slowed the drain (from a start at 1,000 events/s:
#: seconds 1-3 waited 0.9-1.3 s). Caught up is a weak sign after one batch: the first batch of a start
#: (500 of 850 events) already left less behind than it took, and the warm-up then slowed the second
#: (260 ms to rank 350 users instead of 40-60), which held the first second's last events
SEARCH_WARM_CAUGHT_UP_S = 1.0
SEARCH_WARM_BY_BATCH = 20
#: ... or when no batch has come this long after an assignment (no traffic: nothing to take it from).
#: Left to the first batches after an idle start, it slowed them: freshness p99 1.8 s in the 30 s after
SEARCH_WARM_IDLE_S = 1.0

#: the warm-up's largest batch: a user of every history length up to 64 events (the Scientific
#: bundle's window is 50). A batch of the worker's own size (500) cost 0.15-0.25 s of the start here
#: and bought nothing: with one BLAS thread, a cold ranker's first batch of 1,000 users took 0.29 s,
#: as long as after that warm-up
WARM_UP_BATCH = 64


def warm_up(
    pipeline: object,
    batch_size: int,
    k: int = 20,
    sensor: ReadySensor | None = None,
    store_ready: Callable[[], None] | None = None,
) -> float:
    """Before the worker joins its consumer group: the ranker's sessions run on synthetic users with
    real shapes (its `warm_up`, one user and `WARM_UP_BATCH` users; else one `rank_many`), and the
    store's read path (prepared statements, connection pool, the node's read path) answers reads of
    absent users, one and many. Nothing is written and no cache is touched, so no trace is left.
    `store_ready` (waits until the store answers: its connection, schema and statements) runs in a
    thread beside the ranker's warm-up, which needs no store: ONNX runs release the interpreter lock,
    and the connection mostly waits on the network, so a start pays for the longer of the two, not
    their sum. A ranker with a search path (`warm_search_in_background`) warms it once the worker
    has caught up instead (`BatchRunner`); a search or a live item that comes first builds it.
    The store's error, if any, is raised here. Logs `worker_ready`, sets the readiness gauge, and
    returns the seconds it took."""
    started = time.perf_counter()
    waiter = Background(store_ready, "store_ready") if store_ready is not None else None
    ranker = getattr(pipeline, "ranker", None)
    sizes = sorted({1, min(WARM_UP_BATCH, batch_size)})
    ranker_warm_up = getattr(ranker, "warm_up", None)
    if callable(ranker_warm_up) and callable(getattr(ranker, "warm_search_in_background", None)):
        # its search path warms once the worker has caught up (BatchRunner): begun here, that thread's
        # 0.2-0.4 s of Python took the interpreter from the join and the first batch of a restart's backlog
        ranker_warm_up(batch_sizes=sizes, k=k, search="off")
    elif callable(ranker_warm_up):
        ranker_warm_up(batch_sizes=sizes, k=k)
    elif ranker is not None and hasattr(ranker, "rank_many"):
        ranker.rank_many([UserState(WARM_UP_USER)], k)
    ranker_s = time.perf_counter() - started
    if waiter is not None:
        waiter.result()
    waited_s = time.perf_counter() - started - ranker_s  # beyond the ranker's warm-up
    store = getattr(pipeline, "store", None)
    if store is not None:
        try:
            store.get_states([WARM_UP_USER])
            store.get_states([f"{WARM_UP_USER}{n}" for n in range(min(batch_size, 256))])
        except StoreUnavailable as exc:  # the pipeline waits out outages itself; readiness is not health
            log.warning("warm_up_store_skipped error=%s", exc)
    warm_s = time.perf_counter() - started
    if sensor is not None:
        sensor.set_ready(True)
    log.info(
        "worker_ready warm_s=%.2f ranker_s=%.2f store_wait_s=%.2f store_s=%.2f",
        warm_s, ranker_s, waited_s, warm_s - ranker_s - waited_s,
    )  # fmt: skip
    return warm_s


class Progress:
    """key=value progress lines every few seconds, and one at stop: one line per fact, not per batch."""

    #: the first batches each log their latency: what a cold start costs (see `warm_up`)
    FIRST_BATCHES = 5
    #: a batch slower than this logs where its time went (`batch_slow`): a freshness tail is found, not guessed
    SLOW_BATCH_S = 0.5

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self.records = self.applied = self.duplicates = self.dead = self.batches = 0
        self.stage_shed = 0  # batches ranked without the ranking stage (StageShedding)
        self.users = self.shed_users = 0  # lists written, and those ranked without the stage
        self.started = self.last = time.monotonic()
        self.first_batch: float | None = None  # when records first arrived: startup is not throughput
        self.last_batch_end = self.started
        # since the last progress line: event time -> list written, and the longest an event had waited
        # in Kafka and the take queue when its batch started (the part of freshness before processing)
        self.fresh_ms: list[int] = []
        self.waited_max_s = 0.0

    def waited(self, oldest_age_s: float) -> None:
        self.waited_max_s = max(self.waited_max_s, oldest_age_s)

    def interval(self) -> str:
        """Freshness since the last line, then a new interval."""
        fresh = np.array(self.fresh_ms or [0])
        text = (
            f"fresh_p50_ms={np.percentile(fresh, 50):.0f} fresh_p99_ms={np.percentile(fresh, 99):.0f} "
            f"waited_max_ms={self.waited_max_s * 1000:.0f}"
        )
        self.fresh_ms, self.waited_max_s = [], 0.0
        return text

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        active = max(self.last_batch_end - (self.first_batch or self.last_batch_end), 1e-9)
        return (
            f"records={self.records} applied={self.applied} duplicates={self.duplicates} "
            f"dead_letters={self.dead} batches={self.batches} elapsed_s={elapsed:.1f} "
            f"active_s={active:.2f} active_eps={self.records / active:.0f} stage_shed_batches={self.stage_shed} "
            f"users={self.users} stage_shed_users={self.shed_users}"
        )

    def begin(self) -> None:
        if self.first_batch is None:
            self.first_batch = time.monotonic()

    def add(self, o: BatchOutcome, shed: bool = False) -> None:
        self.last_batch_end = time.monotonic()
        self.users += o.n_users
        self.shed_users += o.n_users if shed else 0
        self.records += o.n_records
        self.applied += o.n_applied
        self.duplicates += o.n_duplicates
        self.dead += len(o.dead_letters)
        self.batches += 1
        self.fresh_ms.extend(o.freshness_ms)
        first = self.batches <= self.FIRST_BATCHES
        if first or o.elapsed_s >= self.SLOW_BATCH_S:
            log.info(
                "%s records=%d users=%d ms=%.0f read_ms=%.0f rank_ms=%.0f write_ms=%.0f other_ms=%.0f",
                f"batch_first n={self.batches}" if first else "batch_slow",
                o.n_records,
                o.n_users,
                o.elapsed_s * 1000,
                o.read_s * 1000,
                o.rank_s * 1000,
                o.write_s * 1000,
                (o.elapsed_s - o.read_s - o.rank_s - o.write_s) * 1000,
            )
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            log.info("worker_progress %s last_batch_ms=%.1f %s", self.line(), o.elapsed_s * 1000, self.interval())


def _dead_letter_headers(reason: str, field: str, source: str, offset: int) -> dict[str, bytes]:
    return {
        "fusionrec.reason": reason.encode(),
        "fusionrec.field": field.encode(),
        "fusionrec.source": source.encode(),
        "fusionrec.offset": str(offset).encode(),
    }


def _report_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("batch_write_failed error=%r (its events stay unacked and are replayed)", task.exception())


def batch_limit(lag: int, base: int, max_factor: int = 4) -> int:
    """Records per prepared batch for a backlog of `lag` records: the runtime's take size `base`
    when caught up (a small batch is a fresh one), growing with the backlog up to `max_factor` times
    it, so a backlog (a start, a restart, a burst) drains with fewer per-batch fixed costs."""
    if lag <= base:
        return base
    return min(lag, base * max_factor)


class StageShedding:
    """Freshness before the last bit of quality: a batch whose lists would be written later than
    `budget_s` after its oldest event entered Kafka if it were ranked with the learned ranking stage
    is ranked by the sequential model alone (the ranker's `shed_stage`), several times as fast; the
    next batch that can make it gets the stage again. The projection is the oldest event's wait so
    far plus the batch's users times the seconds per user that the last batches ranked with the
    stage took to rank and to write (smoothed; batches of at least `LEARN_MIN_USERS` teach it, so a
    batch's fixed costs do not pass for a per-user cost). Until a batch has taught it, the warm-up's
    measure stands in (the ranker's `warm_stage_per_user_s`: its largest synthetic batch's ranking
    time per user, with the stage), and without one only the wait counts: after a start at 1,000
    events/s that let the second batch (380 users whose events had waited 0.45 s) be ranked with the
    stage, cold, in 170-190 ms instead of 30-40, late for the first second's last events. Decided per
    batch from the records' own timestamps, so it follows any rate and machine.

    A rule on the wait alone (shed when the oldest event had waited `budget_s`) put freshness at the
    budget plus a batch's time wherever the stage could not keep up: at 2,000 events/s on the
    reference machine, p99 1.9-2.0 s with a 1 s budget. 0: never shed."""

    #: a batch with fewer users teaches nothing (its fixed costs would pass for a per-user cost)
    LEARN_MIN_USERS = 50
    #: weight of the newest batch in the smoothed seconds per user
    SMOOTHING = 0.3

    def __init__(self, budget_s: float) -> None:
        self.budget_s = budget_s
        self.active = False
        self.batches = 0  # batches ranked without the stage
        self.per_user_s: float | None = None  # ranking with the stage and writing, seconds per user

    def update(self, oldest_age_s: float, ranker: object, n_records: int = 0) -> None:
        if self.budget_s <= 0 or not hasattr(ranker, "shed_stage"):
            return
        prior = getattr(ranker, "warm_stage_per_user_s", None)
        self.active = self.projected_s(oldest_age_s, n_records, prior) > self.budget_s
        ranker.shed_stage = self.active  # the pipeline thread reads it for this batch
        self.batches += self.active

    def projected_s(self, oldest_age_s: float, n_records: int, prior_per_user_s: float | None = None) -> float:
        """When the batch's oldest event would be written, ranked with the stage (seconds after it
        entered Kafka): with the learned cost per user, else `prior_per_user_s` (the warm-up's), else 0."""
        per_user = self.per_user_s if self.per_user_s is not None else prior_per_user_s
        return oldest_age_s + (per_user or 0.0) * n_records

    def learn(self, outcome: BatchOutcome, shed: bool) -> None:
        """A written batch's ranking and write time per user, if it was ranked with the stage."""
        if shed or outcome.n_users < self.LEARN_MIN_USERS:
            return
        cost = (outcome.rank_s + outcome.write_s) / outcome.n_users
        old = self.per_user_s
        self.per_user_s = cost if old is None else old + self.SMOOTHING * (cost - old)


class BatchRunner:
    """Runs the pipeline over taken (unacked) batches on two threads: `pipeline` (decode, fold, rank,
    and the live index's updates) and `writer` (store writes, one batch at a time, in order)."""

    def __init__(
        self,
        pipeline: StagedPipeline,
        send_dead_letter: SendDeadLetter,
        highwater: Callable[[TopicPartition], int | None],
        *,
        sensor: LagSensor | None = None,
        batches_in_flight: int = 2,
        log_every_s: float = 5.0,
        drain_factor: int = 1,
        stage_budget_s: float = 0.0,
    ) -> None:
        """`drain_factor` > 1: behind by more than a batch, up to that many taken batches are merged
        into one (`batch_limit`); 1 keeps each taken batch as it came. `stage_budget_s` > 0: a batch
        that would be written later than that after its oldest event entered Kafka if it were ranked
        with the ranking stage is ranked without it (`StageShedding`)."""
        self.pipeline = pipeline
        self.drain_factor = drain_factor
        self.send_dead_letter = send_dead_letter
        self.highwater = highwater
        self.sensor = sensor
        self.batches_in_flight = batches_in_flight  # taken but not yet being processed (beyond the two in the pipeline)
        self.progress = Progress(log_every_s)
        self.shedding = StageShedding(stage_budget_s)
        self.lag: dict[str, int] = {}  # partition -> records behind, as of its last written batch
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pipeline")
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="writer")
        # the partitions of the last assignment and its group generation (None: unknown)
        self._owned: set[str] = set()
        self._owned_generation: int | None = None
        self._search_warmed = False  # the ranker's search path: warmed once the backlog is drained
        self.search_warm_caught_up_s = SEARCH_WARM_CAUGHT_UP_S
        self._caught_up_since: float | None = None  # since when every batch left less behind than it took
        self._taken = 0  # batches taken so far (an idle worker warms its search path: `on_assigned`)

    async def consume(self, batches: AsyncIterable[Sequence[E]], ack: Ack[E]) -> None:
        """Takes each batch off at once and hands it to the two stages: a runtime like faust fills its
        take buffer only while the consumer waits for the next batch, so processing here would stop
        consumption for as long as each batch takes. At most `batches_in_flight` wait (a bounded
        queue: back-pressure), all unacked, so a rebalance waits for them. Raises what the
        processing raised (e.g. a failed write, or a stop during a store outage)."""
        queue: asyncio.Queue[list[E]] = asyncio.Queue(maxsize=self.batches_in_flight)
        runner = asyncio.ensure_future(self._run(queue, ack))
        try:
            async for events in batches:
                put = asyncio.ensure_future(queue.put(list(events)))
                await asyncio.wait({put, runner}, return_when=asyncio.FIRST_COMPLETED)
                if runner.done():
                    put.cancel()
                    runner.result()  # the processing failed: raise it here
                    raise RuntimeError("batch runner ended")  # pragma: no cover - it loops forever
        finally:
            runner.cancel()

    async def _run(self, queue: asyncio.Queue[list[E]], ack: Ack[E]) -> None:
        """Two stages in flight: batch N+1 is decoded, folded and ranked (pipeline thread) while
        batch N is written (writer thread). Writes stay one at a time and in order, so a retried
        write never lands after a newer one; a batch is acked only after its own write."""
        loop = asyncio.get_running_loop()
        previous: asyncio.Future[None] | None = None
        while True:
            events = await queue.get()
            limit = batch_limit(self._backlog(events), len(events), self.drain_factor)
            while len(events) < limit and not queue.empty():
                events += queue.get_nowait()  # behind: taken batches merged (see `batch_limit`)
            stamps = [t for t in (e.message.timestamp for e in events) if t]
            oldest_age_s = time.time() - min(stamps) if stamps else 0.0
            self.progress.waited(oldest_age_s)
            self.shedding.update(oldest_age_s, self.pipeline.ranker, len(events))
            shed = self.shedding.active
            self.progress.stage_shed = self.shedding.batches
            self.progress.begin()
            self._taken += 1
            records = [
                RawRecord(
                    value=e.message.value if e.message.value is not None else b"",
                    source=f"{e.message.topic}:{e.message.partition}",
                    offset=e.message.offset,
                )
                for e in events
            ]
            prepared = await loop.run_in_executor(self._executor, self.pipeline.prepare, records)
            if previous is not None:
                await previous  # batch N written and acked (or its failure raised here)
            written = loop.run_in_executor(self._writer, self.pipeline.write, prepared)
            previous = asyncio.ensure_future(self._finish(events, written, ack, shed))
            previous.add_done_callback(_report_failure)  # seen now, not only when the next batch comes

    def _backlog(self, events: Sequence[E]) -> int:
        """Records behind, this batch included: as of the last batch written (`lag`), or, before the
        first write since an assignment (which clears `lag`), from the fetch's high watermarks, so that a
        restart's backlog is merged from its second batch on instead of its third."""
        if self.lag:
            return sum(self.lag.values())
        return sum(max(n, 0) for n in self._behind(events).values()) + len(events)

    def _behind(self, events: Sequence[E]) -> dict[TopicPartition, int]:
        """Per partition of `events` whose high watermark is known: records after its last event there."""
        last: dict[TopicPartition, int] = {}
        for e in events:
            last[e.message.tp] = e.message.offset
        highs = {tp: self.highwater(tp) for tp in last}
        return {tp: int(high) - last[tp] - 1 for tp, high in highs.items() if high is not None}

    async def _finish(self, events: list[E], written: Awaitable[BatchOutcome], ack: Ack[E], shed: bool) -> None:
        """After a batch's writes: dead letters confirmed by the broker, then the events acked (so
        their offsets may be committed), then counters, lag and the stage's cost (`StageShedding`)."""
        outcome = await written
        self.shedding.learn(outcome, shed)
        pending = [
            await self.send_dead_letter(
                key=f"{d.source}:{d.offset}".encode(),
                value=d.raw,
                headers=_dead_letter_headers(d.reason, d.field, d.source, d.offset),
            )
            for d in outcome.dead_letters
        ]
        for fut in pending:
            await fut  # confirmed by the broker before the source offsets may be committed
        for e in events:
            await ack(e)
        self.progress.add(outcome, shed)
        for tp, behind in self._behind(events).items():
            name = f"{tp.topic}:{tp.partition}"
            self.lag[name] = max(behind, 0)
            if self.sensor is not None:
                self.sensor.set_lag(name, behind)
        if not self._search_warmed:
            self._warm_search_once_caught_up(len(events))

    def _warm_search_once_caught_up(self, taken: int) -> None:
        """The ranker's search path warms now if the worker has been caught up for
        `search_warm_caught_up_s` (off the start's and the backlog's path, see `warm_up`), or has taken
        SEARCH_WARM_BY_BATCH batches."""
        now = time.monotonic()
        if sum(self.lag.values()) >= taken:  # behind: the clock starts again at the next caught-up batch
            self._caught_up_since = None
        elif self._caught_up_since is None:
            self._caught_up_since = now
        since = self._caught_up_since
        if (since is not None and now - since >= self.search_warm_caught_up_s) or (
            self.progress.batches >= SEARCH_WARM_BY_BATCH
        ):
            self._warm_search()

    def _warm_search(self) -> None:
        """The ranker's search path warms in its background thread, once (see `warm_up`)."""
        if self._search_warmed:
            return
        self._search_warmed = True
        warm_search = getattr(self.pipeline.ranker, "warm_search_in_background", None)
        if callable(warm_search):
            warm_search()

    def _warm_search_if_idle(self, taken: int) -> None:
        if self._taken == taken:  # no batch since the assignment: idle
            self._warm_search()

    async def consume_items(self, batches: AsyncIterable[Sequence[E]], ack: Ack[E]) -> None:
        """New or changed items: each batch decoded, invalid records dead-lettered (confirmed), the
        valid ones fused into the live index (on the pipeline thread), then all acked."""
        loop = asyncio.get_running_loop()
        add: Callable[[list[Item]], int] | None = getattr(self.pipeline.ranker, "add_items", None)
        async for events in batches:
            good: list[Item] = []
            bad: list[tuple[E, InvalidItem]] = []
            for e in events:
                try:
                    good.append(decode_item(e.message.value or b""))
                except InvalidItem as invalid:
                    bad.append((e, invalid))
            for e, exc in bad:
                m = e.message
                headers = _dead_letter_headers(exc.reason, exc.field, f"{m.topic}:{m.partition}", m.offset)
                await (await self.send_dead_letter(key=b"item", value=m.value or b"", headers=headers))
            if good and add is not None:
                n = await loop.run_in_executor(self._executor, add, good)
                log.info("live_items added=%d invalid=%d", n, len(bad))
            elif good:
                log.warning("live_items_ignored count=%d reason=the ranker has no live index", len(good))
            for e in events:
                await ack(e)

    def on_assigned(self, partitions: Iterable[TopicPartition], generation: int | None = None) -> None:
        """Which partitions this worker owns after each rebalance (operators and tests read it). The
        cached states of partitions it kept are kept when `generation` (the group's) directly follows
        the one of its last assignment; otherwise all are dropped (streams.state_cache)."""
        owned = sorted(f"{tp.topic}:{tp.partition}" for tp in partitions)
        log.info("partitions_assigned count=%d partitions=%s", len(owned), ",".join(owned))
        if not self._search_warmed:
            with contextlib.suppress(RuntimeError):  # outside an event loop (tests): the batches decide
                asyncio.get_running_loop().call_later(SEARCH_WARM_IDLE_S, self._warm_search_if_idle, self._taken)
        self.lag.clear()  # the backlog of partitions no longer owned is not ours to drain
        before, before_generation = self._owned, self._owned_generation
        self._owned, self._owned_generation = set(owned), generation
        cache = self.pipeline.state_cache
        if cache is None:
            return
        if generation is not None and before_generation is not None and generation == before_generation + 1:
            kept = before & self._owned
            n = cache.retain(kept)
            log.info("state_cache_kept partitions=%d users=%d group_generation=%d", len(kept), n, generation)
        else:
            self._invalidate("assigned")

    def on_revoked(self) -> None:
        """The runtime waits for in-flight (unacked) batches before it revokes; from here until the
        next assignment no cached state is used."""
        cache = self.pipeline.state_cache
        if cache is not None:
            cache.suspend()

    def _invalidate(self, reason: str) -> None:
        cache = self.pipeline.state_cache
        if cache is not None:
            cache.invalidate()
            log.info("state_cache_invalidated reason=%s generation=%d", reason, cache.generation)

    def log_stop(self) -> None:
        log.info("worker_stop %s", self.progress.line())

    def close(self) -> None:
        """Shuts the two threads down once their current work is done."""
        self._executor.shutdown()
        self._writer.shutdown()

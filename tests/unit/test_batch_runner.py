"""The worker's batch runner with fakes for faust and the pipeline: writes in order with batch N+1
prepared meanwhile, acks only after a batch's write and dead letters are confirmed, a failed write
raised and never acked, back-pressure, lag, live items and the state cache's rebalance rule."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import count
from typing import Any, NamedTuple, TypeVar

import orjson
import pytest

from ranker.state import UserState
from schemas.items import Item
from streams.batch_runner import SEARCH_WARM_IDLE_S, BatchRunner, StageShedding
from streams.core import BatchOutcome, DeadLetterRecord, PreparedBatch, RawRecord
from streams.state_cache import StateCache

T = TypeVar("T")
WAIT_S = 10.0  # generous: a hang is a failure, never a slow pass


class TP(NamedTuple):
    topic: str
    partition: int


@dataclass(frozen=True)
class Msg:
    topic: str
    partition: int
    offset: int
    value: bytes | None
    timestamp: float | None = None

    @property
    def tp(self) -> TP:
        return TP(self.topic, self.partition)


@dataclass(frozen=True)
class Ev:
    message: Msg


def _batch(start: int, n: int, partition: int = 0, bad: Sequence[int] = ()) -> list[Ev]:
    return [
        Ev(Msg("clicks", partition, o, b"bad" if o in bad else f"ok-{o}".encode())) for o in range(start, start + n)
    ]


@dataclass
class FakePipeline:
    """Prepares on the pipeline thread, writes on the writer thread; records bad-valued records as
    dead letters. `hold_write[i]` blocks batch i's write until set; `fail_write` names a batch whose write raises."""

    state_cache: StateCache | None = None
    ranker: object = None
    prepared: list[list[int]] = field(default_factory=list)
    written: list[list[int]] = field(default_factory=list)
    hold_write: dict[int, threading.Event] = field(default_factory=dict)
    fail_write: int | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def prepare(self, records: Sequence[RawRecord]) -> PreparedBatch:
        assert threading.current_thread().name.startswith("pipeline")
        outcome = BatchOutcome(n_records=len(records), n_applied=len(records))
        outcome.dead_letters = [
            DeadLetterRecord(r.source, r.offset, "$", "not valid JSON", r.value) for r in records if r.value == b"bad"
        ]
        with self.lock:
            self.prepared.append([r.offset for r in records])
            index = len(self.prepared) - 1
        return PreparedBatch(outcome, [], [], index, 0.0)  # `generation` carries the batch's index here

    def write(self, batch: PreparedBatch) -> BatchOutcome:
        assert threading.current_thread().name.startswith("writer")
        index = batch.generation
        hold = self.hold_write.get(index)
        if hold is not None:
            assert hold.wait(WAIT_S), f"batch {index}'s write was never released"
        if index == self.fail_write:
            raise RuntimeError(f"write of batch {index} failed")
        with self.lock:
            self.written.append(self.prepared[index])
        return batch.outcome


@dataclass
class DeadLetters:
    """The dead-letter topic: each send returns a confirmation future the test may hold back."""

    confirm_at_once: bool = True
    sent: list[tuple[bytes, bytes, Mapping[str, bytes]]] = field(default_factory=list)
    confirmations: list[asyncio.Future[None]] = field(default_factory=list)

    async def send(self, *, key: bytes, value: bytes, headers: Mapping[str, bytes]) -> Awaitable[object]:
        self.sent.append((key, value, headers))
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.confirm_at_once:
            fut.set_result(None)
        self.confirmations.append(fut)
        return fut


class Lag:
    def __init__(self) -> None:
        self.lag: dict[str, int] = {}

    def set_lag(self, partition: str, lag: int) -> None:
        self.lag[partition] = lag


def _runner(pipeline: FakePipeline, dead: DeadLetters, **kw: Any) -> BatchRunner:
    return BatchRunner(pipeline, dead.send, lambda tp: 100, **kw)


async def _feed(batches: list[list[Ev]], then: Callable[[], bool] | None = None) -> AsyncIterator[list[Ev]]:
    """The batches, then (like a live stream) nothing more until `then()` holds."""
    for b in batches:
        yield b
    while then is not None and not then():
        await asyncio.sleep(0.005)


async def _until(cond: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT_S):
        while not cond():
            await asyncio.sleep(0.005)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(WAIT_S * 2):
            return await coro

    return asyncio.run(bounded())


def test_writes_in_order_while_the_next_batch_is_prepared_and_acks_follow_each_write(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="fusionrec.worker")
    pipeline, dead = FakePipeline(), DeadLetters()
    batch1_prepared = threading.Event()
    pipeline.hold_write[0] = batch1_prepared  # batch 0's write waits until batch 1 was prepared
    runner = _runner(pipeline, dead)
    original_prepare = pipeline.prepare

    def prepare(records: Sequence[RawRecord]) -> PreparedBatch:
        batch = original_prepare(records)
        if batch.generation == 1:
            batch1_prepared.set()
        return batch

    pipeline.prepare = prepare  # type: ignore[method-assign]
    batches = [_batch(10 * i, 3) for i in range(5)]
    acked: list[int] = []

    async def ack(e: Ev) -> None:
        written = {o for b in pipeline.written for o in b}
        assert e.message.offset in written, "acked before its batch was written"
        acked.append(e.message.offset)

    total = sum(len(b) for b in batches)
    _run(runner.consume(_feed(batches, lambda: len(acked) == total), ack))
    runner.close()
    expected = [[e.message.offset for e in b] for b in batches]
    assert pipeline.prepared == expected and pipeline.written == expected
    assert acked == [o for b in expected for o in b]
    assert (runner.progress.records, runner.progress.batches, runner.progress.dead) == (15, 5, 0)
    runner.log_stop()
    assert "worker_stop records=15 applied=15 duplicates=0 dead_letters=0 batches=5" in caplog.text


def test_a_batch_is_acked_only_once_its_dead_letters_are_confirmed() -> None:
    pipeline, dead = FakePipeline(), DeadLetters(confirm_at_once=False)
    runner = _runner(pipeline, dead)
    acked: list[int] = []

    async def ack(e: Ev) -> None:
        acked.append(e.message.offset)

    async def scenario() -> None:
        consuming = asyncio.ensure_future(
            runner.consume(_feed([_batch(0, 4, partition=2, bad=(1, 3))], lambda: len(acked) == 4), ack)
        )
        await _until(lambda: len(dead.confirmations) == 2)
        await asyncio.sleep(0.05)
        assert pipeline.written == [[0, 1, 2, 3]] and acked == [], "acked before the broker confirmed"
        dead.confirmations[0].set_result(None)
        await asyncio.sleep(0.05)
        assert acked == [], "acked with a dead letter still unconfirmed"
        dead.confirmations[1].set_result(None)
        await consuming

    _run(scenario())
    runner.close()
    assert acked == [0, 1, 2, 3]
    assert [(k, v) for k, v, _ in dead.sent] == [(b"clicks:2:1", b"bad"), (b"clicks:2:3", b"bad")]
    assert dict(dead.sent[1][2]) == {
        "fusionrec.reason": b"not valid JSON",
        "fusionrec.field": b"$",
        "fusionrec.source": b"clicks:2",
        "fusionrec.offset": b"3",
    }
    assert runner.progress.dead == 2


def test_a_failed_write_is_raised_and_its_batch_never_acked(caplog: pytest.LogCaptureFixture) -> None:
    pipeline, dead = FakePipeline(fail_write=1), DeadLetters()
    runner = _runner(pipeline, dead)
    acked: list[int] = []

    async def ack(e: Ev) -> None:
        acked.append(e.message.offset)

    async def endless() -> AsyncIterator[list[Ev]]:  # a live stream: batches keep coming
        for i in count():
            yield _batch(10 * i, 2)
            await asyncio.sleep(0.001)

    with pytest.raises(RuntimeError, match="write of batch 1 failed"):
        _run(runner.consume(endless(), ack))
    runner.close()
    assert acked == [0, 1]  # batch 0 only: nothing at or after the failed batch
    assert pipeline.written == [[0, 1]]
    assert "batch_write_failed" in caplog.text


def test_at_most_batches_in_flight_wait_beyond_the_two_stages() -> None:
    release = threading.Event()
    pipeline, dead = FakePipeline(hold_write={0: release}), DeadLetters()
    runner = _runner(pipeline, dead, batches_in_flight=2)
    taken = 0
    acked: list[int] = []

    async def ack(e: Ev) -> None:
        acked.append(e.message.offset)

    async def stream() -> AsyncIterator[list[Ev]]:
        nonlocal taken
        for i in range(8):
            taken += 1
            yield _batch(10 * i, 1)
        await _until(lambda: len(acked) == 8)

    async def scenario() -> None:
        consuming = asyncio.ensure_future(runner.consume(stream(), ack))
        await _until(lambda: taken == 5)
        await asyncio.sleep(0.1)
        # batch 0 being written, batch 1 prepared and waiting, 2 queued, and the 5th taken, waiting to be queued
        assert taken == 5 and pipeline.prepared == [[0], [10]]
        release.set()
        await consuming

    _run(scenario())
    runner.close()
    assert acked == [10 * i for i in range(8)]


def test_lag_per_partition_from_the_high_water_mark() -> None:
    pipeline, dead, lag = FakePipeline(), DeadLetters(), Lag()
    runner = BatchRunner(pipeline, dead.send, lambda tp: {0: 100, 1: None}.get(tp.partition), sensor=lag)
    acked: list[int] = []

    async def ack(e: Ev) -> None:
        acked.append(e.message.offset)

    mixed = _batch(40, 3, partition=0) + _batch(7, 2, partition=1)
    _run(runner.consume(_feed([mixed], lambda: len(acked) == 5), ack))
    runner.close()
    assert lag.lag == {"clicks:0": 100 - 42 - 1}  # partition 1's high-water mark is not known yet


class LiveIndex:
    version = "test"

    def __init__(self) -> None:
        self.added: list[Item] = []

    def add_items(self, items: Sequence[Item]) -> int:
        assert threading.current_thread().name.startswith("pipeline")
        self.added.extend(items)
        return len(items)


def _item_events(values: list[bytes]) -> list[Ev]:
    return [Ev(Msg("items", 0, o, v)) for o, v in enumerate(values)]


def test_live_items_are_added_and_invalid_ones_dead_lettered(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fusionrec.worker")
    index = LiveIndex()
    pipeline, dead = FakePipeline(ranker=index), DeadLetters()
    runner = _runner(pipeline, dead)
    acked: list[int] = []

    async def ack(e: Ev) -> None:
        acked.append(e.message.offset)

    good = orjson.dumps({"item_id": "NEW-1", "title": "Trail shoe", "category": "Running Shoes"})
    events = _item_events([good, b'{"item_id": "x"}'])
    _run(runner.consume_items(_feed([events]), ack))
    runner.close()
    assert [i.item_id for i in index.added] == ["NEW-1"]
    assert acked == [0, 1]
    assert len(dead.sent) == 1
    key, value, headers = dead.sent[0]
    assert (key, value) == (b"item", b'{"item_id": "x"}')
    assert headers["fusionrec.field"] == b"title" and headers["fusionrec.source"] == b"items:0"
    assert headers["fusionrec.offset"] == b"1" and b"missing" in headers["fusionrec.reason"]
    assert "live_items added=1 invalid=1" in caplog.text


def test_live_items_without_a_live_index_are_acked_and_reported(caplog: pytest.LogCaptureFixture) -> None:
    pipeline, dead = FakePipeline(ranker=object()), DeadLetters()
    runner = _runner(pipeline, dead)
    acked: list[int] = []

    async def ack(e: Ev) -> None:
        acked.append(e.message.offset)

    _run(runner.consume_items(_feed([_item_events([orjson.dumps({"item_id": "A", "title": "a"})])]), ack))
    runner.close()
    assert acked == [0] and dead.sent == []
    assert "live_items_ignored count=1" in caplog.text


def test_a_rebalance_logs_the_assignment_and_without_a_known_generation_drops_the_cache(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="fusionrec.worker")
    cache = StateCache(10)
    runner = _runner(FakePipeline(state_cache=cache), DeadLetters())
    runner.on_assigned([TP("clicks", 3), TP("clicks", 0)])
    assert "partitions_assigned count=2 partitions=clicks:0,clicks:3" in caplog.text
    cache.put_many([UserState("a")], cache.generation, {"a": "clicks:0"})
    runner.on_revoked()
    assert cache.get_many(["a"], {"a": "clicks:0"}) == ({}, ["a"])  # suspended: no hit until assigned
    runner.on_assigned([TP("clicks", 0)])  # no group generation: nothing can be kept
    assert cache.get_many(["a"], {"a": "clicks:0"}) == ({}, ["a"]) and len(cache) == 0
    assert "state_cache_invalidated reason=assigned" in caplog.text
    assert "partitions_assigned count=1 partitions=clicks:0" in caplog.text
    runner.close()

    uncached = _runner(FakePipeline(), DeadLetters())  # no cache: rebalances only log
    uncached.on_revoked()
    uncached.on_assigned([TP("clicks", 1)], 4)
    uncached.close()


def test_the_next_generation_keeps_the_states_of_the_partitions_still_owned(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fusionrec.worker")
    cache = StateCache(10)
    runner = _runner(FakePipeline(state_cache=cache), DeadLetters())
    runner.on_assigned([TP("clicks", 0), TP("clicks", 3)], 5)
    where = {"a": "clicks:0", "b": "clicks:3"}
    before = cache.generation
    cache.put_many([UserState("a"), UserState("b")], before, where)
    runner.on_revoked()
    cache.put_many([UserState("late")], before, {"late": "clicks:0"})  # a batch from before the revoke
    runner.on_assigned([TP("clicks", 0), TP("clicks", 1)], 6)  # clicks:3 went to another worker
    found, missing = cache.get_many(["a", "b", "late"], {**where, "late": "clicks:0"})
    assert set(found) == {"a"} and missing == ["b", "late"]
    assert "state_cache_kept partitions=1 users=1 group_generation=6" in caplog.text
    # the same user's events now from another partition (the topic got more partitions): read again
    assert cache.get_many(["a"], {"a": "clicks:1"}) == ({}, ["a"])
    runner.on_revoked()
    runner.on_assigned([TP("clicks", 0)], 8)  # generation 7 went by without this worker: drop all
    assert len(cache) == 0
    runner.close()


class SheddableRanker:
    version = "test"
    shed_stage = False


def test_stage_shedding_follows_how_long_each_batch_has_waited() -> None:
    ranker = SheddableRanker()
    shed = StageShedding(1.0)
    for age, want in ((0.2, False), (1.5, True), (0.9, False), (3.0, True), (1.01, True), (0.0, False)):
        shed.update(age, ranker)
        assert ranker.shed_stage is want, age
    assert shed.batches == 3
    never = StageShedding(0.0)
    never.update(1e9, ranker)
    assert ranker.shed_stage is False and never.batches == 0
    StageShedding(1.0).update(5.0, object())  # a ranker without a stage: nothing to shed, no error


def test_stage_shedding_projects_when_a_batch_would_be_written_with_the_stage() -> None:
    """Once batches ranked with the stage have taught it their cost per user, a batch is shed when its
    oldest event's wait plus its users times that cost passes the budget, though the wait alone does not."""
    ranker = SheddableRanker()
    shed = StageShedding(0.5)

    def written(users: int, rank_s: float, write_s: float) -> BatchOutcome:
        return BatchOutcome(n_records=users, n_users=users, rank_s=rank_s, write_s=write_s)

    shed.learn(written(20, 1.0, 1.0), shed=False)  # too few users: fixed costs would pass for a per-user cost
    shed.learn(written(1000, 0.1, 0.1), shed=True)  # ranked without the stage: not the stage's cost
    assert shed.per_user_s is None
    shed.update(0.4, ranker, 1000)
    assert ranker.shed_stage is False  # nothing learned yet: the wait alone decides
    shed.learn(written(500, 0.15, 0.1), shed=False)  # 0.5 ms per user
    assert shed.per_user_s == pytest.approx(0.0005)
    for age, n, want in ((0.1, 100, False), (0.1, 1000, True), (0.3, 300, False), (0.3, 500, True), (0.6, 1, True)):
        shed.update(age, ranker, n)
        assert ranker.shed_stage is want, (age, n)
        assert shed.projected_s(age, n) == pytest.approx(age + 0.0005 * n)
    shed.learn(written(100, 0.1, 0.0), shed=False)  # 1 ms per user, smoothed in
    assert shed.per_user_s == pytest.approx(0.0005 + StageShedding.SMOOTHING * 0.0005)


def test_until_a_batch_teaches_it_the_warm_ups_stage_cost_projects() -> None:
    """A started worker's first batches are projected with what its warm-up measured (the ranker's
    `warm_stage_per_user_s`): the second batch after a start (events that waited 0.45 s, 380 users)
    is shed instead of ranked with the stage cold. A learned cost replaces it."""
    ranker = SheddableRanker()
    shed = StageShedding(0.5)
    shed.update(0.45, ranker, 380)
    assert ranker.shed_stage is False  # no measure: the wait alone
    ranker.warm_stage_per_user_s = 0.0005  # type: ignore[attr-defined]
    shed.update(0.45, ranker, 380)
    assert ranker.shed_stage is True
    assert shed.projected_s(0.45, 380, 0.0005) == pytest.approx(0.45 + 0.19)
    shed.update(0.05, ranker, 100)  # caught up: the stage again, so a real batch can teach its cost
    assert ranker.shed_stage is False
    shed.learn(BatchOutcome(n_records=100, n_users=100, rank_s=0.01, write_s=0.0), shed=False)  # 0.1 ms per user
    shed.update(0.45, ranker, 380)
    assert ranker.shed_stage is False  # 0.45 + 0.038: the learned cost, not the warm-up's


def _stamped(start: int, n: int, age_s: float) -> list[Ev]:
    """n clickstream records from offset `start` that entered Kafka `age_s` ago."""
    return [Ev(Msg("clicks", 0, o, b"ok", time.time() - age_s)) for o in range(start, start + n)]


def test_a_late_batch_is_ranked_without_the_stage_and_an_on_time_one_with_it() -> None:
    """Batch 1's records entered Kafka 5 s ago (a backlog): shed. Batch 2's just now: the stage again."""
    ranker = SheddableRanker()
    seen: list[bool] = []

    class Recording(FakePipeline):
        def prepare(self, records: Sequence[RawRecord]) -> PreparedBatch:
            seen.append(ranker.shed_stage)
            return super().prepare(records)

    pipeline, dead = Recording(ranker=ranker), DeadLetters()
    runner = BatchRunner(pipeline, dead.send, lambda tp: 100, stage_budget_s=1.0)
    acked: list[int] = []

    async def ack(e: Ev) -> None:
        acked.append(e.message.offset)

    async def feed() -> AsyncIterator[list[Ev]]:
        yield _stamped(0, 3, 5.0)
        await _until(lambda: len(acked) == 3)
        yield _stamped(3, 3, 0.0)
        await _until(lambda: len(acked) == 6)

    _run(runner.consume(feed(), ack))
    runner.close()
    assert seen == [True, False]
    assert runner.progress.stage_shed == 1 and "stage_shed_batches=1" in runner.progress.line()


def test_the_search_path_warms_once_the_worker_has_caught_up_and_once() -> None:
    """A worker's search path (the text encoder, item fusion, the hybrid index) warms once its lag
    after every batch has been smaller than that batch for `search_warm_caught_up_s`, not during the
    start or the backlog: there its thread took the interpreter from the join and from the batches
    that drain a restart's backlog. A batch that leaves more behind than it took starts the clock
    again."""
    events: list[str] = []

    class Ranker:
        def warm_search_in_background(self) -> None:
            events.append("warm search")

    class Recording(FakePipeline):
        def write(self, batch: PreparedBatch) -> BatchOutcome:
            outcome = super().write(batch)
            events.append(f"written {batch.generation}")
            return outcome

    pipeline, dead = Recording(ranker=Ranker()), DeadLetters()
    highwater = [10]  # the partition's end offset: 10 events, then 18, then 26
    runner = BatchRunner(pipeline, dead.send, lambda tp: highwater[0])
    runner.search_warm_caught_up_s = 0.3
    acked: list[int] = []

    async def ack(e: Ev) -> None:
        acked.append(e.message.offset)

    async def feed() -> AsyncIterator[list[Ev]]:
        yield _batch(0, 3)  # lag 7 after it: behind
        await _until(lambda: len(acked) == 3)
        yield _batch(3, 5)  # lag 2: caught up, the clock starts
        await _until(lambda: len(acked) == 8)
        highwater[0] = 18
        yield _batch(8, 2)  # lag 8: behind again
        await _until(lambda: len(acked) == 10)
        await asyncio.sleep(0.4)
        yield _batch(10, 5)  # lag 3: caught up, the clock starts again
        await _until(lambda: len(acked) == 15)
        await asyncio.sleep(0.4)
        highwater[0] = 26
        yield _batch(15, 10)  # lag 1: caught up for 0.4 s
        await _until(lambda: len(acked) == 25)
        yield _batch(25, 1)  # lag 0
        await _until(lambda: len(acked) == 26)

    _run(runner.consume(feed(), ack))
    runner.close()
    assert events == ["written 0", "written 1", "written 2", "written 3", "written 4", "warm search", "written 5"]


def test_an_idle_worker_warms_its_search_path_a_second_after_its_assignment() -> None:
    """No traffic after an assignment: nothing to take the interpreter from, so the search path warms
    then, not in the first batches when traffic comes. A batch within the second defers it."""
    warmed: list[float] = []

    class Ranker:
        def warm_search_in_background(self) -> None:
            warmed.append(time.monotonic())

    async def scenario() -> float:
        runner = _runner(FakePipeline(ranker=Ranker()), DeadLetters())
        assigned = time.monotonic()
        runner.on_assigned([TP("clicks", 0)], 1)
        await _until(lambda: bool(warmed))
        runner.on_assigned([TP("clicks", 0)], 2)  # once only
        await asyncio.sleep(SEARCH_WARM_IDLE_S + 0.2)
        runner.close()
        return assigned

    assigned = _run(scenario())
    assert len(warmed) == 1 and warmed[0] - assigned >= SEARCH_WARM_IDLE_S * 0.9


def test_the_runner_teaches_the_shedding_the_cost_of_batches_ranked_with_the_stage_only() -> None:
    """A shed batch (its records 5 s old) teaches nothing; a batch ranked with the stage teaches its
    ranking and write time per user, which the next batches' decisions project with."""
    ranker = SheddableRanker()

    class Costed(FakePipeline):
        def prepare(self, records: Sequence[RawRecord]) -> PreparedBatch:
            batch = super().prepare(records)
            batch.outcome.n_users, batch.outcome.rank_s = len(records), 0.002 * len(records)
            return batch

    pipeline, dead = Costed(ranker=ranker), DeadLetters()
    runner = BatchRunner(pipeline, dead.send, lambda tp: 100, stage_budget_s=1.0)
    acked: list[int] = []
    learned: list[float | None] = []

    async def ack(e: Ev) -> None:
        acked.append(e.message.offset)

    async def feed() -> AsyncIterator[list[Ev]]:
        yield _stamped(0, 60, 5.0)
        await _until(lambda: len(acked) == 60)
        learned.append(runner.shedding.per_user_s)
        yield _stamped(60, 60, 0.0)
        await _until(lambda: len(acked) == 120)

    _run(runner.consume(feed(), ack))
    runner.close()
    assert learned == [None]
    assert runner.shedding.per_user_s == pytest.approx(0.002)
    assert runner.shedding.batches == 1
    assert "users=120 stage_shed_users=60" in runner.progress.line()

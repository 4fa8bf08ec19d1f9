"""The worker's warm start: the ranker runs on synthetic users with real shapes and the store's read
path answers before the first real batch, nothing is written, the readiness gauge turns 1, and
`BundleRanker.warm_up` feeds its encoder every history length in the batch sizes asked for."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from ranker.online import BundleRanker
from ranker.state import UserState
from schemas.errors import StoreUnavailable
from streams.batch_runner import WARM_UP_BATCH, WARM_UP_USER, BatchRunner, Progress, batch_limit, warm_up
from streams.core import BatchOutcome, Pipeline, PreparedBatch, RawRecord
from streams.metrics import PrometheusSensor
from streams.state_cache import StateCache
from streams.stores.memory import MemoryStore


class SpyRanker:
    """A ranker with no `warm_up`: the worker's fallback ranks one synthetic user."""

    version = "spy"

    def __init__(self) -> None:
        self.ranked: list[list[str]] = []

    def rank_many(self, states: Sequence[UserState], k: int) -> list[tuple[list[tuple[str, float]], str]]:
        self.ranked.append([s.user_id for s in states])
        return [([("i1", 1.0)], "popular") for _ in states]


class SpyStore(MemoryStore):
    """A memory store that records reads and fails any write."""

    def __init__(self) -> None:
        super().__init__("memory://warm")
        self.reads: list[list[str]] = []

    def get_states(self, user_ids: Sequence[str]) -> dict[str, UserState]:
        self.reads.append(list(user_ids))
        return super().get_states(user_ids)

    def put_results(self, lists: Sequence[Any], states: Sequence[UserState]) -> None:
        raise AssertionError("the warm-up wrote to the store")


def _ready(sensor: PrometheusSensor) -> float | None:
    return sensor.registry.get_sample_value("fusionrec_worker_ready")


def test_warm_up_ranks_a_synthetic_user_reads_the_store_and_leaves_no_trace(caplog: pytest.LogCaptureFixture) -> None:
    store, ranker = SpyStore(), SpyRanker()
    pipeline = Pipeline(store, ranker, k=5, state_cache=StateCache(100))
    sensor = PrometheusSensor()
    assert _ready(sensor) == 0
    with caplog.at_level(logging.INFO, logger="fusionrec.worker"):
        seconds = warm_up(pipeline, batch_size=50, k=5, sensor=sensor)
    assert seconds >= 0
    assert ranker.ranked == [[WARM_UP_USER]]
    assert store.reads[0] == [WARM_UP_USER]  # the one-key read, then the many-keys one
    assert len(store.reads[1]) == 50 and all(u.startswith(WARM_UP_USER) for u in store.reads[1])
    assert store.count_states() == 0 and not store.lists  # no trace
    assert pipeline.state_cache is not None and pipeline.state_cache.get_many([WARM_UP_USER])[0] == {}
    assert _ready(sensor) == 1
    assert any(r.getMessage().startswith("worker_ready warm_s=") for r in caplog.records)


def test_warm_up_calls_the_rankers_own_warm_up_with_the_batch_sizes() -> None:
    calls: list[tuple[list[int], int]] = []
    ranker = SimpleNamespace(version="w", warm_up=lambda batch_sizes, k: calls.append((list(batch_sizes), k)))
    warm_up(SimpleNamespace(ranker=ranker, store=MemoryStore()), batch_size=500, k=20)
    assert calls == [([1, WARM_UP_BATCH], 20)]
    warm_up(SimpleNamespace(ranker=ranker, store=MemoryStore()), batch_size=8, k=5)
    assert calls[1] == ([1, 8], 5)  # never more than a batch


def test_a_ranker_with_a_search_path_warms_it_after_the_first_batch_not_before_the_join() -> None:
    calls: list[dict[str, Any]] = []
    ranker = SimpleNamespace(version="w", warm_up=lambda **kw: calls.append(kw), warm_search_in_background=lambda: None)
    warm_up(SimpleNamespace(ranker=ranker, store=MemoryStore()), batch_size=500, k=20)
    assert calls == [{"batch_sizes": [1, WARM_UP_BATCH], "k": 20, "search": "off"}]  # BatchRunner starts it


def test_the_store_is_waited_for_beside_the_rankers_warm_up_and_before_it_is_read() -> None:
    """The ranker's warm-up needs no store: the worker warms it while its store connection comes
    up (`store_ready`, in a thread), then reads the store. Each side below waits for the other to
    have begun, so run one after the other they would time out."""
    order: list[str] = []
    ranker_began, store_began = threading.Event(), threading.Event()

    class Store(SpyStore):
        def get_states(self, user_ids: Sequence[str]) -> dict[str, UserState]:
            order.append("store read")
            return super().get_states(user_ids)

    def ranker_warm_up(batch_sizes: Sequence[int], k: int) -> None:
        ranker_began.set()
        assert store_began.wait(5), "the store was not waited for during the ranker's warm-up"
        order.append("ranker")

    def store_ready() -> None:
        store_began.set()
        assert ranker_began.wait(5), "the ranker did not warm during the wait for the store"
        time.sleep(0.05)  # the store answers after the ranker is done: warm_up still waits for it
        order.append("store ready")

    ranker = SimpleNamespace(version="w", warm_up=ranker_warm_up)
    warm_up(SimpleNamespace(ranker=ranker, store=Store()), batch_size=10, store_ready=store_ready)
    assert order == ["ranker", "store ready", "store read", "store read"]


def test_a_store_that_never_answers_fails_the_warm_up_with_its_own_error() -> None:
    def store_ready() -> None:
        raise StoreUnavailable("no Cassandra at 127.0.0.1:1")

    ranker = SimpleNamespace(version="w", warm_up=lambda batch_sizes, k: None)
    with pytest.raises(StoreUnavailable, match="no Cassandra"):
        warm_up(SimpleNamespace(ranker=ranker, store=MemoryStore()), batch_size=10, store_ready=store_ready)


def test_readiness_gauge_follows_set_ready() -> None:
    sensor = PrometheusSensor()
    sensor.set_ready(True)
    assert _ready(sensor) == 1
    sensor.set_ready(False)
    assert _ready(sensor) == 0


def test_the_first_batches_log_their_latency_and_where_it_went(caplog: pytest.LogCaptureFixture) -> None:
    progress = Progress(every_s=3600)
    with caplog.at_level(logging.INFO, logger="fusionrec.worker"):
        for _ in range(Progress.FIRST_BATCHES + 3):
            progress.add(BatchOutcome(n_records=10, n_users=4, elapsed_s=0.25, read_s=0.05, rank_s=0.1, write_s=0.08))
    first = [r.getMessage() for r in caplog.records if r.getMessage().startswith("batch_first")]
    assert first[0] == "batch_first n=1 records=10 users=4 ms=250 read_ms=50 rank_ms=100 write_ms=80 other_ms=20"
    assert len(first) == Progress.FIRST_BATCHES


def test_a_slow_batch_says_where_its_time_went(caplog: pytest.LogCaptureFixture) -> None:
    progress = Progress(every_s=3600)
    with caplog.at_level(logging.INFO, logger="fusionrec.worker"):
        for _ in range(Progress.FIRST_BATCHES):
            progress.add(BatchOutcome(n_records=10, elapsed_s=0.9))  # the first ones log as batch_first
        progress.add(BatchOutcome(n_records=10, elapsed_s=0.1))  # quick: nothing
        progress.add(BatchOutcome(n_records=50, n_users=40, elapsed_s=0.9, read_s=0.1, rank_s=0.5, write_s=0.2))
    slow = [r.getMessage() for r in caplog.records if r.getMessage().startswith("batch_slow")]
    assert slow == ["batch_slow records=50 users=40 ms=900 read_ms=100 rank_ms=500 write_ms=200 other_ms=100"]


class FakeBundle:
    """What BundleRanker reads of a ModelBundle; `user_vectors` records the shapes it is fed."""

    def __init__(self, folder: Path, n_items: int = 12, dim: int = 4, window: int = 5) -> None:
        rng = np.random.default_rng(0)
        self.folder = folder
        self.version = "fake"
        self.item_ids = [f"i{n}" for n in range(n_items)]
        self.item_vectors = rng.normal(size=(n_items, dim)).astype(np.float32)
        self.item_categories = np.zeros(n_items, dtype=np.int64)
        self.popular = list(self.item_ids)
        self.encoder = SimpleNamespace(max_length=window)
        self.fed: list[list[int]] = []  # history lengths per call

    def user_vectors(self, histories: Sequence[Sequence[int]], types: Sequence[Sequence[int]]) -> np.ndarray:
        assert all(len(h) == len(t) for h, t in zip(histories, types, strict=True))
        self.fed.append([len(h) for h in histories])
        return np.ones((len(histories), self.item_vectors.shape[1]), dtype=np.float32)

    def ranking_stage(self) -> None:
        return None  # the sequential model alone (tests/ranker/test_stage.py covers the stage)


def test_bundle_ranker_warm_up_feeds_real_shapes_and_changes_nothing(tmp_path: Path) -> None:
    bundle = FakeBundle(tmp_path)
    ranker = BundleRanker(bundle)  # type: ignore[arg-type]
    vectors = bundle.item_vectors.copy()
    seconds = ranker.warm_up(batch_sizes=(1, 7), k=3)
    assert seconds >= 0
    assert bundle.fed == [[1], [1, 2, 3, 4, 5, 1, 2]]  # every history length up to the window
    assert np.array_equal(bundle.item_vectors, vectors) and len(bundle.item_ids) == 12
    assert ranker.rank(UserState("u", recent_items=("i1",), recent_types=("view",)), 3)[1] == "personal"


@pytest.mark.parametrize(
    ("lag", "base", "factor", "limit"),
    [(0, 500, 4, 500), (500, 500, 4, 500), (501, 500, 4, 501), (1200, 500, 4, 1200), (10**6, 500, 4, 2000),
     (10**6, 500, 1, 500)],
)  # fmt: skip
def test_batch_limit_grows_with_the_backlog_up_to_its_factor(lag: int, base: int, factor: int, limit: int) -> None:
    assert batch_limit(lag, base, factor) == limit


def test_the_runner_merges_taken_batches_while_behind_and_keeps_order() -> None:
    """Batch 0's write is held until the queue has filled behind batch 1: once batch 0 reports a
    backlog (high-water 100), the waiting batches are prepared as one, in order, each event acked
    after its write."""
    from tests.unit.test_batch_runner import DeadLetters, Ev, FakePipeline, _batch, _feed, _run

    pipeline, dead = FakePipeline(), DeadLetters()
    release = threading.Event()
    pipeline.hold_write[0] = release
    original_prepare = pipeline.prepare

    def prepare(records: Sequence[RawRecord]) -> PreparedBatch:
        batch = original_prepare(records)
        if batch.generation == 1:
            threading.Timer(0.3, release.set).start()  # the feeder fills the queue meanwhile
        return batch

    pipeline.prepare = prepare  # type: ignore[method-assign]
    runner = BatchRunner(pipeline, dead.send, lambda tp: 100, drain_factor=4)
    batches = [_batch(10 * i, 3) for i in range(5)]
    acked: list[int] = []

    async def ack(e: Ev) -> None:
        assert e.message.offset in {o for b in pipeline.written for o in b}, "acked before its write"
        acked.append(e.message.offset)

    _run(runner.consume(_feed(batches, lambda: len(acked) == 15), ack))
    runner.close()
    offsets = [e.message.offset for b in batches for e in b]
    assert [o for b in pipeline.prepared for o in b] == offsets == acked
    assert pipeline.written == pipeline.prepared
    assert max(len(b) for b in pipeline.prepared) > 3 and len(pipeline.prepared) < 5
    assert runner.lag == {"clicks:0": 100 - 42 - 1}


def test_before_its_first_write_the_runner_reads_the_backlog_from_the_high_watermarks() -> None:
    """After an assignment `lag` is empty until a batch is written. A restart's backlog is merged anyway:
    batch 0 is prepared slowly (the queue fills behind it) and its write is held, and the batches
    waiting behind it (high-water 100) are still prepared as one, in order."""
    from tests.unit.test_batch_runner import DeadLetters, Ev, FakePipeline, _batch, _feed, _run

    pipeline, dead = FakePipeline(), DeadLetters()
    release = threading.Event()
    pipeline.hold_write[0] = release
    original_prepare = pipeline.prepare
    lags_seen: list[dict[str, int]] = []

    def prepare(records: Sequence[RawRecord]) -> PreparedBatch:
        lags_seen.append(dict(runner.lag))
        if not lags_seen[1:]:
            time.sleep(0.3)  # batch 0: the feeder fills the queue meanwhile
        else:
            release.set()
        return original_prepare(records)

    pipeline.prepare = prepare  # type: ignore[method-assign]
    runner = BatchRunner(pipeline, dead.send, lambda tp: 100, drain_factor=4, batches_in_flight=4)
    batches = [_batch(10 * i, 3) for i in range(5)]
    acked: list[int] = []

    async def ack(e: Ev) -> None:
        acked.append(e.message.offset)

    _run(runner.consume(_feed(batches, lambda: len(acked) == 15), ack))
    runner.close()
    assert lags_seen[1] == {}, "the second batch was taken before any write: no lag known yet"
    assert [len(b) for b in pipeline.prepared] == [3, 12]
    assert [o for b in pipeline.prepared for o in b] == [e.message.offset for b in batches for e in b] == acked

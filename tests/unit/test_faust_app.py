"""The faust app's consumer settings that decide how fast partitions move after a crash or restart
(built without a broker: faust connects only when the worker runs)."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from streams.faust_worker import SESSION_TIMEOUT_S, build_app
from streams.settings import KafkaSettings, WorkerSettings


def _app(tmp_path: Path, worker: WorkerSettings) -> object:
    pipeline = SimpleNamespace(state_cache=None, ranker=None, prepare=None, write=None)
    return build_app(
        KafkaSettings(topic="t", dead_letter_topic="t.dlq", items_topic=""),
        worker,
        pipeline,  # type: ignore[arg-type]
        threading.Event(),
        datadir=str(tmp_path),
    )


def test_static_membership_follows_the_setting(tmp_path: Path) -> None:
    dynamic = _app(tmp_path / "a", WorkerSettings())
    assert dynamic.conf.consumer_group_instance_id is None  # type: ignore[attr-defined]
    static = _app(tmp_path / "b", WorkerSettings(instance_id="worker-0"))
    assert static.conf.consumer_group_instance_id == "worker-0"  # type: ignore[attr-defined]
    assert static.conf.broker_session_timeout == SESSION_TIMEOUT_S  # type: ignore[attr-defined]


def test_an_empty_instance_id_is_refused() -> None:
    with pytest.raises(ValueError, match="instance_id"):
        WorkerSettings(instance_id="")


def test_the_table_manager_starts_without_faust_s_one_second_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """faust's TableManager sleeps 1 s at start for tables to register; this app has none, so its
    manager goes straight to the channels and recovery (what faust does after the sleep). With a
    table declared, faust's own start runs, sleep and all."""
    import asyncio

    from faust.tables import TableManager

    from streams.faust_worker import _TablelessManager

    app = _app(tmp_path, WorkerSettings())
    manager = app.tables  # type: ignore[attr-defined]
    assert isinstance(manager, _TablelessManager)
    calls: list[str] = []

    async def sleep(seconds: float) -> None:
        calls.append(f"sleep {seconds}")

    async def channels() -> None:
        calls.append("channels")

    async def recovery_start() -> None:
        calls.append("recovery")

    monkeypatch.setattr(manager, "sleep", sleep)
    monkeypatch.setattr(manager, "_update_channels", channels)
    monkeypatch.setattr(type(manager), "recovery", SimpleNamespace(start=recovery_start))
    asyncio.run(manager.on_start())
    assert calls == ["channels", "recovery"]

    calls.clear()
    monkeypatch.setattr(TableManager, "__len__", lambda _self: 1)  # as if a table were declared
    asyncio.run(manager.on_start())
    assert calls == ["sleep 1.0", "channels", "recovery"]


def _fetch_loop(
    tmp_path: Path, batches: list[list[tuple[str, int]]], suspend_after: int | None = None
) -> tuple[list[tuple[str, int]], list[list[int]], Any]:
    """Run the worker consumer's fetch loop over `batches` of (topic, offset), partition 0 of each,
    on an app whose clickstream topic is "t"; the other topics go through faust's callback, which
    here records each offset (and suspends the flow after `suspend_after` of them). Returns (offsets
    through the callback, the lists the clickstream's sink received, the consumer)."""
    import asyncio

    from faust.types import TP

    app = _app(tmp_path, WorkerSettings())

    async def run() -> tuple[list[tuple[str, int]], list[list[int]], Any]:
        consumer = app.consumer  # type: ignore[attr-defined]
        fetcher = SimpleNamespace(_stopped=asyncio.Event())
        pending = list(batches)
        called: list[tuple[str, int]] = []
        sunk: list[list[int]] = []
        guards: list[int] = []

        def getmany(timeout: float) -> Any:
            async def fetched() -> Any:
                batch = pending.pop(0) if pending else []
                if not pending:
                    fetcher._stopped.set()  # the loop ends after this batch
                for topic, offset in batch:
                    yield TP(topic, 0), SimpleNamespace(offset=offset, topic=topic, tp=TP(topic, 0))

            return fetched()

        async def callback(message: Any) -> None:
            called.append((message.topic, message.offset))
            if suspend_after is not None and len(called) == suspend_after:
                consumer.suspend_flow.set()  # a rebalance begins
                await asyncio.sleep(0.05)  # the delivery is still in progress when it does

        async def sink(messages: list[Any]) -> None:
            sunk.append([m.offset for m in messages])

        real_wait_first = consumer.wait_first

        async def wait_first(*coros: Any, **kw: Any) -> Any:
            guards.append(1)
            return await real_wait_first(*coros, **kw)

        assert set(app.fusionrec_bulk) == {"t"}  # type: ignore[attr-defined]
        app.fusionrec_bulk["t"] = sink  # type: ignore[attr-defined]
        consumer.getmany = getmany
        consumer.callback = callback
        consumer.wait_first = wait_first
        await consumer._drain_messages(fetcher)
        consumer.guards = len(guards)
        return called, sunk, consumer

    return asyncio.run(run())


def test_the_fetch_loop_guards_each_batch_once_and_hands_the_clickstream_over_in_bulk(tmp_path: Path) -> None:
    """faust guards every message's delivery with four tasks (a rebalance may interrupt it) and
    passes each through an event, a buffer and a stream; the worker's consumer guards each fetched
    batch once, hands the clickstream's messages to the runner's queue as one list per batch, and
    keeps faust's per-message rules: order, read offsets, an offset below the read one dropped."""
    from faust.types import TP

    from streams.faust_worker import _Consumer

    fetched = [[("t", 0), ("items", 7), ("t", 1), ("t", 2)], [("t", 3), ("t", 1), ("items", 8), ("t", 4)]]
    called, sunk, consumer = _fetch_loop(tmp_path, fetched)
    assert isinstance(consumer, _Consumer)
    assert sunk == [[0, 1, 2], [3, 4]]  # 1 again, below the read offset: dropped, as faust does
    assert called == [("items", 7), ("items", 8)]  # other topics: faust's own callback
    assert consumer._read_offset[TP("t", 0)] == 4
    assert consumer._read_offset[TP("items", 0)] == 8
    assert consumer.guards == 2  # one per fetched batch, not one per message


def test_a_rebalance_interrupts_a_batch_and_leaves_the_rest_unread(tmp_path: Path) -> None:
    """When the flow is suspended mid-batch, the messages not yet delivered are not marked read
    (after the assignment they are fetched again from the committed offsets), and the clickstream's
    share of the batch is not handed over."""
    from faust.types import TP

    called, sunk, consumer = _fetch_loop(tmp_path, [[("t", 5), ("items", 10), ("items", 11), ("items", 12)]], 2)
    assert called == [("items", 10), ("items", 11)]
    assert consumer._read_offset[TP("items", 0)] == 10  # 11's delivery was interrupted: not read either
    assert sunk == []


def test_bulk_batches_cut_merge_and_skip_what_a_rebalance_made_stale() -> None:
    """The runner's micro-batches from the fetched lists: at most `size` each, what is already
    fetched merged at once, a short one waiting `within_s` for more; a message `admit` refuses
    (fetched before a rebalance) is never handed to the runner."""
    import asyncio

    from streams.faust_worker import bulk_batches

    async def run() -> list[list[int]]:
        queue: asyncio.Queue[list[int]] = asyncio.Queue()
        for fetched in ([1, 2, 3], [4, 5], [6, 7, 8, 9, 10, 11]):
            queue.put_nowait(fetched)
        out: list[list[int]] = []
        batches = bulk_batches(queue, 4, 0.05, admit=lambda m: m != 7)
        for _ in range(2):
            out.append([t.message for t in await anext(batches)])
        later = asyncio.ensure_future(anext(batches))  # 9, 10, 11 are short of 4: it waits
        await asyncio.sleep(0.01)
        queue.put_nowait([12])  # fetched within the wait: joins them
        out.append([t.message for t in await later])
        return out

    assert asyncio.run(run()) == [[1, 2, 3, 4], [5, 6, 8], [9, 10, 11, 12]]


def test_a_message_from_before_a_rebalance_is_not_taken() -> None:
    """faust's stream skips a message fetched in an earlier group generation or while the flow is
    suspended; the bulk path does the same, and tracks the ones it takes as unacked (a rebalance
    then waits for their write)."""
    from streams.faust_worker import _admit

    tracked: list[object] = []
    flow = SimpleNamespace(active=True)
    app = SimpleNamespace(
        flow_control=SimpleNamespace(is_active=lambda: flow.active),
        consumer_generation_id=3,
        consumer=SimpleNamespace(track_message=tracked.append),
    )
    current, stale = SimpleNamespace(generation_id=3), SimpleNamespace(generation_id=2)
    assert _admit(app, current) and tracked == [current]
    assert not _admit(app, stale)
    flow.active = False
    assert not _admit(app, current)
    assert tracked == [current]

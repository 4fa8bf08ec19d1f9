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


def _fetch_loop(tmp_path: Path, batches: list[list[int]], suspend_after: int | None = None) -> tuple[list[int], Any]:
    """Run the worker consumer's fetch loop over `batches` of offsets (topic t, partition 0), with a
    callback that records each delivered offset (and suspends the flow after `suspend_after` of them);
    returns (delivered offsets, the consumer)."""
    import asyncio

    from faust.types import TP

    app = _app(tmp_path, WorkerSettings())

    async def run() -> tuple[list[int], Any]:
        consumer = app.consumer  # type: ignore[attr-defined]
        fetcher = SimpleNamespace(_stopped=asyncio.Event())
        tp = TP("t", 0)
        pending = list(batches)
        delivered: list[int] = []
        guards: list[int] = []

        def getmany(timeout: float) -> Any:
            async def fetched() -> Any:
                batch = pending.pop(0) if pending else []
                if not pending:
                    fetcher._stopped.set()  # the loop ends after this batch
                for offset in batch:
                    yield tp, SimpleNamespace(offset=offset, topic="t", tp=tp)

            return fetched()

        async def callback(message: Any) -> None:
            delivered.append(message.offset)
            if suspend_after is not None and len(delivered) == suspend_after:
                consumer.suspend_flow.set()  # a rebalance begins
                await asyncio.sleep(0.05)  # the delivery is still in progress when it does

        real_wait_first = consumer.wait_first

        async def wait_first(*coros: Any, **kw: Any) -> Any:
            guards.append(1)
            return await real_wait_first(*coros, **kw)

        consumer.getmany = getmany
        consumer.callback = callback
        consumer.wait_first = wait_first
        consumer._read_offset[tp] = None
        await consumer._drain_messages(fetcher)
        consumer.guards = len(guards)
        return delivered, consumer

    return asyncio.run(run())


def test_the_fetch_loop_delivers_each_batch_under_one_flow_guard(tmp_path: Path) -> None:
    """faust guards every message's delivery with four tasks (a rebalance may interrupt it); the
    worker's consumer guards each fetched batch once and keeps faust's per-message rules: every
    message in order, read offsets advanced, an offset below the read one dropped."""
    from faust.types import TP

    from streams.faust_worker import _Consumer

    delivered, consumer = _fetch_loop(tmp_path, [[0, 1, 2], [3, 1, 4]])
    assert isinstance(consumer, _Consumer)
    assert delivered == [0, 1, 2, 3, 4]  # 1 again, below the read offset: dropped, as faust does
    assert consumer._read_offset[TP("t", 0)] == 4
    assert consumer.guards == 2  # one per fetched batch, not one per message


def test_a_rebalance_interrupts_a_batch_and_leaves_the_rest_unread(tmp_path: Path) -> None:
    """When the flow is suspended mid-batch, the messages not yet delivered are not marked read:
    after the assignment they are fetched again from the committed offsets."""
    from faust.types import TP

    delivered, consumer = _fetch_loop(tmp_path, [[10, 11, 12, 13]], suspend_after=2)
    assert delivered == [10, 11]
    assert consumer._read_offset[TP("t", 0)] == 10  # 11's delivery was interrupted: not read either

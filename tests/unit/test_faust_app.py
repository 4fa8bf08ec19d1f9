"""The faust app's consumer settings that decide how fast partitions move after a crash or restart
(built without a broker: faust connects only when the worker runs)."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace

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

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

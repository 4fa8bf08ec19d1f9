"""A static group member that stops on purpose hands its partitions over at once (streams.static_leave),
against the REAL broker: without the leave they idle for the session timeout."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaConsumer

from streams.replay import ensure_topics
from streams.static_leave import install, installed

pytestmark = pytest.mark.integration

SESSION_MS = 10_000


@pytest.fixture
def restore_leave() -> Iterator[None]:
    was = installed()
    yield
    install(was)


async def _handover_s(bootstrap: str, topic: str) -> float:
    """Two static members share a 4-partition topic; the first stops cleanly: seconds until the second owns all."""
    ensure_topics(bootstrap, {topic: 4})

    def member(instance: str) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, group_id=topic, group_instance_id=instance,
            session_timeout_ms=SESSION_MS, heartbeat_interval_ms=500, auto_offset_reset="earliest",
        )  # fmt: skip

    first, second = member("first"), member("second")
    await first.start()
    await second.start()
    try:
        deadline = time.monotonic() + 60
        while not (first.assignment() and second.assignment()):  # polling drives each member's joins
            assert time.monotonic() < deadline, "the two members never shared the partitions"
            await asyncio.gather(first.getmany(timeout_ms=100), second.getmany(timeout_ms=100))
        await first.stop()
        stopped = time.monotonic()
        while len(second.assignment()) < 4 and time.monotonic() - stopped < 3 * SESSION_MS / 1000:
            await second.getmany(timeout_ms=100)
        assert len(second.assignment()) == 4
        return time.monotonic() - stopped
    finally:
        await second.stop()


def test_a_static_member_that_stops_leaves_and_one_that_does_not_holds_its_partitions(
    services: dict[str, str], unique: str, restore_leave: None
) -> None:
    install(True)
    left = asyncio.run(_handover_s(services["bootstrap"], f"leave-{unique}"))
    assert left < 3.0  # a rebalance, not the session timeout
    install(False)  # aiokafka's own behaviour, KIP-345's: the partitions wait for the id to come back
    held = asyncio.run(_handover_s(services["bootstrap"], f"hold-{unique}"))
    assert held >= SESSION_MS / 1000 * 0.8 > left

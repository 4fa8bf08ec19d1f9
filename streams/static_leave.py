"""A static group member (`worker.instance_id`, Kafka KIP-345) that stops on purpose leaves the group.

Why: a static member never sends LeaveGroup (aiokafka skips it, as the Java client does), so that a
process restarted under the same id finds its partitions still its own. But a worker that stops for
good (a rolling deploy's old pod, a scale-in, a spare supervisor's SIGTERM) then leaves its
partitions owned by nobody until its session times out: 10.4 s with no list written for half of the
users in `bench/stream.py --rolling-at 30 --static-membership` (two of four partitions; freshness p99
9.8 s over the 60 s after the rollout, 0.2 s with the leave). With
`worker.leave_on_stop` (the default), a static worker closing its consumer sends LeaveGroup v3 with
its instance id, the form that removes a static member (KIP-345's batch leave, brokers 2.4+), and
the group rebalances at once. A crash still leaves nothing, so a restart under the same id keeps
what static membership is for. Set it false for hosts that stop and come back under one name within
the session timeout (a StatefulSet pod's restart), where the partitions are better left waiting.

aiokafka speaks LeaveGroup v0-v1 only: this module adds the v3 request and makes the group
coordinator's leave step send it for a static member that is closing (`install`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka.consumer.group_coordinator import GroupCoordinator
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import Array, Int16, Int32, Schema, String

__all__ = ["LeaveGroupStatic", "install", "installed"]

log = logging.getLogger("fusionrec.worker")


class LeaveGroupResponseV3(Response):
    API_KEY = 13
    API_VERSION = 3
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("error_code", Int16),
        (
            "members",
            Array(("member_id", String("utf-8")), ("group_instance_id", String("utf-8")), ("error_code", Int16)),
        ),
    )


class LeaveGroupRequestV3(RequestStruct):
    API_KEY = 13
    API_VERSION = 3
    RESPONSE_TYPE = LeaveGroupResponseV3
    SCHEMA = Schema(
        ("group_id", String("utf-8")),
        ("members", Array(("member_id", String("utf-8")), ("group_instance_id", String("utf-8")))),
    )


class LeaveGroupStatic(Request[LeaveGroupRequestV3]):
    """One static member leaving: (member id, instance id); the broker needs both to remove it."""

    API_KEY = 13

    def __init__(self, group: str, member_id: str, instance_id: str) -> None:
        self.group, self.member_id, self.instance_id = group, member_id, instance_id

    def build(self, request_struct_class: type[LeaveGroupRequestV3]) -> LeaveGroupRequestV3:
        return request_struct_class(self.group, [(self.member_id, self.instance_id)])


_original: Callable[[GroupCoordinator], Awaitable[None]] | None = None


def installed() -> bool:
    return _original is not None


def install(leave: bool = True) -> None:
    """Make a closing static member leave (`leave`), or restore aiokafka's own step. Process-wide:
    every consumer of this process's worker shares its one setting. Only a close leaves: the
    coordinator also calls the step when a poll overran max.poll.interval, which stays aiokafka's."""
    global _original
    if not leave:
        if _original is not None:
            GroupCoordinator._maybe_leave_group = _original
            _original = None
        return
    if _original is not None:
        return
    original = GroupCoordinator._maybe_leave_group

    async def maybe_leave_group(self: Any) -> None:
        instance_id = self._group_instance_id
        if instance_id is None or self.generation <= 0 or not self._closing.done():
            await original(self)
            return
        try:
            resp = await self._send_req(LeaveGroupStatic(self.group_id, self.member_id, instance_id))
        except Exception as exc:  # a best effort, as aiokafka's own leave: the session expires anyway
            log.warning("static_leave_failed instance_id=%s error=%s", instance_id, exc)
        else:
            codes = [resp.error_code, *(m[2] for m in resp.members or [])]
            if any(codes):
                log.warning("static_leave_refused instance_id=%s error_codes=%s", instance_id, codes)
            else:
                log.info("static_member_left group=%s instance_id=%s", self.group_id, instance_id)
        self.reset_generation()

    _original = original
    GroupCoordinator._maybe_leave_group = maybe_leave_group

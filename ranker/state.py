"""A user's state, and the pure fold `apply_events(state, deliveries) -> state`.

At-least-once delivery is made safe here, with no I/O:
- per source partition the highest applied offset is kept; a redelivered record (offset at or
  below it) is skipped, which makes crash replays exact however long they are;
- a bounded window of recent event ids catches the same event produced twice at two offsets.
`event_digest` (sum of 64-bit event-id hashes) fingerprints exactly which events were folded, so
"none lost, none counted twice" can be checked per user.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from schemas.events import Event, EventType

__all__ = ["Delivery", "UserState", "apply_events", "event_hash", "state_from_dict", "state_to_dict"]

RECENT_ITEMS = 50
RECENT_QUERIES = 10
SEEN_EVENT_IDS = 256
_MASK64 = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class Delivery:
    """An event as delivered: where it came from (`source`: topic:partition, or file) and its offset."""

    event: Event
    source: str
    offset: int


@dataclass(frozen=True, slots=True)
class UserState:
    user_id: str
    n_events: int = 0
    counts: Mapping[str, int] = field(default_factory=dict)
    recent_items: tuple[str, ...] = ()
    recent_types: tuple[str, ...] = ()
    recent_queries: tuple[str, ...] = ()
    #: event time (epoch ms) of each recent item, aligned with `recent_items` from the end (states
    #: written before it existed carry fewer): what "their recent events" shows people
    recent_ts: tuple[int, ...] = ()
    first_ts: int = 0
    last_ts: int = 0
    event_digest: int = 0
    recent_event_ids: tuple[str, ...] = ()
    offsets: Mapping[str, int] = field(default_factory=dict)

    def folded_view(self) -> dict[str, Any]:
        """What must be equal between a stored state and a fresh fold of the same events."""
        return {
            "n_events": self.n_events,
            "counts": dict(self.counts),
            "recent_items": self.recent_items,
            "recent_types": self.recent_types,
            "recent_queries": self.recent_queries,
            "recent_ts": self.recent_ts,
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
            "event_digest": self.event_digest,
        }


def event_hash(event_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "little")


def apply_events(state: UserState, deliveries: Iterable[Delivery]) -> tuple[UserState, int]:
    """Fold deliveries (in offset order) into the state; returns the new state and how many were applied."""
    counts = dict(state.counts)
    offsets = dict(state.offsets)
    items = list(state.recent_items)
    types = list(state.recent_types)
    times = list(state.recent_ts)
    queries = list(state.recent_queries)
    seen = list(state.recent_event_ids)
    seen_set = set(seen)
    n, digest, first_ts, last_ts = state.n_events, state.event_digest, state.first_ts, state.last_ts
    applied = 0
    for d in deliveries:
        ev = d.event
        if ev.user_id != state.user_id:
            raise ValueError(f"event {ev.event_id} of user {ev.user_id} folded into {state.user_id}")
        if d.offset <= offsets.get(d.source, -1):
            continue  # redelivery after a crash: already folded
        offsets[d.source] = d.offset
        if ev.event_id in seen_set:
            continue  # the same event produced twice
        seen.append(ev.event_id)
        seen_set.add(ev.event_id)
        n += 1
        applied += 1
        counts[ev.type.value] = counts.get(ev.type.value, 0) + 1
        digest = (digest + event_hash(ev.event_id)) & _MASK64
        first_ts = ev.ts if n == 1 else min(first_ts, ev.ts)
        last_ts = max(last_ts, ev.ts)
        if ev.type is EventType.SEARCH:
            assert ev.query is not None
            queries.append(ev.query)
        else:
            assert ev.item_id is not None
            items.append(ev.item_id)
            types.append(ev.type.value)
            times.append(ev.ts)
    if applied == 0 and offsets == state.offsets:
        return state, 0
    if len(seen) > SEEN_EVENT_IDS:
        seen = seen[-SEEN_EVENT_IDS:]
    new = replace(
        state,
        n_events=n,
        counts=counts,
        recent_items=tuple(items[-RECENT_ITEMS:]),
        recent_types=tuple(types[-RECENT_ITEMS:]),
        recent_ts=tuple(times[-RECENT_ITEMS:]),
        recent_queries=tuple(queries[-RECENT_QUERIES:]),
        first_ts=first_ts,
        last_ts=last_ts,
        event_digest=digest,
        recent_event_ids=tuple(seen),
        offsets=offsets,
    )
    return new, applied


def state_to_dict(state: UserState) -> dict[str, Any]:
    return {
        "user_id": state.user_id,
        "n_events": state.n_events,
        "counts": dict(state.counts),
        "recent_items": list(state.recent_items),
        "recent_types": list(state.recent_types),
        "recent_queries": list(state.recent_queries),
        "recent_ts": list(state.recent_ts),
        "first_ts": state.first_ts,
        "last_ts": state.last_ts,
        "event_digest": state.event_digest,
        "recent_event_ids": list(state.recent_event_ids),
        "offsets": dict(state.offsets),
    }


def state_from_dict(obj: Mapping[str, Any]) -> UserState:
    return UserState(
        user_id=obj["user_id"],
        n_events=int(obj["n_events"]),
        counts=dict(obj["counts"]),
        recent_items=tuple(obj["recent_items"]),
        recent_types=tuple(obj["recent_types"]),
        recent_queries=tuple(obj["recent_queries"]),
        recent_ts=tuple(int(t) for t in obj.get("recent_ts", ())),
        first_ts=int(obj["first_ts"]),
        last_ts=int(obj["last_ts"]),
        event_digest=int(obj["event_digest"]),
        recent_event_ids=tuple(obj["recent_event_ids"]),
        offsets={k: int(v) for k, v in obj["offsets"].items()},
    )

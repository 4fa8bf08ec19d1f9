from __future__ import annotations

import pytest

from ranker.state import Delivery, UserState, apply_events, event_hash, state_from_dict, state_to_dict
from schemas.events import Event, EventType


def _ev(i: int, etype: EventType = EventType.VIEW, user: str = "u") -> Event:
    if etype is EventType.SEARCH:
        return Event(f"e{i}", etype, user, 100 + i, query=f"q{i}")
    return Event(f"e{i}", etype, user, 100 + i, item_id=f"i{i}")


def _d(i: int, offset: int | None = None, etype: EventType = EventType.VIEW, source: str = "t:0") -> Delivery:
    return Delivery(_ev(i, etype), source, i if offset is None else offset)


def test_fold_counts_items_queries_and_digest() -> None:
    s, applied = apply_events(UserState("u"), [_d(0), _d(1, etype=EventType.PURCHASE), _d(2, etype=EventType.SEARCH)])
    assert applied == 3
    assert s.n_events == 3
    assert s.counts == {"view": 1, "purchase": 1, "search": 1}
    assert s.recent_items == ("i0", "i1")
    assert s.recent_types == ("view", "purchase")
    assert s.recent_queries == ("q2",)
    assert (s.first_ts, s.last_ts) == (100, 102)
    assert s.event_digest == (event_hash("e0") + event_hash("e1") + event_hash("e2")) % 2**64
    assert s.offsets == {"t:0": 2}


def test_redelivered_offsets_are_skipped() -> None:
    s1, _ = apply_events(UserState("u"), [_d(0), _d(1)])
    s2, applied = apply_events(s1, [_d(0), _d(1), _d(2)])  # crash replay re-sends 0 and 1
    assert applied == 1
    assert s2.n_events == 3
    fresh, _ = apply_events(UserState("u"), [_d(0), _d(1), _d(2)])
    assert s2.folded_view() == fresh.folded_view()


def test_same_event_at_two_offsets_counts_once() -> None:
    s, applied = apply_events(UserState("u"), [_d(0, offset=0), _d(0, offset=5)])
    assert applied == 1 and s.n_events == 1
    assert s.offsets == {"t:0": 5}  # the watermark still moves past the duplicate


def test_no_change_returns_same_object() -> None:
    s1, _ = apply_events(UserState("u"), [_d(0)])
    s2, applied = apply_events(s1, [_d(0)])
    assert applied == 0 and s2 is s1


def test_digest_is_order_independent_and_sources_are_separate() -> None:
    a, _ = apply_events(UserState("u"), [_d(0, source="t:0"), _d(1, offset=0, source="t:1")])
    assert a.n_events == 2 and a.offsets == {"t:0": 0, "t:1": 0}
    b, _ = apply_events(UserState("u"), [_d(1), _d(0, offset=3)])
    assert a.event_digest == b.event_digest


def test_wrong_user_is_rejected() -> None:
    with pytest.raises(ValueError, match="folded into"):
        apply_events(UserState("other"), [_d(0)])


def test_windows_are_bounded() -> None:
    s, _ = apply_events(UserState("u"), [_d(i) for i in range(400)])
    assert s.n_events == 400
    assert len(s.recent_items) == 50 and s.recent_items[-1] == "i399"
    assert len(s.recent_event_ids) == 256


def test_dict_round_trip() -> None:
    s, _ = apply_events(UserState("u"), [_d(0), _d(1, etype=EventType.SEARCH)])
    assert state_from_dict(state_to_dict(s)) == s

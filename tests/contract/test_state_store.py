"""StateStore contract: user state, the source of truth, over every store that holds it."""

from __future__ import annotations

from streams.stores.base import StateStore
from tests.contract.conftest import make_state


def test_unknown_users_are_absent(state_store: StateStore) -> None:
    assert state_store.get_states(["nobody"]) == {}
    assert state_store.get_states([]) == {}
    assert state_store.count_states() == 0


def test_states_round_trip_and_upsert(state_store: StateStore) -> None:
    a, b = make_state("alice", 3), make_state("bob ünïcødé", 1)
    state_store.put_states([a, b])
    assert state_store.get_states(["alice", "bob ünïcødé", "carol"]) == {"alice": a, "bob ünïcødé": b}
    a2 = make_state("alice", 7)
    state_store.put_states([a2])
    state_store.put_states([a2])  # idempotent
    assert state_store.get_states(["alice"])["alice"] == a2
    assert state_store.count_states() == 2


def test_many_states_in_one_call(state_store: StateStore) -> None:
    states = [make_state(f"u{i}", 1 + i % 3) for i in range(600)]
    state_store.put_states(states)
    got = state_store.get_states([s.user_id for s in states] + ["u0"])
    assert got == {s.user_id: s for s in states}
    assert state_store.count_states() == 600


def test_empty_writes_are_noops(state_store: StateStore) -> None:
    state_store.put_states([])
    assert state_store.count_states() == 0

"""The pipeline core over the in-memory store twin: decode, dead letters, dedup, back-pressure."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import orjson
import pytest

from ranker.cooccurrence import fit_cooccurrence
from ranker.state import Delivery, UserState, apply_events
from schemas.codec import encode_event
from schemas.errors import StoreUnavailable
from schemas.events import Event
from schemas.recommendations import RecommendationList
from shopdata.synthetic import generate_shop
from streams.core import Pipeline, RawRecord, RetryPolicy, StoppedError
from streams.state_cache import StateCache
from streams.stores.memory import MemoryStore


def _records(values: list[bytes], source: str = "t:0") -> list[RawRecord]:
    return [RawRecord(v, source, i) for i, v in enumerate(values)]


def _setup(n_users: int = 50) -> tuple[Pipeline, MemoryStore, list[bytes], dict[str, list[Delivery]]]:
    shop = generate_shop(n_users=n_users)
    store = MemoryStore()
    pipeline = Pipeline(store, fit_cooccurrence(shop.item_sequences()), k=5)
    values = [encode_event(e) for e in shop.events]
    expected: dict[str, list[Delivery]] = {}
    for i, e in enumerate(shop.events):
        expected.setdefault(e.user_id, []).append(Delivery(e, "t:0", i))
    return pipeline, store, values, expected


def test_batches_fold_exactly_and_replays_do_not_double_count() -> None:
    pipeline, store, values, expected = _setup()
    recs = _records(values)
    for start in range(0, len(recs), 97):
        pipeline.process(recs[start : start + 97])
    again = pipeline.process(recs[: len(recs) // 2])  # a crash replay of the first half
    assert again.n_applied == 0 and again.n_duplicates == len(recs) // 2
    for user, deliveries in expected.items():
        fresh, _ = apply_events(UserState(user), deliveries)
        assert store.states[user].folded_view() == fresh.folded_view()
        rec = store.lists[user]
        assert len(rec.items) == 5 and rec.newest_event_ts == fresh.last_ts
        assert not set(rec.item_ids()) & set(fresh.recent_items)


def test_invalid_records_become_dead_letters_and_valid_ones_flow() -> None:
    pipeline, store, values, _ = _setup(5)
    bad = [
        b"{oops",
        orjson.dumps({"event_id": "x", "type": "view", "user_id": "u"}),
        orjson.dumps({"event_id": "y", "type": "warp", "user_id": "u", "ts": 1, "item_id": "i"}),
        orjson.dumps({"event_id": "z", "type": "view", "user_id": "u", "ts": "soon", "item_id": "i"}),
    ]
    mixed = [values[0], bad[0], values[1], bad[1], bad[2], values[2], bad[3]]
    out = pipeline.process(_records(mixed))
    assert out.n_valid == 3 and out.n_applied == 3
    assert [(d.offset, d.field) for d in out.dead_letters] == [(1, "$"), (3, "ts"), (4, "type"), (6, "ts")]
    assert "not valid JSON" in out.dead_letters[0].reason
    assert out.dead_letters[0].raw == b"{oops"
    assert sum(s.n_events for s in store.states.values()) == 3


def test_store_outage_is_back_pressure_not_a_drop() -> None:
    shop = generate_shop(n_users=5)
    store = MemoryStore()
    sleeps: list[float] = []

    def sleep(s: float) -> None:
        sleeps.append(s)
        if len(sleeps) == 4:
            store.available = True  # the store comes back after four waits

    pipeline = Pipeline(
        store,
        fit_cooccurrence(shop.item_sequences()),
        k=5,
        retry=RetryPolicy(initial_delay_s=0.1, max_delay_s=0.3, sleep=sleep),
    )
    store.available = False
    out = pipeline.process(_records([encode_event(e) for e in shop.events]))
    assert sleeps == [0.1, 0.2, 0.3, 0.3]
    assert out.store_retries == 4
    assert out.n_applied == len(shop.events)
    assert sum(s.n_events for s in store.states.values()) == len(shop.events)


class _ListsThenStates(MemoryStore):
    """A store whose `put_results` is not atomic, as the ResultsStore contract allows: lists first,
    then states. It audits every state it writes (is that user's list already there, and as new?)
    and can crash between the two writes."""

    def __init__(self) -> None:
        super().__init__()
        self.crash_between = False
        self.orphans: list[str] = []  # users whose state was written before a list that matches it
        self.calls: list[tuple[list[str], list[str]]] = []

    def put_states(self, states: Sequence[UserState]) -> None:
        for s in states:
            rec = self.lists.get(s.user_id)
            if rec is None or rec.newest_event_ts < s.last_ts:
                self.orphans.append(s.user_id)
        super().put_states(states)

    def put_results(self, lists: Sequence[RecommendationList], states: Sequence[UserState]) -> None:
        self.calls.append(([r.user_id for r in lists], [s.user_id for s in states]))
        self.put_recommendations(lists)
        if self.crash_between:
            raise StoreUnavailable("crashed between the lists and the states")
        self.put_states(states)


def test_each_state_is_written_with_its_list_so_a_crash_replays_not_skips() -> None:
    """The pipeline's side of `put_results`: every touched user's list and state in ONE call, the
    list made from that very state. Then a store that is not atomic (lists, then states) never holds
    a state whose list is missing or older, and a crash between the two leaves the state behind, so
    the replayed events are applied, not skipped as already seen."""
    shop = generate_shop(n_users=40)
    store = _ListsThenStates()
    ranker = fit_cooccurrence(shop.item_sequences())
    recs = _records([encode_event(e) for e in shop.events])
    third = len(recs) // 3
    pipeline = Pipeline(store, ranker, k=5)
    for start in range(0, third, 50):
        pipeline.process(recs[start : min(start + 50, third)])
    assert store.calls and all(sorted(lists) == sorted(states) and states for lists, states in store.calls)

    store.crash_between = True  # the process dies in the middle of the next batch's write
    stopping = Pipeline(store, ranker, k=5, retry=RetryPolicy(sleep=lambda s: None, should_stop=lambda: True))
    with pytest.raises(StoppedError):
        stopping.process(recs[third : 2 * third])
    for user, state in store.states.items():
        assert store.lists[user].newest_event_ts >= state.last_ts, user

    store.crash_between = False  # restart: the uncommitted batch is delivered again, then the rest
    restarted = Pipeline(store, ranker, k=5)
    replay = restarted.process(recs[third : 2 * third])
    assert replay.n_applied == third and replay.n_duplicates == 0  # none skipped
    restarted.process(recs[2 * third :])
    assert store.orphans == []
    for user, deliveries in _by_user(shop.events).items():
        fresh, _ = apply_events(UserState(user), deliveries)
        assert store.states[user].folded_view() == fresh.folded_view()
        assert store.lists[user].newest_event_ts == fresh.last_ts


def _by_user(events: Sequence[Event]) -> dict[str, list[Delivery]]:
    out: dict[str, list[Delivery]] = {}
    for i, e in enumerate(events):
        out.setdefault(e.user_id, []).append(Delivery(e, "t:0", i))
    return out


def test_failure_raised_when_stopping_during_outage() -> None:
    store = MemoryStore()
    store.available = False
    shop = generate_shop(n_users=2)
    pipeline = Pipeline(
        store,
        fit_cooccurrence(shop.item_sequences()),
        retry=RetryPolicy(sleep=lambda s: None, should_stop=lambda: True),
    )
    try:
        pipeline.process(_records([encode_event(shop.events[0])]))
    except RuntimeError as exc:
        assert isinstance(exc.__cause__, StoreUnavailable)
    else:
        raise AssertionError("expected the pipeline to give up once asked to stop")


def test_prometheus_sensor_counts_what_the_pipeline_did() -> None:
    from prometheus_client import generate_latest

    from streams.metrics import PrometheusSensor

    shop = generate_shop(n_users=5)
    sensor = PrometheusSensor()
    pipeline = Pipeline(
        MemoryStore(),
        fit_cooccurrence(shop.item_sequences()),
        sensor=sensor,
        clock=lambda: shop.events[-1].ts / 1000 + 0.2,
    )
    values = [encode_event(e) for e in shop.events] + [b"{bad"]
    pipeline.process(_records(values))
    pipeline.process(_records(values))  # all duplicates the second time
    text = generate_latest(sensor.registry).decode()
    n = len(shop.events)
    assert f"fusionrec_events_total {2 * n + 2}.0" in text
    assert f"fusionrec_events_applied_total {n}.0" in text
    assert f"fusionrec_events_duplicate_total {n}.0" in text
    assert "fusionrec_dead_letters_total 2.0" in text
    assert "fusionrec_batch_seconds_count 2.0" in text
    assert "fusionrec_freshness_seconds_count 5.0" in text  # one per user whose list was refreshed


def _through_a_rebalance(rebalance: Callable[[StateCache], object]) -> tuple[int, int, int]:
    """Half a shop's events through a cached pipeline, `rebalance(cache)`, the other half, then a replay
    of the first half; asserts the replay applies nothing and every state is its exact fold. Returns
    (store reads before the rebalance, store reads after it, users first seen after it)."""
    shop = generate_shop(n_users=50)
    store = MemoryStore()
    reads: list[int] = []
    real_get = store.get_states

    def counting_get(users: Sequence[str]) -> dict[str, UserState]:
        reads.append(len(users))
        return real_get(users)

    store.get_states = counting_get  # type: ignore[method-assign,assignment]
    cache = StateCache(max_users=1000)
    pipeline = Pipeline(store, fit_cooccurrence(shop.item_sequences()), k=5, state_cache=cache)
    recs = _records([encode_event(e) for e in shop.events])
    half = len(recs) // 2
    for start in range(0, half, 97):
        pipeline.process(recs[start : min(start + 97, half)])
    before = sum(reads)
    rebalance(cache)
    for start in range(half, len(recs), 97):
        pipeline.process(recs[start : start + 97])
    after = sum(reads) - before
    again = pipeline.process(recs[:half])  # a replay of what was already applied: no double count
    assert again.n_applied == 0
    for user in {e.user_id for e in shop.events}:
        deliveries = [Delivery(e, "t:0", i) for i, e in enumerate(shop.events) if e.user_id == user]
        fresh, _ = apply_events(UserState(user), deliveries)
        assert store.states[user].folded_view() == fresh.folded_view()
    new_users = {e.user_id for e in shop.events[half:]} - {e.user_id for e in shop.events[:half]}
    return before, after, len(new_users)


def test_state_cache_skips_reads_and_stays_exact_across_invalidation() -> None:
    before, after, _ = _through_a_rebalance(StateCache.invalidate)  # a generation missed: all read again
    assert before <= 50  # each user read once (when first seen), then served from the cache
    assert after <= 50  # after the invalidation: each read again, once


def test_states_kept_across_a_rebalance_serve_without_reads_and_stay_exact() -> None:
    """A rebalance that leaves this worker its partition (the next generation) keeps their cached
    states: the rest of the stream reads only users never seen, and a replay double-counts nothing."""

    def next_generation(cache: StateCache) -> None:
        cached = len(cache)
        assert cached > 0
        cache.suspend()  # revoked ...
        assert cache.retain({"t:0"}) == cached  # ... and assigned again: every entry kept

    _, after, new_users = _through_a_rebalance(next_generation)
    assert after == new_users


def test_state_cache_is_bounded_and_drops_writes_from_an_old_generation() -> None:

    cache = StateCache(max_users=2)
    cache.put_many([UserState("a"), UserState("b"), UserState("c")], generation=0)
    found, missing = cache.get_many(["a", "b", "c"])
    assert set(found) == {"b", "c"} and missing == ["a"]  # least recently used went first
    gen = cache.generation
    cache.invalidate()
    cache.put_many([UserState("d")], generation=gen)  # a batch that began before the rebalance
    assert cache.get_many(["b", "d"]) == ({}, ["b", "d"])

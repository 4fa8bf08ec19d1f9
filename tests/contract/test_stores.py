"""One contract, every store: memory, SQLite and the real Cassandra node."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ranker.state import Delivery, UserState, apply_events
from schemas.events import Event, EventType
from schemas.recommendations import RecommendationList, ScoredItem
from streams.stores import MemoryStore, SQLiteStore, Store


@pytest.fixture(params=["memory", "sqlite", "cassandra", "sqlite+writer", "cassandra+writer"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s: Store
    kind = request.param.removesuffix("+writer")
    if kind == "memory":
        s = MemoryStore()
    elif kind == "sqlite":
        s = SQLiteStore(tmp_path / "store.db", url=f"sqlite:///{tmp_path / 'store.db'}")
    else:
        services = request.getfixturevalue("services")
        ks = request.getfixturevalue("cassandra_keyspace")
        from streams.stores.cassandra import CassandraStore

        s = CassandraStore([services["cassandra_host"]], int(services["cassandra_port"]), ks)
    if request.param.endswith("+writer"):  # batch writes from a child process (the worker's default)
        from streams.stores.offload import OffloadedWrites

        s = OffloadedWrites(s)
    s.setup()
    s.setup()  # idempotent
    yield s
    s.close()


def _state(user: str, n: int) -> UserState:
    events = [
        Delivery(Event(f"{user}-{i}", EventType.VIEW, user, 1000 + i, item_id=f"i{i}"), "t:0", i) for i in range(n)
    ]
    return apply_events(UserState(user), events)[0]


def _list(user: str, items: list[str], generated_at: int = 1_767_225_600_123) -> RecommendationList:
    return RecommendationList(
        user_id=user,
        items=tuple(ScoredItem(i, 1.0 / (r + 1)) for r, i in enumerate(items)),
        model_version="m1",
        config_digest="c1",
        generated_at=generated_at,
        newest_event_ts=generated_at - 5,
        source="personal",
    )


def test_unknown_users_are_absent(store: Store) -> None:
    assert store.get_states(["nobody"]) == {}
    assert store.get_recommendations("nobody") is None
    assert store.count_states() == 0


def test_states_round_trip_and_upsert(store: Store) -> None:
    a, b = _state("alice", 3), _state("bob ünïcødé", 1)
    store.put_states([a, b])
    assert store.get_states(["alice", "bob ünïcødé", "carol"]) == {"alice": a, "bob ünïcødé": b}
    a2 = _state("alice", 7)
    store.put_states([a2])
    store.put_states([a2])  # idempotent
    assert store.get_states(["alice"])["alice"] == a2
    assert store.count_states() == 2


def test_many_states_in_one_call(store: Store) -> None:
    states = [_state(f"u{i}", 1 + i % 3) for i in range(600)]
    store.put_states(states)
    got = store.get_states([s.user_id for s in states] + ["u0"])
    assert got == {s.user_id: s for s in states}


def test_recommendations_round_trip_and_upsert(store: Store) -> None:
    store.put_recommendations([_list("alice", ["x", "y", "z"])])
    got = store.get_recommendations("alice")
    assert got is not None
    assert got.item_ids() == ["x", "y", "z"]
    assert [s.score for s in got.items] == pytest.approx([1.0, 0.5, 1 / 3], rel=1e-6)
    assert (got.model_version, got.config_digest, got.source) == ("m1", "c1", "personal")
    assert got.generated_at == 1_767_225_600_123  # millisecond precision survives
    assert got.newest_event_ts == 1_767_225_600_118
    store.put_recommendations([_list("alice", ["q"], generated_at=1_767_225_700_000)])
    again = store.get_recommendations("alice")
    assert again is not None and again.item_ids() == ["q"]


def test_empty_writes_are_noops(store: Store) -> None:
    store.put_states([])
    store.put_recommendations([])
    assert store.count_states() == 0


def test_item_tags_round_trip_and_upsert(store: Store) -> None:
    assert store.get_item_tags(["nothing"]) == {}
    store.put_item_tags({"a": [("sanding roll", 0.8), ("grit", 0.5)], "b": [("pipette", 0.7)]}, model="m")
    got = store.get_item_tags(["a", "b", "c", "a"])
    assert set(got) == {"a", "b"}
    assert [t for t, _ in got["a"]] == ["sanding roll", "grit"]
    assert got["a"][0][1] == pytest.approx(0.8, abs=1e-6)
    store.put_item_tags({"a": [("adhesive", 0.9)]}, model="m2")
    assert [t for t, _ in store.get_item_tags(["a"])["a"]] == ["adhesive"]
    store.put_item_tags({}, model="m")


def test_a_dead_writer_process_is_restarted_and_the_batch_retried(tmp_path: Path) -> None:
    """Writer process killed: the call raises StoreUnavailable (the pipeline retries it: back-pressure),
    a new writer starts, and the retried batch lands."""
    from schemas.errors import StoreUnavailable
    from streams.stores.offload import OffloadedWrites

    s = OffloadedWrites(SQLiteStore(tmp_path / "w.db", url=f"sqlite:///{tmp_path / 'w.db'}"))
    s.setup()
    rec, st = _list("u1", ["a", "b"]), _state("u1", 2)
    s.put_results([rec], [st])
    s._proc.kill()
    s._proc.join(10)
    with pytest.raises(StoreUnavailable, match="writer process died"):
        s.put_results([rec], [st])
    s.put_results([_list("u2", ["c"])], [_state("u2", 1)])  # a fresh writer
    assert s.get_recommendations("u2") is not None and s.get_states(["u1", "u2"]).keys() == {"u1", "u2"}
    s.close()


def test_put_results_writes_lists_and_states_together(store: Store) -> None:
    states = [_state(f"r{i}", 3) for i in range(30)]
    lists = [_list(f"r{i}", [f"i{i}", "x"]) for i in range(30)]
    store.put_results(lists, states)
    got = store.get_states([s.user_id for s in states])
    assert {u: s.folded_view() for u, s in got.items()} == {s.user_id: s.folded_view() for s in states}
    for r in lists:
        back = store.get_recommendations(r.user_id)
        assert back is not None and back.item_ids() == r.item_ids()
    store.put_results([], [_state("only-state", 2)])  # a state without a list is still written
    assert "only-state" in store.get_states(["only-state"])
    store.put_results([], [])


def test_cassandra_batches_follow_the_cluster_warning_threshold(
    services: dict[str, str], cassandra_keyspace: str
) -> None:
    """Unset batch size: read from the node (deploy/local warns at 64 KiB) and capped at 40 KiB;
    a set one wins; a batch never spans more users than `batch_users`."""
    from streams.stores.cassandra import MAX_AUTO_BATCH_BYTES, CassandraStore, _warn_threshold

    auto = CassandraStore([services["cassandra_host"]], int(services["cassandra_port"]), cassandra_keyspace)
    auto.setup()
    assert _warn_threshold(auto.session) == 64 * 1024
    assert auto.batch_bytes == MAX_AUTO_BATCH_BYTES
    fixed = CassandraStore(
        [services["cassandra_host"]],
        int(services["cassandra_port"]),
        cassandra_keyspace,
        batch_bytes=2048,
        batch_users=3,
    )
    fixed.setup()
    assert fixed.batch_bytes == 2048
    import datetime as dt

    stmt, now = fixed._stmts["upsert_state"], dt.datetime.now(tz=dt.UTC)
    writes = [(f"u{i}", [(stmt, (f"u{i}", b"{}", now))], 100) for i in range(10)]
    assert [len(b._statements_and_parameters) for b in fixed._replica_batches(writes)] == [3, 3, 3, 1]  # type: ignore[arg-type]
    auto.close()
    fixed.close()


def test_migrate_names_list_columns_from_an_older_schema(
    services: dict[str, str], cassandra_keyspace: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A table made by the pre-frozen schema is not altered by IF NOT EXISTS: migrate says so."""
    from streams.stores.cassandra import connect, migrate, outdated_columns

    cluster, session = connect([services["cassandra_host"]], int(services["cassandra_port"]))
    ks = f"{cassandra_keyspace}_old"
    session.execute(f"CREATE KEYSPACE {ks} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': 1}}")
    session.execute(f"CREATE TABLE {ks}.recommendations (user_id text PRIMARY KEY, item_ids list<text>)")
    with caplog.at_level("WARNING", logger="fusionrec.store"):
        migrate(session, ks)
    assert outdated_columns(session, ks) == ["recommendations.item_ids list<text>"]
    assert "schema_outdated column=recommendations.item_ids" in caplog.text
    migrate(session, cassandra_keyspace)
    assert outdated_columns(session, cassandra_keyspace) == []  # the current schema has none
    session.execute(f"DROP KEYSPACE {ks}", timeout=60)
    cluster.shutdown()

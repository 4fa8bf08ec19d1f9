"""The stores under contract, one parametrised fixture per port: each suite runs over every store
that implements its port (memory, SQLite, the real Cassandra node, and the worker's writer-process
wrapper where it applies). Cassandra parameters carry the `integration` marker, so
`pytest -m "not integration"` runs the rest without services."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ranker.state import Delivery, UserState, apply_events
from schemas.events import Event, EventType
from schemas.recommendations import RecommendationList, ScoredItem
from streams.stores import MemoryStore, SQLiteStore
from streams.stores.base import CatalogStore, DeadLetterStore, RecommendationStore, ResultsStore, StateStore

CASSANDRA = pytest.param("cassandra", marks=pytest.mark.integration)
CASSANDRA_WRITER = pytest.param("cassandra+writer", marks=pytest.mark.integration)
RESULTS_STORES = ["memory", "sqlite", CASSANDRA, "sqlite+writer", CASSANDRA_WRITER]
CATALOG_STORES = ["memory", "sqlite", CASSANDRA]
DEAD_LETTER_STORES = ["memory", "sqlite"]  # Cassandra has none: Kafka mode uses a dead-letter topic


def _open(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    kind = request.param.removesuffix("+writer")
    s: Any
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
        s.begin()  # as the worker does: the writer process starts before setup waits for it
    s.setup()
    s.setup()  # idempotent
    yield s
    s.close()


@pytest.fixture(params=RESULTS_STORES)
def state_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    yield from _open(request, tmp_path)


@pytest.fixture(params=RESULTS_STORES)
def recommendation_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RecommendationStore]:
    yield from _open(request, tmp_path)


@pytest.fixture(params=RESULTS_STORES)
def results_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ResultsStore]:
    yield from _open(request, tmp_path)


@pytest.fixture(params=CATALOG_STORES)
def catalog_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CatalogStore]:
    yield from _open(request, tmp_path)


@pytest.fixture(params=DEAD_LETTER_STORES)
def dead_letter_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DeadLetterStore]:
    yield from _open(request, tmp_path)


def make_state(user: str, n: int) -> UserState:
    events = [
        Delivery(Event(f"{user}-{i}", EventType.VIEW, user, 1000 + i, item_id=f"i{i}"), "t:0", i) for i in range(n)
    ]
    return apply_events(UserState(user), events)[0]


def make_list(user: str, items: list[str], generated_at: int = 1_767_225_600_123) -> RecommendationList:
    return RecommendationList(
        user_id=user,
        items=tuple(ScoredItem(i, 1.0 / (r + 1)) for r, i in enumerate(items)),
        model_version="m1",
        config_digest="c1",
        generated_at=generated_at,
        newest_event_ts=generated_at - 5,
        source="personal",
    )

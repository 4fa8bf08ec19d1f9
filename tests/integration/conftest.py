"""Per-test names (topics, group, keyspace) and a connected Cassandra store for integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from streams.stores.cassandra import CassandraStore


@pytest.fixture
def names(unique: str, cassandra_keyspace: str) -> dict[str, str]:
    return {
        "topic": f"clicks-{unique}",
        "dead_letter_topic": f"clicks-{unique}.dlq",
        "group": f"g-{unique}",
        "keyspace": cassandra_keyspace,
    }


@pytest.fixture
def store(services: dict[str, str], cassandra_keyspace: str) -> Iterator[CassandraStore]:
    s = CassandraStore([services["cassandra_host"]], int(services["cassandra_port"]), cassandra_keyspace)
    s.setup()
    yield s
    s.close()

"""Cassandra specifics beyond the port contracts: batch sizing and schema migration checks."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


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
    assert [len(b._statements_and_parameters) for b in fixed._replica_batches(writes)] == [3, 3, 3, 1]
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

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


def test_a_writer_logs_the_node_s_spread_batch_warning_once(
    services: dict[str, str], cassandra_keyspace: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The local node warns of every UNLOGGED batch over 10 partitions: three batches of 16 users
    each drew the warning (counted), and one line of it reached the log."""
    import json
    import time

    from streams.stores.cassandra import _SPREAD_BATCHES, CassandraStore

    store = CassandraStore([services["cassandra_host"]], int(services["cassandra_port"]), cassandra_keyspace)
    store.setup()
    before = _SPREAD_BATCHES.seen
    now = int(time.time() * 1000)
    rows = [
        [f"spread{i}", ["i1", "i2"], [0.5, 0.4], "v1", "d", "personal", now, now, json.dumps({"user_id": f"spread{i}"})]
        for i in range(48)
    ]
    with caplog.at_level("WARNING", logger="cassandra.protocol"):
        store.put_result_rows(rows)
    store.close()
    assert _SPREAD_BATCHES.seen - before == 3  # each batch of 16 users drew the node's warning
    logged = [r for r in caplog.records if "Unlogged batch covering" in r.getMessage()]
    assert len(logged) == (1 if before == 0 else 0)

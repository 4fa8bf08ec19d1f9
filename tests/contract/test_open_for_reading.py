"""Opening a store for reading (`create=False`: `recommend`, `serve`) never creates one: a mistyped
path or keyspace is a ConfigError that names it, and nothing is left behind."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from schemas.errors import ConfigError
from streams.stores import open_store
from tests.contract.conftest import make_list, make_state


def test_a_missing_sqlite_file_is_an_error_and_is_not_created(tmp_path: Path) -> None:
    typo = tmp_path / "no-such-dir" / "typo.db"
    store = open_store(f"sqlite:///{typo}", create=False)
    with pytest.raises(ConfigError, match=f"no SQLite store at {typo}: the file does not exist"):
        store.setup()
    with pytest.raises(ConfigError):
        store.get_recommendations("u1")  # a lazy first use does not create it either
    assert not typo.exists() and not typo.parent.exists()
    assert list(tmp_path.iterdir()) == []


def test_a_file_that_is_not_a_store_is_an_error_and_is_left_as_it_was(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE notes (t TEXT)")
    conn.close()
    before = other.read_bytes()
    with pytest.raises(ConfigError, match="lacks table"):
        open_store(f"sqlite:///{other}", create=False).setup()
    assert other.read_bytes() == before
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(ConfigError, match="no SQLite store at"):
        open_store(f"sqlite:///{garbage}", create=False).setup()


def test_an_existing_sqlite_store_opens_for_reading(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    writer = open_store(f"sqlite:///{db}")
    writer.setup()
    writer.put_results([make_list("u1", ["a", "b"])], [make_state("u1", 2)])
    writer.close()
    reader = open_store(f"sqlite:///{db}", create=False)
    reader.setup()
    got = reader.get_recommendations("u1")
    assert got is not None and got.item_ids() == ["a", "b"]
    assert reader.get_item_tags(["a"]) == {}
    reader.close()


@pytest.mark.integration
def test_a_missing_cassandra_keyspace_is_an_error_and_is_not_created(
    services: dict[str, str], cassandra_keyspace: str
) -> None:
    from streams.stores.cassandra import connect

    url = f"cassandra://{services['cassandra_host']}:{services['cassandra_port']}/{cassandra_keyspace}"
    with pytest.raises(ConfigError, match=f"no Cassandra keyspace '{cassandra_keyspace}'"):
        open_store(url, create=False).setup()
    cluster, session = connect([services["cassandra_host"]], int(services["cassandra_port"]))
    try:
        assert cassandra_keyspace not in cluster.metadata.keyspaces
        # a keyspace without our tables: an error too, and no table is made in it
        session.execute(
            f"CREATE KEYSPACE {cassandra_keyspace} WITH replication = {{'class': 'SimpleStrategy', "
            "'replication_factor': 1}",
            timeout=60,
        )
        with pytest.raises(ConfigError, match="is not a fusionrec store"):
            open_store(url, create=False).setup()
        cluster.refresh_schema_metadata()
        assert cluster.metadata.keyspaces[cassandra_keyspace].tables == {}
    finally:
        cluster.shutdown()


@pytest.mark.integration
def test_an_existing_cassandra_store_opens_for_reading(services: dict[str, str], cassandra_keyspace: str) -> None:
    url = f"cassandra://{services['cassandra_host']}:{services['cassandra_port']}/{cassandra_keyspace}"
    writer = open_store(url)
    writer.setup()
    writer.put_results([make_list("u1", ["a", "b"])], [make_state("u1", 2)])
    writer.close()
    reader = open_store(url, create=False)
    reader.setup()
    got = reader.get_recommendations("u1")
    assert got is not None and got.item_ids() == ["a", "b"]
    reader.close()

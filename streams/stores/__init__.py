"""Stores for user state, recommendation lists, item tags and dead letters, chosen by URL:
`memory://`, `sqlite:///path/to.db`, `cassandra://host1,host2:9042/keyspace[?batch_users=16&batch_kib=N]`
(batch_kib unset: the cluster's batch warning threshold, read at setup).

Callers depend on the ports in `streams.stores.base` (the pipeline: `ResultsStore`; the read API:
`RecommendationStore` + `CatalogStore`; the embedded runtime: `DeadLetterStore`), not on a store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias
from urllib.parse import parse_qs, urlparse

from schemas.errors import ConfigError
from streams.settings import CassandraSettings
from streams.stores.base import (
    CatalogStore,
    DeadLetterRecord,
    DeadLetterStore,
    RecommendationStore,
    ResultsStore,
    StateStore,
)
from streams.stores.memory import MemoryStore
from streams.stores.sqlite import SQLiteStore

if TYPE_CHECKING:  # the Cassandra driver is imported only when a cassandra:// URL is opened
    from streams.stores.cassandra import CassandraStore

__all__ = [
    "CatalogStore",
    "DeadLetterRecord",
    "DeadLetterStore",
    "MemoryStore",
    "RecommendationStore",
    "ResultsStore",
    "SQLiteStore",
    "StateStore",
    "UrlStore",
    "open_store",
]

# What a URL can name: every one is a ResultsStore and a CatalogStore; memory and SQLite are also
# DeadLetterStores. A union (for type checkers only), so each caller passes on the port it needs.
UrlStore: TypeAlias = "MemoryStore | SQLiteStore | CassandraStore"


def open_store(
    url: str, *, replication: str | None = None, create: bool = True, cassandra: CassandraSettings | None = None
) -> UrlStore:
    """Build (not connect) the store a URL names; call `setup()` to connect. `create=False` for
    readers: `setup` then opens an existing store only and raises ConfigError for one that is not
    there (a mistyped path or keyspace), instead of creating an empty one. `cassandra`: the login,
    TLS and consistency levels a cassandra:// store uses (kept out of the URL, which is logged)."""
    parsed = urlparse(url)
    if parsed.scheme == "memory":
        return MemoryStore(url)
    if parsed.scheme == "sqlite":
        path = url[len("sqlite:///") :] if url.startswith("sqlite:///") else parsed.path
        if not path:
            raise ConfigError(f"store URL {url!r} names no file; use sqlite:///path/to/fusionrec.db")
        if url.startswith("sqlite:////"):
            path = "/" + path.lstrip("/")
        return SQLiteStore(path, url=url, create=create)
    if parsed.scheme == "cassandra":
        # lazy: cassandra-driver costs ~0.4 s at import; memory and SQLite users never need it
        from streams.stores.cassandra import CassandraStore

        netloc = parsed.netloc
        hostpart, _, port = netloc.rpartition(":") if ":" in netloc else (netloc, "", "9042")
        keyspace = parsed.path.strip("/") or "fusionrec"
        hosts = [h for h in hostpart.split(",") if h] or ["127.0.0.1"]
        query = parse_qs(parsed.query)
        try:
            batch_users = int(query.get("batch_users", ["16"])[0])
            batch_kib = int(query["batch_kib"][0]) if "batch_kib" in query else None
        except ValueError as exc:
            raise ConfigError(f"store URL {url!r}: batch_users and batch_kib must be integers") from exc
        return CassandraStore(
            hosts,
            int(port or 9042),
            keyspace,
            replication=replication,
            url=url,
            batch_users=batch_users,
            batch_bytes=batch_kib * 1024 if batch_kib else None,
            create=create,
            access=cassandra,
        )
    raise ConfigError(f"unknown store URL {url!r}: use memory://, sqlite:///path or cassandra://host:port/keyspace")

"""Stores for user state and recommendation lists, chosen by URL:
`memory://`, `sqlite:///path/to.db`, `cassandra://host1,host2:9042/keyspace[?batch_users=16&batch_kib=N]`
(batch_kib unset: the cluster's batch warning threshold, read at setup).
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

from schemas.errors import ConfigError
from streams.stores.base import Store
from streams.stores.memory import MemoryStore
from streams.stores.sqlite import SQLiteStore

__all__ = ["MemoryStore", "SQLiteStore", "Store", "open_store"]


def open_store(url: str, *, replication: str | None = None) -> Store:
    """Build (not connect) the store a URL names; call `setup()` to connect."""
    parsed = urlparse(url)
    if parsed.scheme == "memory":
        return MemoryStore(url)
    if parsed.scheme == "sqlite":
        path = url[len("sqlite:///") :] if url.startswith("sqlite:///") else parsed.path
        if not path:
            raise ConfigError(f"store URL {url!r} names no file; use sqlite:///path/to/fusionrec.db")
        if url.startswith("sqlite:////"):
            path = "/" + path.lstrip("/")
        return SQLiteStore(path, url=url)
    if parsed.scheme == "cassandra":
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
        )
    raise ConfigError(f"unknown store URL {url!r}: use memory://, sqlite:///path or cassandra://host:port/keyspace")

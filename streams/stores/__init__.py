"""Stores for user state and recommendation lists, chosen by URL:
`memory://`, `sqlite:///path/to.db`, `cassandra://host1,host2:9042/keyspace`.
"""

from __future__ import annotations

from urllib.parse import urlparse

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
        return CassandraStore(hosts, int(port or 9042), keyspace, replication=replication, url=url)
    raise ConfigError(f"unknown store URL {url!r}: use memory://, sqlite:///path or cassandra://host:port/keyspace")

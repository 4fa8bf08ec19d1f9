"""The CQL DDL (schema.cql) and the statements the Cassandra adapters prepare."""

from __future__ import annotations

import re
from importlib import resources

__all__ = [
    "SELECT_ITEM_TAGS",
    "SELECT_RECOMMENDATIONS",
    "SELECT_STATE",
    "SELECT_STATES_IN",
    "UPSERT_ITEM_TAGS",
    "UPSERT_RECOMMENDATIONS",
    "UPSERT_STATE",
    "ddl_statements",
    "replication_clause",
]

_KEYSPACE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,47}$")


def replication_clause(
    strategy: str = "SimpleStrategy", factor: int = 1, datacenters: dict[str, int] | None = None
) -> str:
    """CQL replication map: SimpleStrategy with a factor, or NetworkTopologyStrategy per datacenter."""
    if strategy == "NetworkTopologyStrategy":
        if not datacenters:
            raise ValueError("NetworkTopologyStrategy needs datacenters, e.g. {'dc1': 3}")
        dcs = ", ".join(f"'{dc}': {n}" for dc, n in datacenters.items())
        return f"{{'class': 'NetworkTopologyStrategy', {dcs}}}"
    if strategy != "SimpleStrategy":
        raise ValueError(f"unknown replication strategy {strategy!r}")
    if factor < 1:
        raise ValueError("replication factor must be >= 1")
    return f"{{'class': 'SimpleStrategy', 'replication_factor': {factor}}}"


def ddl_statements(keyspace: str, replication: str) -> list[str]:
    """The DDL as separate statements, with keyspace and replication filled in."""
    if not _KEYSPACE_RE.match(keyspace):
        raise ValueError(f"invalid keyspace name {keyspace!r}: letters, digits, underscore; max 48")
    text = resources.files("schemas").joinpath("schema.cql").read_text()
    body = "\n".join(line for line in text.splitlines() if not line.strip().startswith("--"))
    body = body.replace("{keyspace}", keyspace).replace("{replication}", replication)
    return [s.strip() for s in body.split(";") if s.strip()]


UPSERT_STATE = "INSERT INTO {ks}.user_state (user_id, state, updated_at) VALUES (?, ?, ?)"
SELECT_STATE = "SELECT state FROM {ks}.user_state WHERE user_id = ?"
SELECT_STATES_IN = "SELECT user_id, state FROM {ks}.user_state WHERE user_id IN ?"
UPSERT_RECOMMENDATIONS = (
    "INSERT INTO {ks}.recommendations (user_id, item_ids, scores, model_version, config_digest, source, "
    "generated_at, newest_event_ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
SELECT_RECOMMENDATIONS = (
    "SELECT user_id, item_ids, scores, model_version, config_digest, source, generated_at, newest_event_ts "
    "FROM {ks}.recommendations WHERE user_id = ?"
)
UPSERT_ITEM_TAGS = "INSERT INTO {ks}.item_tags (item_id, tags, scores, model, updated_at) VALUES (?, ?, ?, ?, ?)"
SELECT_ITEM_TAGS = "SELECT item_id, tags, scores FROM {ks}.item_tags WHERE item_id = ?"

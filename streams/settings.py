"""Settings sections the streaming runtimes read: Kafka, Cassandra and the worker.

Defined here, below the CLI, so the runtimes take these frozen sections as they are (no copy
field by field); `fusionrec.settings` composes them with the other sections and reads the TOML
file and the environment once.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from schemas.cql import replication_clause

__all__ = ["CassandraSettings", "Frozen", "KafkaSettings", "WorkerSettings"]


class Frozen(BaseModel):
    """A settings section: immutable, and an unknown key is an error naming it."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(Frozen):
    bootstrap: str = "127.0.0.1:9092"
    topic: str = "clickstream"
    dead_letter_topic: str = "clickstream.dead-letter"
    items_topic: str = "items"
    group: str = "fusionrec-worker"
    partitions: int = Field(4, ge=1)


class CassandraSettings(Frozen):
    hosts: tuple[str, ...] = ("127.0.0.1",)
    port: int = 9042
    keyspace: str = "fusionrec"
    replication_strategy: str = "SimpleStrategy"
    replication_factor: int = Field(1, ge=1)
    datacenters: dict[str, int] = Field(default_factory=dict)
    batch_users: int = Field(16, ge=1, description="users per UNLOGGED write batch (1: one request per user)")
    batch_kib: int | None = Field(
        None,
        ge=1,
        description="KiB per write batch; unset: the cluster's batch_size_warn_threshold (read at start; "
        "5 KiB on a stock cluster, 64 KiB with deploy/local), at most 40",
    )

    @property
    def url(self) -> str:
        url = f"cassandra://{','.join(self.hosts)}:{self.port}/{self.keyspace}"
        tuning = {"batch_users": self.batch_users if self.batch_users != 16 else None, "batch_kib": self.batch_kib}
        query = "&".join(f"{k}={v}" for k, v in tuning.items() if v is not None)
        if query:
            url += f"?{query}"
        return url

    def replication(self) -> str:
        return replication_clause(self.replication_strategy, self.replication_factor, self.datacenters or None)


class WorkerSettings(Frozen):
    batch_size: int = Field(500, ge=1, description="events per micro-batch")
    batch_within_s: float = Field(0.05, gt=0, description="max wait to fill a micro-batch")
    k: int = Field(20, ge=1, le=1000, description="length of each stored list")
    commit_interval_s: float = Field(1.0, gt=0, description="how often acked offsets are committed")
    store_url: str | None = Field(None, description="overrides the Cassandra store, e.g. sqlite:///x.db")
    state_cache_users: int = Field(
        200_000, ge=0, description="user states kept in the worker (dropped at every rebalance); 0: always read"
    )
    writer_process: bool = Field(
        True, description="write batches from a child process with its own interpreter lock (Cassandra, SQLite)"
    )
    batches_in_flight: int = Field(
        2, ge=1, description="batches taken but not yet processed, beyond the two in the pipeline (back-pressure)"
    )
    log_every_s: float = Field(5.0, gt=0, description="how often a worker_progress line is logged")
    metrics_host: str = Field(
        "127.0.0.1", description="address the Prometheus endpoint binds (loopback; 0.0.0.0: every interface)"
    )
    metrics_port: int | None = Field(None, ge=1, le=65535, description="Prometheus endpoint's port; unset: none")

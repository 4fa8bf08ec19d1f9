"""Settings sections the streaming runtimes read: Kafka, Cassandra and the worker.

Defined here, below the CLI, so the runtimes take these frozen sections as they are (no copy
field by field); `fusionrec.settings` composes them with the other sections and reads the TOML
file and the environment once.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from schemas.cql import replication_clause

__all__ = [
    "READ_CONSISTENCY",
    "WRITE_CONSISTENCY",
    "CassandraSettings",
    "Frozen",
    "KafkaSettings",
    "TextFromEnv",
    "WorkerSettings",
]

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"]
# cassandra.ConsistencyLevel names (not imported: the driver costs ~0.4 s and settings load for every
# command); SERIAL levels only read, ANY and EACH_QUORUM only write
WriteConsistency = Literal["ANY", "ONE", "TWO", "THREE", "QUORUM", "ALL", "LOCAL_QUORUM", "EACH_QUORUM", "LOCAL_ONE"]
ReadConsistency = Literal["ONE", "TWO", "THREE", "QUORUM", "ALL", "LOCAL_QUORUM", "LOCAL_ONE", "SERIAL", "LOCAL_SERIAL"]
WRITE_CONSISTENCY: tuple[str, ...] = get_args(WriteConsistency)
READ_CONSISTENCY: tuple[str, ...] = get_args(ReadConsistency)


def _upper(value: Any) -> Any:
    """Names are matched case-insensitively (`sasl_ssl`, `local_quorum`)."""
    return value.upper() if isinstance(value, str) else value


def _secret(value: Any) -> Any:
    """A TOML number is still a password; never let a type error echo the value in a message."""
    return str(value) if isinstance(value, int | float) else value


class TextFromEnv:
    """Field marker (`Annotated[tuple[str, ...], TextFromEnv]`): a variable's value reaches the
    field's own validator as text (comma-separated, say) instead of being read as JSON
    (fusionrec.settings)."""


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
    security_protocol: SecurityProtocol = Field("PLAINTEXT", description="how clients reach the brokers")
    sasl_mechanism: SaslMechanism = Field("SCRAM-SHA-512", description="with SASL_PLAINTEXT / SASL_SSL")
    username: str | None = Field(None, description="SASL user")
    password: SecretStr | None = Field(None, description="SASL password (never printed or logged)")
    ssl_ca_file: str | None = Field(None, description="PEM CA bundle the brokers' certificates must chain to")
    ssl_cert_file: str | None = Field(None, description="PEM client certificate (mTLS), with ssl_key_file")
    ssl_key_file: str | None = Field(None, description="PEM private key of ssl_cert_file (unencrypted)")
    replication_factor: int = Field(1, ge=1, description="replicas of the topics fusionrec creates")
    min_insync_replicas: int = Field(1, ge=1, description="min.insync.replicas of the topics fusionrec creates")

    _names = field_validator("security_protocol", "sasl_mechanism", mode="before")(_upper)
    _password = field_validator("password", mode="before")(_secret)


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

    username: str | None = Field(None, description="PasswordAuthenticator role")
    password: SecretStr | None = Field(None, description="the role's password (never printed or logged)")
    ssl_ca_file: str | None = Field(None, description="PEM CA bundle for client-to-node TLS (TLS on when set)")
    ssl_cert_file: str | None = Field(None, description="PEM client certificate, with ssl_key_file")
    ssl_key_file: str | None = Field(None, description="PEM private key of ssl_cert_file (unencrypted)")
    ssl_check_hostname: bool = Field(
        True,
        description="the node's certificate must name the address dialled; false where nodes are reached by "
        "addresses no certificate can list (Kubernetes pod IPs): the chain to ssl_ca_file is still verified",
    )
    write_consistency: WriteConsistency | None = Field(
        None, description="unset: LOCAL_QUORUM when the replication factor is >= 3, else ONE"
    )
    read_consistency: ReadConsistency | None = Field(
        None, description="unset: LOCAL_QUORUM when the replication factor is >= 3, else ONE"
    )

    _names = field_validator("write_consistency", "read_consistency", mode="before")(_upper)
    _password = field_validator("password", mode="before")(_secret)

    def consistency(self, kind: Literal["write", "read"]) -> str:
        """The ConsistencyLevel name for writes or reads: the setting, else by the (smallest per-DC)
        replication factor: a quorum where one replica may be down, ONE where a quorum is every replica."""
        named = self.write_consistency if kind == "write" else self.read_consistency
        if named:
            return named
        factor = min(self.datacenters.values()) if self.datacenters else self.replication_factor
        return "LOCAL_QUORUM" if factor >= 3 else "ONE"

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
    ranking_stage: bool = Field(
        True, description="re-rank with the bundle's learned ranking stage when it has one (costs throughput)"
    )
    stage_budget_ms: int = Field(
        500,
        ge=0,
        description="a batch whose lists would be written later than this after its oldest event entered Kafka if it "
        "were ranked with the ranking stage (that event's wait so far, plus the batch's users times the last batches' "
        "ranking and write time per user) is ranked without the stage (several times as fast): fresh lists first "
        "after a start, a restart, a burst, or at a rate the stage cannot keep up with; 0: never",
    )
    rank_threads: int = Field(
        1,
        ge=0,
        le=64,
        description="threads that rank the chunks of a large batch at once (the ONNX sessions, matrix products and "
        "ranking trees run outside the interpreter lock): a backlog drains faster where a core is free; 0: one per "
        "core, at most 4. On the 2-core reference machine, where the brokers and the store share the cores, a second "
        "thread did not change freshness at 2,000 events/s (no core was free), so one is the default",
    )
    new_items_every: int = Field(
        2,
        ge=0,
        description="new arrivals (items without events in the bundle's training, or added live): from position "
        "new_items_after on, at least one in this many positions of a list is the best new item among the user's "
        "top new_items_share of the catalog by text, while one is left; 0: off (lists by model score only)",
    )
    new_items_after: int = Field(10, ge=0, description="positions at the top of each list that new arrivals never take")
    new_items_share: float = Field(
        0.1, gt=0, le=1, description="a new item is worth a slot within this share of the user's text ranking"
    )
    batch_within_s: float = Field(0.05, gt=0, description="max wait to fill a micro-batch")
    k: int = Field(20, ge=1, le=1000, description="length of each stored list")
    commit_interval_s: float = Field(
        0.2,
        gt=0,
        description="how often acked offsets are committed (what a restarted worker reads again is what was "
        "acked since the last commit)",
    )
    store_url: str | None = Field(None, description="overrides the Cassandra store, e.g. sqlite:///x.db")
    state_cache_users: int = Field(
        200_000,
        ge=0,
        description="user states kept in the worker (a rebalance keeps those of partitions still owned); 0: none",
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
    instance_id: str | None = Field(
        None,
        min_length=1,
        max_length=249,
        description="static consumer-group membership (Kafka KIP-345), unique per worker process: a worker "
        "restarted under the same id takes its partitions back at once instead of waiting for the dead "
        "one's session to expire (10 s); for workers that come back under one name (StatefulSet pods, "
        "systemd units). A static worker that stops on purpose leaves the group (worker.leave_on_stop); one "
        "that crashes holds its partitions until that session timeout",
    )
    leave_on_stop: bool = Field(
        True,
        description="a static worker (instance_id) that stops on purpose (SIGTERM) leaves the group, so its "
        "partitions move to the others at once instead of idling for the session timeout (a rolling "
        "deploy, a scale-in); a crash never leaves. False: they wait for a process that comes back under "
        "the same id (streams.static_leave)",
    )

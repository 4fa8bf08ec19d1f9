"""One typed, frozen settings object: defaults < TOML file < FUSIONREC_* environment variables.

The TOML file is `fusionrec.toml` in the working directory, or the path in FUSIONREC_CONFIG.
Nested keys use `__` in the environment: FUSIONREC_KAFKA__BOOTSTRAP=host:9092.
See `fusionrec.example.toml` for every option and its default.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from schemas.cql import replication_clause

__all__ = [
    "CassandraSettings",
    "EmbeddedSettings",
    "KafkaSettings",
    "Settings",
    "WorkerSettings",
    "load_settings",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(_Frozen):
    bootstrap: str = "127.0.0.1:9092"
    topic: str = "clickstream"
    dead_letter_topic: str = "clickstream.dead-letter"
    items_topic: str = "items"
    group: str = "fusionrec-worker"
    partitions: int = Field(4, ge=1)
    username: str | None = None
    password: SecretStr | None = None


class CassandraSettings(_Frozen):
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


class WorkerSettings(_Frozen):
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


class EmbeddedSettings(_Frozen):
    db: str = "out/fusionrec.db"
    batch_size: int = Field(500, ge=1)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FUSIONREC_", env_nested_delimiter="__", frozen=True, extra="ignore")

    kafka: KafkaSettings = KafkaSettings()
    cassandra: CassandraSettings = CassandraSettings()
    worker: WorkerSettings = WorkerSettings()
    embedded: EmbeddedSettings = EmbeddedSettings()
    data: str | None = Field(None, description="dataset folder; the synthetic shop when unset")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = Path(os.environ.get("FUSIONREC_CONFIG", "fusionrec.toml"))
        toml = TomlConfigSettingsSource(settings_cls, toml_file=path if path.is_file() else None)
        return (init_settings, env_settings, toml)


def load_settings(**overrides: object) -> Settings:
    return Settings(**overrides)  # type: ignore[arg-type]

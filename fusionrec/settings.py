"""One typed, frozen settings object: defaults < TOML file < FUSIONREC_* environment variables.

The TOML file is `fusionrec.toml` in the working directory, or the path in FUSIONREC_CONFIG.
Nested keys use `__` in the environment: FUSIONREC_KAFKA__BOOTSTRAP=host:9092.
See `fusionrec.example.toml` for every option and its default.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from streams.settings import CassandraSettings, Frozen, KafkaSettings, WorkerSettings

__all__ = [
    "CassandraSettings",
    "EmbeddedSettings",
    "KafkaSettings",
    "Settings",
    "WorkerSettings",
    "load_settings",
]


class EmbeddedSettings(Frozen):
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

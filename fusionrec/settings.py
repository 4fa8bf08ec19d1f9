"""One typed, frozen settings object for every command: defaults < TOML file < FUSIONREC_* variables.

The TOML file is `fusionrec.toml` in the working directory when present, or the path in
FUSIONREC_CONFIG (which must exist). Nested keys use `__` in the environment:
FUSIONREC_KAFKA__BOOTSTRAP=host:9092. Unknown sections and keys are errors naming them, so a
typo (`[cassandar]`) never silently falls back to a default. Read once per command
(`load_settings`) and passed down as sections. See `fusionrec.example.toml` for every option.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from schemas.errors import ConfigError
from serving.settings import ServeSettings
from streams.settings import CassandraSettings, Frozen, KafkaSettings, WorkerSettings

__all__ = [
    "CONFIG_ENV",
    "CassandraSettings",
    "DemoSettings",
    "KafkaSettings",
    "ReplaySettings",
    "ServeSettings",
    "Settings",
    "WorkerSettings",
    "config_path",
    "load_settings",
]

CONFIG_ENV = "FUSIONREC_CONFIG"
ENV_PREFIX = "FUSIONREC_"
DEFAULT_FILE = "fusionrec.toml"


class DemoSettings(Frozen):
    """`fusionrec demo`: the embedded pipeline (in-process replay -> SQLite)."""

    db: str = Field("out/demo.db", description="SQLite file for state, lists and dead letters (replaced)")
    k: int = Field(10, ge=1, le=1000, description="items per list")
    batch_size: int = Field(500, ge=1, description="events per micro-batch")
    show: int = Field(3, ge=0, description="sample users printed at the end")
    encoder: str = Field(
        "models/encoder-int8", description="text encoder export for the text-fused model (exported there if missing)"
    )


class ReplaySettings(Frozen):
    """`fusionrec replay`: a dataset's events produced into Kafka."""

    rate: float | None = Field(None, gt=0, description="events per second; unset: as fast as possible")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
        nested_model_default_partial_update=False,
    )

    data: str | None = Field(None, description="dataset folder for demo, replay, worker and serve; unset: synthetic")
    kafka: KafkaSettings = KafkaSettings()
    cassandra: CassandraSettings = CassandraSettings()
    worker: WorkerSettings = WorkerSettings()
    serve: ServeSettings = ServeSettings()
    demo: DemoSettings = DemoSettings()
    replay: ReplaySettings = ReplaySettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = config_path()
        toml = TomlConfigSettingsSource(settings_cls, toml_file=path)
        return (init_settings, env_settings, toml)

    def with_overrides(self, **sections: dict[str, Any] | Any) -> Settings:
        """A copy with command-line flags applied (None means "not given"), validated like the file."""
        data = self.model_dump()
        for name, value in sections.items():
            if isinstance(value, dict):
                data[name].update({k: v for k, v in value.items() if v is not None})
            elif value is not None:
                data[name] = value
        try:
            return Settings.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(_describe(exc, "command-line option")) from None


def config_path() -> Path | None:
    """The TOML file to read: FUSIONREC_CONFIG (an error when it names no file), else ./fusionrec.toml if any."""
    named = os.environ.get(CONFIG_ENV)
    if named:
        path = Path(named)
        if not path.is_file():
            raise ConfigError(f"{CONFIG_ENV}={named}: no such file (unset it to use ./{DEFAULT_FILE} or defaults)")
        return path
    default = Path(DEFAULT_FILE)
    return default if default.is_file() else None


_SECRET_WORDS = ("password", "secret", "token", "api_key")


def _describe(exc: ValidationError, where: str) -> str:
    """One line naming each bad key, e.g. `kafka.partitions: Input should be a valid integer`."""
    parts = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            parts.append(f"{key}: unknown setting (see fusionrec.example.toml for every key)")
        else:
            env = ENV_PREFIX + "__".join(str(p) for p in err["loc"]).upper()
            # a secret's value is never echoed, whatever shape it was given in
            got = "***" if any(word in key for word in _SECRET_WORDS) else repr(err.get("input"))
            parts.append(f"{key}: {err['msg']} (got {got}; set in {where} or {env})")
    return "settings: " + "; ".join(parts)


def _unknown_env_sections() -> list[str]:
    """FUSIONREC_<SECTION>__<KEY> variables whose section does not exist (pydantic ignores them)."""
    known = {name.upper() for name in Settings.model_fields}
    return sorted(
        k
        for k in os.environ
        if k.startswith(ENV_PREFIX) and "__" in k and k[len(ENV_PREFIX) :].split("__")[0] not in known
    )


def load_settings(**overrides: object) -> Settings:
    """Defaults < TOML < environment (< `overrides`), validated; any problem is one ConfigError."""
    path = config_path()
    where = str(path) if path else "the environment"
    unknown = _unknown_env_sections()
    if unknown:
        raise ConfigError(f"settings: unknown section in environment variable(s) {', '.join(unknown)}")
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except ValidationError as exc:
        raise ConfigError(_describe(exc, where)) from None

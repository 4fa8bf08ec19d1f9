"""One typed, frozen settings object for every command: defaults < TOML file < FUSIONREC_* variables.

The TOML file is `fusionrec.toml` in the working directory when present, or the path in
FUSIONREC_CONFIG (which must exist). Nested keys use `__` in the environment:
FUSIONREC_KAFKA__BOOTSTRAP=host:9092. Unknown sections and keys are errors naming them, so a
typo (`[cassandar]`) never silently falls back to a default. Read once per command
(`load_settings`) and passed down as sections. See `fusionrec.example.toml` for every option.

The sources are merged here (a few lines) rather than by pydantic-settings, whose import was 0.03-0.04 s
of every command's start, a worker's restart included. Variables follow its rules: names are
case-insensitive, a section, a list or a table is given as JSON (FUSIONREC_CASSANDRA__HOSTS='["a", "b"]'),
anything else as text that validation converts.
"""

from __future__ import annotations

import json
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError
from pydantic.fields import FieldInfo

from schemas.errors import ConfigError
from serving.settings import ServeSettings
from streams.settings import CassandraSettings, Frozen, KafkaSettings, TextFromEnv, WorkerSettings

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


class Settings(Frozen):
    data: str | None = Field(None, description="dataset folder for demo, replay, worker and serve; unset: synthetic")
    kafka: KafkaSettings = KafkaSettings()
    cassandra: CassandraSettings = CassandraSettings()
    worker: WorkerSettings = WorkerSettings()
    serve: ServeSettings = ServeSettings()
    demo: DemoSettings = DemoSettings()
    replay: ReplaySettings = ReplaySettings()

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


def _takes_json(annotation: Any) -> bool:
    """A section, a list or a table: given as JSON in a variable (text is converted by validation)."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    for kind in typing.get_args(annotation) if union else (annotation,):
        origin = typing.get_origin(kind) or kind
        if isinstance(origin, type) and (issubclass(origin, BaseModel | list | tuple | dict | set | frozenset)):
            return True
    return False


def _env_value(name: str, text: str, field: FieldInfo) -> Any:
    if TextFromEnv in field.metadata or not _takes_json(field.annotation):
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"settings: {name}: not valid JSON ({exc}); a section, list or table is given as JSON"
        ) from None


def _env_settings(environ: Mapping[str, str]) -> dict[str, Any]:
    """FUSIONREC_<FIELD> and FUSIONREC_<SECTION>__<KEY> as nested values; other FUSIONREC_<NAME>
    variables (FUSIONREC_CONFIG, a tool's own) are not settings. An unknown section is an error
    naming its variables (they would otherwise be ignored); an unknown key of a known section is
    kept, so that validation names it."""
    out: dict[str, Any] = {}
    nested: list[tuple[str, str, str, str]] = []
    unknown: list[str] = []
    for name, text in environ.items():
        if not name.upper().startswith(ENV_PREFIX):
            continue
        field, _, key = name[len(ENV_PREFIX) :].lower().partition("__")
        info = Settings.model_fields.get(field)
        if info is None:
            if key:
                unknown.append(name)
            continue
        if key:
            nested.append((name, field, key, text))
        else:
            out[field] = _env_value(name, text, info)
    for name, field, key, text in sorted(nested):  # over the section's own variable, if any
        section = Settings.model_fields[field].annotation
        fields = section.model_fields if isinstance(section, type) and issubclass(section, BaseModel) else {}
        value = _env_value(name, text, fields[key]) if key in fields else text
        target = out.setdefault(field, {})
        if isinstance(target, dict):
            target[key] = value
    if unknown:
        raise ConfigError(f"settings: unknown section in environment variable(s) {', '.join(sorted(unknown))}")
    return out


def _merged(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Later layers over earlier ones, section by section (a variable changes one key of a TOML section)."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, Mapping) and isinstance(out.get(key), dict):
                out[key] = {**out[key], **value}
            else:
                out[key] = dict(value) if isinstance(value, Mapping) else value
    return out


def load_settings(**overrides: object) -> Settings:
    """Defaults < TOML < environment (< `overrides`), validated; any problem is one ConfigError."""
    path = config_path()
    where = str(path) if path else "the environment"
    env = _env_settings(os.environ)
    try:
        toml = tomllib.loads(path.read_text(encoding="utf-8")) if path else {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it ({exc})") from None
    try:
        return Settings.model_validate(_merged(toml, env, overrides))
    except ValidationError as exc:
        raise ConfigError(_describe(exc, where)) from None

"""API key commands: `keys create` (prints a new key once, stores only its hash) and `keys list`."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer

from fusionrec.commands.context import settings
from schemas.errors import ConfigError
from serving.auth import SCOPES, KeyRecord, append_key, hash_key, new_key, read_keys

__all__ = ["register"]

keys_app = typer.Typer(
    help="API keys for `fusionrec serve` (serve.api_keys_file): hashed at rest, with scopes.", no_args_is_help=True
)

FileOpt = Annotated[
    Path | None, typer.Option("--file", help="Keys file (JSON lines); default: the setting serve.api_keys_file.")
]


def _file(given: Path | None) -> Path:
    if given is not None:
        return given
    named = settings().serve.api_keys_file
    if not named:
        raise ConfigError("no keys file: give --file FILE or set serve.api_keys_file (FUSIONREC_SERVE__API_KEYS_FILE)")
    return Path(named)


@keys_app.command("create")
def create(
    key_id: Annotated[str, typer.Option("--id", help="A name for the key: who or what uses it.")],
    scopes: Annotated[str, typer.Option(help=f"Comma-separated, of: {', '.join(SCOPES)}.")],
    file: FileOpt = None,
    rate_limit_per_s: Annotated[
        float | None,
        typer.Option(min=0, help="This key's requests/s (0: no limit); default: serve.rate_limit_per_s."),
    ] = None,
) -> None:
    """Make a key, append its hash to the keys file and print the key: the only time it is shown.

    Example: KEY=$(fusionrec keys create --id shop-frontend --scopes recommendations:read,search --file keys.jsonl)
    """
    wanted = sorted({s.strip() for s in scopes.split(",") if s.strip()})
    unknown = [s for s in wanted if s not in SCOPES]
    if not wanted or unknown:
        raise typer.BadParameter(
            f"unknown scope(s) {', '.join(unknown) or '(none given)'}: "
            f"use a comma-separated list of {', '.join(SCOPES)}",
            param_hint="--scopes",
        )
    path = _file(file)
    key = new_key()
    created = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    record = KeyRecord(key_id, hash_key(key), frozenset(wanted), rate_limit_per_s, created)
    append_key(path, record)  # validates the id and the file first
    typer.echo(key)
    typer.echo(
        f"created key {key_id!r} ({', '.join(wanted)}) in {path}; it is shown only now: only its hash is kept",
        err=True,
    )


@keys_app.command("list")
def list_keys(file: FileOpt = None) -> None:
    """The keys of the file: id, scopes, rate limit, when created, and the first digits of the hash."""
    path = _file(file)
    records = read_keys(path)
    if not records:
        typer.echo(f"no keys in {path}", err=True)
        return
    for r in records:
        rate = "default" if r.rate_limit_per_s is None else f"{r.rate_limit_per_s:g}/s"
        hint = r.hash[: len("sha256:") + 8] + "…"
        typer.echo(f"{r.id}  scopes={','.join(sorted(r.scopes))}  rate={rate}  created={r.created or '-'}  {hint}")


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")

"""The `fusionrec` command line: one entry point for every mode; commands live in
`fusionrec.commands` by domain. Every failure ends in one `error: ...` line and exit code 2
(1 for an internal error); `--debug` or FUSIONREC_DEBUG=1 also prints the traceback."""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Annotated

import typer

from fusionrec.priority import command_word
from schemas.errors import FusionrecError

__all__ = ["COMMANDS", "build_app", "main"]  # and `app` (module __getattr__)

DEBUG_ENV = "FUSIONREC_DEBUG"

#: each command's module in `fusionrec.commands`: a run imports only the module of the command it
#: runs (`build_app`). The others' imports (evaluation, reports, the API's, ...) were 0.03-0.1 s of
#: every worker's start, and a restart's stale lists last as long as its start
COMMANDS: dict[str, str] = {
    "demo": "stream",
    "replay": "stream",
    "worker": "stream",
    "recommend": "stream",
    "export-encoder": "model",
    "encode-items": "model",
    "train": "model",
    "train-stage": "model",
    "evaluate": "model",
    "serve": "serve",
    "search-eval": "serve",
    "tag-items": "serve",
    "services": "services",
    "cassandra": "services",
    "keys": "keys",
}

_HELP = (
    "fusionrec: a streaming real-time recommender.\n\n"
    "Every event a shop sends updates that user's state and refreshes their ranked list at once.\n\n"
    "\b\nFirst run, no servers needed:\n"
    "  fusionrec demo                      # synthetic shop, in-process replay, SQLite\n"
    "  fusionrec demo --data ../shared/data/scientific\n\n"
    "\b\nAgainst real Kafka + Cassandra:\n"
    "  fusionrec services up               # local Kafka (KRaft) + Cassandra, no Docker\n"
    "  fusionrec train --data DIR --out B  # a model bundle (needs the train extra)\n"
    "  fusionrec worker --bundle B &       # consume clickstream, write lists to Cassandra\n"
    "  fusionrec replay --rate 500         # produce a dataset's events into Kafka\n"
    "  fusionrec recommend U00042          # read a user's stored list\n"
    "  fusionrec serve --bundle B          # the read API: lists, similar items, search\n\n"
    "Settings: fusionrec.toml, FUSIONREC_CONFIG=FILE or FUSIONREC_* variables (see fusionrec.example.toml). "
    "Any failure is one `error:` line (exit 2); --debug shows the traceback."
)


def _root(
    debug: Annotated[
        bool, typer.Option("--debug", help=f"Print the traceback of a failure (also {DEBUG_ENV}=1).")
    ] = False,
) -> None:
    if debug:
        os.environ[DEBUG_ENV] = "1"


def build_app(args: Sequence[str] = ()) -> typer.Typer:
    """The command line for `args`: only the named command's module when the first word of `args` is a
    command (`COMMANDS`), else every command (help, a mistyped name: the full list to choose from)."""
    command = command_word(args)
    modules = [COMMANDS[command]] if command in COMMANDS else list(dict.fromkeys(COMMANDS.values()))
    cli = typer.Typer(
        name="fusionrec",
        no_args_is_help=True,
        add_completion=False,
        rich_markup_mode=None,
        pretty_exceptions_enable=False,
        help=_HELP,
    )
    cli.callback()(_root)
    for module in modules:
        importlib.import_module(f"fusionrec.commands.{module}").register(cli)
    return cli


def __getattr__(name: str) -> typer.Typer:
    """`app`: every command (tests, tools), built at first use: `main` builds only what a run needs."""
    if name == "app":
        globals()["app"] = built = build_app()
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _debug() -> bool:
    return os.environ.get(DEBUG_ENV, "").lower() not in {"", "0", "false", "no"}


def _fail(message: str, code: int) -> None:
    if _debug():
        traceback.print_exc()
    first = " ".join(message.split()) or "failed"
    typer.echo(f"error: {first}", err=True)
    sys.exit(code)


def main() -> None:
    """Run the CLI; bad input of any kind (file, row, setting, model, option) is one `error:` line."""
    try:
        code = build_app(sys.argv[1:])(standalone_mode=False)
    except typer.TyperException as exc:  # a bad option or argument (typer's click): say which, point at --help
        ctx = getattr(exc, "ctx", None)  # usage errors carry the command they belong to
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
            typer.echo(ctx.get_help())
            sys.exit(0)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        _fail(getattr(exc, "format_message", exc.__str__)() + hint, 2)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
    except FusionrecError as exc:
        _fail(str(exc), 2)
    except OSError as exc:  # files: missing, unreadable, a folder where a file was meant
        name = getattr(exc, "filename", None)
        _fail(f"{name}: {exc.strerror or exc}" if name else f"{type(exc).__name__}: {exc}", 2)
    except UnicodeError as exc:  # a text file that is not UTF-8 (readers name the file where they can)
        _fail(f"not valid UTF-8 text: {exc}", 2)
    except Exception as exc:  # the last line of defence: never a bare traceback
        _fail(f"internal error {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", 1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()

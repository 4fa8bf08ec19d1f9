"""The `fusionrec` command line: one entry point for every mode; commands live in
`fusionrec.commands` by domain. Every failure ends in one `error: ...` line and exit code 2
(1 for an internal error); `--debug` or FUSIONREC_DEBUG=1 also prints the traceback."""

from __future__ import annotations

import os
import sys
import traceback
from typing import Annotated

import typer

from fusionrec.commands import keys, model, serve, services, stream
from schemas.errors import FusionrecError

__all__ = ["app", "main"]

DEBUG_ENV = "FUSIONREC_DEBUG"

app = typer.Typer(
    name="fusionrec",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    help=(
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
    ),
)


@app.callback()
def _root(
    debug: Annotated[
        bool, typer.Option("--debug", help=f"Print the traceback of a failure (also {DEBUG_ENV}=1).")
    ] = False,
) -> None:
    if debug:
        os.environ[DEBUG_ENV] = "1"


stream.register(app)
model.register(app)
serve.register(app)
services.register(app)
keys.register(app)


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
        code = app(standalone_mode=False)
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

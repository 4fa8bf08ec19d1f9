"""What every command shares: the settings (read once per process) and the log format."""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from fusionrec.settings import Settings, load_settings

__all__ = ["DataOpt", "settings", "setup_logging"]

DataOpt = Annotated[
    str | None,
    typer.Option(
        "--data", help="Dataset folder (items.csv + events.csv); default: settings `data`, else the synthetic shop."
    ),
]

_loaded: list[Settings] = []


def settings() -> Settings:
    """The process's settings, read on first use (so `--help` works even with a broken file)."""
    if not _loaded:
        _loaded.append(load_settings())
    return _loaded[0]


def setup_logging(verbose: bool = False) -> None:
    """One line per fact on stderr, `key=value`; the clients' own chatter only from WARNING up."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    for noisy in ("cassandra", "aiokafka", "faust", "mode"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

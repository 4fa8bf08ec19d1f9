"""The one way long work reports itself (encoding a catalog, training, replay, search evaluation):
a tqdm bar when stderr is a terminal, and when it is not (a log file, CI, a container) one plain
log line every `every_s` seconds plus one at the end, so redirected output stays readable."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, Generic, TypeVar

from tqdm import tqdm

__all__ = ["LogProgress", "progress"]

T = TypeVar("T")
log = logging.getLogger("fusionrec.progress")


class LogProgress(Generic[T]):
    """The parts of tqdm's interface this project uses (iterate, update, n, set_postfix, close,
    with-block), reported as log lines: `desc: n/total unit (rate/s) [postfix]`."""

    def __init__(
        self, iterable: Iterable[T] | None, total: int | None, desc: str, unit: str, every_s: float = 10.0
    ) -> None:
        self.iterable = iterable
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)  # type: ignore[arg-type]
        self.desc, self.unit, self.every_s = desc, unit, every_s
        self.n = 0
        self.postfix = ""
        self.started = self.last = time.monotonic()
        self.closed = False

    def __iter__(self) -> Iterator[T]:
        assert self.iterable is not None, "LogProgress without an iterable: use update()"
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> LogProgress[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            self._line("")

    def set_postfix(self, **values: Any) -> None:
        self.postfix = " ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._line(" done")

    def _line(self, suffix: str) -> None:
        seconds = time.monotonic() - self.started
        of = f"/{self.total}" if self.total is not None else ""
        rate = f"{self.n / seconds:.1f}" if seconds > 0 else "-"
        extra = f" {self.postfix}" if self.postfix else ""
        log.info(
            "%s:%s %d%s %s in %.0f s (%s %s/s)%s",
            self.desc,
            suffix,
            self.n,
            of,
            self.unit,
            seconds,
            rate,
            self.unit,
            extra,
        )


def progress(
    iterable: Iterable[T] | None = None,
    *,
    total: int | None = None,
    desc: str,
    unit: str = "it",
    enabled: bool = True,
    every_s: float = 10.0,
) -> Any:
    """A progress reporter over `iterable` (or for `update()` calls up to `total`): a bar on a
    terminal, log lines otherwise, nothing when `enabled` is false."""
    if not enabled:
        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=True)
    if sys.stderr.isatty():
        return tqdm(iterable, total=total, desc=desc, unit=unit, leave=False)
    return LogProgress(iterable, total, desc, unit, every_s)

"""One call in a daemon thread, its error handed to whoever waits for it.

Why not a ThreadPoolExecutor: the interpreter joins an executor's threads at exit, so a start that
fails on one path (a corrupt model) would still wait out the other's timeout (a store that never
answers: 120 s) before its `error:` line and exit. A daemon thread does not hold the exit up."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Background"]

T = TypeVar("T")


class Background(Generic[T]):
    """Runs `fn()` at once in a daemon thread named `name`; `result()` joins it and returns what it
    returned, or raises what it raised."""

    def __init__(self, fn: Callable[[], T], name: str) -> None:
        self._error: BaseException | None = None
        self._value: T | None = None
        self._thread = threading.Thread(target=self._run, args=(fn,), name=name, daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[], T]) -> None:
        try:
            self._value = fn()
        except BaseException as exc:  # handed to the caller's thread by result()
            self._error = exc

    def result(self) -> T:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]  # set by _run when no error was raised

"""A store whose batch writes run in a child process (the worker's writer process).

Why: the worker is one Python process, and everything in it shares one interpreter lock. With
Cassandra, the driver's per-request Python work (binding every list element, building requests,
reading responses on its IO thread) took a third of the worker's lock time, so ranking waited for
the driver even on an idle core. Here the parent only flattens a batch into one JSON message of
rows (`streams.stores.rows`); a child process with its own store connection (and its own lock)
binds and sends it, on the other core. Reads (state of cache misses) and everything else stay on
the parent's own store. It is a `ResultsStore` (all the pipeline needs), nothing more.

Semantics are the wrapped store's: `put_results` returns only after the child's store call
returned, so offsets are still committed after the writes; a `StoreUnavailable` in the child is
raised in the parent (back-pressure, retried by the pipeline); a child that dies is restarted and
the call raises `StoreUnavailable`, so the batch is retried, never dropped.
"""

from __future__ import annotations

import atexit
import gc
import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

import orjson

from ranker.state import UserState
from schemas.errors import StoreUnavailable
from schemas.recommendations import RecommendationList
from streams.gc_tuning import tune_gc
from streams.stores import open_store
from streams.stores.base import ResultsStore
from streams.stores.rows import result_rows, results_from_rows

__all__ = ["OffloadedWrites"]

log = logging.getLogger("fusionrec.store")


def _write(store: Any, payload: bytes) -> None:
    """One batch in the child: Cassandra binds the rows as they come; other stores take objects."""
    rows = orjson.loads(payload)
    if hasattr(store, "put_result_rows"):
        store.put_result_rows(rows)
    else:
        store.put_results(*results_from_rows(rows))


#: after a SIGTERM/SIGINT, the writer exits once no batch came for this long (or the parent hangs up)
IDLE_AFTER_STOP_S = 5.0


class _StopLatch:
    """SIGTERM / SIGINT to the writer only note the request. A signal to the whole process group
    (Ctrl-C, `kill -- -PGID`, a service manager's control-group stop) reaches the writer while its
    parent is still writing the in-flight batches of its own shutdown; dying then left the parent's
    last write failing and its consumer waiting for those events until it was killed."""

    def __init__(self) -> None:
        self.requested = False
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._note)

    def _note(self, signum: int, frame: Any) -> None:
        self.requested = True


def _reply(conn: Connection, message: list[str]) -> bool:
    """Send one reply; False when the parent already hung up. A parent that fails on its own (its
    store refused the same login, say) exits while the writer still starts: the writer then ends
    quietly, since the parent printed the one error line the person needs."""
    try:
        conn.send_bytes(orjson.dumps(message))
    except (EOFError, OSError):  # BrokenPipeError is an OSError
        return False
    return True


def _serve(
    conn: Connection, url: str, replication: str | None, access: Any = None, parents_end: Connection | None = None
) -> None:
    """The child: open the store (with the parent's Cassandra login/TLS settings, `access`), then answer
    one reply per batch until the parent hangs up (or, once asked to stop, stays idle for
    IDLE_AFTER_STOP_S: what lets multiprocessing's exit handler, which terminates and joins, finish).
    `parents_end`: a forked child's copy of the parent's end of the pipe, closed first; kept open, the
    parent's hang-up would never reach this end."""
    if parents_end is not None:
        parents_end.close()
    stop = _StopLatch()
    try:
        store = open_store(url, replication=replication, cassandra=access)
        store.setup()
    except Exception as exc:  # reported to the parent, which decides
        _reply(conn, ["unavailable", f"{type(exc).__name__}: {exc}"])
        return
    tune_gc()  # the writer allocates a batch's worth of rows per call, like the worker
    try:
        if not _reply(conn, ["ready", ""]):
            return
        idle = 0.0
        while True:
            try:
                if not conn.poll(1.0):
                    idle += 1.0
                    if stop.requested and idle >= IDLE_AFTER_STOP_S:
                        return
                    continue
                idle = 0.0
                payload = conn.recv_bytes()
            except (EOFError, OSError):
                return
            try:
                _write(store, payload)
                reply = ["ok", ""]
            except StoreUnavailable as exc:
                reply = ["unavailable", str(exc)]
            except Exception as exc:
                reply = ["error", f"{type(exc).__name__}: {exc}"]
            if not _reply(conn, reply):
                return
    finally:
        store.close()


def _start_method(fork: bool) -> str:
    """ "fork" when the caller asks for it and this process runs no Python thread but its main one:
    the child has the parent's modules already imported and only connects (0.06-0.1 s of CPU here),
    where a new interpreter imports them all again (0.9-1.0 s, on the cores a restart needs for its
    own start). The caller vouches that no store driver or Kafka client exists yet; the native pools
    that imports start (BLAS, ONNX Runtime) sit idle then and the child never calls into them.
    "spawn" otherwise: forking a process that runs driver, Kafka or ONNX threads can leave the child
    holding a lock that no thread of its will release (a writer restarted mid-run)."""
    return "fork" if fork and hasattr(os, "fork") and threading.active_count() == 1 else "spawn"


class OffloadedWrites:
    """Wraps a store (sqlite:// or cassandra:// URL, opened in both processes): `put_results` in a
    writer process, the rest in this one."""

    def __init__(self, local: ResultsStore, replication: str | None = None, start_timeout_s: float = 120.0) -> None:
        if local.url.startswith("memory:"):
            raise ValueError("a memory:// store cannot be shared with a writer process")
        self.local = local
        self.url = local.url
        self.replication = replication
        self.start_timeout_s = start_timeout_s
        self._conn: Connection | None = None
        self._proc: Any = None
        self._pending: tuple[Connection, Any] | None = None  # started by begin(), not yet ready
        self._hangs_up_at_exit = False
        self._method = "spawn"

    def setup(self) -> None:
        self.local.setup()
        if self._conn is None:
            self._start()

    def begin(self, fork: bool = False) -> None:
        """Start the writer process without waiting for it: it connects while the caller goes on (the
        worker loads its model meanwhile); `setup` or the first write waits for it to be ready.
        `fork`: the caller has no store driver or Kafka client yet (see `_start_method`)."""
        if self._conn is not None or self._pending is not None:
            return
        self._method = _start_method(fork)
        ctx: Any = multiprocessing.get_context("fork" if self._method == "fork" else "spawn")
        parent, child = ctx.Pipe()
        access = getattr(self.local, "access", None)  # a CassandraStore's [cassandra] settings (login, TLS)
        inherited = parent if self._method == "fork" else None
        proc = ctx.Process(
            target=_serve, args=(child, self.url, self.replication, access, inherited), daemon=True, name="writer"
        )
        if self._method == "fork":
            # what the two processes share from here is never visited by either's cycle collector: a
            # collection writes to every object it visits, so each one copied the pages the other still
            # shared (copy-on-write), and the child's first collection visited the parent's whole heap
            gc.freeze()
        proc.start()
        child.close()
        log.info("writer_process_starting pid=%d start=%s", proc.pid, self._method)
        self._pending = (parent, proc)
        if not self._hangs_up_at_exit:
            atexit.register(self._hang_up)
            self._hangs_up_at_exit = True

    def _hang_up(self) -> None:
        """At interpreter exit, before multiprocessing's own exit handler (atexit runs the handlers
        registered last first): the writer sees its pipe close and ends at once, instead of taking
        that handler's SIGTERM as a stop request and waiting out IDLE_AFTER_STOP_S."""
        for conn in (self._conn, self._pending[0] if self._pending else None):
            if conn is not None:
                conn.close()

    def _start(self) -> None:
        self.begin()
        assert self._pending is not None
        (parent, proc), self._pending = self._pending, None
        if not parent.poll(self.start_timeout_s):
            proc.kill()
            raise StoreUnavailable(f"the writer process for {self.url} did not start in {self.start_timeout_s:.0f} s")
        kind, message = orjson.loads(parent.recv_bytes())
        if kind != "ready":
            proc.join(5)
            raise StoreUnavailable(f"the writer process cannot open {self.url}: {message}")
        self._conn, self._proc = parent, proc
        log.info("writer_process_started pid=%d store=%s start=%s", proc.pid, self.url, self._method)

    def close(self) -> None:
        if self._pending is not None:  # begun, never waited for
            self._conn, self._proc = self._pending
            self._pending = None
        if self._conn is not None:
            self._conn.close()
        if self._proc is not None:
            self._proc.join(10)
            if self._proc.is_alive():
                self._proc.kill()
        self._conn = self._proc = None
        self.local.close()

    def put_results(self, lists: Sequence[RecommendationList], states: Sequence[UserState]) -> None:
        if not lists and not states:
            return
        if self._conn is None:
            self._start()
        assert self._conn is not None
        try:
            self._conn.send_bytes(orjson.dumps(result_rows(lists, states)))
            kind, message = orjson.loads(self._conn.recv_bytes())
        except (EOFError, OSError) as exc:
            log.warning("writer_process_lost pid=%s error=%s restarting", getattr(self._proc, "pid", None), exc)
            self._conn = None
            if self._proc is not None:
                self._proc.kill()
            raise StoreUnavailable(f"the writer process died ({exc}); the batch will be retried") from exc
        if kind == "unavailable":
            raise StoreUnavailable(message)
        if kind != "ok":
            raise RuntimeError(f"the writer process failed: {message}")

    # everything else runs on this process's own store
    def get_states(self, user_ids: Sequence[str]) -> dict[str, UserState]:
        return self.local.get_states(user_ids)

    def put_states(self, states: Sequence[UserState]) -> None:
        self.local.put_states(states)

    def put_recommendations(self, lists: Sequence[RecommendationList]) -> None:
        self.local.put_recommendations(lists)

    def get_recommendations(self, user_id: str) -> RecommendationList | None:
        return self.local.get_recommendations(user_id)

    def count_states(self) -> int:
        return self.local.count_states()

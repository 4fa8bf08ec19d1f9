"""ResultsStore contract: what the pipeline writes after each batch, lists and states together."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.errors import StoreUnavailable
from streams.stores import SQLiteStore
from streams.stores.base import ResultsStore
from tests.contract.conftest import make_list, make_state

REPO = Path(__file__).resolve().parents[2]


def test_put_results_writes_lists_and_states_together(results_store: ResultsStore) -> None:
    store = results_store
    states = [make_state(f"r{i}", 3) for i in range(30)]
    lists = [make_list(f"r{i}", [f"i{i}", "x"]) for i in range(30)]
    store.put_results(lists, states)
    got = store.get_states([s.user_id for s in states])
    assert {u: s.folded_view() for u, s in got.items()} == {s.user_id: s.folded_view() for s in states}
    for r in lists:
        back = store.get_recommendations(r.user_id)
        assert back is not None and back.item_ids() == r.item_ids()
    store.put_results([], [make_state("only-state", 2)])  # a state without a list is still written
    assert "only-state" in store.get_states(["only-state"])
    store.put_results([make_list("only-list", ["y"])], [])  # and a list without a state
    assert store.get_recommendations("only-list") is not None and not store.get_states(["only-list"])
    store.put_results([], [])
    assert store.count_states() == 31


def test_put_results_twice_is_idempotent(results_store: ResultsStore) -> None:
    lists, states = [make_list("u1", ["a", "b"])], [make_state("u1", 4)]
    results_store.put_results(lists, states)
    results_store.put_results(lists, states)  # a retried batch after an outage
    assert results_store.count_states() == 1
    assert results_store.get_states(["u1"]) == {"u1": states[0]}
    back = results_store.get_recommendations("u1")
    assert back is not None and back.item_ids() == ["a", "b"]


def test_a_dead_writer_process_is_restarted_and_the_batch_retried(tmp_path: Path) -> None:
    """Writer process killed: the call raises StoreUnavailable (the pipeline retries it: back-pressure),
    a new writer starts, and the retried batch lands."""
    from streams.stores.offload import OffloadedWrites

    s = OffloadedWrites(SQLiteStore(tmp_path / "w.db", url=f"sqlite:///{tmp_path / 'w.db'}"))
    s.setup()
    rec, st = make_list("u1", ["a", "b"]), make_state("u1", 2)
    s.put_results([rec], [st])
    s._proc.kill()
    s._proc.join(10)
    with pytest.raises(StoreUnavailable, match="writer process died"):
        s.put_results([rec], [st])
    s.put_results([make_list("u2", ["c"])], [make_state("u2", 1)])  # a fresh writer
    assert s.get_recommendations("u2") is not None and s.get_states(["u1", "u2"]).keys() == {"u1", "u2"}
    s.close()


def test_a_writer_process_begun_and_never_used_is_closed(tmp_path: Path) -> None:
    """begin() spawns the writer without waiting; close() before any setup still ends it."""
    from streams.stores.offload import OffloadedWrites

    s = OffloadedWrites(SQLiteStore(tmp_path / "w.db", url=f"sqlite:///{tmp_path / 'w.db'}"))
    s.begin()
    s.begin()  # once
    proc = s._pending[1] if s._pending else None
    assert proc is not None and proc.is_alive()
    s.close()
    assert not proc.is_alive()


def test_a_stop_signal_to_the_writer_waits_for_its_parent(tmp_path: Path) -> None:
    """SIGTERM / SIGINT reaching the writer (a signal to the whole process group: Ctrl-C, a service
    manager's stop) while its parent still writes: the writer answers the parent's next batches, and
    ends once the parent hangs up, or after IDLE_AFTER_STOP_S without a batch. Dying at once left a
    busy worker's last write failing and its shutdown hanging until it was killed."""
    import os
    import signal
    import time

    from streams.stores.offload import IDLE_AFTER_STOP_S, OffloadedWrites

    s = OffloadedWrites(SQLiteStore(tmp_path / "w.db", url=f"sqlite:///{tmp_path / 'w.db'}"))
    s.setup()
    proc = s._proc
    for sig in (signal.SIGINT, signal.SIGTERM):
        os.kill(proc.pid, sig)
    time.sleep(0.5)
    assert proc.is_alive()
    s.put_results([make_list("u1", ["a"])], [make_state("u1", 1)])  # the shutdown's in-flight batch
    assert s.get_recommendations("u1") is not None
    proc.join(IDLE_AFTER_STOP_S + 5)  # no parent call follows: it ends by itself
    assert not proc.is_alive() and proc.exitcode == 0
    s.close()

    hung_up = OffloadedWrites(SQLiteStore(tmp_path / "v.db", url=f"sqlite:///{tmp_path / 'v.db'}"))
    hung_up.setup()
    proc = hung_up._proc
    os.kill(proc.pid, signal.SIGTERM)
    started = time.monotonic()
    hung_up.close()  # the parent hangs up: the writer ends without waiting out its idle time
    assert not proc.is_alive() and time.monotonic() - started < IDLE_AFTER_STOP_S


@pytest.mark.parametrize("fork", [False, True], ids=["spawned", "forked"])
def test_a_process_that_exits_without_closing_its_writer_ends_it_at_once(tmp_path: Path, fork: bool) -> None:
    """The worker exits without closing its store: its exit hook hangs up on the writer first, so
    multiprocessing's own exit handler (SIGTERM, then join) does not wait out IDLE_AFTER_STOP_S. A
    forked writer (the worker's start) holds a copy of the parent's end of the pipe unless it closes
    it: then the hang-up never reached it. Its writes land as a spawned one's do."""
    import subprocess
    import sys
    import time

    from streams.stores.offload import IDLE_AFTER_STOP_S

    db = tmp_path / "x.db"
    code = (
        "from streams.stores import SQLiteStore\n"
        "from streams.stores.offload import OffloadedWrites\n"
        "from tests.contract.conftest import make_list, make_state\n"
        f"s = OffloadedWrites(SQLiteStore({str(db)!r}, url='sqlite:///{db}'))\n"
        f"s.begin(fork={fork})\n"
        "s.setup()\n"
        "s.put_results([make_list('u1', ['a', 'b'])], [make_state('u1', 2)])\n"
        "assert s.get_recommendations('u1') is not None\n"
        "print(s._method, flush=True)\n"
    )
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["fork" if fork else "spawn"]
    elapsed = time.monotonic() - started
    assert elapsed < IDLE_AFTER_STOP_S, f"exit took {elapsed:.1f} s: the writer waited out its idle time"


def test_a_writer_is_forked_only_where_asked_and_no_other_python_thread_runs() -> None:
    """A store driver or a Kafka client runs threads: forking beside them can leave the child holding
    a lock nobody releases. The worker asks for a fork only at its start; anything later spawns."""
    import threading

    from streams.stores.offload import _start_method

    release = threading.Event()
    other = threading.Thread(target=release.wait, daemon=True)
    other.start()
    try:
        assert _start_method(fork=True) == "spawn"
        assert _start_method(fork=False) == "spawn"
    finally:
        release.set()
        other.join()


def test_a_writer_whose_parent_gave_up_ends_without_a_traceback(tmp_path: Path) -> None:
    """The worker's own store refuses it (a wrong password: the writer is refused too) and it exits
    with its one error line while the writer still starts: the writer's report finds the pipe closed,
    and it ends quietly instead of printing a BrokenPipeError traceback after that line (seen in CI).
    Run in this process (the writer's body) so the order of events is fixed, not raced."""
    import multiprocessing
    import signal

    from streams.stores.offload import _serve

    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    missing = tmp_path / "no-such-dir" / "x.db"
    for url in (f"sqlite:///{missing}", f"sqlite:///{tmp_path / 'ok.db'}"):  # setup fails / succeeds
        parent, child = multiprocessing.Pipe()
        parent.close()  # the parent already exited
        try:
            _serve(child, url, None)  # returns; raising BrokenPipeError here is the bug
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)

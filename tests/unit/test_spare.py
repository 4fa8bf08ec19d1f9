"""`worker --spare` (fusionrec.spare): the supervisor keeps a waiting child and hands it the work when
the active one dies, with real processes standing in for workers (a child that waits on stdin for
the word, like `worker --standby`, and records what it was told in a folder)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fusionrec.priority import WARM_NICE, can_restore
from fusionrec.spare import CrashBudget, next_action

CHILD = textwrap.dedent(
    """
    import os, signal, sys, time
    from pathlib import Path
    folder = Path(sys.argv[1]); exit_code = int(sys.argv[2]); assert sys.argv[-1] == "--standby"
    (folder / f"waiting-{os.getpid()}").touch()
    started_nice = os.environ.get("FUSIONREC_STARTED_NICE", "-")
    (folder / f"nice-{os.getpid()}-{os.getpriority(os.PRIO_PROCESS, 0)}-{started_nice}").touch()
    word = sys.stdin.buffer.read(1)
    if word != b"g":
        (folder / f"released-{os.getpid()}").touch(); sys.exit(0)
    (folder / f"active-{os.getpid()}").touch()
    signal.signal(signal.SIGTERM, lambda *_: ((folder / f"stopped-{os.getpid()}").touch(), sys.exit(0)))
    if exit_code >= 0:
        sys.exit(exit_code)
    while True:
        time.sleep(0.05)
    """
)

SUPERVISOR = (
    "import logging, sys; from fusionrec.spare import Supervisor; logging.basicConfig(level=logging.INFO); "
    "sys.exit(Supervisor(sys.argv[1:], spare_delay_s=0.3).run())"
)


def _pids(folder: Path, kind: str) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in folder.glob(f"{kind}-*"))


def _wait(predicate, timeout_s: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _supervisor(tmp_path: Path, exit_code: int) -> subprocess.Popen[bytes]:
    child = tmp_path / "child.py"
    child.write_text(CHILD)
    folder = tmp_path / "marks"
    folder.mkdir()
    return subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR, sys.executable, str(child), str(folder), str(exit_code)],
        cwd=Path(__file__).resolve().parents[2],
        stderr=subprocess.PIPE,
    )


def test_a_killed_worker_is_replaced_by_the_waiting_spare(tmp_path: Path) -> None:
    sup = _supervisor(tmp_path, -1)
    marks = tmp_path / "marks"
    try:
        _wait(lambda: len(_pids(marks, "active")) == 1 and len(_pids(marks, "waiting")) == 2)
        first = _pids(marks, "active")[0]
        spare = next(p for p in _pids(marks, "waiting") if p != first)
        os.killpg(first, signal.SIGKILL)  # the worker and its process group (its writer) die
        started = time.monotonic()
        _wait(lambda: spare in _pids(marks, "active"))
        assert time.monotonic() - started < 1.0, "the spare was already loaded: it only had to be told"
        _wait(lambda: len(_pids(marks, "waiting")) == 3)  # and a new spare waits behind it
        nice = {int(p.name.split("-")[1]): p.name.split("-", 2)[2] for p in marks.glob("nice-*")}
        base = os.getpriority(os.PRIO_PROCESS, 0)
        assert nice[first] == f"{base}--"  # the first worker starts at the normal priority
        if can_restore() and base == 0:  # spares load at a lower one, and are told so (they return to 0 as they join)
            assert nice[spare] == f"{WARM_NICE}-{WARM_NICE}"
        else:  # a spare that could not return, or not to the operator's own value, is not lowered
            assert nice[spare] == f"{base}--"
    finally:
        sup.send_signal(signal.SIGTERM)
        rc = sup.wait(30)
    assert rc == 0
    assert _pids(marks, "stopped") == [spare]  # the active one was stopped gracefully (SIGTERM)
    newest = max(_pids(marks, "waiting"))
    assert _pids(marks, "released") == [newest]  # the spare was let go without joining
    assert sup.stderr is not None
    said = sup.stderr.read().decode()
    assert f"spare_worker_active pid={spare} cold=0 replaced={first} returncode=-9" in said


@pytest.mark.parametrize("code", [0, 2])
def test_a_worker_that_ends_by_itself_ends_the_supervisor(tmp_path: Path, code: int) -> None:
    """0 (stopped) or 2 (a bad setting): the spare would do the same, so it is released, not started."""
    sup = _supervisor(tmp_path, code)
    assert sup.wait(30) == code
    assert len(_pids(tmp_path / "marks", "active")) == 1


def test_the_supervisor_gives_up_on_a_crash_loop(tmp_path: Path) -> None:
    sup = _supervisor(tmp_path, 1)  # every worker crashes at once (exit 1: an internal error)
    assert sup.wait(60) == 1
    assert len(_pids(tmp_path / "marks", "active")) == CrashBudget().limit + 1


def test_the_children_die_with_the_supervisor(tmp_path: Path) -> None:
    sup = _supervisor(tmp_path, -1)
    marks = tmp_path / "marks"
    _wait(lambda: len(_pids(marks, "active")) == 1 and len(_pids(marks, "waiting")) == 2)
    sup.kill()
    sup.wait(10)

    def gone(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return Path(f"/proc/{pid}/status").read_text().count("zombie") > 0

    _wait(lambda: all(gone(p) for p in _pids(marks, "waiting")), 10)


def test_next_action_and_the_crash_budget() -> None:
    assert next_action(-9, stopping=True, budget_left=True) == "stop"
    assert next_action(-9, stopping=False, budget_left=True) == "replace"
    assert next_action(1, stopping=False, budget_left=True) == "replace"
    assert next_action(2, stopping=False, budget_left=True) == "exit"
    assert next_action(0, stopping=False, budget_left=True) == "exit"
    assert next_action(-9, stopping=False, budget_left=False) == "exit"
    budget = CrashBudget(limit=2, window_s=10)
    assert budget.spend(0) and budget.spend(1) and not budget.spend(2)
    assert budget.spend(20)  # the old crashes have left the window

"""A starting worker's lower CPU priority (fusionrec.priority), on real processes: every thread and the
writer-like child process are lowered and all are returned; an operator's own nice value is left
alone; a process that could not return does not lower itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from fusionrec.priority import (
    WARM_NICE,
    _cap_sys_nice,
    autogroup_nice,
    can_restore,
    other_workers,
    own_autogroup_nice,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="thread priorities: Linux only")

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import json, multiprocessing, os, sys, threading, time
    from pathlib import Path
    from fusionrec import priority

    def nice_of(pid):
        return sorted({os.getpriority(os.PRIO_PROCESS, int(t.name)) for t in Path(f"/proc/{pid}/task").iterdir()})

    def autogroup():  # None where the task is in the boot-time group (no nice value)
        return priority.autogroup_nice(Path("/proc/self/autogroup").read_text())

    def sleeper():
        time.sleep(30)

    if __name__ == "__main__":
        if len(sys.argv) > 1:
            os.nice(int(sys.argv[1]))  # the operator's own choice
        early = threading.Thread(target=sleeper, daemon=True)
        early.start()  # a thread from before the lowering (the main thread's change alone misses it)
        lowered = priority.lower()
        late = threading.Thread(target=sleeper, daemon=True)
        late.start()  # one started while lowered (an ONNX Runtime pool, the store driver)
        child = multiprocessing.get_context("spawn").Process(target=sleeper, daemon=True)
        child.start()  # the writer process, started while lowered
        time.sleep(0.5)
        during = {"self": nice_of(os.getpid()), "child": nice_of(child.pid), "autogroup": autogroup()}
        raised = priority.restore() if lowered else 0
        after = {"self": nice_of(os.getpid()), "child": nice_of(child.pid), "autogroup": autogroup()}
        print(json.dumps({"lowered": lowered, "during": during, "after": after, "raised": raised}))
        child.kill()
    """
)


def _run(tmp_path: Path, *args: str, session: bool = False) -> dict[str, object]:
    script = tmp_path / "lowered.py"
    script.write_text(SCRIPT)
    out = subprocess.run(
        [sys.executable, str(script), *args], cwd=REPO, capture_output=True, text=True, timeout=60, check=True,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, start_new_session=session,
    )  # fmt: skip
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


#: this test's autogroup nice value; None where there is none (CI's container: its processes descend
#: from an init that never called setsid, so they share the boot-time group, which has no nice value)
AUTOGROUP = own_autogroup_nice()


#: run in a new session, through the module's own reader and writer: its autogroup nice value (None
#: where the kernel does not group by session or the file is empty), then whether the kernel takes a
#: change of it (the same value written back; `_set_autogroup_nice` retries the kernel's rate limit)
PROBE = (
    "import json; from fusionrec import priority; n = priority.own_autogroup_nice(); "
    "print(json.dumps([n, n is not None and priority._set_autogroup_nice(n)]))"
)


def _new_session_autogroup() -> tuple[int | None, str]:
    """The autogroup nice value a process that starts a new session has (0 wherever the kernel groups by
    session, also where this test's own session is in no group: setsid always makes one), read by such a
    process, and why a session leader's tests cannot run here ("" when they can)."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, timeout=60,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, start_new_session=True,
    )  # fmt: skip
    if out.returncode != 0:
        return None, f"a new session cannot read its autogroup here: {out.stderr.strip()[-200:]}"
    nice, settable = json.loads(out.stdout.strip().splitlines()[-1])
    if nice is None:
        return None, "no autogroup for a new session here: kernel.sched_autogroup_enabled=0, or an empty file"
    return nice, "" if settable else "this kernel refuses a change of a session's autogroup"


#: what a worker that leads its own session (`_run(..., session=True)`) finds, and why a session leader
#: cannot lower its autogroup here ("" where it can)
SESSION_AUTOGROUP, NO_AUTOGROUP = _new_session_autogroup()


@pytest.fixture
def serving_worker() -> Iterator[int]:
    """A busy process whose command line is a worker's (`... fusionrec worker`): someone to yield to."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass", "fusionrec", "worker"])
    yield proc.pid
    proc.kill()
    proc.wait()


@pytest.fixture
def idle_worker() -> Iterator[int]:
    """An idle (or hung) process whose command line is a worker's: nobody to yield to."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "fusionrec", "worker"])
    yield proc.pid
    proc.kill()
    proc.wait()


def test_with_no_other_worker_on_the_host_a_worker_starts_at_full_speed(tmp_path: Path) -> None:
    """A first start, or a restart after a kill: nobody to yield to (measured: a restart lowered among
    busy brokers took 2 s longer to serve again)."""
    import os

    from fusionrec.priority import _processes, busy

    if busy(other_workers(_processes(), os.getpid())):
        pytest.skip("a busy fusionrec worker runs on this host now: the case cannot be set up")
    base = os.getpriority(os.PRIO_PROCESS, 0)
    got = _run(tmp_path, session=True)
    # a new session's autogroup starts at 0 (where there are autogroups), and is left there
    same = {"self": [base], "child": [base], "autogroup": SESSION_AUTOGROUP}
    assert got == {"lowered": False, "raised": 0, "during": same, "after": same}


def test_a_worker_does_not_yield_to_an_idle_one(tmp_path: Path, idle_worker: int) -> None:
    """An idle or hung worker left on the host (measured: one made every start there yield at nice
    10, a restart's freshness p99 1.1-1.2 s instead of 0.7-1.0 s) is no reason to start slowly."""
    import os

    from fusionrec.priority import _processes, busy

    if busy([p for p in other_workers(_processes(), os.getpid()) if p != idle_worker]):
        pytest.skip("a busy fusionrec worker runs on this host now: the case cannot be set up")
    base = os.getpriority(os.PRIO_PROCESS, 0)
    got = _run(tmp_path, session=True)
    same = {"self": [base], "child": [base], "autogroup": SESSION_AUTOGROUP}
    assert got == {"lowered": False, "raised": 0, "during": same, "after": same}


def test_busy_means_a_share_of_a_core_over_the_window() -> None:
    from fusionrec.priority import BUSY_SHARE, busy

    window = 0.01
    share = int(BUSY_SHARE * window * 1e9)
    reads = {1: [0, share], 2: [0, share - 1], 3: [None, None], 4: [5, None], 5: [None, 7]}
    calls = {p: iter(v) for p, v in reads.items()}
    # 1 used the share; 2 just under; 3 unreadable (yield: the safe side); 4 ended meanwhile; 5 was unreadable
    assert busy([1, 2, 3, 4, 5], window, read=lambda p: next(calls[p])) == [1, 3, 5]
    assert busy([], window) == []


def test_every_thread_and_the_child_process_are_lowered_and_returned(tmp_path: Path, serving_worker: int) -> None:
    import os

    base = os.getpriority(os.PRIO_PROCESS, 0)
    got = _run(tmp_path)
    if base != 0 or not can_restore():  # this test process runs niced already, or may not return
        same = {"self": [base], "child": [base], "autogroup": AUTOGROUP}
        assert got == {"lowered": False, "raised": 0, "during": same, "after": same}
        return
    assert got["lowered"] is True
    # not its session's leader: the session's autogroup (this test's) is left alone
    assert got["during"] == {"self": [WARM_NICE], "child": [WARM_NICE], "autogroup": AUTOGROUP}
    assert got["after"] == {"self": [0], "child": [0], "autogroup": AUTOGROUP}
    assert isinstance(got["raised"], int) and got["raised"] >= 4  # main + two threads + the child's main


def test_an_operators_own_nice_value_is_left_alone(tmp_path: Path, serving_worker: int) -> None:
    import os

    own = min(os.getpriority(os.PRIO_PROCESS, 0) + 3, 19)
    got = _run(tmp_path, "3")
    assert got["lowered"] is False
    assert got["during"] == got["after"] == {"self": [own], "child": [own], "autogroup": AUTOGROUP}


@pytest.mark.skipif(bool(NO_AUTOGROUP), reason=NO_AUTOGROUP)
def test_an_operators_nice_value_survives_the_return_of_the_autogroup(tmp_path: Path, serving_worker: int) -> None:
    """A session leader started at nice 3 lowers only its autogroup, and returns only that: its threads
    stay at the operator's 3 (not raised to 0)."""
    import os

    own = min(os.getpriority(os.PRIO_PROCESS, 0) + 3, 19)
    got = _run(tmp_path, "3", session=True)
    assert got["lowered"] is True
    assert got["during"] == {"self": [own], "child": [own], "autogroup": WARM_NICE}
    assert got["after"] == {"self": [own], "child": [own], "autogroup": 0}
    assert got["raised"] == 1  # the autogroup alone


@pytest.mark.skipif(bool(NO_AUTOGROUP), reason=NO_AUTOGROUP)
def test_a_session_leader_lowers_its_sessions_autogroup_and_returns_it(tmp_path: Path, serving_worker: int) -> None:
    """With autogroups a thread's nice value counts only inside its session: a worker that leads its
    own (a service, a container, the benches' workers) lowers the session's group, which anyone may
    return to 0."""
    got = _run(tmp_path, session=True)
    assert got["lowered"] is True
    assert isinstance(got["during"], dict) and got["during"]["autogroup"] == WARM_NICE
    assert isinstance(got["after"], dict) and got["after"]["autogroup"] == 0


def test_the_autogroup_file_is_read_and_an_empty_one_means_no_autogroup() -> None:
    """CI's container showed an empty /proc/self/autogroup with sched_autogroup_enabled=1: the task is in
    the boot-time group (no ancestor called setsid; PID 1's file is empty too), which has no nice value,
    and nothing is lowered or returned there."""
    assert autogroup_nice("/autogroup-549 nice 0\n") == 0
    assert autogroup_nice("/autogroup-7 nice 10") == 10
    assert autogroup_nice("") is None
    assert autogroup_nice("/autogroup-7 nice x") is None


def test_root_without_cap_sys_nice_does_not_lower_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    """A container's root often lacks CAP_SYS_NICE (Docker's default): it could lower its threads but
    never raise them back, so it must not lower them (CI's container showed it)."""
    import os
    import resource
    import shutil

    from fusionrec import priority

    soft, _ = resource.getrlimit(resource.RLIMIT_NICE)
    by_rlimit = soft == resource.RLIM_INFINITY or soft >= 20
    monkeypatch.setattr(priority, "_cap_sys_nice", lambda status: False)
    monkeypatch.setattr(priority.os, "geteuid", lambda: 0)
    assert priority.can_restore() is by_rlimit
    monkeypatch.undo()
    if os.geteuid() == 0 and shutil.which("capsh") and not by_rlimit:  # and for real, where capsh is at hand
        code = "from fusionrec.priority import can_restore; print(can_restore())"
        out = subprocess.run(["capsh", "--drop=cap_sys_nice", "--", "-c", f"{sys.executable} -c '{code}'"],
                             cwd=REPO, capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
        assert out.stdout.strip() == "False"


def test_cap_sys_nice_is_read_from_the_effective_capabilities() -> None:
    assert _cap_sys_nice("Name:\\tx\nCapEff:\t0000000000800000\n")  # bit 23
    assert not _cap_sys_nice("CapEff:\t00000000007fffff\nCapBnd:\t000001ffffffffff\n")
    assert not _cap_sys_nice("Name:\tx\n")


def test_which_command_lines_start_a_lowered_worker() -> None:
    from fusionrec.priority import starting_worker

    assert starting_worker(["worker", "--bundle", "b"])
    assert starting_worker(["--debug", "worker"])
    assert not starting_worker(["worker", "--spare"])  # the supervisor: its session holds the active worker
    assert not starting_worker(["worker", "--no-warm-up"])  # asked to join at once
    assert not starting_worker(["serve"])
    assert not starting_worker([])


def test_which_command_lines_run_a_worker_process() -> None:
    """A worker process starts with the collector off (fusionrec/__main__); a spare's supervisor
    only watches worker processes and keeps it on."""
    from fusionrec.priority import worker_process

    assert worker_process(["worker", "--bundle", "b"])
    assert worker_process(["worker", "--no-warm-up"])  # joins at once, still a worker process
    assert not worker_process(["worker", "--spare"])
    assert not worker_process(["serve", "--port", "8000"])
    assert not worker_process([])


def test_other_workers_are_the_hosts_worker_processes_but_this_ones_own_family() -> None:
    py, mod = "/usr/bin/python3", "-m"
    processes = {
        1: (0, ["/sbin/init"]),
        10: (1, [py, mod, "fusionrec", "worker", "--spare"]),  # a supervisor: this one's parent
        11: (10, [py, mod, "fusionrec", "worker", "--standby"]),  # this worker
        12: (11, [py, "-B", "-c", "from multiprocessing.spawn import spawn_main"]),  # its writer
        13: (10, [py, mod, "fusionrec", "worker", "--standby"]),  # the spare beside it
        20: (1, ["/venv/bin/fusionrec", "worker", "--bundle", "b"]),  # another worker (the script)
        21: (1, ["/venv/bin/fusionrec", "serve"]),  # not a worker
        22: (1, [py, "bench/stream.py", "--rates", "500"]),  # not a worker
    }
    assert other_workers(processes, 11) == [13, 20]
    assert other_workers(processes, 20) == [10, 11, 13]
    assert other_workers({5: (1, [py, mod, "fusionrec", "worker"])}, 5) == []


def test_a_start_reads_the_hosts_processes_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """`lower` runs in `fusionrec/__main__` and again in the worker command: one decision per start."""
    from fusionrec import priority

    calls: list[int] = []

    def nobody() -> dict[int, tuple[int, list[str]]]:
        calls.append(1)
        return {}

    monkeypatch.setattr(priority, "_processes", nobody)
    monkeypatch.setattr(priority, "_lowered", None)
    monkeypatch.delenv(priority.STARTED_NICE_ENV, raising=False)
    assert priority.lower() is False
    assert priority.lower() is False
    assert calls == [1]


def _started_as(args: list[str], env: dict[str, str]) -> dict[str, object]:
    """What a `python -m fusionrec <args>` process ends with (its `--help` exits at once): its
    OPENBLAS_NUM_THREADS, the collector's state, and the BLAS threads numpy then has."""
    probe = (
        "import atexit, gc, json, os, sys\n"
        "def report():\n"
        "    import numpy  # noqa: F401\n"
        "    from threadpoolctl import threadpool_info\n"
        "    blas = [p['num_threads'] for p in threadpool_info() if p['user_api'] == 'blas']\n"
        "    print('PROBE' + json.dumps({'env': os.environ.get('OPENBLAS_NUM_THREADS'),"
        " 'gc': gc.isenabled(), 'blas': blas}))\n"
        "atexit.register(report)\n"
        f"sys.argv = ['fusionrec', *{args!r}]\n"
        "from fusionrec.__main__ import main\n"
        "main()\n"
    )
    full_env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"} | env
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=full_env, timeout=120)
    line = next(x for x in out.stdout.splitlines() if x.startswith("PROBE"))
    return dict(json.loads(line[len("PROBE") :]))


def test_a_worker_process_starts_with_one_blas_thread_unless_told_otherwise() -> None:
    """numpy's import starts OpenBLAS's threads; a worker limits BLAS to one thread anyway, so its
    process says so before that import (their spinning was 0.04-0.05 s of every start's CPU)."""
    worker = _started_as(["worker", "--help"], {})
    assert worker["env"] == "1" and worker["blas"] == [1] and worker["gc"] is False
    chosen = _started_as(["worker", "--help"], {"OPENBLAS_NUM_THREADS": "2"})
    assert chosen["env"] == "2"
    other = _started_as(["serve", "--help"], {})
    assert other["env"] is None and other["gc"] is True

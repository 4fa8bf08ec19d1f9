"""A starting worker yields the CPU to running ones: it loads and warms at a lower priority (nice +10)
and returns to its normal priority as it joins the consumer group.

It does so only when another worker on the host is busy (a first start, or a restart after a kill,
has nobody to yield to and starts at full speed; nor does it yield to an idle or hung worker left on
the host, which made every start there a slow one), and a spare always does.

Why: a worker's start is seconds of CPU (imports, the model's sessions, the store, the warm-up). When
it starts beside a worker that is serving (the spare that `worker --spare` starts after a takeover, a
second worker of the group, the new process of a rolling deploy), on a small host that CPU came out
of the serving worker's batches: at 500 events/s on 2 cores, the spare started 10 s after a takeover
put freshness p99 over the next minute at 1.9-2.4 s (bench/stream.py --crash-at 30 --spare). At nice
+10 the scheduler gives the starting process what the others leave; with nothing to compete with it
starts as fast as before.

Two levers, both Linux (elsewhere these are no-ops):
- the nice value of every thread (a thread's priority is its own there: every thread and the writer
  process are returned, not only the main thread). Returning needs the right to raise a priority
  (root, CAP_SYS_NICE, or an RLIMIT_NICE of 20): where a process lacks it, it does not lower its
  threads at all (a serving worker left at nice +10 would be worse than a slower neighbour). Between
  a spare and the active worker (one session) this is what counts.
- the session's autogroup (kernel.sched_autogroup_enabled: the scheduler first shares the CPU
  between sessions, so a thread's nice value only counts against its own session's processes): a
  worker that leads its own session (a service manager's, a container's, `setsid`) lowers the
  autogroup too, and anyone may return an autogroup to 0.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "STARTED_NICE_ENV",
    "WARM_NICE",
    "busy",
    "can_restore",
    "command_word",
    "cpu_ns",
    "lower",
    "other_workers",
    "restore",
    "start_niced",
    "starting_worker",
    "worker_process",
]

log = logging.getLogger("fusionrec.worker")

#: how much lower a starting worker's priority is (nice 0 -> 10: about a tenth of a nice-0 process's share)
WARM_NICE = 10

#: another worker process that used less than this share of one core over BUSY_WINDOW_S is idle (no
#: traffic, or hung): nothing to yield to. Measured here: 1-5% idle, 70% at 500 events/s.
BUSY_SHARE = 0.10
BUSY_WINDOW_S = 0.1

#: set by the spare supervisor for a child it started niced (from exec: its imports too), so the
#: child knows to return at its join
STARTED_NICE_ENV = "FUSIONREC_STARTED_NICE"

_CAP_SYS_NICE = 23


def _linux() -> bool:
    return sys.platform.startswith("linux") and Path("/proc/self/task").is_dir()


def _cap_sys_nice(status: str) -> bool:
    """Whether a /proc/<pid>/status text shows CAP_SYS_NICE among the effective capabilities."""
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> _CAP_SYS_NICE & 1)
    return False


def can_restore() -> bool:
    """Whether this process may raise its priority back to nice 0 after lowering it."""
    if not _linux():
        return False
    try:  # root's power to raise it is CAP_SYS_NICE, which a container's root often lacks (Docker's default)
        if _cap_sys_nice(Path("/proc/self/status").read_text()):
            return True
    except OSError:
        if os.geteuid() == 0:
            return True
    import resource

    soft, _hard = resource.getrlimit(resource.RLIMIT_NICE)
    return soft == resource.RLIM_INFINITY or soft >= 20


def start_niced() -> None:
    """For the spare supervisor's `preexec_fn`: the child process runs at nice +WARM_NICE from exec."""
    os.nice(WARM_NICE)


def _is_worker(args: Sequence[str]) -> bool:
    """Whether a command line runs `fusionrec worker` (`python -m fusionrec worker ...`, the script)."""
    for i, arg in enumerate(args):
        if arg.rsplit("/", 1)[-1] == "fusionrec":
            return "worker" in args[i + 1 :]
    return False


def other_workers(processes: Mapping[int, tuple[int, Sequence[str]]], me: int) -> list[int]:
    """Other `fusionrec worker` processes on this host (pid -> (parent pid, command line)), besides
    this one's own ancestors (a spare's supervisor) and descendants."""
    ancestors = set()
    pid = me
    while pid in processes and pid not in ancestors:
        ancestors.add(pid)
        pid = processes[pid][0]

    def descends(p: int) -> bool:
        seen = set()
        while p in processes and p not in seen:
            if p == me:
                return True
            seen.add(p)
            p = processes[p][0]
        return False

    return [p for p, (_, args) in processes.items() if p not in ancestors and not descends(p) and _is_worker(args)]


def cpu_ns(pid: int) -> int | None:
    """CPU time a process's threads have run so far (ns, their schedstat); None where none can be read."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return None
    times = []
    for task in tasks:
        with contextlib.suppress(OSError, ValueError, IndexError):  # a thread that ended meanwhile
            times.append(int((task / "schedstat").read_text().split()[0]))
    return sum(times) if times else None


def busy(pids: Sequence[int], window_s: float = BUSY_WINDOW_S, read: Callable[[int], int | None] = cpu_ns) -> list[int]:
    """The processes among `pids` that used at least BUSY_SHARE of a core over `window_s` (sleeping
    that long: only a start that found another worker waits). One whose CPU time cannot be read
    counts as busy (yielding is the safe side); one that ended meanwhile does not."""
    if not pids:
        return []
    before = {p: read(p) for p in pids}
    time.sleep(window_s)
    out = []
    for p in pids:
        start, end = before[p], read(p)
        if start is None or (end is not None and end - start >= BUSY_SHARE * window_s * 1e9):
            out.append(p)
    return out


def _processes() -> dict[int, tuple[int, list[str]]]:
    """pid -> (parent pid, command line) of this host's processes that can be read."""
    out: dict[int, tuple[int, list[str]]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # ended meanwhile, or not ours to read
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        out[int(entry.name)] = (ppid, [a.decode(errors="replace") for a in args if a])
    return out


def command_word(args: Sequence[str]) -> str | None:
    """The command a command line names: its first word that is not an option (None: none)."""
    return next((a for a in args if not a.startswith("-")), None)


def worker_process(args: Sequence[str]) -> bool:
    """Whether command-line `args` run a worker process itself, not a spare's supervisor (which only
    starts and watches worker processes)."""
    return command_word(args) == "worker" and "--spare" not in args


def starting_worker(args: Sequence[str]) -> bool:
    """Whether command-line `args` start a worker that warms up before it joins (not a spare's
    supervisor: its session holds the active worker, which must not be lowered with it)."""
    return worker_process(args) and "--no-warm-up" not in args


@dataclass(frozen=True)
class _Lowered:
    """What this process's start lowered, so that `restore` returns exactly that (an operator's own
    nice values, per thread or per autogroup, are never raised)."""

    threads: bool  # every thread from 0 to WARM_NICE (by `lower`, or by the supervisor from exec)
    autogroup: bool  # its session's autogroup from 0 to WARM_NICE

    def __bool__(self) -> bool:
        return self.threads or self.autogroup


#: what this process's start decided (`lower`: called from `fusionrec/__main__` and again by the
#: worker command, which the CLI also runs in-process), until `restore`; None: not decided yet
_lowered: _Lowered | None = None


def lower() -> bool:
    """This process (every thread so far; later ones inherit) to nice +WARM_NICE when it is at 0 and
    may return (`can_restore`), and its session's autogroup when it leads the session and that is at 0
    (an operator's own values stay as they are). True when anything is now lowered, also by the spare
    supervisor (`STARTED_NICE_ENV`)."""
    global _lowered
    if _lowered is not None:
        return bool(_lowered)  # decided once per start: the host's processes are read once
    if os.environ.get(STARTED_NICE_ENV):
        _lowered = _Lowered(threads=True, autogroup=False)
        return True
    if not _linux() or not busy(other_workers(_processes(), os.getpid())):
        _lowered = _Lowered(threads=False, autogroup=False)
        return False  # nobody to yield to (a first start, a restart after a kill, an idle worker): full speed
    autogroup = _autogroup_nice() == 0 and _set_autogroup_nice(WARM_NICE)
    threads = can_restore() and os.getpriority(os.PRIO_PROCESS, 0) == 0
    if threads:
        for tid in _tasks(os.getpid()):
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, tid, WARM_NICE)
    _lowered = _Lowered(threads=threads, autogroup=autogroup)
    return bool(_lowered)


def restore() -> int:
    """What `lower` lowered back to nice 0: every thread of this process and of its child processes
    (the writer), its session's autogroup; returns how many were raised. A thread that cannot be
    raised is logged, not fatal: the worker still works."""
    global _lowered
    done, _lowered = _lowered, None
    os.environ.pop(STARTED_NICE_ENV, None)  # a process it starts later (none today) starts at 0
    if not _linux() or not done:
        return 0
    raised = 0
    if done.autogroup and (_autogroup_nice() or 0) > 0 and _set_autogroup_nice(0):
        raised += 1
    pids = [os.getpid(), *(p.pid for p in multiprocessing.active_children() if p.pid is not None)]
    for pid in pids if done.threads else []:
        for tid in _tasks(pid):
            try:
                if os.getpriority(os.PRIO_PROCESS, tid) > 0:
                    os.setpriority(os.PRIO_PROCESS, tid, 0)
                    raised += 1
            except PermissionError as exc:
                log.warning("worker_priority_kept tid=%d error=%s", tid, exc)
            except ProcessLookupError:
                pass  # a thread that ended meanwhile
    return raised


def _tasks(pid: int) -> list[int]:
    try:
        return [int(t.name) for t in Path(f"/proc/{pid}/task").iterdir()]
    except OSError:
        return []


_AUTOGROUP = Path("/proc/self/autogroup")


def _autogroup_nice() -> int | None:
    """This session's autogroup nice value, when this process leads its session (a worker inside
    someone else's session, e.g. a spare beside the active worker or a shell's job, leaves the
    session's group alone) and is in an autogroup (`own_autogroup_nice`)."""
    return own_autogroup_nice() if os.getsid(0) == os.getpid() else None


def own_autogroup_nice() -> int | None:
    """This process's autogroup nice value; None where the kernel does not group by session or the
    process is in the boot-time group (the file is empty: no ancestor called setsid, as in a container
    whose processes descend from an init that never did; the group has no nice value)."""
    try:
        if Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() != "1":
            return None
        return autogroup_nice(_AUTOGROUP.read_text())
    except OSError:
        return None


def autogroup_nice(text: str) -> int | None:
    """The nice value in /proc/<pid>/autogroup ("/autogroup-123 nice 0"); None for an empty file: the
    task is in the boot-time group, which has no nice value to lower."""
    parts = text.split()
    try:
        return int(parts[-1]) if len(parts) >= 3 and parts[-2] == "nice" else None
    except ValueError:
        return None


def _set_autogroup_nice(value: int) -> bool:
    """The kernel takes one change per 0.1 s from a process without CAP_SYS_ADMIN (EAGAIN): retried."""
    for _ in range(10):
        try:
            _AUTOGROUP.write_text(str(value))
            return True
        except BlockingIOError:
            time.sleep(0.11)
        except OSError as exc:
            log.warning("worker_priority_autogroup value=%d error=%s", value, exc)
            return False
    return False

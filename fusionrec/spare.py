"""`fusionrec worker --spare`: the worker runs as a child of a small supervisor that keeps a second,
warmed-up child in reserve, so a worker process that dies (SIGKILL, the OOM killer, a crash in a
native library) is replaced in a fraction of a second instead of a cold start.

Why: a restarted worker needs about 3 s on an idle 2-core host (imports, the model's sessions, the
store, the warm-up) before its first batch, and every event produced meanwhile waits for it; at
500 events/s that alone puts freshness p99 over 1 s for the next minute. The spare has done all of
that already and waits, outside the consumer group, on its stdin; the supervisor writes one byte
and it joins. With static membership (`--instance-id`) it takes the dead worker's partitions at
once; without it the group waits out the dead member's session (10 s) first.

The spare costs memory (a second model in RAM), not CPU: it sleeps until it is needed. A new spare
is started `SPARE_DELAY_S` after each start or takeover, so its loading does not compete with the
active worker's catch-up on a small host, and it starts at a lower CPU priority (nice +10, back to
normal as it joins: fusionrec.priority), so its loading does not slow the active worker's batches.

Each child is its own process group (the supervisor kills a dead child's group, its writer process
with it, before the spare joins: no write of the old worker lands after the new one's) and dies with
the supervisor (PR_SET_PDEATHSIG on Linux). SIGTERM/SIGINT to the supervisor stop the active worker
gracefully (faust commits what was written) and release the spare. A worker that exits by itself
with 0 or 2 (stopped, or a bad setting the spare would repeat) ends the supervisor with that code.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from fusionrec.priority import STARTED_NICE_ENV, WARM_NICE, can_restore, start_niced

__all__ = ["GO", "SPARE_DELAY_S", "CrashBudget", "Supervisor", "next_action"]

log = logging.getLogger("fusionrec.spare")

#: what the supervisor writes to a waiting spare: join the group now
GO = b"g"

#: a new spare starts this long after the active worker did (its load would slow the catch-up)
SPARE_DELAY_S = 10.0

#: exit codes of a worker that ended by itself: the spare would do the same, so the supervisor ends too
FINAL_CODES = (0, 2)

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec: its own process group, and SIGKILL when the supervisor dies."""
    os.setpgid(0, 0)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):  # a libc without prctl: no parent-death signal
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _die_niced_with_parent() -> None:
    _die_with_parent()
    start_niced()


@dataclass
class CrashBudget:
    """At most `limit` crashes in any `window_s`: beyond that the worker is failing, not unlucky, and
    replacing it forever would hide it (the orchestrator's restart policy takes over)."""

    limit: int = 5
    window_s: float = 60.0
    times: list[float] = field(default_factory=list)

    def spend(self, now: float) -> bool:
        self.times = [t for t in self.times if now - t < self.window_s] + [now]
        return len(self.times) <= self.limit


def next_action(returncode: int, stopping: bool, budget_left: bool) -> str:
    """What the supervisor does when its active worker has exited: "stop" (it was asked to),
    "exit" (the worker ended by itself, or crashes too often), or "replace"."""
    if stopping:
        return "stop"
    if returncode in FINAL_CODES or not budget_left:
        return "exit"
    return "replace"


class Supervisor:
    """Runs `command + ["--standby"]` children: one active (told GO at once), one spare."""

    def __init__(
        self,
        command: Sequence[str],
        spare_delay_s: float = SPARE_DELAY_S,
        poll_s: float = 0.02,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.command = list(command)
        self.spare_delay_s = spare_delay_s
        self.poll_s = poll_s
        self.clock = clock
        self.stopping = False
        self.active: subprocess.Popen[bytes] | None = None
        self.spare: subprocess.Popen[bytes] | None = None
        self.crashes = CrashBudget()
        # a spare returns to nice 0 as it joins: only where it may, and where 0 is this one's own value
        self.niced_spares = can_restore() and os.getpriority(os.PRIO_PROCESS, 0) == 0
        self.takeovers = 0

    def _spawn(self, spare: bool = False) -> subprocess.Popen[bytes]:
        """A child; a spare starts at a lower CPU priority, all of its start (fusionrec.priority), when
        it may return to the normal one as it joins."""
        if spare and self.niced_spares:
            env = {**os.environ, STARTED_NICE_ENV: str(WARM_NICE)}
            return subprocess.Popen(
                [*self.command, "--standby"], stdin=subprocess.PIPE, preexec_fn=_die_niced_with_parent, env=env
            )
        return subprocess.Popen([*self.command, "--standby"], stdin=subprocess.PIPE, preexec_fn=_die_with_parent)

    @staticmethod
    def _go(proc: subprocess.Popen[bytes]) -> bool:
        try:
            assert proc.stdin is not None
            proc.stdin.write(GO)
            proc.stdin.flush()
            return True
        except (BrokenPipeError, OSError):
            return False

    @staticmethod
    def _release(proc: subprocess.Popen[bytes] | None) -> None:
        """A spare's stdin closed: it exits without joining."""
        if proc is not None and proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()

    @staticmethod
    def _kill_group(proc: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    def _stop(self, signum: int, _frame: object) -> None:
        self.stopping = True
        if self.active is not None and self.active.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.active.pid, signal.SIGTERM)
        self._release(self.spare)

    def _start_active(self) -> None:
        self.active = self._spawn()
        self._go(self.active)
        log.info("spare_worker_active pid=%d cold=1", self.active.pid)

    def _replace(self, dead: subprocess.Popen[bytes]) -> None:
        self._kill_group(dead)  # its writer process too: nothing of the dead worker writes after this
        dead.wait()
        spare, self.spare = self.spare, None
        if spare is not None and spare.poll() is None and self._go(spare):
            self.active = spare
            self.takeovers += 1
            log.info(
                "spare_worker_active pid=%d cold=0 replaced=%d returncode=%d", spare.pid, dead.pid, dead.returncode
            )
        else:
            self._start_active()

    def run(self) -> int:
        """Until stopped; returns the exit code for the supervisor."""
        previous = {s: signal.signal(s, self._stop) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self._start_active()
            spare_due = self.clock() + self.spare_delay_s
            while True:
                assert self.active is not None
                rc = self.active.poll()
                if rc is not None:
                    action = next_action(rc, self.stopping, self.crashes.spend(self.clock()))
                    if action != "replace":
                        if action == "exit":
                            log.warning("spare_worker_exited returncode=%d takeovers=%d", rc, self.takeovers)
                        return rc if rc >= 0 else 128 - rc  # killed by signal N: 128 + N, as a shell says
                    self._replace(self.active)
                    spare_due = self.clock() + self.spare_delay_s
                if self.spare is not None and self.spare.poll() is not None:
                    log.warning("spare_worker_lost pid=%d returncode=%d", self.spare.pid, self.spare.returncode)
                    self.spare = None
                    spare_due = self.clock() + self.spare_delay_s
                if self.spare is None and not self.stopping and self.clock() >= spare_due:
                    self.spare = self._spawn(spare=True)
                    log.info("spare_worker_waiting pid=%d", self.spare.pid)
                time.sleep(self.poll_s)
        finally:
            self._release(self.spare)
            for proc in (self.spare, self.active):
                if proc is not None:
                    try:
                        proc.wait(60)
                    except subprocess.TimeoutExpired:
                        self._kill_group(proc)
            for s, handler in previous.items():
                signal.signal(s, handler)

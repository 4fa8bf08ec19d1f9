"""Helpers shared by the benchmarks and the integration tests: a worker subprocess, polling, and the
expected fold of a user's events."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ranker.state import Delivery, UserState, apply_events
from schemas.events import Event

REPO = Path(__file__).resolve().parents[1]


def expected_views(events: Iterable[Event]) -> dict[str, dict[str, Any]]:
    """Each user's folded view, computed purely from the events (no store, no Kafka)."""
    by_user: dict[str, list[Delivery]] = {}
    for i, ev in enumerate(events):
        by_user.setdefault(ev.user_id, []).append(Delivery(ev, "expected", i))
    return {u: apply_events(UserState(u), ds)[0].folded_view() for u, ds in by_user.items()}


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.5) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


class WorkerProcess:
    """`fusionrec worker` as a real OS process, so it can be SIGKILLed like in production."""

    def __init__(
        self,
        log_path: Path,
        *,
        topic: str,
        dead_letter_topic: str,
        group: str,
        keyspace: str,
        batch_size: int = 200,
        env: dict[str, str] | None = None,
    ) -> None:
        self.log_path = log_path
        self.args = [
            sys.executable,
            "-m",
            "fusionrec",
            "worker",
            "--topic",
            topic,
            "--dead-letter-topic",
            dead_letter_topic,
            "--group",
            group,
            "--batch-size",
            str(batch_size),
        ]
        self.env = {
            **os.environ,
            "FUSIONREC_CASSANDRA__KEYSPACE": keyspace,
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        fh = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.args, cwd=REPO, env=self.env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )
        fh.close()
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self, timeout_s: float = 60) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def last_line(self, prefix: str) -> str | None:
        lines = [ln for ln in self.log().splitlines() if prefix in ln]
        return lines[-1] if lines else None


def named_worker(log_dir: Path, names: dict[str, str], name: str, **kw: Any) -> WorkerProcess:
    """A worker on a test's own topics, group and keyspace, logging to log_dir/name.log."""
    return WorkerProcess(
        log_dir / f"{name}.log",
        topic=names["topic"],
        dead_letter_topic=names["dead_letter_topic"],
        group=names["group"],
        keyspace=names["keyspace"],
        **kw,
    )


def assert_folds_exactly(store: Any, events: Iterable[Event]) -> dict[str, dict[str, Any]]:
    """Every stored user state equals the pure fold of exactly that user's events; returns the expected views."""
    stored = {u: s.folded_view() for u, s in store.all_states().items()}
    expected = expected_views(events)
    assert set(stored) == set(expected), "users missing or unexpected in Cassandra"
    wrong = [u for u in expected if stored[u] != expected[u]]
    assert not wrong, f"{len(wrong)} users' state differs from their fold, e.g. {wrong[:3]}"
    return expected

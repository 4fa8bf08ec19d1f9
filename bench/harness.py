"""Helpers shared by the benchmarks and the integration tests: a worker subprocess, polling, a
consumer group's progress against a topic's end, and the expected fold of a user's events."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from ranker.state import Delivery, UserState, apply_events
from schemas.events import Event
from streams.kafka_config import confluent_config
from streams.settings import KafkaSettings

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


def _end_offsets(consumer: Consumer, topic: str, timeout_s: float) -> dict[int, int]:
    """partition -> high-water mark (the offset the next record will get), read from the broker."""
    meta = consumer.list_topics(topic, timeout=timeout_s).topics[topic]
    return {
        p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s, cached=False)[1]
        for p in meta.partitions
    }


class GroupOffsets:
    """A consumer group's committed offsets against a topic's end offsets, read without joining the
    group (no subscription, so no rebalance of the workers under test)."""

    def __init__(self, kafka: KafkaSettings | str, group: str, timeout_s: float = 10.0) -> None:
        self.timeout_s = timeout_s
        self._consumer = Consumer(confluent_config(kafka, {"group.id": group, "enable.auto.commit": False}))

    def __enter__(self) -> GroupOffsets:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._consumer.close()

    def lag(self, topic: str) -> int:
        """Records of `topic` past the group's committed offsets; 0: the group is done up to the end."""
        end = _end_offsets(self._consumer, topic, self.timeout_s)
        tps = self._consumer.committed([TopicPartition(topic, p) for p in end], timeout=self.timeout_s)
        committed = {tp.partition: max(tp.offset, 0) for tp in tps}  # none committed yet: a negative sentinel
        return sum(max(high - committed[p], 0) for p, high in end.items())


def wait_committed(
    kafka: KafkaSettings | str, group: str, topic: str, timeout_s: float, alive: Callable[[], bool] = lambda: True
) -> None:
    """Until `group` has committed `topic` up to its end (or `alive()` turns false): with offsets committed
    only after their writes, nothing the group read is still being processed."""
    with GroupOffsets(kafka, group) as offsets:
        wait_for(lambda: not alive() or offsets.lag(topic) == 0, timeout_s, f"{group} to commit {topic} to its end")


def read_to_end(kafka: KafkaSettings | str, topic: str, timeout_s: float = 60) -> list[Message]:
    """Every record of `topic`, from the beginning up to the end offsets it has when called."""
    consumer = Consumer(confluent_config(kafka, {"group.id": f"{topic}-reader", "enable.auto.commit": False}))
    try:
        ends = _end_offsets(consumer, topic, timeout_s)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        left = {p for p, high in ends.items() if high > 0}
        out: list[Message] = []
        deadline = time.monotonic() + timeout_s
        while left:
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out reading {topic} up to its end offsets {ends}")
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            partition, offset = msg.partition(), msg.offset()
            assert partition is not None and offset is not None
            if offset < ends[partition]:
                out.append(msg)
            if offset >= ends[partition] - 1:
                left.discard(partition)
        return out
    finally:
        consumer.close()


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def served_api(
    args: list[str], log_path: Path, port: int, timeout_s: float = 120, env: dict[str, str] | None = None
) -> Iterator[str]:
    """`fusionrec serve ARGS --port PORT` as its own process group, yielded (base URL) once /readyz
    answers 200; stopped with SIGTERM on the way out. Fails with the server's log if it never is.
    `env`: variables added to this process's (e.g. FUSIONREC_CONFIG for another cluster)."""
    env = {**{k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}, **(env or {})}
    cmd = [sys.executable, "-m", "fusionrec", "serve", *args, "--port", str(port)]
    with log_path.open("w") as fh:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise AssertionError(f"the API never became ready:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)

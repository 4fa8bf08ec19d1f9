"""Replay: produce a dataset's events into Kafka (confluent-kafka), keyed by user, at a chosen rate."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tqdm import tqdm

from schemas.errors import ServiceError

__all__ = ["ReplayReport", "ensure_topics", "produce_records"]

log = logging.getLogger("fusionrec.replay")

try:
    from confluent_kafka import KafkaException, Producer
    from confluent_kafka.admin import AdminClient, NewTopic
except ImportError as exc:  # pragma: no cover
    raise ImportError("replay needs confluent-kafka: pip install 'fusionrec'") from exc


@dataclass
class ReplayReport:
    produced: int = 0
    failed: int = 0
    elapsed_s: float = 0.0

    @property
    def events_per_s(self) -> float:
        return self.produced / self.elapsed_s if self.elapsed_s > 0 else 0.0


def ensure_topics(bootstrap: str, topics: dict[str, int], timeout_s: float = 30.0) -> None:
    """Create missing topics with the given partition counts (replication 1 locally); idempotent."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        existing = admin.list_topics(timeout=timeout_s).topics
    except KafkaException as exc:
        raise ServiceError(f"cannot reach Kafka at {bootstrap}: {exc}; `fusionrec services up` starts one") from exc
    new = [NewTopic(name, num_partitions=n, replication_factor=1) for name, n in topics.items() if name not in existing]
    if not new:
        return
    for name, fut in admin.create_topics(new, operation_timeout=timeout_s).items():
        try:
            fut.result()
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise ServiceError(f"cannot create topic {name}: {exc}") from exc
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        md = admin.list_topics(timeout=timeout_s).topics
        if all(name in md and not md[name].error for name in topics):
            return
        time.sleep(0.2)
    raise ServiceError(f"topics {list(topics)} not visible after {timeout_s}s")


def produce_records(
    bootstrap: str,
    topic: str,
    records: Iterable[tuple[bytes, bytes]],
    *,
    rate: float | None = None,
    total: int | None = None,
    progress: bool = True,
    extra_config: dict[str, object] | None = None,
    headers: Sequence[tuple[str, bytes]] | None = None,
) -> ReplayReport:
    """Produce (key, value) pairs; `rate` in events/s (None: as fast as possible). Waits for every ack."""
    conf: dict[str, object] = {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "batch.num.messages": 10000,
        "queue.buffering.max.messages": 500000,
    }
    conf.update(extra_config or {})
    producer = Producer(conf)
    report = ReplayReport()

    def on_delivery(err: object, _msg: object) -> None:
        if err is not None:
            report.failed += 1
            log.error("produce_failed error=%s", err)

    started = time.perf_counter()
    with tqdm(total=total, unit="ev", desc=f"replay -> {topic}", disable=not progress, leave=False) as bar:
        for i, (key, value) in enumerate(records):
            if rate:
                ahead = started + i / rate - time.perf_counter()
                if ahead > 0:
                    time.sleep(ahead)
            while True:
                try:
                    producer.produce(
                        topic,
                        value=value,
                        key=key,
                        on_delivery=on_delivery,
                        headers=list(headers) if headers else None,
                    )
                    break
                except BufferError:
                    producer.poll(0.05)  # local queue full: wait for the broker, never drop
            producer.poll(0)
            report.produced += 1
            if i % 1000 == 0:
                bar.update(1000 if i else 1)
        remaining = producer.flush(120)
        bar.update(max(0, report.produced - bar.n))
    if remaining:
        raise ServiceError(f"{remaining} events still unacknowledged by Kafka after 120 s")
    if report.failed:
        raise ServiceError(f"{report.failed} events could not be produced to {topic}")
    report.elapsed_s = time.perf_counter() - started
    log.info(
        "replay topic=%s produced=%d elapsed_s=%.2f eps=%.0f",
        topic,
        report.produced,
        report.elapsed_s,
        report.events_per_s,
    )
    return report

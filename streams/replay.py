"""Replay: produce a dataset's events into Kafka (confluent-kafka), keyed by user, at a chosen rate."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from schemas.errors import ConfigError, ServiceError
from schemas.progress import progress as progress_bar
from streams.kafka_config import ClientLog, KafkaClientConfig, kafka_client_config, refusal
from streams.settings import KafkaSettings

__all__ = ["ReplayReport", "ensure_topics", "produce_records"]

log = logging.getLogger("fusionrec.replay")

try:
    from confluent_kafka import KafkaError, KafkaException, Producer
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


def _topic_names(
    admin: AdminClient, cfg: KafkaClientConfig, errors: list[KafkaError], client_log: ClientLog, timeout_s: float
) -> set[str]:
    """The cluster's topics; a refusal (bad login, untrusted or refused certificate, wrong protocol) is a
    ConfigError at once, an unreachable cluster a ServiceError after `timeout_s` with librdkafka's last word."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return set(admin.list_topics(timeout=min(1.0, max(0.1, deadline - time.monotonic()))).topics)
        except KafkaException as exc:
            errors.append(exc.args[0])
        admin.poll(0)  # serves error_cb and the log
        said = [(e.name(), e.str()) for e in errors] + [("", line) for line in client_log.recent]
        for code, message in said:
            fix = refusal(cfg, code, message)
            if fix:
                raise ConfigError(fix)
        if time.monotonic() >= deadline:
            last = client_log.recent[-1] if client_log.recent else errors[-1].str() if errors else "no answer"
            raise ServiceError(f"cannot reach Kafka at {cfg.bootstrap} ({last}); `fusionrec services up` starts one")


def ensure_topics(kafka: KafkaSettings | str, topics: dict[str, int], timeout_s: float = 30.0) -> None:
    """Create missing topics with the given partition counts and the settings' replication factor and
    min.insync.replicas; idempotent. A bare bootstrap string: a PLAINTEXT cluster, replication 1."""
    settings = kafka if isinstance(kafka, KafkaSettings) else KafkaSettings(bootstrap=kafka)
    if settings.min_insync_replicas > settings.replication_factor:
        raise ConfigError(
            f"kafka.min_insync_replicas = {settings.min_insync_replicas} exceeds kafka.replication_factor = "
            f"{settings.replication_factor}: no write could ever be acknowledged"
        )
    cfg = kafka_client_config(settings)
    errors: list[KafkaError] = []
    client_log = ClientLog()
    admin = AdminClient(cfg.confluent({"error_cb": errors.append, "logger": client_log}))
    existing = _topic_names(admin, cfg, errors, client_log, timeout_s)
    new = [
        NewTopic(
            name,
            num_partitions=n,
            replication_factor=settings.replication_factor,
            config={"min.insync.replicas": str(settings.min_insync_replicas)},
        )
        for name, n in topics.items()
        if name not in existing
    ]
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
    kafka: KafkaSettings | str,
    topic: str,
    records: Iterable[tuple[bytes, bytes]],
    *,
    rate: float | None = None,
    total: int | None = None,
    progress: bool = True,
    extra_config: dict[str, object] | None = None,
    headers: Sequence[tuple[str, bytes]] | None = None,
) -> ReplayReport:
    """Produce (key, value) pairs; `rate` in events/s (None: as fast as possible). Waits for every ack.
    `kafka`: the settings (security included), or a bare bootstrap string for a PLAINTEXT cluster."""
    conf = kafka_client_config(kafka).confluent(
        {
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "batch.num.messages": 10000,
            "queue.buffering.max.messages": 500000,
            **(extra_config or {}),
        }
    )
    producer = Producer(conf)
    report = ReplayReport()

    def on_delivery(err: object, _msg: object) -> None:
        if err is not None:
            report.failed += 1
            log.error("produce_failed error=%s", err)

    started = time.perf_counter()
    with progress_bar(total=total, unit="ev", desc=f"replay -> {topic}", enabled=progress) as bar:
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

"""Helpers shared by the benchmarks: consumer-group progress, and the clean-up of the keyspaces and
topics each run makes (left behind, a few hundred runs had put 1,000 topics in the local broker, and
every client's metadata request, a worker's start included, carried them all)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from streams.kafka_config import confluent_config
from streams.settings import KafkaSettings
from streams.stores.cassandra import connect

__all__ = ["committed", "drop_keyspace", "drop_topics"]


def committed(kafka: KafkaSettings | str, group: str, topic: str, partitions: int) -> int:
    """Sum of the group's committed offsets over the topic's partitions (0 where none yet)."""
    c = Consumer(confluent_config(kafka, {"group.id": group, "enable.auto.commit": False}))
    try:
        offsets = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return sum(max(tp.offset, 0) for tp in offsets)
    finally:
        c.close()


def drop_keyspace(keyspace: str, host: str = "127.0.0.1", port: int = 9042) -> None:
    cluster, session = connect([host], port)
    try:
        session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=60)
    finally:
        cluster.shutdown()


def drop_topics(bootstrap: str, topics: Sequence[str], groups: Sequence[str] = ()) -> None:
    """Deletes a run's topics, and the leader topic faust makes for each consumer group of its workers."""
    names = [*topics, *(f"{g}-__assignor-__leader" for g in groups)]
    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = set(admin.list_topics(timeout=10).topics)
    gone = [t for t in names if t in existing]
    for fut in admin.delete_topics(gone, operation_timeout=30).values() if gone else ():
        fut.result()


def worker_bench_parser(doc: str | None) -> argparse.ArgumentParser:
    """The options every bench that launches `fusionrec worker` processes shares: where its results
    go, the dataset, and the bundle the workers rank with."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--data", default="synthetic")
    ap.add_argument("--bundle", default=None, help="model bundle (default: the co-occurrence baseline)")
    return ap

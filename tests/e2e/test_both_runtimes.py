"""One end-to-end suite, two runtimes: the embedded mode (in-process replay -> SQLite) and the
service mode (Kafka -> `fusionrec worker` process -> Cassandra), both with the same model bundle.

Each runtime takes raw records (valid events and malformed ones) and must end with: every user's
state equal to the fold of exactly their events, a personal list of 20 items from the bundle for
every user naming their newest event, and every malformed record dead-lettered with a field and a
reason. Feeding the same events a second time changes nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import orjson
import pytest
from confluent_kafka import Consumer, Producer

from bench.harness import WorkerProcess, assert_folds_exactly, wait_for
from fusionrec.wiring import build_pipeline, build_ranker
from ranker.state import UserState
from schemas.codec import encode_event
from schemas.recommendations import RecommendationList
from shopdata.loader import Dataset, load_dataset
from streams.embedded import records_from_values, run_embedded
from streams.replay import ensure_topics
from streams.stores.cassandra import CassandraStore
from streams.stores.sqlite import SQLiteStore

MALFORMED = [b"{not json", b'{"event_id": "x1", "type": "view"}', b'{"event_id": "x2", "type": "teleport", '
             b'"user_id": "u", "ts": 1}', b""]  # fmt: skip


class Runtime(Protocol):
    def feed(self, records: list[tuple[bytes, bytes]]) -> None:
        """Deliver (key, value) records and return once all of them are processed."""

    def all_states(self) -> dict[str, UserState]: ...

    def get_recommendations(self, user_id: str) -> RecommendationList | None: ...

    def dead_letters(self) -> list[dict[str, Any]]:
        """[{field, reason, raw}] for every dead-lettered record so far."""
        ...


class Embedded:
    def __init__(self, db: Path, bundle: Path, shop: Dataset) -> None:
        self.store = SQLiteStore(db)
        self.store.setup()
        self.pipeline = build_pipeline(self.store, build_ranker(bundle=bundle), k=20, state_cache_users=10_000)
        self.offset = 0

    def feed(self, records: list[tuple[bytes, bytes]]) -> None:
        recs = list(records_from_values((v for _, v in records), source="file:e2e", start_offset=self.offset))
        self.offset += len(recs)
        run_embedded(recs, self.pipeline, self.store, batch_size=250, progress=False)

    def all_states(self) -> dict[str, UserState]:
        return self.store.all_states()

    def get_recommendations(self, user_id: str) -> RecommendationList | None:
        return self.store.get_recommendations(user_id)

    def dead_letters(self) -> list[dict[str, Any]]:
        return [{"field": d.field, "reason": d.reason, "raw": d.raw} for d in self.store.dead_letters()]

    def close(self) -> None:
        self.store.close()


class Service:
    def __init__(self, services: dict[str, str], unique: str, keyspace: str, bundle: Path, shop_dir: Path,
                 log: Path) -> None:  # fmt: skip
        self.boot = services["bootstrap"]
        self.topic, self.dlq, self.group = f"e2e-{unique}", f"e2e-{unique}.dlq", f"g-{unique}"
        ensure_topics(self.boot, {self.topic: 3, self.dlq: 1})
        self.store = CassandraStore([services["cassandra_host"]], int(services["cassandra_port"]), keyspace)
        self.store.setup()
        self.worker = WorkerProcess(log, topic=self.topic, dead_letter_topic=self.dlq, group=self.group,
                                    keyspace=keyspace, batch_size=250)  # fmt: skip
        self.worker.args += ["--bundle", str(bundle)]
        self.worker.start()
        self.produced = 0
        self.letters: list[dict[str, Any]] = []
        self.dlq_consumer = Consumer(
            {"bootstrap.servers": self.boot, "group.id": f"dlq-{unique}", "auto.offset.reset": "earliest"}
        )
        self.dlq_consumer.subscribe([self.dlq])

    def _committed(self) -> int:
        from confluent_kafka import TopicPartition

        c = Consumer({"bootstrap.servers": self.boot, "group.id": self.group, "enable.auto.commit": False})
        try:
            got = c.committed([TopicPartition(self.topic, p) for p in range(3)], timeout=10)
            return sum(max(tp.offset, 0) for tp in got)
        finally:
            c.close()

    def feed(self, records: list[tuple[bytes, bytes]]) -> None:
        p = Producer({"bootstrap.servers": self.boot, "linger.ms": 5, "enable.idempotence": True})
        for key, value in records:
            p.produce(self.topic, key=key, value=value)
        p.flush(30)
        self.produced += len(records)
        wait_for(lambda: self._committed() >= self.produced or not self.worker.alive(), 300, "the worker")
        assert self.worker.alive(), self.worker.log()[-3000:]

    def all_states(self) -> dict[str, UserState]:
        return self.store.all_states()

    def get_recommendations(self, user_id: str) -> RecommendationList | None:
        return self.store.get_recommendations(user_id)

    def dead_letters(self) -> list[dict[str, Any]]:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            msg = self.dlq_consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            raw_headers: list[tuple[str, bytes]] = msg.headers() or []  # type: ignore[assignment]
            headers = {k: v.decode() for k, v in raw_headers}
            self.letters.append(
                {"field": headers["fusionrec.field"], "reason": headers["fusionrec.reason"], "raw": msg.value() or b""}
            )
        return self.letters

    def close(self) -> None:
        self.dlq_consumer.close()
        assert self.worker.stop() == 0, self.worker.log()[-3000:]
        self.store.close()


@pytest.fixture(params=["embedded", pytest.param("service", marks=pytest.mark.integration)])
def runtime(request: pytest.FixtureRequest, tmp_path: Path, bundles: list[Path], shop_dir: Path) -> Iterator[Runtime]:
    rt: Embedded | Service
    if request.param == "embedded":
        rt = Embedded(tmp_path / "e2e.db", bundles[1], load_dataset(shop_dir))
    else:
        rt = Service(
            request.getfixturevalue("services"),
            request.getfixturevalue("unique"),
            request.getfixturevalue("cassandra_keyspace"),
            bundles[1],
            shop_dir,
            tmp_path / "worker.log",
        )
    try:
        yield rt
    finally:
        rt.close()


def test_same_outcome_on_both_runtimes(runtime: Runtime, shop_dir: Path, bundles: list[Path]) -> None:
    shop = load_dataset(shop_dir)
    records = [(e.user_id.encode(), encode_event(e)) for e in shop.events]
    for n, bad in enumerate(MALFORMED):  # spread among the valid ones
        records.insert(1 + n * (len(records) // len(MALFORMED)), (b"bad", bad))
    runtime.feed(records)

    class _States:
        def all_states(self) -> dict[str, UserState]:
            return runtime.all_states()

    expected = assert_folds_exactly(_States(), shop.events)
    version = orjson.loads((bundles[1] / "manifest.json").read_bytes())["version"]
    for user, view in expected.items():
        rec = runtime.get_recommendations(user)
        assert rec is not None and len(rec.items) == 20 and rec.source == "personal", user
        assert rec.model_version == version and rec.newest_event_ts == view["last_ts"]
    letters = runtime.dead_letters()
    assert sorted(d["raw"] for d in letters) == sorted(MALFORMED)
    assert all(d["field"] and d["reason"] for d in letters)

    runtime.feed([r for r in records if r[0] != b"bad"])  # the same events again: nothing changes
    assert_folds_exactly(_States(), shop.events)

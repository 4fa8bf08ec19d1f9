"""The worker with a trained model bundle against the REAL Kafka and Cassandra: cold start, the
first event's personal list, and a new item from the items topic reaching a matching user's list."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from bench.harness import WorkerProcess, wait_for
from schemas.codec import encode_event
from schemas.events import Event, EventType
from shopdata.loader import load_dataset
from streams.replay import ensure_topics
from streams.stores.cassandra import CassandraStore

pytestmark = pytest.mark.integration


def _fresh_list(store: CassandraStore, user: str, ts: int) -> bool:
    rec = store.get_recommendations(user)
    return rec is not None and rec.newest_event_ts >= ts


def test_cold_start_first_event_and_live_item(
    services: dict[str, str],
    unique: str,
    cassandra_keyspace: str,
    store: CassandraStore,
    bundles: list[Path],
    shop_dir: Path,
    tmp_path: Path,
) -> None:
    topic, items_topic = f"live-{unique}", f"items-{unique}"
    ensure_topics(services["bootstrap"], {topic: 2, f"{topic}.dlq": 1, items_topic: 1})
    worker = WorkerProcess(
        tmp_path / "w.log",
        topic=topic,
        dead_letter_topic=f"{topic}.dlq",
        group=f"g-{unique}",
        keyspace=cassandra_keyspace,
        batch_size=50,
    )
    worker.args += ["--bundle", str(bundles[1]), "--items-topic", items_topic]
    worker.start()
    producer = Producer({"bootstrap.servers": services["bootstrap"], "linger.ms": 0, "enable.idempotence": True})

    def send(ev: Event) -> None:
        producer.produce(topic, key=ev.user_id.encode(), value=encode_event(ev))
        producer.flush(10)

    try:
        now = int(time.time() * 1000)
        dataset = load_dataset(shop_dir)
        history = dataset.by_user()["U00001"]
        last = next(e.item_id for e in reversed(history) if e.item_id)
        # cold start: a user with nothing the model knows gets the popular fallback; a user whose only
        # event is a search gets a list from the query (fused like an item with that text)
        send(Event(f"c-{unique}", EventType.VIEW, f"cold-{unique}", now, item_id="NOT-IN-THE-CATALOG"))
        send(Event(f"s-{unique}", EventType.SEARCH, f"new-{unique}", now, query="trail running shoe"))
        # first event of another new user: a personal list at once
        send(Event(f"v-{unique}", EventType.VIEW, f"first-{unique}", now, item_id=last))
        wait_for(lambda: _fresh_list(store, f"first-{unique}", now) or not worker.alive(), 120, "first lists")
        assert worker.alive(), worker.log()[-3000:]
        wait_for(lambda: _fresh_list(store, f"new-{unique}", now), 30, "the search-only list")
        wait_for(lambda: _fresh_list(store, f"cold-{unique}", now), 30, "the cold-start list")
        cold = store.get_recommendations(f"cold-{unique}")
        searched = store.get_recommendations(f"new-{unique}")
        first = store.get_recommendations(f"first-{unique}")
        assert cold is not None and cold.source == "popular" and len(cold.items) == 20
        assert searched is not None and searched.source == "search" and len(searched.items) == 20
        category = {it.item_id: it.category for it in dataset.items}
        shoes = sum(category[i] == "Running Shoes" for i in searched.item_ids()[:10])
        share = sum(c == "Running Shoes" for c in category.values()) / len(category)
        assert shoes >= 3 > 10 * share, (shoes, share, [category[i] for i in searched.item_ids()[:10]])
        assert first is not None and first.source == "personal" and last not in first.item_ids()
        manifest = orjson.loads((bundles[1] / "manifest.json").read_bytes())
        assert first.model_version == manifest["version"]
        # a new item, close to what U00001 just looked at, published to the items topic
        item = next(it for it in dataset.items if it.item_id == last)
        new_id = f"NEW-{unique}"
        record = {
            "item_id": new_id,
            "title": item.title + " (new edition)",
            "category": item.category,
            "brand": item.brand,
        }
        for e in history:
            send(e)  # U00001's history, so the worker holds their state
        published = time.time()
        producer.produce(items_topic, key=new_id.encode(), value=orjson.dumps(record))
        producer.produce(items_topic, key=b"bad", value=b'{"item_id": "x"}')  # invalid: dead-lettered
        producer.flush(10)
        wait_for(lambda: "live_items added=1" in worker.log(), 30, "the new item in the live index")
        ts = int(time.time() * 1000)
        send(Event(f"again-{unique}", EventType.VIEW, "U00001", ts, item_id=last))
        wait_for(lambda: _fresh_list(store, "U00001", ts), 30, "U00001's refreshed list")
        visible_s = time.time() - published
        rec = store.get_recommendations("U00001")
        assert rec is not None and new_id in rec.item_ids(), rec.item_ids() if rec else None
        assert visible_s <= 5.0, f"new item took {visible_s:.2f}s to reach the list"
    finally:
        assert worker.stop() == 0, worker.log()[-3000:]

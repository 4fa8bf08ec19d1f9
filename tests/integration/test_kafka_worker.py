"""The thin path against the REAL Kafka broker and Cassandra node: replay -> faust worker -> Cassandra.

Every user's stored state must fold exactly that user's events: none lost, none counted twice,
with and without a SIGKILL mid-stream; malformed events land in the dead-letter topic with a reason.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from bench.harness import assert_folds_exactly, named_worker, read_to_end, wait_committed, wait_for
from schemas.codec import encode_event
from schemas.events import Event
from shopdata import event_records
from shopdata.synthetic import generate_shop
from streams.replay import ensure_topics, produce_records
from streams.stores.cassandra import CassandraStore

pytestmark = pytest.mark.integration


def _total_events(store: CassandraStore) -> int:
    return sum(s.n_events for s in store.all_states().values())


def _assert_exact(store: CassandraStore, events: list[Event]) -> None:
    expected = assert_folds_exactly(store, events)
    for u in list(expected)[:50]:  # and each such user has a fresh list naming the newest event
        rec = store.get_recommendations(u)
        assert rec is not None and len(rec.items) == 20
        assert rec.newest_event_ts == expected[u]["last_ts"]


def test_replayed_events_fold_exactly(
    services: dict[str, str], names: dict[str, str], store: CassandraStore, tmp_path: Path
) -> None:
    shop = generate_shop()
    assert len(shop.events) >= 10_000
    ensure_topics(services["bootstrap"], {names["topic"]: 4, names["dead_letter_topic"]: 1})
    worker = named_worker(tmp_path, names, "worker").start()
    try:
        report = produce_records(services["bootstrap"], names["topic"], event_records(shop), progress=False)
        assert report.produced == len(shop.events)
        wait_for(
            lambda: _total_events(store) >= len(shop.events) or not worker.alive(),
            240,
            "every event folded into Cassandra",
        )
        # every offset committed, so every batch written: nothing more may arrive, a double count shows now
        wait_committed(services["bootstrap"], names["group"], names["topic"], 60, worker.alive)
        assert worker.alive(), worker.log()[-3000:]
        _assert_exact(store, shop.events)
    finally:
        assert worker.stop() == 0, worker.log()[-3000:]
    assert "worker_stop" in worker.log()


def test_sigkill_mid_stream_then_restart_is_exact(
    services: dict[str, str], names: dict[str, str], store: CassandraStore, tmp_path: Path
) -> None:
    shop = generate_shop()
    ensure_topics(services["bootstrap"], {names["topic"]: 4, names["dead_letter_topic"]: 1})
    produce_records(services["bootstrap"], names["topic"], event_records(shop), progress=False)
    # commit rarely, so the kill is certain to leave processed-but-uncommitted events to replay
    slow_commits = {"FUSIONREC_WORKER__COMMIT_INTERVAL_S": "3600"}
    first = named_worker(tmp_path, names, "first", env=slow_commits, batch_size=100).start()
    wait_for(lambda: store.count_states() >= 300 or not first.alive(), 120, "the first worker to be mid-stream")
    assert first.alive(), first.log()[-3000:]
    first.kill()
    folded_at_kill = _total_events(store)
    assert 0 < folded_at_kill < len(shop.events), "the kill must land mid-stream"
    second = named_worker(tmp_path, names, "second").start()
    try:
        wait_for(
            lambda: _total_events(store) >= len(shop.events) or not second.alive(),
            240,
            "the restarted worker to finish",
        )
        wait_committed(services["bootstrap"], names["group"], names["topic"], 60, second.alive)
        assert second.alive(), second.log()[-3000:]
        _assert_exact(store, shop.events)
    finally:
        assert second.stop() == 0, second.log()[-3000:]
    stop_line = second.last_line("worker_stop")
    assert stop_line is not None
    m = re.search(r"duplicates=(\d+)", stop_line)
    assert m is not None and int(m.group(1)) > 0, f"the restart should have replayed folded events: {stop_line}"


def test_malformed_events_go_to_dead_letters_and_valid_flow(
    services: dict[str, str], names: dict[str, str], store: CassandraStore, tmp_path: Path
) -> None:
    shop = generate_shop(n_users=40)
    good = shop.events[:300]
    bad: list[tuple[bytes, str, str]] = [  # (payload, field, reason fragment)
        (b"{this is not json", "$", "not valid JSON"),
        (
            orjson.dumps({"event_id": "m1", "type": "view", "user_id": "U00001", "item_id": "I00001"}),
            "ts",
            "missing",
        ),
        (
            orjson.dumps({"event_id": "m2", "type": "teleport", "user_id": "U00001", "ts": 1, "item_id": "I1"}),
            "type",
            "unknown event type",
        ),
        (
            orjson.dumps({"event_id": "m3", "type": "view", "user_id": 12345, "ts": 1, "item_id": "I1"}),
            "user_id",
            "expected a string",
        ),
        (
            orjson.dumps({"event_id": "m4", "type": "click", "user_id": "U00002", "ts": "yesterday", "item_id": "I1"}),
            "ts",
            "integer",
        ),
        (
            orjson.dumps({"event_id": "m5", "type": "search", "user_id": "U00002", "ts": 5}),
            "query",
            "missing",
        ),
        (b"", "$", "not valid JSON"),
    ]
    ensure_topics(services["bootstrap"], {names["topic"]: 2, names["dead_letter_topic"]: 1})
    producer = Producer({"bootstrap.servers": services["bootstrap"], "enable.idempotence": True})
    for i, ev in enumerate(good):
        producer.produce(names["topic"], key=ev.user_id.encode(), value=encode_event(ev))
        if i % 40 == 0:
            payload = bad[(i // 40) % len(bad)][0]
            producer.produce(names["topic"], key=f"bad-{i}".encode(), value=payload)
    assert producer.flush(30) == 0
    n_bad = len(range(0, len(good), 40))
    worker = named_worker(tmp_path, names, "worker").start()
    try:
        wait_for(lambda: _total_events(store) >= len(good) or not worker.alive(), 180, "valid events to flow")
        # dead letters are confirmed before their batch's offsets may be committed: once the group has
        # committed the topic to its end, the dead-letter topic holds every letter, and any extra one
        wait_committed(services["bootstrap"], names["group"], names["topic"], 60, worker.alive)
        assert worker.alive(), worker.log()[-3000:]
        _assert_exact(store, good)
        letters = _dead_letters(services["bootstrap"], names["dead_letter_topic"])
    finally:
        assert worker.stop() == 0, worker.log()[-3000:]
    assert len(letters) == n_bad
    expected_bad = [bad[(i // 40) % len(bad)] for i in range(0, len(good), 40)]
    # partitions interleave, so compare as multisets; each letter must carry its own field and reason
    assert Counter((p, f) for p, f, _ in expected_bad) == Counter(
        (value, headers["fusionrec.field"]) for value, headers in letters
    )
    fragments = {(p, f): frag for p, f, frag in bad}
    for value, headers in letters:
        assert fragments[(value, headers["fusionrec.field"])] in headers["fusionrec.reason"]
        assert headers["fusionrec.source"].startswith(names["topic"] + ":")
        assert int(headers["fusionrec.offset"]) >= 0


def _dead_letters(bootstrap: str, topic: str) -> list[tuple[bytes, dict[str, str]]]:
    """(value, headers) of every record in the dead-letter topic: all of it, extra letters included."""
    out = []
    for msg in read_to_end(bootstrap, topic):
        raw = msg.headers() or []
        pairs = raw.items() if isinstance(raw, dict) else raw
        headers = {k: v.decode() if isinstance(v, bytes) else (v or "") for k, v in pairs}
        out.append((msg.value() or b"", headers))
    return out

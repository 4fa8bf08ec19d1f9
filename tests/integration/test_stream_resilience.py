"""Resilience of the real-time path against the REAL Kafka and Cassandra: two SIGKILLs and a second
worker joining (rebalance) over 50,000 events, and Cassandra stopped for 30 s mid-stream."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from bench.harness import assert_folds_exactly, named_worker, wait_committed, wait_for
from shopdata import event_records
from shopdata.synthetic import generate_shop
from streams.replay import ensure_topics, produce_records
from streams.stores.cassandra import CassandraStore
from tests.conftest import SERVICES

pytestmark = pytest.mark.integration


def _folded(store: CassandraStore) -> int:
    try:
        return sum(s.n_events for s in store.all_states().values())
    except Exception:  # the node may be down in the outage test: "not yet" rather than an error
        return -1


def _records(log: str) -> int:
    m = re.findall(r"worker_stop records=(\d+)", log)
    return int(m[-1]) if m else 0


def test_two_kills_and_a_rebalance_stay_exact(
    services: dict[str, str], names: dict[str, str], store: CassandraStore, tmp_path: Path
) -> None:
    shop = generate_shop(n_users=2600, seed=11)
    events = shop.events
    assert len(events) >= 50_000
    ensure_topics(services["bootstrap"], {names["topic"]: 4, names["dead_letter_topic"]: 1})
    records = list(event_records(shop))
    # produced in steps, each a little ahead of the worker that reads it: a fast worker (or a slow poll of the
    # store) cannot then run past its kill point into the next step's share. The last 40% are produced only
    # once the second worker owns partitions, so a fast first worker cannot drain the topic before the
    # rebalance completes and leave the second nothing to read.
    produced = 0

    def produce_to(share: float) -> None:
        nonlocal produced
        upto = int(share * len(records))
        produce_records(services["bootstrap"], names["topic"], records[produced:upto], progress=False)
        produced = upto

    slow_commits = {"FUSIONREC_WORKER__COMMIT_INTERVAL_S": "3600"}  # every kill leaves work to replay
    marks = []
    for n, (share, ahead) in enumerate(((0.15, 0.2), (0.35, 0.4))):
        produce_to(ahead)
        w = named_worker(tmp_path, names, f"killed{n}", env=slow_commits).start()
        wait_for(
            lambda w=w, share=share: _folded(store) >= share * len(events) or not w.alive(),  # type: ignore[misc]
            300,
            f"{share:.0%} folded",
        )
        assert w.alive(), w.log()[-3000:]
        w.kill()
        marks.append(_folded(store))
    assert marks[0] < marks[1] <= produced  # each kill came after progress, never past what was produced
    produce_to(0.6)
    first = named_worker(tmp_path, names, "first").start()
    wait_for(lambda: _folded(store) > marks[1] + 2000 or not first.alive(), 300, "the restarted worker to progress")
    second = named_worker(tmp_path, names, "second").start()  # joins the group: partitions are rebalanced
    try:
        wait_for(
            lambda: re.search(r"partitions_assigned count=[1-9]", second.log()) is not None or not second.alive(),
            300,
            "the second worker to own partitions",
        )
        assert second.alive(), second.log()[-3000:]
        produce_to(1.0)
        wait_for(
            lambda: _folded(store) >= len(events) or not (first.alive() and second.alive()),
            600,
            "both workers to finish",
        )
        # every offset committed, so every batch written: a late double count would show now
        wait_committed(
            services["bootstrap"], names["group"], names["topic"], 60, lambda: first.alive() and second.alive()
        )
        assert first.alive() and second.alive(), first.log()[-2000:] + second.log()[-2000:]
        assert_folds_exactly(store, events)
    finally:
        assert first.stop() == 0 and second.stop() == 0
    assert _records(second.log()) > 0, "the second worker never got a partition"
    assert _records(first.log()) > 0


def test_cassandra_outage_is_back_pressure(
    services: dict[str, str], names: dict[str, str], store: CassandraStore, tmp_path: Path
) -> None:
    shop = generate_shop(n_users=800, seed=12)
    ensure_topics(services["bootstrap"], {names["topic"]: 4, names["dead_letter_topic"]: 1})
    worker = named_worker(tmp_path, names, "worker").start()
    producer = threading.Thread(
        target=produce_records,
        args=(services["bootstrap"], names["topic"], event_records(shop)),
        kwargs={"rate": 1000.0, "progress": False},
    )
    producer.start()
    try:
        wait_for(lambda: _folded(store) >= 2000 or not worker.alive(), 120, "the stream to flow")
        subprocess.run(["bash", str(SERVICES), "down", "cassandra"], check=True, capture_output=True, timeout=120)
        time.sleep(30)  # the outage's length (events keep arriving in Kafka meanwhile), not a wait for quiet
        assert worker.alive(), "the worker must survive a store outage: " + worker.log()[-3000:]
        up = subprocess.run(["bash", str(SERVICES), "up", "cassandra"], capture_output=True, text=True, timeout=300)
        assert up.returncode == 0, up.stderr
        producer.join(120)
        wait_for(lambda: _folded(store) >= len(shop.events) or not worker.alive(), 300, "the stream to catch up")
        wait_committed(services["bootstrap"], names["group"], names["topic"], 60, worker.alive)
        assert worker.alive(), worker.log()[-3000:]
        assert_folds_exactly(store, shop.events)
    finally:
        subprocess.run(["bash", str(SERVICES), "up", "cassandra"], capture_output=True, timeout=300)
        assert worker.stop() == 0, worker.log()[-3000:]
    assert "store_unavailable" in worker.log(), "the outage should have been waited out, visibly"


def test_a_spare_takes_over_a_killed_worker_exactly(
    services: dict[str, str], names: dict[str, str], store: CassandraStore, tmp_path: Path
) -> None:
    """`worker --spare`: the active worker process is SIGKILLed with work unwritten and offsets
    uncommitted; the waiting spare joins under the same instance id, replays, and every state still
    equals its exact fold (the dead worker's writer is killed before the spare joins)."""
    shop = generate_shop(n_users=900, seed=13)
    events = shop.events
    ensure_topics(services["bootstrap"], {names["topic"]: 4, names["dead_letter_topic"]: 1})
    records = list(event_records(shop))
    held_back = len(records) // 2
    produce_records(services["bootstrap"], names["topic"], records[:held_back], progress=False)
    # commits every 20 s: the kill leaves written but uncommitted work, which the spare replays
    w = named_worker(tmp_path, names, "spare", env={"FUSIONREC_WORKER__COMMIT_INTERVAL_S": "20"})
    w.args += ["--spare", "--instance-id", f"{names['group']}-0"]
    w.start()
    try:
        wait_for(
            lambda: (w.log().count("worker_standby group=") >= 2 and _folded(store) >= held_back // 2) or not w.alive(),
            300,
            "a spare waiting and half the first events folded",
        )
        assert w.alive(), w.log()[-3000:]
        active = int(re.findall(r"spare_worker_active pid=(\d+) cold=1", w.log())[-1])
        os.killpg(active, signal.SIGKILL)
        wait_for(lambda: "cold=0" in w.log() or not w.alive(), 60, "the spare to take over")
        assert re.search(rf"spare_worker_active pid=\d+ cold=0 replaced={active} returncode=-9", w.log()), w.log()[
            -3000:
        ]
        produce_records(services["bootstrap"], names["topic"], records[held_back:], progress=False)
        wait_for(lambda: _folded(store) >= len(events) or not w.alive(), 300, "the spare to finish")
        wait_committed(services["bootstrap"], names["group"], names["topic"], 90, w.alive)
        assert w.alive(), w.log()[-3000:]
        assert_folds_exactly(store, events)
    finally:
        assert w.stop() == 0, w.log()[-3000:]
    assert w.log().count("worker_standby_joining") == 2  # the first worker and the spare; the new spare was released
    replayed = re.findall(r"worker_stop records=\d+ applied=\d+ duplicates=(\d+)", w.log())
    assert replayed and int(replayed[-1]) > 0, "the spare should have replayed the killed worker's uncommitted events"

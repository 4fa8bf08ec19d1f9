"""Real-time path benchmark, in one go on this machine (Kafka, Cassandra and the worker together):

io_floor_eps   consume the events and write one Cassandra row per event, no model work (after an
               untimed warm-up run over the first 5,000 events)
pipeline_eps   the full pipeline (decode, fold, batched ONNX user encoder, retrieval, ranking, writes)
batch1_eps     the full pipeline with micro-batch size 1
freshness_ms   p50/p95/p99 from an event's production to its user's refreshed list being readable
               in Cassandra, at a steady --rate events/s (default 500); sampled events are polled,
               and one not fresh within 10 s counts as 10 s (a lower bound; `censored` counts them)
new_item_visible_s  after the steady run, five items published to the items topic ("new editions"
               of the last items X of the run's last five users): median seconds until each is in
               the stored list of a shopper viewing its X (one view per 100 ms), over those that
               showed within 30 s; `new_items` has each one's time (null: ranked below the top k)

  python bench/stream.py --json out/stream.json --data ../shared/data/scientific --bundle out/bundle

The freshness curve (no throughput runs): one run per offered rate, p50/p95/p99, the achieved rate,
the consumer lag when production ends, and the knee (highest rate with p99 <= 1 s), printed and
plotted next to the JSON (PNG, with matplotlib). `--from-start`: the window opens when the worker
is launched (a deploy), else after a 12 s warm-up. `--restart-at S` SIGKILLs and restarts the worker
S s in, `--rebalance-at S` adds a second one, `--rolling-at S` is a rolling deploy (a second one
joins, then the first leaves with SIGTERM); each reports freshness over the 60 s after and checks
every user's stored state against its exact fold. `--no-warm-up`: workers start cold.
`--static-membership`: each worker joins with its own `--instance-id` (Kafka static membership).
`--spare`: the worker runs as `worker --spare` (a warmed-up second process waits to take over, see
fusionrec.spare); `--crash-at S` then SIGKILLs the active worker process (and its writer) S s in,
and the spare takes over; the 60 s after are reported as for a restart. Such a run also gives the
seconds from the event to each step the workers log after it (`after_event_s`: takeover,
worker_ready, partitions_assigned, first_batch), and a `--from-start` run the same from the
worker's launch (`after_launch_s`).

  python bench/stream.py --json out/curve.json --data ../shared/data/scientific --bundle out/bundle \
      --rates 500,1000,2000,4000 --seconds 60 --from-start
  python bench/stream.py --json out/restart.json ... --rates 500 --restart-at 30
  python bench/stream.py --json out/crash.json ... --rates 500 --crash-at 30 --spare --static-membership
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import tempfile
import threading
import time
import uuid
from itertools import islice
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import orjson  # noqa: E402
from confluent_kafka import Consumer  # noqa: E402

from bench.common import committed, drop_keyspace, drop_topics, worker_bench_parser  # noqa: E402
from bench.harness import WorkerProcess, wait_for  # noqa: E402
from schemas.codec import encode_event  # noqa: E402
from schemas.events import Event, EventType  # noqa: E402
from shopdata import event_records, load_data  # noqa: E402
from streams.kafka_config import confluent_config  # noqa: E402
from streams.replay import ensure_topics, produce_records  # noqa: E402
from streams.stores.cassandra import CassandraStore, connect  # noqa: E402

BOOT = "127.0.0.1:9092"
#: the load generator's producer: librdkafka's default linger (a shop's producers batch too). At 0 ms
#: every event was its own produce request (2,000 a second at 2,000 events/s), a load on the broker
#: and the two cores it shares with what is measured; an event's time is stamped before it lingers,
#: so the wait counts in its freshness
PRODUCER_LINGER_MS = 5
#: the producer's shortest sleep: events due within it are produced together, each stamped when it is
#: produced (the offered rate is unchanged; a sleep per event was 2,000 wake-ups a second at 2,000/s)
PACE_S = 0.002
#: a sample not fresh this many seconds after it was produced stops being polled and counts as this
CENSOR_S = 10.0
#: a sample older than poll_s / POLL_SHARE is read every POLL_SHARE of its age (not every poll_s)
POLL_SHARE = 0.05


def io_floor(topic: str, n: int, batch: int = 500) -> float:
    """Consume n events and upsert one row per event (prepared, concurrent), committing per batch."""
    from cassandra.concurrent import execute_concurrent_with_args

    ks = f"floor_{uuid.uuid4().hex[:8]}"
    cluster, session = connect(["127.0.0.1"], 9042)
    session.execute(f"CREATE KEYSPACE {ks} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': 1}}")
    session.execute(f"CREATE TABLE {ks}.events (event_id text PRIMARY KEY, user_id text, payload blob)")
    stmt = session.prepare(f"INSERT INTO {ks}.events (event_id, user_id, payload) VALUES (?, ?, ?)")
    c = Consumer(
        confluent_config(
            BOOT, {"group.id": f"floor-{ks}", "auto.offset.reset": "earliest", "enable.auto.commit": False}
        )
    )
    c.subscribe([topic])
    done, started = 0, None
    while done < n:
        msgs = [m for m in c.consume(batch, timeout=1.0) if not m.error()]
        if not msgs:
            continue
        started = started or time.perf_counter()
        rows = [(f"{m.partition()}:{m.offset()}", (m.key() or b"").decode(), m.value()) for m in msgs]
        execute_concurrent_with_args(session, stmt, rows, concurrency=64)
        c.commit(asynchronous=False)
        done += len(msgs)
    elapsed = time.perf_counter() - (started or time.perf_counter())
    c.close()
    session.execute(f"DROP KEYSPACE {ks}", timeout=60)
    cluster.shutdown()
    return done / elapsed


def _worker(tmp: Path, topic: str, group: str, ks: str, batch: int, data: str, bundle: str | None) -> WorkerProcess:
    """A `fusionrec worker` process on the bench's own topic, group and keyspace."""
    w = WorkerProcess(tmp / "w.log", topic=topic, dead_letter_topic=f"{topic}.dlq", group=group, keyspace=ks,
                      batch_size=batch, env={"FUSIONREC_DATA": data})  # fmt: skip
    if bundle:
        w.args += ["--bundle", bundle]
    return w


def pipeline_run(topic: str, n: int, partitions: int, batch: int, data: str, bundle: str | None) -> float:
    tag = uuid.uuid4().hex[:8]
    group, ks = f"bench-{tag}", f"bench_{tag}"
    with tempfile.TemporaryDirectory() as tmp:
        w = _worker(Path(tmp), topic, group, ks, batch, data, bundle)
        w.start()
        try:
            wait_for(
                lambda: committed(BOOT, group, topic, partitions) >= n or not w.alive(), 1800, "the worker", poll_s=1.0
            )
        finally:
            w.stop()
        line = w.last_line("worker_stop") or ""
    drop_keyspace(ks)
    drop_topics(BOOT, [f"{topic}.dlq"], groups=[group])
    m = re.search(r"active_eps=(\d+)", line)
    if not m:
        raise SystemExit(f"worker did not report: {line!r}")
    return float(m.group(1))


def new_item_visible(
    producer: Any, topic: str, items_topic: str, store: CassandraStore, dataset: Any, users: list[str], tag: str
) -> dict[str, Any]:
    """For each of `users`' last items X: publish a "new edition" of X, and have a fresh shopper view
    X every 100 ms; seconds from publishing until the new item is in that shopper's stored list
    (None when it is not within 30 s: then the model ranks it below the top k for that shopper)."""
    by_id = {it.item_id: it for it in dataset.items}
    cases = []
    for n, u in enumerate(users):
        last = [e for e in dataset.by_user()[u] if e.item_id][-1].item_id
        item = by_id[last]
        new_id = f"NEW-{tag}-{n}"
        record = {"item_id": new_id, "title": item.title + " (new edition)", "category": item.category,
                  "brand": item.brand}  # fmt: skip
        producer.produce(items_topic, key=new_id.encode(), value=orjson.dumps(record))
        cases.append((f"shopper-{tag}-{n}", last, new_id))
    producer.flush(10)
    published = time.time()
    seen: dict[str, float | None] = {new_id: None for _, _, new_id in cases}
    n = 0
    while time.time() - published < 30 and any(v is None for v in seen.values()):
        n += 1
        for shopper, last, new_id in cases:
            if seen[new_id] is None:
                ev = Event(f"nv-{tag}-{n}-{shopper}", EventType.VIEW, shopper, int(time.time() * 1000), item_id=last)
                producer.produce(topic, key=shopper.encode(), value=encode_event(ev))
        producer.poll(0)
        time.sleep(0.1)
        for shopper, _, new_id in cases:
            rec = store.get_recommendations(shopper) if seen[new_id] is None else None
            if rec is not None and new_id in rec.item_ids():
                seen[new_id] = round(time.time() - published, 2)
    times = [v for v in seen.values() if v is not None]
    return {
        "median_s": float(np.median(times)) if times else None,
        "max_s": max(times) if times else None,
        "visible": len(times),
        "published": len(cases),
        "per_item_s": list(seen.values()),
    }


#: users per read of the poller: one IN-query each (a single node answers them from one request)
POLL_IN = 100


def _newest_event_ts(session: Any, users: list[str], stmt: Any) -> dict[str, int]:
    """Each user's stored list's newest_event_ts (-1: no list yet). `stmt` reads only that column
    (the whole list would cost the poller, and the cores it measures, a decode of every list it
    polls) for up to POLL_IN users at once; `session` returns rows as plain tuples (`_poll_session`).
    A read per user, each answer a named tuple whose type the driver builds per result, took about
    0.2 of a core at 2,000 events/s (py-spy of the bench process), a tenth of the cores it measures."""
    out = dict.fromkeys(users, -1)
    for lo in range(0, len(users), POLL_IN):
        for user, newest in session.execute(stmt, (users[lo : lo + POLL_IN],)).current_rows:
            out[user] = int(newest or 0)
    return out


def _poll_session(store: CassandraStore) -> Any:
    """A second session on the store's cluster whose rows are plain tuples (the store's own keeps
    its named rows)."""
    from cassandra.query import tuple_factory

    session = store.session.cluster.connect()
    session.row_factory = tuple_factory
    return session


def _source(dataset: Any, n: int) -> list[Event]:
    """The first n events of the data, cycled (each round's ids made distinct) when it has fewer."""
    evs = dataset.events
    return [evs[i % len(evs)] if i < len(evs) else _renamed(evs[i % len(evs)], i // len(evs)) for i in range(n)]


def _renamed(ev: Event, round_: int) -> Event:
    return Event(f"{ev.event_id}~{round_}", ev.type, ev.user_id, ev.ts, ev.item_id, ev.query)


def freshness(
    data: str,
    bundle: str | None,
    rate: float,
    seconds: float,
    samples_per_s: float = 20.0,
    poll_s: float = 0.025,
    *,
    from_start: bool = False,
    restart_at: float | None = None,
    rebalance_at: float | None = None,
    rolling_at: float | None = None,
    crash_at: float | None = None,
    new_items: bool = True,
    worker_args: tuple[str, ...] = (),
    static: bool = False,
    spare: bool = False,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Steady `rate` events/s with ts = production time; poll sampled users' lists until they show
    the event. `from_start`: the window opens when the worker is launched (a deploy), else after a
    12 s warm-up. `restart_at` / `rebalance_at` / `rolling_at` (s into the window): SIGKILL and restart
    the worker / add a second one / a rolling deploy (a second one starts, and once it has partitions
    the first is stopped with SIGTERM, leaving the group); the figures then also cover the 60 s after
    it, and every user's stored
    state is checked against its exact fold at the end. `static`: each worker has its own
    `--instance-id` (static group membership), so a restarted one takes its partitions back at once.
    `spare`: the worker runs with `--spare`; `crash_at` SIGKILLs its active worker process (the
    spare takes over).
    About `samples_per_s` events a second are sampled whatever the rate (every 25th at 500/s, every
    50th at 1,000/s): the poller's reads load Cassandra and the cores it measures, and at a fixed
    share of events they grew with the rate (1,600 reads/s at 1,000 events/s and 1 s freshness)."""
    from bench.harness import GroupOffsets, assert_folds_exactly, wait_committed

    dataset = load_data(data)
    tag = uuid.uuid4().hex[:8]
    topic, group, ks = f"fresh-{tag}", f"fresh-{tag}", f"fresh_{tag}"
    items_topic = f"items-{tag}"
    ensure_topics(BOOT, {topic: 4, f"{topic}.dlq": 1, items_topic: 1})
    store = CassandraStore(["127.0.0.1"], 9042, ks)
    store.setup()
    latencies: list[tuple[float, float]] = []  # (produced at, ms)
    censored: list[str] = []  # samples not fresh within CENSOR_S
    pending: dict[str, tuple[int, float]] = {}  # user -> (event ts, produced at), newest sample per user
    lock = threading.Lock()
    producing_done = threading.Event()

    poll_session = _poll_session(store)
    newest_stmt = poll_session.prepare(f"SELECT user_id, newest_event_ts FROM {ks}.recommendations WHERE user_id IN ?")
    polled: dict[str, float] = {}  # user -> when its sample was last read

    def poller() -> None:
        """One thread, one concurrent read of the pending users that are due each `poll_s`: the
        polling must not itself load the two cores it measures (32 threads polling every 5 ms did:
        thousands of reads a second, queued behind each other). A sample is read every `poll_s`
        until it is `poll_s / POLL_SHARE` old, then every POLL_SHARE of its age (every 100 ms at
        2 s): a reading is late by at most max(poll_s, POLL_SHARE x its age), never early, and a
        backlog (many samples seconds old) no longer multiplies the reads."""
        while True:
            now = time.time()
            with lock:
                batch = {
                    u: v
                    for u, v in pending.items()
                    if now - polled.get(u, 0.0) >= max(poll_s, POLL_SHARE * (now - v[1]))
                }
                done = not pending and producing_done.is_set()
            if done:
                return
            if not batch:
                time.sleep(poll_s)
                continue
            users = list(batch)
            for u in users:
                polled[u] = now
            newest = _newest_event_ts(poll_session, users, newest_stmt)
            now = time.time()
            with lock:
                for u, seen_ts in newest.items():
                    want = pending.get(u)
                    if want is None:
                        continue
                    ts, produced = want
                    if seen_ts >= ts:
                        latencies.append((produced, (now - produced) * 1000))
                        del pending[u]
                        polled.pop(u, None)
                    elif now - produced > CENSOR_S:
                        # not fresh within CENSOR_S: counted as CENSOR_S (a lower bound), never left out,
                        # so a backlog shows in the percentiles instead of thinning the samples
                        latencies.append((produced, CENSOR_S * 1000))
                        censored.append(u)
                        del pending[u]
                        polled.pop(u, None)
            time.sleep(poll_s)

    event_at = max(x for x in (restart_at, rebalance_at, rolling_at, crash_at, -1.0) if x is not None)
    if event_at >= 0:
        seconds = max(seconds, event_at + 60)
    n = int(rate * seconds)
    sample_every = max(1, round(rate / samples_per_s))
    source = _source(dataset, n)
    produced_events: list[Event] = []
    extra: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        w = _worker(Path(tmp), topic, group, ks, 500, data, bundle)
        live = new_items and bundle is not None and (Path(bundle) / "item_fusion.onnx").is_file()
        if live:
            w.args += ["--items-topic", items_topic]
        w.args += list(worker_args) + (["--instance-id", f"{tag}-1"] if static else []) + (["--spare"] if spare else [])
        launched = time.time()
        w.start()
        if not from_start:
            time.sleep(12)  # group join and warm-up before the clock starts
        from confluent_kafka import Producer

        producing = {"linger.ms": PRODUCER_LINGER_MS, "acks": "all", "enable.idempotence": True}
        p = Producer(confluent_config(BOOT, producing))
        watcher = threading.Thread(target=poller, daemon=True)
        watcher.start()
        sampled = 0
        start = launched if from_start else time.time()
        disturbed: float | None = None
        second: WorkerProcess | None = None
        skip_s = 0.0 if from_start else 1.0  # from the start, the first second is the point
        retiring: threading.Thread | None = None  # rolling deploy: the first worker's SIGTERM
        checked = 0.0
        for i, ev in enumerate(source):
            due = start + i / rate
            now = time.time()
            if now < due:  # asleep at least PACE_S: the events due meanwhile go out together, each stamped
                time.sleep(max(due - now, PACE_S))
                now = time.time()
            if disturbed is None and event_at >= 0 and now - start >= event_at:
                disturbed = now
                if restart_at is not None:
                    w.kill()
                    w.start()
                elif crash_at is not None:
                    extra["crashed_pid"] = _kill_active(w)
                else:  # a second worker: a rebalance, or the new one of a rolling deploy
                    second = _worker(Path(tmp), topic, group, ks, 500, data, bundle)
                    second.args += list(worker_args) + (["--instance-id", f"{tag}-2"] if static else [])
                    second.log_path = Path(tmp) / "w2.log"
                    second.start()
            if rolling_at is not None and second is not None and retiring is None and now - checked > 0.2:
                checked = now
                if "partitions_assigned" in second.log():  # the new one is in: the old one leaves
                    extra["rolling_old_stopped_s"] = round(now - start, 1)
                    retiring = threading.Thread(target=w.stop, daemon=True)
                    retiring.start()
            fresh = Event(ev.event_id + f"#{tag}", ev.type, ev.user_id, int(now * 1000), ev.item_id, ev.query)
            p.produce(topic, key=ev.user_id.encode(), value=encode_event(fresh))
            produced_events.append(fresh)
            p.poll(0)
            if i % sample_every == 0 and now - start >= skip_s:
                with lock:
                    if ev.user_id not in pending:
                        pending[ev.user_id] = (fresh.ts, now)
                        sampled += 1
        p.flush(30)
        ended = time.time()
        with GroupOffsets(BOOT, group) as offsets:
            extra["lag_at_end"] = offsets.lag(topic)
        extra["achieved_eps"] = round(len(source) / max(ended - start, 1e-9))
        producing_done.set()
        watcher.join()
        if disturbed is not None:
            if crash_at is not None:
                extra["takeover"] = w.last_line("cold=0")
            if retiring is not None:
                retiring.join(60)
            alive = [x for x in (w, second) if x is not None and not (x is w and retiring is not None)]
            wait_committed(BOOT, group, topic, 300, alive=lambda: all(x.alive() for x in alive))
            assert_folds_exactly(store, produced_events)
            extra["exact_folds"] = True
            extra["after_s"] = round(disturbed - start, 1)
            extra["after"] = _percentiles([ms for t, ms in latencies if disturbed <= t < disturbed + 60])
            logs = [x.log() for x in (w, second) if x is not None]
            extra["after_event_s"] = _milestones(logs, disturbed)
        if from_start:  # where the first seconds went: the launch to the worker's readiness, join, first batch
            extra["after_launch_s"] = _milestones([w.log()], launched)
        last_users = list(dict.fromkeys(e.user_id for e in reversed(source)))[:5]
        visible = new_item_visible(p, topic, items_topic, store, dataset, last_users, tag) if live else None
        if live:
            print(f"live items: {w.last_line('live_items')}; visible_s={visible}", file=sys.stderr)
        for name, proc in (("", w), ("second worker: ", second)):
            for line in proc.log().splitlines() if proc is not None else []:
                if any(k in line for k in WORKER_LINES):
                    print(name + line, file=sys.stderr)
        w.stop()
        if second is not None:
            second.stop()
        extra["stage_shed_share"] = _shed_share([x.last_line("worker_stop") for x in (w, second) if x is not None])
    store.close()
    drop_keyspace(ks)
    drop_topics(BOOT, [topic, f"{topic}.dlq", items_topic], groups=[group])
    out = _percentiles([ms for _, ms in latencies])
    out["expected_samples"] = sampled
    out["timeline"] = _timeline(latencies, start)
    out["censored_at_s"] = CENSOR_S
    out["censored"] = len(censored)
    return {**out, **extra}, visible


#: the worker's log lines a freshness run prints after it
WORKER_LINES = ("worker_progress", "worker_ready", "warm_up_search", "worker_start", "partitions_assigned",
                "state_cache", "batch_first", "batch_slow", "worker_stop", "spare_worker", "worker_standby",
                "worker_priority", "Traceback", "Error")  # fmt: skip


def _shed_share(stop_lines: list[str | None]) -> float | None:
    """The share of the lists the workers wrote that were ranked without the ranking stage (their
    `worker_stop` lines' stage_shed_users / users; the run's warm-up and the window together)."""
    users = shed = 0
    for line in stop_lines:
        m = re.search(r"\busers=(\d+) stage_shed_users=(\d+)", line or "")
        if m:
            users, shed = users + int(m.group(1)), shed + int(m.group(2))
    return round(shed / users, 3) if users else None


def _kill_active(w: WorkerProcess) -> int:
    """SIGKILL the active worker process of a `worker --spare` (and its process group: its writer)."""
    found = re.findall(r"spare_worker_active pid=(\d+)", w.log())
    if not found:
        raise SystemExit("--crash-at: the worker logged no spare_worker_active line (is it running with --spare?)")
    pid = int(found[-1])
    os.killpg(pid, signal.SIGKILL)
    return pid


#: what a restart, a takeover or a rebalance goes through, as the workers log it: (name, marker)
MILESTONES = (("takeover", "cold=0 replaced="), ("worker_ready", "worker_ready "),
              ("partitions_assigned", "partitions_assigned count="), ("first_batch", "batch_first n=1 "))  # fmt: skip
_LOG_TIME = re.compile(r"^\[?(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})")


def _milestones(logs: list[str], since: float) -> dict[str, float]:
    """Seconds from the event (a kill, a second worker's launch) to the first line of each milestone
    logged after it in any worker's log: where the gap after a restart goes (the new process's start
    to `worker_ready`, the join, the first batch written). Log times are local, to the millisecond."""
    out: dict[str, float] = {}
    for log_text in logs:
        for line in log_text.splitlines():
            m = _LOG_TIME.match(line)
            if m is None:
                continue
            at = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + int(m.group(2)) / 1000
            if at < since - 0.001:  # logged at millisecond resolution: the event's own millisecond counts
                continue
            for name, marker in MILESTONES:
                if marker in line and (name not in out or at - since < out[name]):
                    out[name] = round(at - since, 3)
    return out


def _timeline(latencies: list[tuple[float, float]], start: float) -> list[list[float]]:
    """Per second of production since the window opened: [second, samples, p50 ms, max ms], so a stall
    shows where it happened (a slow start, a compaction, a restart) rather than only in the tail."""
    by_s: dict[int, list[float]] = {}
    for produced, ms in latencies:
        by_s.setdefault(int(produced - start), []).append(ms)
    return [[s, len(v), round(float(np.median(v)), 1), round(max(v), 1)] for s, v in sorted(by_s.items())]


def _percentiles(ms: list[float]) -> dict[str, Any]:
    if not ms:
        return {"p50": None, "p95": None, "p99": None, "samples": 0}
    arr = np.array(ms)
    return {
        "p50": round(float(np.percentile(arr, 50)), 1),
        "p95": round(float(np.percentile(arr, 95)), 1),
        "p99": round(float(np.percentile(arr, 99)), 1),
        "samples": len(arr),
    }


def knee(curve: list[dict[str, Any]], p99_ms: float = 1000.0) -> float | None:
    """The highest offered rate whose freshness p99 is within `p99_ms` (None: none is)."""
    ok = [c["rate"] for c in curve if c["p99"] is not None and c["p99"] <= p99_ms]
    return max(ok) if ok else None


def plot_curve(curve: list[dict[str, Any]], path: Path, title: str) -> str:
    """A PNG of p50/p95/p99 against the offered rate (matplotlib: the train extra); what was done."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install 'fusionrec[train]'): no plot"
    fig, ax = plt.subplots(figsize=(6, 4))
    rates = [c["rate"] for c in curve]
    for q in ("p50", "p95", "p99"):
        ax.plot(rates, [c[q] if c[q] is not None else float("nan") for c in curve], marker="o", label=q)
    ax.axhline(1000, color="grey", linestyle="--", linewidth=0.8, label="1 s")
    ax.set_xlabel("offered events/s")
    ax.set_ylabel("freshness (ms)")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return f"plot: {path}"


def _rates(text: str) -> list[float]:
    try:
        rates = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--rates wants numbers separated by commas, got {text!r}") from None
    if not rates or any(r <= 0 for r in rates):
        raise argparse.ArgumentTypeError(f"--rates wants positive events/s, got {text!r}")
    return rates


def warm_store(data: str, n: int = 5000) -> None:
    """An untimed pass of consume-and-write over n events: a Cassandra JVM that has just started runs
    its first minute several times slower (JIT), which would land on whichever run comes first."""
    dataset = load_data(data)
    topic = f"warm-{uuid.uuid4().hex[:8]}"
    ensure_topics(BOOT, {topic: 4})
    produce_records(BOOT, topic, islice(event_records(dataset), n), progress=False)
    io_floor(topic, min(n, len(dataset.events)))
    drop_topics(BOOT, [topic])


def curve_main(args: argparse.Namespace) -> dict[str, Any]:
    """--rates / --restart-at / --rebalance-at: one freshness run per rate, the knee and a plot."""
    window = "from worker start" if args.from_start else "after a 12 s warm-up"
    warm_store(args.data)
    curve = []
    for rate in args.rates:
        fresh, _ = freshness(
            args.data, args.bundle, rate, args.seconds, from_start=args.from_start,
            restart_at=args.restart_at, rebalance_at=args.rebalance_at, rolling_at=args.rolling_at,
            crash_at=args.crash_at, new_items=False, worker_args=("--no-warm-up",) if args.no_warm_up else (),
            static=args.static_membership, spare=args.spare,
        )  # fmt: skip
        row = {"rate": rate, **fresh}
        curve.append(row)
        print(
            f"rate={rate:.0f} achieved={row['achieved_eps']} p50={row['p50']} p95={row['p95']} p99={row['p99']} "
            f"lag_at_end={row['lag_at_end']} samples={row['samples']}/{row['expected_samples']} "
            f"censored_at_10s={row['censored']} stage_shed_share={row.get('stage_shed_share')}"
            + (f" after={row['after']} exact_folds={row['exact_folds']}" if "after" in row else "")
            + (f" after_event_s={row['after_event_s']}" if "after_event_s" in row else "")
            + (f" after_launch_s={row['after_launch_s']}" if "after_launch_s" in row else ""),
            file=sys.stderr,
        )
    k = knee(curve)
    out = {"window": window, "warm_up": not args.no_warm_up, "static_membership": args.static_membership,
           "seconds": args.seconds, "curve": curve, "knee_eps": k,
           "data": args.data, "bundle": args.bundle, "restart_at": args.restart_at,
           "rebalance_at": args.rebalance_at, "rolling_at": args.rolling_at, "crash_at": args.crash_at,
           "spare": args.spare}  # fmt: skip
    png = args.json.with_suffix(".png")
    out["plot"] = plot_curve(curve, png, f"freshness, {window} (knee {k})")
    print(f"knee (highest rate with p99 <= 1 s): {k}; {out['plot']}", file=sys.stderr)
    return out


def main() -> None:
    ap = worker_bench_parser(__doc__)
    ap.add_argument("--events", type=int, default=20000, help="events for the throughput runs")
    ap.add_argument("--batch1-events", type=int, default=2000)
    ap.add_argument("--rate", type=float, default=500.0)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--only-freshness", action="store_true", help="skip the throughput runs")
    ap.add_argument("--rates", type=_rates, default=None, help="freshness curve: offered events/s, e.g. 500,1000")
    ap.add_argument("--from-start", action="store_true", help="the window opens when the worker is launched")
    ap.add_argument("--restart-at", type=float, default=None, help="SIGKILL and restart the worker at S s")
    ap.add_argument("--rebalance-at", type=float, default=None, help="add a second worker at S s")
    ap.add_argument(
        "--rolling-at", type=float, default=None, help="a rolling deploy at S s: a new worker joins, the old one leaves"
    )
    ap.add_argument(
        "--crash-at", type=float, default=None, help="SIGKILL the active worker process at S s (needs --spare)"
    )
    ap.add_argument("--spare", action="store_true", help="the worker runs with `--spare` (a warm process in reserve)")
    ap.add_argument("--no-warm-up", action="store_true", help="workers start cold (`worker --no-warm-up`)")
    ap.add_argument(
        "--static-membership",
        action="store_true",
        help="each worker joins with its own `--instance-id` (a restart takes its partitions back at once)",
    )
    args = ap.parse_args()
    events = (args.restart_at, args.rebalance_at, args.rolling_at, args.crash_at)
    if sum(x is not None for x in events) > 1:
        ap.error("--restart-at, --rebalance-at, --rolling-at and --crash-at are separate runs: give one")
    if args.crash_at is not None and not args.spare:
        ap.error("--crash-at kills the active worker process of a `worker --spare`: add --spare")
    if args.rates or any(x is not None for x in events):
        args.rates = args.rates or [args.rate]
        result = curve_main(args)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
        print(json.dumps(result, indent=2))
        return
    if args.only_freshness:
        fresh, visible = freshness(args.data, args.bundle, args.rate, args.seconds)
        only = {
            "freshness_ms": fresh,
            "freshness_rate_eps": args.rate,
            "new_item_visible_s": visible["median_s"] if visible else None,
            "new_items": visible,
        }
        args.json.write_text(json.dumps(only, indent=2))
        print(json.dumps(only, indent=2))
        return
    dataset = load_data(args.data)
    n = min(args.events, len(dataset.events))
    tag = uuid.uuid4().hex[:8]
    topic, partitions = f"stream-{tag}", 4
    ensure_topics(BOOT, {topic: partitions, f"{topic}.dlq": 1})
    produce_records(BOOT, topic, islice(event_records(dataset), n), progress=False)
    t1 = f"stream1-{tag}"
    ensure_topics(BOOT, {t1: partitions, f"{t1}.dlq": 1})
    produce_records(BOOT, t1, islice(event_records(dataset), args.batch1_events), progress=False)
    io_floor(topic, min(n, 5000))  # warm-up, discarded: a JVM just started halves the first floor run
    out: dict[str, Any] = {
        "io_floor_eps": round(io_floor(topic, n)),
        "pipeline_eps": round(pipeline_run(topic, n, partitions, 500, args.data, args.bundle)),
        "batch1_eps": round(pipeline_run(t1, args.batch1_events, partitions, 1, args.data, args.bundle)),
    }
    out["freshness_ms"], visible = freshness(args.data, args.bundle, args.rate, args.seconds)
    out.update(
        {
            "freshness_rate_eps": args.rate,
            "new_item_visible_s": visible["median_s"] if visible else None,
            "new_items": visible,
            "events": n,
            "data": args.data,
            "bundle": args.bundle,
            "pipeline_over_floor": round(out["pipeline_eps"] / out["io_floor_eps"], 3),
            "pipeline_over_batch1": round(out["pipeline_eps"] / max(out["batch1_eps"], 1), 2),
        }
    )
    drop_topics(BOOT, [topic, t1])  # each pipeline run dropped its own group's dead-letter and leader topics
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

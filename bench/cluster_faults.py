"""Node faults on the local three-node cluster (deploy/local/cluster.sh): events streamed through
`fusionrec worker` while one Cassandra node and then one Kafka broker are SIGKILLed and restarted.

What it shows: the worker keeps going (one node of three down still reaches LOCAL_QUORUM and
min.insync.replicas=2), every user's stored state equals the exact fold of the events produced
(nothing lost, nothing counted twice), and list reads through `fusionrec serve` keep answering;
a poller times them per phase: before / cassandra_fault (kill .. node answers again) / between /
kafka_fault (kill .. broker answers again) / after (until the worker has committed everything).

  python bench/cluster_faults.py [--events 50000] [--rate 400] [--down-s 20] [--json out/cluster_faults.json]

It runs `deploy/local/cluster.sh up` first (idempotent) and leaves the cluster running
(`deploy/local/cluster.sh down` stops it).

The test tests/cluster/test_node_faults.py runs the same scenario (`run_scenario`) and asserts on it.
"""

from __future__ import annotations

import argparse
import bisect
import datetime as dt
import json
import random
import subprocess
import sys
import threading
import time
import tomllib
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import orjson  # noqa: E402
from confluent_kafka import Consumer, KafkaException, TopicPartition  # noqa: E402

from bench.harness import (  # noqa: E402
    WorkerProcess,
    assert_folds_exactly,
    expected_views,
    free_port,
    served_api,
    wait_committed,
    wait_for,
)
from fusionrec.wiring import ensure_encoder  # noqa: E402
from ranker.state import UserState, state_from_dict  # noqa: E402
from schemas.codec import encode_event  # noqa: E402
from schemas.events import Event  # noqa: E402
from shopdata.synthetic import generate_shop  # noqa: E402
from streams.kafka_config import confluent_config  # noqa: E402
from streams.replay import ensure_topics, produce_records  # noqa: E402
from streams.settings import CassandraSettings, KafkaSettings  # noqa: E402

CLUSTER_SH = REPO / "deploy" / "local" / "cluster.sh"
CLUSTER_TOML = REPO / "fusionrec.cluster.toml"
PHASES = ("before", "cassandra_fault", "between", "kafka_fault", "after")
PARTITIONS = 4


def cluster_sh(*args: str, timeout_s: float = 600) -> float:
    """Run cluster.sh; returns its seconds. A failure raises with the script's own words."""
    started = time.monotonic()
    proc = subprocess.run(["bash", str(CLUSTER_SH), *args], capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        raise RuntimeError(f"cluster.sh {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return time.monotonic() - started


def cluster_settings(toml: Path = CLUSTER_TOML) -> tuple[KafkaSettings, CassandraSettings]:
    """The sections cluster.sh wrote: the one place the cluster's ports and factors are named."""
    if not toml.is_file():
        raise RuntimeError(f"{toml} not found: run `deploy/local/cluster.sh up` first")
    data = tomllib.loads(toml.read_text())
    return KafkaSettings(**data["kafka"]), CassandraSettings(**data["cassandra"])


class Phases:
    """The scenario's current phase, and when each began (wall clock: worker log lines carry it too)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.starts: list[tuple[str, float]] = []

    def enter(self, name: str) -> None:
        with self._lock:
            self.starts.append((name, time.time()))

    @property
    def current(self) -> str:
        with self._lock:
            return self.starts[-1][0] if self.starts else "setup"

    def at(self, t: float) -> str | None:
        names = [n for n, s in self.starts if s <= t]
        return names[-1] if names else None

    def duration(self, name: str) -> float:
        for (n, s), (_, e) in zip(self.starts, self.starts[1:], strict=False):
            if n == name:
                return e - s
        return 0.0


# Share of the events that may be produced by the end of each phase: a node's restart takes 10 s on an
# idle machine and minutes on a busy one, so production waits at these marks instead of running out
# before the Kafka fault; every phase gets events, whatever the restarts cost.
PRODUCE_BY = {"before": 0.15, "cassandra_fault": 0.55, "between": 0.62, "kafka_fault": 0.90, "after": 1.0}


@dataclass
class Produced:
    """Events handed to the producer so far, paced at `rate` and held at each phase's PRODUCE_BY mark
    (the poller reads only users who already have events)."""

    events: Sequence[Event]
    rate: float
    count: int = 0
    by_phase: dict[str, int] = field(default_factory=dict)

    def records(self, phases: Phases) -> Iterator[tuple[bytes, bytes]]:
        next_at = time.monotonic()
        for ev in self.events:
            while self.count >= PRODUCE_BY.get(phases.current, 1.0) * len(self.events):
                time.sleep(0.1)
                next_at = time.monotonic()  # no burst to make up for the wait
            next_at += 1 / self.rate
            ahead = next_at - time.monotonic()
            if ahead > 0.005:
                time.sleep(ahead)
            self.count += 1
            self.by_phase[phases.current] = self.by_phase.get(phases.current, 0) + 1
            yield ev.user_id.encode(), encode_event(ev)


READ_TIMEOUT_S = 5.0
READ_FAILURE = (
    f"an HTTP error, no answer within {READ_TIMEOUT_S:.0f} s, or an answer marked `degraded` "
    "(the API fell back to popular items: Cassandra did not answer)"
)


class ReadPoller(threading.Thread):
    """GET /v1/users/{id}/recommendations, one at a time, for users whose events are in Kafka. A read
    fails on an HTTP error, no answer within `timeout_s`, or an answer marked `degraded` (the API fell
    back to popular items because Cassandra did not answer)."""

    def __init__(self, base: str, users: Callable[[], Sequence[str]], phases: Phases, pause_s: float = 0.05) -> None:
        super().__init__(daemon=True, name="read-poller")
        self.base, self.users, self.phases, self.pause_s = base, users, phases, pause_s
        self.samples: list[tuple[str, float, str | None]] = []  # (phase, ms, failure reason or None)
        self.stop = threading.Event()
        self.timeout_s = READ_TIMEOUT_S

    def run(self) -> None:
        rng = random.Random(5)
        with httpx.Client(base_url=self.base, timeout=self.timeout_s) as http:
            while not self.stop.is_set():
                known = self.users()
                if not known:
                    time.sleep(self.pause_s)
                    continue
                phase, started = self.phases.current, time.perf_counter()
                failure = None
                try:
                    r = http.get(f"/v1/users/{rng.choice(known)}/recommendations", params={"k": 10})
                    if r.status_code != 200:
                        failure = f"http {r.status_code}"
                    elif "degraded" in r.json():
                        failure = "degraded"
                except (httpx.HTTPError, ValueError) as exc:
                    failure = type(exc).__name__
                self.samples.append((phase, (time.perf_counter() - started) * 1000, failure))
                time.sleep(self.pause_s)


class CommitSampler(threading.Thread):
    """The worker group's committed offsets once a second, per phase (progress while a node is down),
    read by one consumer that never joins the group (no rebalance of the worker)."""

    def __init__(self, kafka: KafkaSettings, group: str, topic: str, phases: Phases) -> None:
        super().__init__(daemon=True, name="commit-sampler")
        self.kafka, self.group, self.topic, self.phases = kafka, group, topic, phases
        self.samples: list[tuple[str, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        consumer = Consumer(confluent_config(self.kafka, {"group.id": self.group, "enable.auto.commit": False}))
        tps = [TopicPartition(self.topic, p) for p in range(PARTITIONS)]
        try:
            while not self.stop.wait(1.0):
                phase = self.phases.current
                try:
                    total = sum(max(tp.offset, 0) for tp in consumer.committed(tps, timeout=5))
                except KafkaException:  # the coordinator may be the broker that is down: the next sample counts
                    continue
                self.samples.append((phase, total))
        finally:
            consumer.close()

    def by_phase(self) -> dict[str, int]:
        """Events committed during each phase: the rise of the committed total from the previous phase's end."""
        out: dict[str, int] = {}
        last = 0
        for phase, total in self.samples:
            out[phase] = out.get(phase, 0) + max(total - last, 0)
            last = max(last, total)
        return out


def _shop_events(n: int) -> list[Event]:
    """The first `n` events of a synthetic shop big enough to hold them (the resilience tests' shop at 50,000)."""
    events = generate_shop(n_users=max(100, n * 2600 // 50_000 + 50), seed=11).events
    if len(events) < n:
        raise RuntimeError(f"the synthetic shop has {len(events)} events, fewer than {n}")
    return list(events[:n])


def _log_times(log: str, needle: str) -> list[float]:
    """Wall-clock times of the worker log lines holding `needle` (local time, milliseconds; faust's
    worker writes `[2025-01-31 12:00:00,123] [pid] [LEVEL] ...`, plain logging the same unbracketed)."""
    out = []
    for line in log.splitlines():
        if needle in line:
            try:
                out.append(dt.datetime.strptime(line.lstrip("[")[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp())
            except ValueError:
                continue
    return out


class QuorumScan:
    """Every stored state read at QUORUM (a restarted node may still lack writes it missed), for
    `assert_folds_exactly`."""

    def __init__(self, cassandra: CassandraSettings, keyspace: str) -> None:
        self.cassandra, self.keyspace = cassandra, keyspace

    def all_states(self) -> dict[str, UserState]:
        from cassandra import ConsistencyLevel
        from cassandra.query import SimpleStatement

        from streams.stores.cassandra import connect

        cluster, session = connect(self.cassandra.hosts, self.cassandra.port)
        try:
            stmt = SimpleStatement(
                f"SELECT user_id, state FROM {self.keyspace}.user_state", consistency_level=ConsistencyLevel.QUORUM
            )
            rows = session.execute(stmt, timeout=120)
            return {r.user_id: state_from_dict(orjson.loads(r.state)) for r in rows}
        finally:
            cluster.shutdown()


def fold_check(stored: dict[str, UserState], events: Sequence[Event]) -> dict[str, int]:
    """Events lost / counted twice (by each user's event count) and users whose state differs from its fold."""
    expected = expected_views(events)
    lost = double = wrong = 0
    for user, want in expected.items():
        got = stored.get(user)
        n = got.n_events if got is not None else 0
        lost += max(want["n_events"] - n, 0)
        double += max(n - want["n_events"], 0)
        wrong += got is None or got.folded_view() != want
    return {"users": len(expected), "lost": lost, "double_counted": double, "users_differing": wrong}


def _latency(ms: list[float]) -> dict[str, float | None]:
    if not ms:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    a = np.asarray(ms)
    return {k: round(float(np.percentile(a, q)), 1) for k, q in (("p50_ms", 50), ("p99_ms", 99), ("max_ms", 100))}


def run_scenario(
    workdir: Path,
    *,
    n_events: int = 50_000,
    rate: float = 400.0,
    down_s: float = 20.0,
    settle_s: float = 10.0,
    cassandra_node: str = "cassandra1",
    kafka_node: str = "kafka1",
    toml: Path = CLUSTER_TOML,
) -> dict[str, Any]:
    """The whole scenario on a running cluster; returns the report (per-phase figures, fold check).
    Cleans up its topics and keyspace; leaves every node running."""
    kafka, cassandra = cluster_settings(toml)
    workdir.mkdir(parents=True, exist_ok=True)
    unique = uuid.uuid4().hex[:10]
    topic, dlq, items, group, keyspace = (
        f"clicks-{unique}",
        f"clicks-{unique}.dlq",
        f"items-{unique}",
        f"g-{unique}",
        f"faults_{unique}",
    )
    events = _shop_events(n_events)
    first_seen: dict[str, int] = {}
    for i, ev in enumerate(events):
        first_seen.setdefault(ev.user_id, i)
    users_in_order = sorted(first_seen, key=first_seen.__getitem__)
    seen_at = [first_seen[u] for u in users_in_order]
    phases, produced = Phases(), Produced(events, rate)
    ensure_topics(kafka, {topic: PARTITIONS, dlq: 1, items: 1})  # replication and min ISR from the cluster's settings
    env = {"FUSIONREC_CONFIG": str(toml), "FUSIONREC_KAFKA__ITEMS_TOPIC": items}
    worker = WorkerProcess(
        workdir / f"worker-{unique}.log", topic=topic, dead_letter_topic=dlq, group=group, keyspace=keyspace, env=env
    ).start()
    report: dict[str, Any] = {
        "read_failure": READ_FAILURE,
        "events": n_events,
        "rate": rate,
        "down_s": down_s,
        "cassandra_node": cassandra_node,
        "kafka_node": kafka_node,
    }
    poller: ReadPoller | None = None
    sampler = CommitSampler(kafka, group, topic, phases)
    try:
        wait_for(lambda: "partitions_assigned count=" in worker.log() or not worker.alive(), 180, "the worker to start")
        assert worker.alive(), worker.log()[-3000:]
        serve_env = {**env, "FUSIONREC_CASSANDRA__KEYSPACE": keyspace}
        encoder = ensure_encoder(REPO / "models" / "encoder-int8")  # a clean clone has none yet (numpy export, seconds)
        with served_api(
            ["--cache", str(workdir / "cache"), "--encoder", str(encoder)],
            workdir / f"serve-{unique}.log",
            free_port(),
            env=serve_env,
        ) as base:
            poller = ReadPoller(base, lambda: users_in_order[: bisect.bisect_left(seen_at, produced.count)], phases)
            failure: list[BaseException] = []

            def produce() -> None:
                try:
                    produce_records(kafka, topic, produced.records(phases), progress=False)  # paced by `produced`
                except BaseException as exc:  # re-raised below, in the scenario's thread
                    failure.append(exc)

            producer = threading.Thread(target=produce, name="producer", daemon=True)
            phases.enter("before")
            for t in (poller, sampler, producer):
                t.start()
            wait_for(lambda: produced.count >= 0.12 * n_events, 300, "12% of the events produced")

            phases.enter("cassandra_fault")
            cluster_sh("kill", cassandra_node)
            time.sleep(down_s)
            report["cassandra_restart_s"] = round(cluster_sh("start", cassandra_node), 1)
            phases.enter("between")
            assert worker.alive(), "the worker died with a Cassandra node down: " + worker.log()[-3000:]
            time.sleep(settle_s)

            phases.enter("kafka_fault")
            cluster_sh("kill", kafka_node)
            time.sleep(down_s)
            report["kafka_restart_s"] = round(cluster_sh("start", kafka_node), 1)
            phases.enter("after")
            assert worker.alive(), "the worker died with a Kafka broker down: " + worker.log()[-3000:]

            producer.join(timeout=max(60.0, 3 * n_events / rate))
            if failure:
                raise failure[0]
            assert not producer.is_alive(), "the producer did not finish"
            wait_committed(kafka, group, topic, 600, worker.alive)
            assert worker.alive(), worker.log()[-3000:]
            time.sleep(2)  # a last few reads with everything up and caught up
            phases.enter("done")
            poller.stop.set()
            sampler.stop.set()
            poller.join(10)
            sampler.join(10)
        stored = QuorumScan(cassandra, keyspace)
        report["fold"] = fold_check(stored.all_states(), events)
        assert_folds_exactly(stored, events)  # the exact check: every user's whole folded view
        report["fold"]["exact"] = True
    finally:
        if poller is not None:
            poller.stop.set()
        sampler.stop.set()
        report["worker_exit"] = worker.stop()
        report["phases"] = _phase_rows(phases, poller.samples if poller else [], produced, sampler, worker.log())
        report["worker_store_unavailable"] = len(_log_times(worker.log(), "store_unavailable"))
        report["worker_partitions_assigned"] = len(_log_times(worker.log(), "partitions_assigned"))
        _clean_up(
            kafka, cassandra, keyspace, [topic, dlq, items, f"{group}-__assignor-__leader"]
        )  # faust made the last
    return report


def _phase_rows(
    phases: Phases, samples: list[tuple[str, float, str | None]], produced: Produced, sampler: CommitSampler, log: str
) -> list[dict[str, Any]]:
    unavailable: dict[str, int] = {}
    for t in _log_times(log, "store_unavailable"):
        name = phases.at(t)
        if name:
            unavailable[name] = unavailable.get(name, 0) + 1
    commits = sampler.by_phase()
    rows = []
    for name in PHASES:
        mine = [(ms, why) for p, ms, why in samples if p == name]
        failures = [why for _, why in mine if why]
        rows.append(
            {
                "phase": name,
                "seconds": round(phases.duration(name), 1),
                "produced": produced.by_phase.get(name, 0),
                "committed": commits.get(name, 0),
                "store_unavailable": unavailable.get(name, 0),
                "reads": len(mine),
                "failed_reads": len(failures),
                "failures": sorted(set(failures)),
                **_latency([ms for ms, _ in mine]),
            }
        )
    return rows


def _clean_up(kafka: KafkaSettings, cassandra: CassandraSettings, keyspace: str, topics: list[str]) -> None:
    """The run's keyspace and topics; best effort (a clean-up error must not hide the scenario's)."""
    from confluent_kafka.admin import AdminClient

    from streams.stores.cassandra import connect

    try:
        cluster, session = connect(cassandra.hosts, cassandra.port)
        try:
            session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=120)
        finally:
            cluster.shutdown()
    except Exception as exc:
        print(f"cluster_faults: could not drop keyspace {keyspace}: {exc}", file=sys.stderr)
    admin = AdminClient(confluent_config(kafka))  # kept referenced until its futures are done
    try:
        for fut in admin.delete_topics(topics, operation_timeout=30).values():
            fut.result()
    except Exception as exc:
        print(f"cluster_faults: could not delete topics {topics}: {exc}", file=sys.stderr)


def table(report: dict[str, Any]) -> str:
    """The per-phase figures as a fixed-width table, with the fold check under it."""
    cols = (
        "phase",
        "seconds",
        "produced",
        "committed",
        "store_unavailable",
        "reads",
        "failed_reads",
        "p50_ms",
        "p99_ms",
        "max_ms",
    )
    lines = ["  ".join(f"{c:>17}" if i else f"{c:<15}" for i, c in enumerate(cols))]
    for row in report["phases"]:
        cells = ["-" if row[c] is None else str(row[c]) for c in cols]
        lines.append("  ".join(f"{v:>17}" if i else f"{v:<15}" for i, v in enumerate(cells)))
    fold = report.get("fold", {})
    lines.append(f"failed read: {READ_FAILURE}")
    lines.append(
        f"fold: {fold.get('users')} users, lost {fold.get('lost')}, double-counted {fold.get('double_counted')}, "
        f"differing {fold.get('users_differing')}, exact={fold.get('exact', False)}; "
        f"restarts: {report.get('cassandra_node')} {report.get('cassandra_restart_s')} s, "
        f"{report.get('kafka_node')} {report.get('kafka_restart_s')} s; worker exit {report.get('worker_exit')}"
    )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=50_000, help="events streamed (default 50,000)")
    ap.add_argument("--rate", type=float, default=400.0, help="events per second produced (default 400)")
    ap.add_argument("--down-s", type=float, default=20.0, help="seconds each killed node stays down (default 20)")
    ap.add_argument("--cassandra-node", default="cassandra1", choices=["cassandra1", "cassandra2", "cassandra3"])
    ap.add_argument("--kafka-node", default="kafka1", choices=["kafka1", "kafka2", "kafka3"])
    ap.add_argument("--json", type=Path, default=REPO / "out" / "cluster_faults.json", help="report file")
    args = ap.parse_args()
    up_s = cluster_sh("up", timeout_s=900)
    report = run_scenario(
        REPO / "out" / "cluster_faults",
        n_events=args.events,
        rate=args.rate,
        down_s=args.down_s,
        cassandra_node=args.cassandra_node,
        kafka_node=args.kafka_node,
    )
    report["cluster_up_s"] = round(up_s, 1)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    print(f"report: {args.json}")


if __name__ == "__main__":
    main()

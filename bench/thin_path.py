"""Thin-path throughput, both modes in one run, same dataset:

  embedded: in-process file replay -> pipeline -> SQLite
  kafka:    events pre-produced to a fresh topic; `fusionrec worker` (faust) consumes them and
            writes state + lists to the real Cassandra node. Throughput counts from the first
            batch to the last (worker start-up and group join excluded), as the worker logs it.

    python bench/thin_path.py --json out/thin_path.json [--data DIR]

Needs `fusionrec services up` for the Kafka mode.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


from bench.common import committed, drop_keyspace  # noqa: E402
from bench.harness import WorkerProcess, wait_for  # noqa: E402
from fusionrec.wiring import build_pipeline, build_ranker  # noqa: E402
from shopdata import event_records, load_data  # noqa: E402
from streams.embedded import records_from_values, run_embedded  # noqa: E402
from streams.replay import ensure_topics, produce_records  # noqa: E402
from streams.stores.sqlite import SQLiteStore  # noqa: E402


def bench_embedded(data: str | None, batch_size: int) -> dict[str, float]:
    dataset = load_data(data)
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "bench.db")
        store.setup()
        pipeline = build_pipeline(store, build_ranker(dataset), k=20)
        records = records_from_values((v for _, v in event_records(dataset)), "file:bench")
        report = run_embedded(records, pipeline, store, batch_size=batch_size, progress=False)
        store.close()
    return {
        "events": report.records,
        "seconds": round(report.elapsed_s, 3),
        "eps": round(report.events_per_s),
    }


def bench_kafka(data: str | None, batch_size: int, partitions: int, bootstrap: str) -> dict[str, float]:
    dataset = load_data(data)
    tag = uuid.uuid4().hex[:8]
    topic, dlq, group, ks = f"bench-{tag}", f"bench-{tag}.dlq", f"bench-{tag}", f"bench_{tag}"
    ensure_topics(bootstrap, {topic: partitions, dlq: 1})
    produced = produce_records(bootstrap, topic, event_records(dataset), progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        worker = WorkerProcess(
            Path(tmp) / "worker.log",
            topic=topic,
            dead_letter_topic=dlq,
            group=group,
            keyspace=ks,
            batch_size=batch_size,
            env={"FUSIONREC_DATA": data or "synthetic"},
        ).start()
        try:
            wait_for(
                lambda: committed(bootstrap, group, topic, partitions) >= produced.produced or not worker.alive(),
                600,
                "the worker to consume every event",
                poll_s=1.0,
            )
        finally:
            worker.stop()
        line = worker.last_line("worker_stop") or ""
        log_tail = worker.log()[-2000:]
    drop_keyspace(ks)
    m = re.search(r"records=(\d+).*active_s=([\d.]+) active_eps=(\d+)", line)
    if not m:
        raise SystemExit(f"worker did not report; log tail:\n{log_tail}")
    return {
        "events": int(m.group(1)),
        "seconds": float(m.group(2)),
        "eps": int(m.group(3)),
        "produce_eps": round(produced.events_per_s),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, required=True, help="where to write the results")
    ap.add_argument("--data", default=None, help="dataset folder (default: synthetic shop)")
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--bootstrap", default="127.0.0.1:9092")
    args = ap.parse_args()
    started = time.time()
    out = {
        "dataset": args.data or "synthetic",
        "batch_size": args.batch_size,
        "embedded": bench_embedded(args.data, args.batch_size),
        "kafka": bench_kafka(args.data, args.batch_size, args.partitions, args.bootstrap),
    }
    out["kafka_over_embedded"] = round(out["kafka"]["eps"] / out["embedded"]["eps"], 3)
    out["wall_s"] = round(time.time() - started, 1)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

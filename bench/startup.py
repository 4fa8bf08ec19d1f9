"""Worker start-up benchmark: seconds from launching `fusionrec worker` to each step of its start,
for a first start (new group, new keyspace) and a restart (the same group and keyspace), on a topic
that already holds events, Kafka and Cassandra on this machine:

ready     warm-up done (`worker_ready`: model sessions and store reads warmed, not yet in the group)
assigned  partitions assigned (`partitions_assigned`)
first     the first batch written (`batch_first n=1`), with where its time went

  python bench/startup.py --json out/startup.json --bundle out/bundle --data ../shared/data/scientific

Each step's time is taken from the worker's own log line (its timestamp, to the millisecond) against
the launch time; `--rounds N` repeats the pair and reports each round and the medians. What a
restart costs before it serves again is `first`; a kill without `--spare` adds the wait for the
group (none with `--instance-id`, the dead member's session otherwise).
"""

from __future__ import annotations

import json
import re
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import drop_keyspace, drop_topics, worker_bench_parser  # noqa: E402
from bench.harness import named_worker, wait_for  # noqa: E402
from schemas.codec import encode_event  # noqa: E402
from schemas.events import Event, EventType  # noqa: E402
from shopdata import load_data  # noqa: E402
from streams.replay import ensure_topics, produce_records  # noqa: E402

BOOT = "127.0.0.1:9092"
STEPS = {"ready": "worker_ready", "assigned": "partitions_assigned", "first": "batch_first n=1 "}
_STAMP = re.compile(r"^\[?(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})")


def _stamp(line: str) -> float | None:
    m = _STAMP.match(line)
    return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp() if m else None


def _produce(topic: str, items: list[str], n: int, tag: str) -> None:
    now = int(time.time() * 1000)
    events = [Event(f"{tag}-{i}", EventType.VIEW, f"u{i % 300}", now, item_id=items[i % len(items)]) for i in range(n)]
    produce_records(BOOT, topic, ((e.user_id.encode(), encode_event(e)) for e in events), progress=False)


def one_start(log_dir: Path, name: str, names: dict[str, str], bundle: str | None, data: str) -> dict[str, Any]:
    """Launch a worker, wait for its first batch, stop it; the seconds to each step."""
    w = named_worker(log_dir, names, name, env={"FUSIONREC_DATA": data})
    if bundle:
        w.args += ["--bundle", bundle]
    launched = time.time()
    w.start()
    try:
        wait_for(lambda: STEPS["first"] in w.log() or not w.alive(), 120, f"{name}: the first batch", poll_s=0.1)
    finally:
        w.stop()
    out: dict[str, Any] = {}
    for step, marker in STEPS.items():
        line = next((ln for ln in w.log().splitlines() if marker in ln), None)
        at = _stamp(line) if line else None
        out[f"{step}_s"] = round(at - launched, 2) if at is not None else None
    first = next((ln for ln in w.log().splitlines() if STEPS["first"] in ln), "")
    out["first_batch"] = first[first.find("batch_first") :].strip()
    return out


def main() -> None:
    ap = worker_bench_parser(__doc__)
    ap.add_argument("--rounds", type=int, default=3, help="first start + restart pairs")
    ap.add_argument("--events", type=int, default=1000, help="events waiting in the topic at each start")
    args = ap.parse_args()
    items = [it.item_id for it in load_data(args.data).items]
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            tag = uuid.uuid4().hex[:8]
            names = {"topic": f"start-{tag}", "dead_letter_topic": f"start-{tag}.dlq", "group": f"start-{tag}",
                     "keyspace": f"start_{tag}"}  # fmt: skip
            ensure_topics(BOOT, {names["topic"]: 4, names["dead_letter_topic"]: 1})
            row: dict[str, Any] = {}
            for kind in ("first", "restart"):
                _produce(names["topic"], items, args.events, f"{tag}-{kind}")
                row[kind] = one_start(Path(tmp), f"{r}-{kind}", names, args.bundle, args.data)
                print(f"round {r} {kind}: {row[kind]}", file=sys.stderr)
            drop_keyspace(names["keyspace"])
            drop_topics(BOOT, [names["topic"], names["dead_letter_topic"]], groups=[names["group"]])
            rounds.append(row)
    medians = {
        kind: {
            k: statistics.median(v for v in (row[kind][k] for row in rounds) if v is not None)
            for k in (f"{s}_s" for s in STEPS)
        }
        for kind in ("first", "restart")
    }
    result = {"bundle": args.bundle, "data": args.data, "rounds": rounds, "median": medians}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(json.dumps(medians, indent=2))


if __name__ == "__main__":
    main()

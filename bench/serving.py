"""Serving benchmark: p50/p99 latency and requests/s of the recommendations and search endpoints
under an open-loop load of concurrent clients, against a real `fusionrec serve` process reading
real Cassandra, all on this machine.

  python bench/serving.py --json out/serving.json [--data ../shared/data/scientific --bundle out/bundle-sci]

Set-up: every user's state and list are written to a fresh keyspace by the streaming pipeline
(the bundle's ranker), then the API starts in its own process. Load: requests are scheduled at a
fixed rate (default 200/s) over a pool of keep-alive connections; each latency runs from the
request's scheduled start to its answer, so a server that falls behind pays for the queue
(no coordinated omission). Recommendations: random known users (10% unknown: the fallback path).
Search: queries built as in `fusionrec search-eval` (category-path and known-item), half of them
with a user_id (personalised).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
import numpy as np  # noqa: E402

from bench.common import drop_keyspace  # noqa: E402
from ranker.bundle import ModelBundle  # noqa: E402
from ranker.online import BundleRanker  # noqa: E402
from schemas.codec import encode_event  # noqa: E402
from serving.text import category_query, common_category_terms, known_item_query  # noqa: E402
from shopdata import load_data  # noqa: E402
from shopdata.loader import load_dataset  # noqa: E402
from streams.core import Pipeline, RawRecord  # noqa: E402
from streams.stores.cassandra import CassandraStore  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fill(store: CassandraStore, data: Any, bundle: str) -> float:
    started = time.perf_counter()
    pipeline = Pipeline(store, BundleRanker(ModelBundle.load(bundle)), k=20)
    records = [RawRecord(encode_event(e), "clickstream:0", n) for n, e in enumerate(data.events)]
    for start in range(0, len(records), 2000):
        pipeline.process(records[start : start + 2000])
    return time.perf_counter() - started


async def _load(base: str, paths: list[str], rate: float, concurrency: int) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    sem = asyncio.Semaphore(concurrency)
    conn = aiohttp.TCPConnector(limit=concurrency, keepalive_timeout=60)
    async with aiohttp.ClientSession(base, connector=conn) as http:

        async def one(path: str, at: float) -> None:
            nonlocal errors
            await asyncio.sleep(max(0.0, at - time.perf_counter()))
            async with sem:
                try:
                    async with http.get(path) as r:
                        await r.read()
                        if r.status != 200:
                            errors += 1
                except aiohttp.ClientError:
                    errors += 1
            latencies.append(time.perf_counter() - at)

        t0 = time.perf_counter() + 0.2
        started = time.perf_counter()
        await asyncio.gather(*(one(p, t0 + i / rate) for i, p in enumerate(paths)))
        wall = time.perf_counter() - max(started, t0)
    lat = np.array(latencies) * 1000
    return {
        "p50_ms": round(float(np.percentile(lat, 50)), 2),
        "p95_ms": round(float(np.percentile(lat, 95)), 2),
        "p99_ms": round(float(np.percentile(lat, 99)), 2),
        "max_ms": round(float(lat.max()), 2),
        "rps": round(len(paths) / wall, 1),
        "offered_rps": rate,
        "requests": len(paths),
        "errors": errors,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--data", default="../shared/data/scientific")
    ap.add_argument("--bundle", default="out/bundle-sci")
    ap.add_argument("--encoder", default=None, help="text encoder (default: the bundle's own copy)")
    ap.add_argument("--rate", type=float, default=200.0, help="offered requests/s per endpoint")
    ap.add_argument("--seconds", type=float, default=20.0, help="measured seconds per endpoint")
    ap.add_argument("--concurrency", type=int, default=32, help="connections (concurrent clients)")
    ap.add_argument("--keyspace", default="bench_serving")
    ap.add_argument("--workers", type=int, default=2, help="API worker processes")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    data = load_dataset(args.data) if args.data != "synthetic" else load_data(None)
    drop_keyspace(args.keyspace)
    store = CassandraStore(["127.0.0.1"], 9042, args.keyspace)
    store.setup()
    fill_s = fill(store, data, args.bundle)
    store.close()
    print(f"filled {len(data.by_user())} users in {fill_s:.1f}s", file=sys.stderr)

    port = _free_port()
    cmd = [sys.executable, "-m", "fusionrec", "serve", "--bundle", args.bundle,  # the bundle holds the catalog
           "--store", f"cassandra://127.0.0.1:9042/{args.keyspace}", "--port", str(port),
           "--cache", "out/serving-cache-bench", "--workers", str(args.workers)]  # fmt: skip
    if args.encoder:
        cmd += ["--encoder", args.encoder]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, env=os.environ.copy())
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        import urllib.request

        while True:
            try:
                with urllib.request.urlopen(base + "/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"serve did not start: {proc.stderr.read().decode() if proc.stderr else ''}")
            time.sleep(0.5)
        rng = random.Random(args.seed)
        users = sorted(data.by_user())
        n = int(args.rate * args.seconds)
        rec_paths = [
            f"/v1/users/{rng.choice(users) if rng.random() > 0.1 else f'unknown-{i}'}/recommendations?k=20"
            for i in range(n)
        ]
        common = common_category_terms([it.category for it in data.items])
        queries = []
        for it in data.items:
            queries += [q for q in (category_query(it.category, common), known_item_query(it.title, it.brand)) if q]
        search_paths = []
        for i in range(n):
            q = rng.choice(queries).replace(" ", "+")
            search_paths.append(f"/v1/search?q={q}&k=20" + (f"&user_id={rng.choice(users)}" if i % 2 else ""))
        warm = [p for p in rec_paths[:200]] + [p for p in search_paths[:200]]
        asyncio.run(_load(base, warm, args.rate, args.concurrency))
        out: dict[str, Any] = {
            "recommendations": asyncio.run(_load(base, rec_paths, args.rate, args.concurrency)),
            "search": asyncio.run(_load(base, search_paths, args.rate, args.concurrency)),
        }
        out["setup"] = {
            "data": args.data,
            "users": len(users),
            "items": len(data.items),
            "bundle": args.bundle,
            "concurrency": args.concurrency,
            "workers": args.workers,
            "seconds_per_endpoint": args.seconds,
            "fill_seconds": round(fill_s, 1),
            "cpus": os.cpu_count(),
        }
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    drop_keyspace(args.keyspace)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

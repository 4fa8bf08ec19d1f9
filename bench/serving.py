"""Serving benchmark: p50/p99 latency and requests/s of the recommendations and search endpoints
under an open-loop load of concurrent clients, against a real `fusionrec serve` process reading
real Cassandra, all on this machine.

  python bench/serving.py --json out/serving.json [--data ../shared/data/scientific --bundle out/bundle-sci]
  python bench/serving.py --json out/serving-auth.json --auth both   # API keys off and on, side by side
  python bench/serving.py --json out/serving-nobundle.json --bundle none --encoder models/encoder-int8

Set-up: every user's state and list are written to a fresh keyspace by the streaming pipeline
(the bundle's ranker), then the API starts in its own process. Load: requests are scheduled at a
fixed rate (default 200/s) over a pool of keep-alive connections; each latency runs from the
request's scheduled start to its answer, so a server that falls behind pays for the queue
(no coordinated omission). Recommendations: random known users (10% unknown: the fallback path).
Search: queries built as in `fusionrec search-eval` (category-path and known-item), drawn afresh for
every run, half of them with a user_id (personalised). The API keeps recent queries' text vectors
(`serve.query_cache`); each run reports the share of its queries the server had seen before, the
most that cache could save (`FUSIONREC_SERVE__QUERY_CACHE=0` in the environment turns it off).

`--console both` measures each endpoint with and without the web console open beside the load
(headless Chromium on the Live view, which polls /v1/console/live every 2.5 s; the API scrapes a
real Prometheus endpoint for it, as it would a worker's), alternating which goes first, on one
server: the console's polling cost, measured. Needs Debian's chromium + chromium-driver.

`--auth both` serves the same keyspace twice at once, API keys off and on (a keys file made here,
one key with both scopes and a rate limit far above the load, so the token bucket runs but never
refuses; any refusal counts as an error), and measures each endpoint on both, alternating which
goes first, `--rounds` times: the two see the same machine load. `--bundle none` serves the
dataset's catalog with a text encoder and stores no lists: every list is the popular fallback
(one key lookup that misses) and no search is personalised.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
import httpx  # noqa: E402
import numpy as np  # noqa: E402

from bench.common import drop_keyspace  # noqa: E402
from bench.harness import served_api  # noqa: E402
from ranker.bundle import ModelBundle  # noqa: E402
from ranker.online import BundleRanker  # noqa: E402
from ranker.text import category_query, common_category_terms, known_item_query  # noqa: E402
from schemas.codec import encode_event  # noqa: E402
from serving.auth import READ, SEARCH, KeyRecord, append_key, hash_key, new_key  # noqa: E402
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


async def _load(
    base: str, paths: list[str], rate: float, concurrency: int, headers: dict[str, str]
) -> tuple[list[float], int, float]:
    """(latencies in s, errors, wall s) of `paths` offered at `rate` per second."""
    latencies: list[float] = []
    errors = 0
    sem = asyncio.Semaphore(concurrency)
    conn = aiohttp.TCPConnector(limit=concurrency, keepalive_timeout=60)
    async with aiohttp.ClientSession(base, connector=conn, headers=headers) as http:

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
    return latencies, errors, wall


def _summary(runs: list[tuple[list[float], int, float]], rate: float) -> dict[str, Any]:
    """Percentiles over every round's latencies together; rps over the rounds' wall time."""
    lat = np.array([x for r in runs for x in r[0]]) * 1000
    return {
        "p50_ms": round(float(np.percentile(lat, 50)), 2),
        "p95_ms": round(float(np.percentile(lat, 95)), 2),
        "p99_ms": round(float(np.percentile(lat, 99)), 2),
        "max_ms": round(float(lat.max()), 2),
        "p99_ms_per_round": [round(float(np.percentile(np.array(r[0]) * 1000, 99)), 2) for r in runs],
        "rps": round(len(lat) / sum(r[2] for r in runs), 1),
        "offered_rps": rate,
        "requests": len(lat),
        "errors": sum(r[1] for r in runs),
    }


def _keys_file(folder: Path) -> str:
    """A keys file with one key (both read scopes, a rate limit no bench reaches); returns the key."""
    key = new_key()
    append_key(folder / "keys.jsonl", KeyRecord("bench", hash_key(key), frozenset({READ, SEARCH}), 1e6))
    return key


class ConsoleTab:
    """Headless Chromium on the console's Live view of `base` (polling), or on a blank page (idle)."""

    def __init__(self, base: str, api_key: str | None) -> None:
        import shutil

        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
        if browser is None or driver is None:
            raise SystemExit("--console needs Chromium: apt-get install -y chromium chromium-driver")
        opts = webdriver.ChromeOptions()
        opts.binary_location = browser
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
            opts.add_argument(arg)
        self.driver = webdriver.Chrome(service=Service(driver), options=opts)
        self.base = base
        self.driver.get(base + "/#/live")
        if api_key:  # the console keeps the key in localStorage and sends it as a bearer token
            self.driver.execute_script("localStorage.setItem('fusionrec.apiKey', arguments[0])", api_key)
        self.idle()

    def polling(self) -> None:
        self.driver.get(self.base + "/#/live")
        self.driver.refresh()

    def idle(self) -> None:
        self.driver.get("about:blank")

    def close(self) -> None:
        self.driver.quit()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--data", default="../shared/data/scientific")
    ap.add_argument("--bundle", default="out/bundle-sci", help="model bundle, or `none`: catalog + encoder only")
    ap.add_argument("--encoder", default=None, help="text encoder (default: the bundle's own copy)")
    ap.add_argument("--rate", type=float, default=200.0, help="offered requests/s per endpoint")
    ap.add_argument("--seconds", type=float, default=20.0, help="measured seconds per endpoint")
    ap.add_argument("--concurrency", type=int, default=32, help="connections (concurrent clients)")
    ap.add_argument("--keyspace", default="bench_serving")
    ap.add_argument("--workers", type=int, default=2, help="API worker processes")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--auth", choices=("off", "on", "both"), default="off", help="API keys off, on, or both")
    ap.add_argument("--rounds", type=int, default=1, help="measurements per endpoint and mode (alternated)")
    ap.add_argument(
        "--console", choices=("off", "both"), default="off", help="also measure with the web console polling"
    )
    args = ap.parse_args()
    bundle = None if args.bundle == "none" else args.bundle
    if bundle is None and not args.encoder:
        raise SystemExit("--bundle none needs --encoder (e.g. models/encoder-int8)")

    data = load_dataset(args.data) if args.data != "synthetic" else load_data(None)
    drop_keyspace(args.keyspace)
    store = CassandraStore(["127.0.0.1"], 9042, args.keyspace)
    store.setup()
    fill_s = fill(store, data, bundle) if bundle else 0.0
    store.close()
    print(f"filled {len(data.by_user()) if bundle else 0} users in {fill_s:.1f}s", file=sys.stderr)

    catalog = ["--bundle", bundle] if bundle else (["--data", args.data] if args.data != "synthetic" else [])
    cmd = [*catalog, "--store", f"cassandra://127.0.0.1:9042/{args.keyspace}",
           "--cache", "out/serving-cache-bench", "--workers", str(args.workers)]  # fmt: skip
    if args.encoder:
        cmd += ["--encoder", args.encoder]
    if args.console == "both" and args.auth == "both":
        raise SystemExit("--console both compares on one server: give --auth off or --auth on")
    modes = ["off", "on"] if args.auth == "both" else [args.auth]
    logs = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    metrics_url = None
    if args.console == "both":  # a real Prometheus endpoint for the console's live view to scrape
        from prometheus_client import CollectorRegistry

        from streams.core import BatchOutcome
        from streams.metrics import PrometheusSensor

        sensor = PrometheusSensor(CollectorRegistry())
        metrics_port = _free_port()
        sensor.serve(metrics_port)
        sensor.on_batch(BatchOutcome(n_records=1000, n_applied=1000, freshness_ms=[80] * 100, elapsed_s=0.05))
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    headers = {"off": {}, "on": {"Authorization": f"Bearer {_keys_file(logs)}"}}
    with ExitStack() as stack:
        bases = {}
        for mode in modes:  # one after the other: the first fills the shared vector cache
            env = {"FUSIONREC_SERVE__API_KEYS_FILE": str(logs / "keys.jsonl") if mode == "on" else ""}
            if metrics_url:
                env["FUSIONREC_SERVE__WORKER_METRICS_URLS"] = json.dumps([metrics_url])
            bases[mode] = stack.enter_context(served_api(cmd, logs / f"serve-{mode}.log", _free_port(), 300, env))
            keyless = httpx.get(bases[mode] + "/v1/search?q=x").status_code
            if (keyless == 401) != (mode == "on"):
                raise SystemExit(f"auth={mode}, but a request without a key got {keyless}")
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

        def draw_searches(count: int) -> list[str]:
            """Fresh query draws for each run: the API caches query vectors, so a run that replayed
            the paths of an earlier one would find every query cached."""
            out = []
            for i in range(count):
                q = rng.choice(queries).replace(" ", "+")
                out.append(f"/v1/search?q={q}&k=20" + (f"&user_id={rng.choice(users)}" if i % 2 else ""))
            return out

        def query_of(path: str) -> str:
            return path.split("q=", 1)[1].split("&", 1)[0]

        search_paths = draw_searches(n)
        warm = rec_paths[:200] + search_paths[:200]
        seen_queries: dict[str, set[str]] = {mode: {query_of(p) for p in search_paths[:200]} for mode in modes}
        repeats: dict[str, list[float]] = {}
        for mode in modes:
            asyncio.run(_load(bases[mode], warm, args.rate, args.concurrency, headers[mode]))
        # conditions measured side by side: (name, auth mode, console polling?)
        if args.console == "both":
            auth = modes[0]
            key = headers[auth].get("Authorization", "").removeprefix("Bearer ") or None
            console = ConsoleTab(bases[auth], key)
            stack.callback(console.close)
            conditions = [("console_off", auth, False), ("console_on", auth, True)]
        else:
            console = None
            conditions = [(f"auth_{mode}", mode, False) for mode in modes]
        runs: dict[tuple[str, str], list[tuple[list[float], int, float]]] = {}
        for rnd in range(args.rounds):
            for e, (endpoint, paths) in enumerate((("recommendations", rec_paths), ("search", search_paths))):
                order = conditions if (rnd + e) % 2 == 0 else conditions[::-1]  # neither always goes first
                for name, mode, polling in order:
                    if console is not None:
                        console.polling() if polling else console.idle()
                        time.sleep(3)  # the page has loaded and polled at least once
                    if endpoint == "search":  # the share of this run's queries the server has had before
                        paths = draw_searches(n)
                        seen = seen_queries[mode]
                        hits = 0
                        for path in paths:
                            hits += query_of(path) in seen
                            seen.add(query_of(path))
                        repeats.setdefault(name, []).append(round(hits / len(paths), 3))
                    got = asyncio.run(_load(bases[mode], paths, args.rate, args.concurrency, headers[mode]))
                    runs.setdefault((name, endpoint), []).append(got)
                    print(f"round {rnd} {endpoint} {name}: p99 {np.percentile(got[0], 99) * 1000:.1f} ms, "
                          f"{got[1]} errors", file=sys.stderr)  # fmt: skip
    results = {
        name: {ep: _summary(runs[(name, ep)], args.rate) for ep in ("recommendations", "search")}
        for name, _, _ in conditions
    }
    for name, shares in repeats.items():  # the most the query-vector cache could hit, per run
        results[name]["search"]["repeated_query_share_per_round"] = shares
    out: dict[str, Any] = results[conditions[0][0]] if len(conditions) == 1 else results
    out["setup"] = {
        "data": args.data,
        "users": len(users),
        "items": len(data.items),
        "bundle": args.bundle,
        "auth": args.auth,
        "rounds": args.rounds,
        "console": args.console,
        "concurrency": args.concurrency,
        "workers": args.workers,
        "seconds_per_endpoint": args.seconds,
        "fill_seconds": round(fill_s, 1),
        "cpus": os.cpu_count(),
        "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
        "server_logs": str(logs),
    }
    drop_keyspace(args.keyspace)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

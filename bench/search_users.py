"""Search-only shoppers: the list the worker stores for a user whose only event is one search,
against plain hybrid search for the same query (what /v1/search answers an anonymous caller) and the
path before (the query fused like an item and fed to the user encoder).

Shoppers with a history who have just searched (their latest event is the query): the list the worker
stores (`personal+search`: their personal list and the search results merged by reciprocal rank
fusion) against the same user's list without the search (what it was before searches counted) and
plain hybrid search. Their seen items stay out of their lists (as the worker serves them), so a
target they had bought before is a miss for the lists and can still be a hit for plain search; the
count of such cases is printed.

Queries as `fusionrec search-eval` builds them (serving.quality.build_cases): for each user's last
purchase (test split), a category-path query and a known-item query from its shortened title; the
shopper is new (no history), so the target is that purchase. Every case is scored; no subset.

    .venv/bin/python bench/search_users.py --data ../shared/data/scientific --bundle out/bundle-sci \\
        --json out/search_users.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from ranker.bundle import ModelBundle  # noqa: E402
from ranker.online import BundleRanker  # noqa: E402
from ranker.search import HybridIndex  # noqa: E402
from ranker.state import RECENT_ITEMS, UserState  # noqa: E402
from serving.quality import QUERY_KINDS, SearchCase, build_cases  # noqa: E402
from shopdata import load_dataset  # noqa: E402

K = 10
BATCH = 256


def _metrics(ranks: list[int | None]) -> dict[str, float]:
    hits = [r for r in ranks if r is not None and r < K]
    n = max(len(ranks), 1)
    return {"recall@10": len(hits) / n, "mrr@10": sum(1.0 / (r + 1) for r in hits) / n, "queries": len(ranks)}


def _table(cases: list[SearchCase], ranks: dict[str, list[int | None]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per query kind (and all), per list: recall@10 and MRR@10 over every case."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    for kind in (*QUERY_KINDS, "all"):
        pick = [n for n, c in enumerate(cases) if kind == "all" or c.kind == kind]
        table[kind] = {name: _metrics([r[n] for n in pick]) for name, r in ranks.items()}
    return table


def _with_history(user: str, case: SearchCase, searched: bool) -> UserState:
    """The case's shopper: their purchases before the target (the last RECENT_ITEMS, one time step
    apart) and, when `searched`, the query as their latest event."""
    history = case.history[-RECENT_ITEMS:]
    times = tuple(range(1, len(history) + 1))
    return UserState(
        user,
        recent_items=history,
        recent_types=("purchase",) * len(history),
        recent_ts=times,
        recent_queries=(case.query,) if searched else (),
        last_ts=len(history) + (1 if searched else 0),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="dataset folder (items.csv + events.csv)")
    ap.add_argument("--bundle", type=Path, required=True, help="bundle from `fusionrec train`")
    ap.add_argument("--json", type=Path, default=REPO / "out" / "search_users.json", help="results JSON")
    args = ap.parse_args()

    ds = load_dataset(args.data)
    bundle = ModelBundle.load(args.bundle)
    items = bundle.items()
    sequences = {u: [e.item_id for e in evs if e.item_id] for u, evs in ds.by_user().items()}
    cases = build_cases(sequences, items, split="test")
    row_of = {item_id: r for r, item_id in enumerate(bundle.item_ids)}
    ranks: dict[str, list[int | None]] = {"worker (hybrid)": [], "worker (user encoder)": [], "hybrid search": []}
    seconds: dict[str, float] = {}
    for mode, name in (("hybrid", "worker (hybrid)"), ("encoder", "worker (user encoder)")):
        ranker = BundleRanker(ModelBundle.load(args.bundle), search_users=mode)
        started = time.perf_counter()
        for lo in range(0, len(cases), BATCH):
            batch = cases[lo : lo + BATCH]
            states = [UserState(f"search-only-{lo + n}", recent_queries=(c.query,)) for n, c in enumerate(batch)]
            for case, (listed, source) in zip(batch, ranker.rank_many(states, K), strict=True):
                assert source == "search", source
                rows = [row_of[i] for i, _ in listed]
                ranks[name].append(rows.index(case.target_row) if case.target_row in rows else None)
        seconds[name] = time.perf_counter() - started
    # plain hybrid search, as the API's /v1/search ranks for an anonymous caller
    encoder, _ = bundle.item_fusion()
    text = np.load(args.bundle / "text_vectors.npy").astype(np.float32)
    index = HybridIndex(bundle.item_ids, [it.text() for it in items], text)
    started = time.perf_counter()
    queries = sorted({c.query for c in cases})
    vectors = dict(zip(queries, encoder.encode(queries, batch_size=128), strict=True))
    for c in cases:
        rows = [r for r, _ in index.rank(c.query, vectors[c.query], K, mode="hybrid")]
        ranks["hybrid search"].append(rows.index(c.target_row) if c.target_row in rows else None)
    seconds["hybrid search"] = time.perf_counter() - started

    table = _table(cases, ranks)

    # shoppers with a history whose latest event is the search
    with_history: dict[str, list[int | None]] = {"worker (history + search)": [], "worker (history only)": []}
    ranker = BundleRanker(ModelBundle.load(args.bundle))
    known = [c for c in cases if any(i in row_of for i in c.history)]
    started = time.perf_counter()
    for lo in range(0, len(known), BATCH):
        batch = known[lo : lo + BATCH]
        for name, searched in (("worker (history + search)", True), ("worker (history only)", False)):
            states = [_with_history(f"h-{lo + n}", c, searched) for n, c in enumerate(batch)]
            want = "personal+search" if searched else "personal"
            for case, (listed, source) in zip(batch, ranker.rank_many(states, K), strict=True):
                assert source == want, source
                rows = [row_of[i] for i, _ in listed]
                with_history[name].append(rows.index(case.target_row) if case.target_row in rows else None)
    seconds["with history"] = time.perf_counter() - started
    plain = {id(c): r for c, r in zip(cases, ranks["hybrid search"], strict=True)}
    with_history["hybrid search"] = [plain[id(c)] for c in known]
    rebought = sum(1 for c in known if bundle.item_ids[c.target_row] in c.history)
    wh: dict[str, Any] = {"cases": len(known), "target_in_history": rebought, "results": _table(known, with_history)}
    out = {
        "data": str(args.data),
        "bundle": bundle.version,
        "cases": len(cases),
        "users": len({c.user_id for c in cases}),
        "results": table,
        "with_history": wh,
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2))
    print(f"search-only shoppers: {out['cases']} queries from {out['users']} users' last purchases ({bundle.version})")
    print(f"{'queries':<12}{'list':<24}{'recall@10':>10}{'mrr@10':>9}")
    for kind, per_list in table.items():
        for name, m in per_list.items():
            print(f"{kind:<12}{name:<24}{m['recall@10']:>10.4f}{m['mrr@10']:>9.4f}")
    print(f"shoppers with a history who just searched: {wh['cases']} queries ({wh['target_in_history']} bought before)")
    print(f"{'queries':<12}{'list':<28}{'recall@10':>10}{'mrr@10':>9}")
    for kind, per_list in wh["results"].items():
        for name, m in per_list.items():
            print(f"{kind:<12}{name:<28}{m['recall@10']:>10.4f}{m['mrr@10']:>9.4f}")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

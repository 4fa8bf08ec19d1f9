"""What the learned ranking stage costs a worker's batch: the same users ranked with and without the
stage (BundleRanker.rank_many, one BLAS thread as the worker runs), and the stage's two parts,
features and the model's predict, with the compiled trees and with LightGBM's own predict, side by
side in one run (machines here are shared and noisy: read the ratios).

Users are the dataset's first `--users` users (sorted ids) with their last 50 purchases, the
window a worker keeps; each figure is the median of `--rounds` timed runs after one untimed run.

    .venv/bin/python bench/stage.py --data ../shared/data/scientific --bundle out/bundle-sci2 \\
        --json out/stage.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from ranker.bundle import ModelBundle  # noqa: E402
from ranker.online import BundleRanker  # noqa: E402
from ranker.stage import RankingStage  # noqa: E402
from ranker.state import RECENT_ITEMS, UserState  # noqa: E402
from shopdata import load_dataset  # noqa: E402


def _median_ms(run: Callable[[], Any], rounds: int) -> float:
    run()  # untimed: first-call costs are the warm-up's, not a batch's
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="dataset folder (items.csv + events.csv)")
    ap.add_argument("--bundle", type=Path, required=True, help="bundle from `fusionrec train` (with a ranking stage)")
    ap.add_argument("--users", type=int, default=300, help="users per batch (default 300)")
    ap.add_argument("--rounds", type=int, default=15, help="timed runs per figure (default 15)")
    ap.add_argument("--json", type=Path, default=REPO / "out" / "stage.json", help="results JSON")
    args = ap.parse_args()
    if args.users < 1 or args.rounds < 1:
        ap.error("--users and --rounds must be at least 1")
    threadpool_limits(1)

    bundle = ModelBundle.load(args.bundle)
    if not bundle.has_ranking_stage():
        sys.exit(f"error: {args.bundle} has no ranking stage (train it with `fusionrec train`)")
    by_user = load_dataset(args.data).by_user()
    users = sorted(by_user)[: args.users]
    states = []
    for u in users:
        items = tuple(i for i in (e.item_id for e in by_user[u]) if i is not None)[-RECENT_ITEMS:]
        states.append(UserState(u, recent_items=items, recent_types=("purchase",) * len(items)))

    with_stage = BundleRanker(bundle, ranking_stage=True)
    without = BundleRanker(bundle, ranking_stage=False)
    stage = with_stage.stage
    assert stage is not None
    captured: dict[str, Any] = {}
    rerank = RankingStage.rerank

    def spy(self: RankingStage, *a: Any) -> Any:
        captured["args"] = a
        return rerank(self, *a)

    RankingStage.rerank = spy  # type: ignore[method-assign, assignment]
    with_stage.rank_many(states, 20)
    RankingStage.rerank = rerank  # type: ignore[method-assign]
    _, valid, feats = stage.features(*captured["args"])
    rows = feats[valid]
    booster = stage.booster
    out: dict[str, Any] = {
        "data": str(args.data),
        "bundle": bundle.version,
        "users": len(states),
        "candidates": int(valid.sum()),
        "compiled": getattr(stage, "scorer", None) is not None,
        "ms": {
            "rank_many with the stage": _median_ms(lambda: with_stage.rank_many(states, 20), args.rounds),
            "rank_many without the stage": _median_ms(lambda: without.rank_many(states, 20), args.rounds),
            "stage features": _median_ms(lambda: stage.features(*captured["args"]), args.rounds),
            "predict, LightGBM": _median_ms(lambda: booster.predict(rows, num_threads=1), args.rounds),
        },
    }
    scorer = getattr(stage, "scorer", None)  # None: LightGBM predicts (or code from before the compiled trees)
    if scorer is not None:
        out["ms"]["predict, compiled"] = _median_ms(lambda: scorer(rows), args.rounds)
        out["compiled_max_abs_diff"] = float(np.abs(scorer(rows) - booster.predict(rows, num_threads=1)).max())
    ms = out["ms"]
    out["stage_ms_per_user"] = round(
        (ms["rank_many with the stage"] - ms["rank_many without the stage"]) / len(states), 4
    )
    out["with_over_without"] = round(ms["rank_many with the stage"] / max(ms["rank_many without the stage"], 1e-9), 2)
    if "predict, compiled" in ms:
        out["lightgbm_over_compiled"] = round(ms["predict, LightGBM"] / max(ms["predict, compiled"], 1e-9), 2)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    print(f"{len(states)} users, {out['candidates']} candidates ({bundle.version}); median of {args.rounds} runs")
    for name, value in ms.items():
        print(f"  {name:<30}{value:>9.1f} ms")
    print(f"  stage per user {out['stage_ms_per_user']} ms; with/without {out['with_over_without']}x", end="")
    print(f"; LightGBM/compiled {out.get('lightgbm_over_compiled', '-')}x")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

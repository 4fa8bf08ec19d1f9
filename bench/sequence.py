"""What the user encoder costs a worker's micro-batch, with its histories bucketed by length class
(`encoders.sequence.length_buckets`: each bucket padded to at most twice its shortest member) against
buckets cut by count alone (sorted by length, `batch_size` users each: one long history pads the
whole micro-batch to it), side by side in one run, rounds interleaved (machines here are shared and
noisy: read the ratio).

`--against BUNDLE` (repeatable) times other bundles' user encoders on the same batches in the same
rounds (length classes), e.g. one exported before the last block ran for the newest step only, or
one with an int8 user encoder; each is reported as a ratio to `--bundle` with the largest
difference of its user vectors from `--bundle`'s. They must share its catalog (item rows).

Each round draws `--users` users at random (seeded) from the data, each with their last 50 items
(the window a worker keeps), and encodes them both ways with the bundle's ONNX user encoder on one
BLAS thread, as the worker runs; the two outputs are compared too (the same vectors, up to float
rounding).

    .venv/bin/python bench/sequence.py --data ../shared/data/scientific --bundle out/bundle \\
        --json out/sequence.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

import encoders.sequence as sequence  # noqa: E402
from encoders.session import SessionConfig  # noqa: E402
from ranker.bundle import ModelBundle  # noqa: E402
from schemas.errors import FusionrecError  # noqa: E402
from shopdata import load_data  # noqa: E402


def count_buckets(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """The buckets before length classes: sorted by length, cut every `batch_size` users."""
    order = np.argsort(np.maximum(lengths, 1), kind="stable")
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="dataset folder (items.csv + events.csv)")
    ap.add_argument("--bundle", type=Path, required=True, help="bundle from `fusionrec train`")
    ap.add_argument("--users", type=int, default=500, help="users per micro-batch (default 500, the worker's)")
    ap.add_argument("--rounds", type=int, default=30, help="timed rounds, each way (default 30)")
    ap.add_argument("--json", type=Path, default=REPO / "out" / "sequence.json", help="results JSON")
    ap.add_argument(
        "--against",
        type=Path,
        action="append",
        default=[],
        metavar="BUNDLE",
        help="another bundle (same catalog) whose user encoder is timed beside --bundle's; repeatable",
    )
    args = ap.parse_args()
    if args.users < 1 or args.rounds < 1:
        ap.error("--users and --rounds must be at least 1")
    threadpool_limits(1)
    try:
        bundle = ModelBundle.load(args.bundle, SessionConfig(allow_spinning=False))
        others = {str(p): ModelBundle.load(p, SessionConfig(allow_spinning=False)) for p in args.against}
        sequences = load_data(args.data).item_sequences()
    except FusionrecError as exc:  # a bad path, a damaged bundle or data file: one line, no traceback
        sys.exit(f"error: {exc}")
    for name, other in others.items():
        if other.item_ids != bundle.item_ids:
            sys.exit(f"error: {name} has another catalog than {args.bundle}: its item rows are not comparable")
    rows = {item_id: r for r, item_id in enumerate(bundle.item_ids)}
    window = int(getattr(bundle.encoder, "max_length", 50))
    known = ([rows[i] for i in seq if i in rows] for seq in sequences)
    histories = [h[-window:] for h in known if h]
    if len(histories) < args.users:
        sys.exit(f"error: {args.data} has {len(histories)} users with known items; --users is {args.users}")
    lengths = np.array([len(h) for h in histories])
    rng = np.random.default_rng(7)
    shipped = sequence.length_buckets
    times: dict[str, list[float]] = {"length classes": [], "count only": [], **{name: [] for name in others}}
    worst = 0.0
    apart = dict.fromkeys(others, 0.0)
    for n in range(args.rounds + 1):  # round 0 untimed: sessions warm
        batch = [histories[i] for i in rng.choice(len(histories), args.users, replace=False)]
        types = [[1] * len(h) for h in batch]
        got = {}
        for name, buckets in (("length classes", shipped), ("count only", count_buckets))[:: 1 if n % 2 else -1]:
            sequence.length_buckets = buckets
            started = time.perf_counter()
            got[name] = bundle.user_vectors(batch, types)
            if n:
                times[name].append(time.perf_counter() - started)
        sequence.length_buckets = shipped
        worst = max(worst, float(np.abs(got["length classes"] - got["count only"]).max()))
        for name, other in (
            list(others.items())[n % max(len(others), 1) :] + list(others.items())[: n % max(len(others), 1)]
        ):
            started = time.perf_counter()
            vectors = other.user_vectors(batch, types)
            if n:
                times[name].append(time.perf_counter() - started)
            apart[name] = max(apart[name], float(np.abs(vectors - got["length classes"]).max()))
    ms = {name: statistics.median(t) * 1000 for name, t in times.items()}
    out = {
        "data": str(args.data),
        "bundle": str(args.bundle),
        "users": args.users,
        "rounds": args.rounds,
        "history_length": {
            "median": float(np.median(lengths)),
            "p90": float(np.percentile(lengths, 90)),
            "max": int(lengths.max()),
        },
        "median_ms": {k: round(v, 2) for k, v in ms.items()},
        "speedup": round(ms["count only"] / ms["length classes"], 2),
        "max_abs_difference": worst,
        "against": {
            name: {
                "median_ms": round(ms[name], 2),
                "ms_over_bundle": round(ms[name] / ms["length classes"], 2),
                "max_abs_difference": apart[name],
            }
            for name in others
        },
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

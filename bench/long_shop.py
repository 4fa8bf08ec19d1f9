"""A synthetic shop with long histories, to time `fusionrec train` / `evaluate` where epochs are long.

Why: the real data here (Scientific) has short histories (median 4 events); a shop with a million
events and users with hundreds of them makes every epoch a hundred times longer, and what fits in
minutes on Scientific takes hours there unless training keeps to its time budget. This writes such a
shop in the dataset format (`items.csv` with title, description and multi-valued categories; `events.csv`
with `ts`), MovieLens-1M-sized by default: 6,000 users, 3,500 items, about 0.9 M events (history
lengths log-normal, median ~100, capped at 2,000). Users drift between a few preferred topics and buy
popular items too, so there is sequential and co-visit signal; item texts are topic words, so the
text model sees structure, not language. Its figures say how the pipeline scales, not how good a
model is on real shops.

    .venv/bin/python bench/long_shop.py --out /tmp/long-shop
    fusionrec train --data /tmp/long-shop --out /tmp/long-bundle      # keeps to --time-budget (15 min)
    fusionrec evaluate --data /tmp/long-shop --bundle /tmp/long-bundle --json /tmp/long-eval.json
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

GENRES = ("Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi", "Thriller", "Animation", "Documentary")


def write_shop(out: Path, users: int = 6000, items: int = 3500, topics: int = 60, seed: int = 7) -> int:
    """Write items.csv and events.csv under `out`; returns the number of events."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    vocab = 3000
    topic_words = [rng.choice(vocab, 40, replace=False) for _ in range(topics)]
    item_topic = rng.integers(0, topics, items)
    with (out / "items.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["item_id", "title", "description", "category"])
        for i in range(items):
            words = topic_words[item_topic[i]]
            title = " ".join(f"w{j}" for j in rng.choice(words, 4))
            desc = " ".join(f"w{j}" for j in np.concatenate([rng.choice(words, 12), rng.integers(0, vocab, 6)]))
            genres = ", ".join(sorted({GENRES[k] for k in rng.choice(len(GENRES), rng.integers(1, 3))}))
            w.writerow([f"m{i}", f"Film {title}", desc, genres])
    popularity = rng.zipf(1.3, items).astype(float)
    popularity /= popularity.sum()
    by_topic = [np.flatnonzero(item_topic == t) for t in range(topics)]
    total = 0
    with (out / "events.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["user_id", "item_id", "ts"])
        for u in range(users):
            n = int(min(2000, max(20, rng.lognormal(4.6, 0.9))))
            prefs = rng.choice(topics, 3, replace=False)
            ts = 956_000_000_000 + int(rng.integers(0, 10**9))
            topic = prefs[0]
            for _ in range(n):
                if rng.random() < 0.15:
                    topic = rng.choice(prefs)
                if rng.random() < 0.3:
                    item = rng.choice(items, p=popularity)
                else:
                    pool = by_topic[topic]
                    item = pool[rng.integers(0, len(pool))]
                ts += int(rng.exponential(60_000))
                w.writerow([f"u{u}", f"m{item}", ts])
                total += 1
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="folder to write items.csv and events.csv into")
    ap.add_argument("--users", type=int, default=6000, help="shoppers (about 150 events each)")
    ap.add_argument("--items", type=int, default=3500, help="catalog size")
    ap.add_argument("--seed", type=int, default=7, help="same seed, same shop")
    args = ap.parse_args()
    if args.users < 1 or args.items < 60:
        ap.error("--users must be at least 1 and --items at least 60 (one per topic)")
    events = write_shop(args.out, args.users, args.items, seed=args.seed)
    print(f"wrote {args.out}: {args.users} users, {args.items} items, {events} events")


if __name__ == "__main__":
    main()

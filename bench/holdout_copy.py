"""A hold-out check one event early: a copy of a dataset without each user's last event, and that
event as a `user_id,item_id` hold-out file. Training on the copy and scoring with `--holdout`
is what a hidden test split does one event later (train on every event given, predict the next):

  python bench/holdout_copy.py --data ../shared/data/scientific --out /tmp/sci-ho
  fusionrec train --data /tmp/sci-ho --out /tmp/sci-ho-bundle [--protocol all-but-last]
  fusionrec evaluate --data /tmp/sci-ho --bundle /tmp/sci-ho-bundle --holdout /tmp/sci-ho/holdout.csv \
      --json out/eval-holdout.json

A user's order is its `ts` column when there is one, else `position`, else the file's; users with a
single event keep it (nothing would be left as history). items.csv is linked, not copied. The copy
goes outside the repository: the data is never copied into it.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

__all__ = ["holdout_copy"]


def holdout_copy(data: Path, out: Path) -> tuple[int, int]:
    """Write out/events.csv (every event but each user's last), out/holdout.csv and out/items.csv (a
    link); returns (events kept, users held out). ValueError for a file it cannot order."""
    events = data / "events.csv"
    with events.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = list(reader.fieldnames or [])
        if not {"user_id", "item_id"} <= set(header):
            raise ValueError(f"{events}: needs user_id and item_id columns (got {header})")
        order_by = next((c for c in ("ts", "position") if c in header), None)
        by_user: dict[str, list[tuple[int, int, dict[str, str]]]] = {}
        for row_no, row in enumerate(reader, start=2):
            try:
                key = int(row[order_by]) if order_by else 0
            except (TypeError, ValueError):
                raise ValueError(
                    f"{events} line {row_no}: {order_by} {row.get(order_by)!r} is not an integer"
                ) from None
            by_user.setdefault(row["user_id"], []).append((key, row_no, row))
    out.mkdir(parents=True, exist_ok=True)
    kept = held = 0
    with (
        (out / "events.csv").open("w", newline="", encoding="utf-8") as ev,
        (out / "holdout.csv").open("w", newline="", encoding="utf-8") as ho,
    ):
        writer = csv.DictWriter(ev, fieldnames=header)
        writer.writeheader()
        hold = csv.writer(ho)
        hold.writerow(["user_id", "item_id"])
        for user, rows in by_user.items():
            rows.sort(key=lambda r: (r[0], r[1]))  # stable: ties keep the file's order
            given = rows[:-1] if len(rows) > 1 else rows
            writer.writerows(r[2] for r in given)
            kept += len(given)
            if len(rows) > 1:
                hold.writerow([user, rows[-1][2]["item_id"]])
                held += 1
    link = out / "items.csv"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to((data / "items.csv").resolve())
    return kept, held


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="dataset folder (items.csv + events.csv)")
    ap.add_argument("--out", type=Path, required=True, help="folder for the copy and holdout.csv")
    args = ap.parse_args()
    try:
        kept, held = holdout_copy(args.data, args.out)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.out}: {kept} events given, {held} users held out -> {args.out / 'holdout.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

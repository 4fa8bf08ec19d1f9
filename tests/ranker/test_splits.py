"""Splits: leave-one-out and hold-out histories and targets are exactly as documented."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from ranker.data import build_catalog, drop_cold_items, holdout_split, leave_one_out, user_sequences
from ranker.evaluate import read_holdout
from shopdata.loader import load_dataset


def _write_dataset(root: Path, rows: list[tuple[str, str, int]], items: list[str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    with (root / "items.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["item_id", "text"])
        w.writerows([(i, f"Item {i}. Industrial & Scientific Cat{ord(i[-1]) % 3}. Brand{i}.") for i in items])
    with (root / "events.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["user_id", "item_id", "position"])
        w.writerows(rows)
    return root


def test_leave_one_out_is_exact(tmp_path: Path) -> None:
    rows = [("u1", i, p) for p, i in enumerate(["A", "B", "C", "D"])] + [("u2", i, p) for p, i in enumerate("CAB")]
    rows += [("u3", "A", 0), ("u3", "B", 1)]  # too short for leave-one-out: left out, not guessed
    ds = load_dataset(_write_dataset(tmp_path / "d", rows, list("ABCD")))
    cat = build_catalog(ds)
    idx = cat.index()
    data = leave_one_out(user_sequences(ds, cat))
    assert data.test.users == ["u1", "u2"]
    assert data.test.histories == [[idx["A"], idx["B"], idx["C"]], [idx["C"], idx["A"]]]
    assert data.test.targets.tolist() == [idx["D"], idx["B"]]
    assert data.valid.histories == [[idx["A"], idx["B"]], [idx["C"]]]
    assert data.valid.targets.tolist() == [idx["C"], idx["A"]]
    assert data.train == [[idx["A"], idx["B"]], [idx["C"]]]
    # what the shipped ranking stage and the baselines count: every event before the test targets,
    # the validation targets and the users too short to be scored included, no test target
    assert data.given == [[idx[i] for i in "ABC"], [idx[i] for i in "CA"], [idx[i] for i in "AB"]]
    cold = drop_cold_items(data, {idx["A"]})
    assert cold.given == [[idx[i] for i in "BC"], [idx["C"]], [idx["B"]]]  # a cold item is counted nowhere


def test_holdout_file_built_from_a_dataset(tmp_path: Path) -> None:
    """Build a hold-out file by taking each user's last event out of a data set, then check that
    evaluation uses every remaining event as history and the held-out item as the target."""
    full = [("u1", i, p) for p, i in enumerate("ABCD")] + [("u2", i, p) for p, i in enumerate("DCB")]
    last = {}
    for u, i, p in full:
        last[u] = (i, p)
    kept = [r for r in full if last[r[0]][1] != r[2]]
    root = _write_dataset(tmp_path / "given", kept, list("ABCD"))
    holdout = tmp_path / "holdout.csv"
    holdout.write_text("user_id,item_id\n" + "".join(f"{u},{i}\n" for u, (i, _) in sorted(last.items())))
    ds = load_dataset(root)
    cat = build_catalog(ds)
    idx = cat.index()
    data = holdout_split(user_sequences(ds, cat), read_holdout(holdout), cat)
    assert data.protocol == "holdout"
    assert data.test.users == ["u1", "u2"]
    assert data.test.histories == [[idx[i] for i in "ABC"], [idx[i] for i in "DC"]]  # every given event
    assert data.test.targets.tolist() == [idx["D"], idx["B"]]  # the held-out item after it
    assert data.valid.histories == [[idx[i] for i in "AB"], [idx["D"]]]  # validation: last given event
    assert data.valid.targets.tolist() == [idx["C"], idx["C"]]
    assert data.train == [[idx[i] for i in "AB"], [idx["D"]]]
    assert data.given == [[idx[i] for i in "ABC"], [idx[i] for i in "DC"]]  # every given event counts
    bad = tmp_path / "bad.csv"
    bad.write_text("user_id,item_id\nghost,A\n")
    with pytest.raises(ValueError, match="unknown users or items"):
        holdout_split(user_sequences(ds, cat), read_holdout(bad), cat)

"""bench/holdout_copy.py: each user's last event (by ts, else position, else file order) becomes the
hold-out, the rest the data given; the copy loads and splits as `evaluate --holdout` reads it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.holdout_copy import holdout_copy
from ranker.data import build_catalog, holdout_split, user_sequences
from ranker.evaluate import read_holdout
from shopdata.loader import load_dataset

REPO = Path(__file__).resolve().parents[2]


def _shop(root: Path, events: str) -> Path:
    root.mkdir()
    (root / "items.csv").write_text("item_id,text\nA,Alpha\nB,Beta\nC,Gamma\nD,Delta\n")
    (root / "events.csv").write_text(events)
    return root


def test_the_last_event_by_timestamp_is_held_out(tmp_path: Path) -> None:
    data = _shop(tmp_path / "d", "user_id,item_id,ts\nu1,B,2000\nu1,A,1000\nu1,C,3000\nu2,D,5\nu3,A,7\nu3,C,9\n")
    kept, held = holdout_copy(data, tmp_path / "o")
    assert (kept, held) == (4, 2)
    assert read_holdout(tmp_path / "o" / "holdout.csv") == [("u1", "C"), ("u3", "C")]
    ds = load_dataset(tmp_path / "o")
    cat = build_catalog(ds)
    split = holdout_split(user_sequences(ds, cat), read_holdout(tmp_path / "o" / "holdout.csv"), cat)
    idx = cat.index()
    assert split.test.histories == [[idx["A"], idx["B"]], [idx["A"]]]  # u1 in time order; u2 (one event) kept whole
    assert (tmp_path / "o" / "items.csv").is_symlink()


def test_positions_order_a_user_and_a_bad_one_is_an_error_line(tmp_path: Path) -> None:
    data = _shop(tmp_path / "d", "user_id,item_id,position\nu1,C,1\nu1,D,0\nu1,A,2\n")
    holdout_copy(data, tmp_path / "o")
    assert read_holdout(tmp_path / "o" / "holdout.csv") == [("u1", "A")]
    bad = _shop(tmp_path / "bad", "user_id,item_id,position\nu1,C,one\n")
    proc = subprocess.run([sys.executable, "bench/holdout_copy.py", "--data", str(bad), "--out", str(tmp_path / "x")],
                          cwd=REPO, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"error: {bad / 'events.csv'} line 2: position 'one' is not an integer"
    ]

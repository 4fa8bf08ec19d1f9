"""Embedded mode end to end: the `fusionrec demo` command, and exact folds in SQLite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.harness import expected_views
from fusionrec.wiring import build_pipeline, build_ranker
from schemas.codec import encode_event
from shopdata import event_records
from shopdata.synthetic import generate_shop
from streams.embedded import records_from_values, run_embedded
from streams.stores.sqlite import SQLiteStore

REPO = Path(__file__).resolve().parents[2]


def test_demo_command_runs_end_to_end(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    proc = subprocess.run(
        [sys.executable, "-m", "fusionrec", "demo", "--db", str(db), "--show", "2"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    shop = generate_shop()
    assert f"replayed {len(shop.events)} events" in proc.stdout
    assert proc.stdout.count("recommended (personal") == 2
    store = SQLiteStore(db)
    assert store.count_states() == len(shop.by_user())
    stored = {u: s.folded_view() for u, s in store.get_states(list(shop.by_user())).items()}
    assert stored == expected_views(shop.events)
    rec_cli = subprocess.run(
        [sys.executable, "-m", "fusionrec", "recommend", "U00001", "--store", f"sqlite:///{db}", "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert rec_cli.returncode == 0, rec_cli.stderr
    assert '"user_id":"U00001"' in rec_cli.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "fusionrec", "recommend", "nobody", "--store", f"sqlite:///{db}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 1 and "no list stored" in missing.stderr


def test_embedded_replay_twice_and_bad_lines_stay_exact(tmp_path: Path) -> None:
    shop = generate_shop(n_users=200)
    store = SQLiteStore(tmp_path / "e.db")
    store.setup()
    pipeline = build_pipeline(store, build_ranker(shop), k=10)
    values = [v for _, v in event_records(shop)]
    values.insert(17, b"{broken")
    values.insert(400, b'{"event_id": "z", "type": "view", "user_id": "U00003", "ts": "now", "item_id": "I1"}')
    for _ in range(2):  # a full second replay of the same file must change nothing
        report = run_embedded(records_from_values(values, "file:shop"), pipeline, store, batch_size=64, progress=False)
    assert report.applied == 0 and report.duplicates == len(shop.events)
    stored = {u: s.folded_view() for u, s in store.get_states(list(shop.by_user())).items()}
    assert stored == expected_views(shop.events)
    letters = store.dead_letters()
    assert [(src, off, field) for src, off, field, _, _ in letters] == [
        ("file:shop", 17, "$"),
        ("file:shop", 400, "ts"),
    ]
    assert encode_event(shop.events[0]) in values

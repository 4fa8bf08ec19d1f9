"""Embedded mode end to end: the `fusionrec demo` command, and exact folds in SQLite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.harness import expected_views
from fusionrec.wiring import build_pipeline, build_ranker
from shopdata import event_records
from shopdata.synthetic import generate_shop
from streams.embedded import records_from_values, run_embedded
from streams.stores.memory import MemoryStore
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
    broken = b"{broken"
    bad_ts = b'{"event_id": "z", "type": "view", "user_id": "U00003", "ts": "now", "item_id": "I1"}'
    values.insert(17, broken)
    values.insert(400, bad_ts)
    for _ in range(2):  # a full second replay of the same file must change nothing
        report = run_embedded(records_from_values(values, "file:shop"), pipeline, store, batch_size=64, progress=False)
    assert report.applied == 0 and report.duplicates == len(shop.events)
    stored = {u: s.folded_view() for u, s in store.get_states(list(shop.by_user())).items()}
    assert stored == expected_views(shop.events)
    letters = store.dead_letters()  # kept once, though replayed twice; byte for byte
    assert [(d.source, d.offset, d.field, d.raw) for d in letters] == [
        ("file:shop", 17, "$", broken),
        ("file:shop", 400, "ts", bad_ts),
    ]
    assert letters[0].reason.startswith("not valid JSON")
    assert letters[1].reason == "expected integer epoch milliseconds, got str"


def test_embedded_runtime_takes_any_dead_letter_store() -> None:
    """No SQLite needed: the memory twin keeps the results and the dead letters alike."""
    shop = generate_shop(n_users=20)
    store = MemoryStore()
    values = [v for _, v in event_records(shop)] + [b"", b"[1, 2]"]
    report = run_embedded(
        records_from_values(values, "file:tiny"), build_pipeline(store, build_ranker(shop), k=5), store, progress=False
    )
    assert report.dead_letters == 2 and store.count_states() == len(shop.by_user())
    assert [(d.offset, d.field, d.raw) for d in store.dead_letters()] == [
        (len(values) - 2, "$", b""),
        (len(values) - 1, "$", b"[1, 2]"),
    ]

"""Bad dataset files, as a person hands them to the CLI: one `error:` line naming the file, exit 2,
no traceback; or, for a few bad rows, a run that succeeds and says what it skipped (`dataset_loaded`).

Each case runs `fusionrec demo --data DIR` (cheap: it loads the dataset first) in a subprocess.
"""

from __future__ import annotations

import codecs
import subprocess
from pathlib import Path

import pytest

from tests.cli import assert_error, run_cli

ITEMS = "item_id,text\nA,apple\nB,banana\nC,cherry\n"
EVENTS = "user_id,item_id,position\nu1,A,0\nu1,B,1\nu2,B,0\nu2,C,1\n"


def dataset(tmp: Path, items: str | bytes = ITEMS, events: str | bytes = EVENTS) -> Path:
    d = tmp / "shop"
    d.mkdir(exist_ok=True)
    for name, content in (("items.csv", items), ("events.csv", events)):
        (d / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    return d


def demo(tmp: Path, d: Path) -> subprocess.CompletedProcess[str]:
    return run_cli("demo", "--data", str(d), "--db", str(tmp / "x.db"), "--show", "1")


def loaded_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The run succeeded, without a traceback; returns its `dataset_loaded` log line (stderr)."""
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    (line,) = [ln for ln in proc.stderr.splitlines() if " dataset_loaded " in ln]
    return line


@pytest.mark.parametrize("bad", ["items.csv", "events.csv"])
def test_non_utf8_file(tmp_path: Path, bad: str) -> None:
    files = {"items.csv": ITEMS.encode(), "events.csv": EVENTS.encode()}
    files[bad] += "u3,caf\u00e9,0\n".encode("cp1252")
    d = dataset(tmp_path, files["items.csv"], files["events.csv"])
    offset, line_no = files[bad].index(b"\xe9"), files[bad].count(b"\n")  # the bad byte is on the last line
    line = assert_error(demo(tmp_path, d), f"{d / bad} is not UTF-8: byte 0xe9 at offset {offset} (line {line_no})")
    assert "save the file as UTF-8" in line


def test_non_utf8_items_in_train(tmp_path: Path) -> None:
    d = dataset(tmp_path, ITEMS.encode("utf-16"))
    proc = run_cli("train", "--data", str(d), "--out", str(tmp_path / "bundle"))
    assert_error(proc, str(d / "items.csv"), "is not UTF-8 (it looks like UTF-16)")


def test_a_cold_items_draw_without_cold_items_is_refused(tmp_path: Path) -> None:
    d = dataset(tmp_path, ITEMS.encode())
    proc = run_cli("train", "--data", str(d), "--out", str(tmp_path / "bundle"), "--cold-items-draw", "b")
    assert_error(proc, "--cold-items-draw picks which items --cold-items holds out: give --cold-items too")
    assert not (tmp_path / "bundle").exists()


def test_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    d = dataset(tmp_path, codecs.BOM_UTF8 + ITEMS.encode(), codecs.BOM_UTF8 + EVENTS.encode())
    proc = demo(tmp_path, d)
    line = loaded_line(proc)
    assert "items=3 events=4 rows=4 skipped_missing_field=0" in line
    assert "dataset: shop: 3 items, 2 users, 4 events" in proc.stdout


def test_a_few_bad_rows_are_skipped_and_counted(tmp_path: Path) -> None:
    events = EVENTS + "u3,A\n,B,0\nu3,,0\nu3,C,soon\nu1,B,1\nu3,A,0\nu3,B,1\n"
    proc = demo(tmp_path, dataset(tmp_path, events=events))
    line = loaded_line(proc)
    assert "WARNING" in line
    for kv in (
        "events=6",
        "rows=11",
        "skipped_missing_field=1",
        "skipped_empty_id=2",
        "skipped_bad_position=1",
        "skipped_duplicate_event=1",
        "first_skipped=\"events.csv line 6: 2 field(s) of 3: no 'position'\"",
    ):
        assert kv in line, line
    assert "dataset: shop: 3 items, 3 users, 6 events" in proc.stdout


def test_bad_ts_rows_are_counted(tmp_path: Path) -> None:
    events = "user_id,item_id,ts\nu1,A,100\nu1,B,200\nu2,B,150\nu2,C,1.5e3\n"
    line = loaded_line(demo(tmp_path, dataset(tmp_path, events=events)))
    assert "events=3 rows=4" in line and "skipped_bad_ts=1" in line


@pytest.mark.parametrize(
    ("events", "needles"),
    [
        (
            "user_id,item_id,position\nu1,A,first\nu1,B,second\nu2,A,0\n",
            ["2 of 3 rows are bad (bad_position 2)", "line 2: field 'position': not an integer: 'first'"],
        ),
        ("user_id,item_id,ts\nu1,A\nu1,B\n", ["2 of 2 rows are bad (missing_field 2)", "line 2", "no 'ts'"]),
        ("user_id,item_id,position\n,A,0\n", ["1 of 1 rows are bad (empty_id 1)", "field 'user_id' is empty"]),
    ],
)
def test_mostly_bad_rows_reject_the_file(tmp_path: Path, events: str, needles: list[str]) -> None:
    d = dataset(tmp_path, events=events)
    assert_error(demo(tmp_path, d), str(d / "events.csv"), *needles)


def test_unknown_items_are_kept_and_reported(tmp_path: Path) -> None:
    proc = demo(tmp_path, dataset(tmp_path, events=EVENTS + "u3,NOPE,0\nu3,A,1\n"))
    line = loaded_line(proc)
    assert "events=6" in line and "unknown_items=1 unknown_item_events=1 unknown_item_examples=NOPE" in line
    assert "6 events" in proc.stdout


@pytest.mark.parametrize(
    ("items", "events", "bad", "needle"),
    [
        ("item_id,text\n", EVENTS, "items.csv", "has no items"),
        (ITEMS, "user_id,item_id,position\n", "events.csv", "has no events"),
        ("", EVENTS, "items.csv", "is empty: expected a header row"),
        (ITEMS, "user_id,item_id\nu1,A\n", "events.csv", "needs a 'ts' or a 'position' column"),
    ],
)
def test_empty_catalog_or_events(tmp_path: Path, items: str, events: str, bad: str, needle: str) -> None:
    d = dataset(tmp_path, items, events)
    assert_error(demo(tmp_path, d), str(d / bad), needle)


def test_repeated_positions_are_all_replayed(tmp_path: Path) -> None:
    # u1 bought B and then C, both written at position 1: both are real events, none is a "duplicate"
    proc = demo(tmp_path, dataset(tmp_path, events=EVENTS + "u1,C,1\n"))
    line = loaded_line(proc)
    assert "events=5" in line and "repeated_position=1" in line
    assert "5 applied, 0 duplicates" in proc.stdout


def test_items_jsonl(tmp_path: Path) -> None:
    bad = tmp_path / "items.jsonl"
    bad.write_text('{"item_id": "A", "title": "apple"}\n{"item_id": "B", "title": \n{"item_id": ""}\n')
    assert_error(
        run_cli("tag-items", "--items", str(bad), "--out", str(tmp_path / "tags.jsonl")),
        str(bad),
        "2 of 3 lines are bad (bad_json 1, invalid_item 1)",
        "line 2: invalid item: field '$': not valid JSON",
    )
    missing = tmp_path / "nowhere.jsonl"
    assert_error(
        run_cli("tag-items", "--items", str(missing), "--out", str(tmp_path / "tags.jsonl")), f"{missing} not found"
    )

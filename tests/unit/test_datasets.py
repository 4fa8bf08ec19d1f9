from __future__ import annotations

import codecs
import logging
from pathlib import Path

import pytest

from schemas.codec import decode_event, encode_event
from schemas.errors import ConfigError, DataError
from schemas.events import EventType
from serving.reviews import load_reviews
from shopdata import LoadReport
from shopdata.loader import BASE_TS_MS, load_dataset, load_items, load_items_file
from shopdata.synthetic import generate_shop


def _write(tmp: Path, items: str, events: str) -> Path:
    (tmp / "items.csv").write_text(items)
    (tmp / "events.csv").write_text(events)
    return tmp


def test_position_layout_interleaves_users(tmp_path: Path) -> None:
    d = _write(tmp_path, "item_id,text\nA,apple\nB,banana\n", "user_id,item_id,position\nu1,A,0\nu1,B,1\nu2,B,0\n")
    ds = load_dataset(d, spacing_ms=10)
    assert [it.title for it in ds.items] == ["apple", "banana"]
    assert [(e.user_id, e.item_id, e.ts) for e in ds.events] == [
        ("u1", "A", BASE_TS_MS),
        ("u2", "B", BASE_TS_MS + 10),
        ("u1", "B", BASE_TS_MS + 20),
    ]
    assert all(e.type is EventType.PURCHASE for e in ds.events)
    assert [e.event_id for e in ds.events] == ["u1:0", "u2:0", "u1:1"]
    assert list(ds.item_sequences()) == [["A", "B"], ["B"]]


def test_ts_layout_keeps_clock(tmp_path: Path) -> None:
    d = _write(tmp_path, "item_id,title\nA,apple\n", "user_id,item_id,ts\nu1,A,500\nu2,A,100\n")
    ds = load_dataset(d)
    assert [(e.user_id, e.ts) for e in ds.events] == [("u2", 100), ("u1", 500)]


def test_missing_columns_are_named(tmp_path: Path) -> None:
    d = _write(tmp_path, "item_id,text\nA,a\n", "user,item_id\nu1,A\n")
    with pytest.raises(ConfigError, match="user_id"):
        load_dataset(d)
    with pytest.raises(ConfigError, match="not found"):
        load_dataset(tmp_path / "nowhere")


def test_synthetic_shop_is_deterministic_and_structured() -> None:
    a, b = generate_shop(), generate_shop()
    assert a.digest() == b.digest()
    assert generate_shop(seed=8).digest() != a.digest()
    assert len(a.events) > 10_000 and len(a.by_user()) == 1000 and len(a.items) == 400
    types = {e.type for e in a.events}
    assert types == set(EventType)
    assert all((e.query is not None) == (e.type is EventType.SEARCH) for e in a.events)
    ts = [e.ts for e in a.events]
    assert ts == sorted(ts)
    assert len({e.event_id for e in a.events}) == len(a.events)
    for ev in a.events[:200]:  # every generated event passes the wire contract
        assert decode_event(encode_event(ev)) == ev


# --- bad files and rows: a clear error naming the file, or a counted skip ---------------------------

SCIENTIFIC = Path(__file__).resolve().parents[3] / "shared" / "data" / "scientific"
ITEMS = "item_id,text\nA,apple\nB,banana\nC,cherry\n"


def _write_bytes(tmp: Path, items: bytes, events: bytes) -> Path:
    (tmp / "items.csv").write_bytes(items)
    (tmp / "events.csv").write_bytes(events)
    return tmp


@pytest.mark.parametrize("bad", ["items.csv", "events.csv"])
def test_non_utf8_file_names_file_offset_and_line(tmp_path: Path, bad: str) -> None:
    files = {"items.csv": ITEMS.encode(), "events.csv": b"user_id,item_id,position\nu1,A,0\n"}
    files[bad] = files[bad] + "u1,caf\u00e9,1\n".encode("latin-1")  # one Latin-1 byte on line 3
    d = _write_bytes(tmp_path, files["items.csv"], files["events.csv"])
    offset = files[bad].index(b"\xe9")
    with pytest.raises(DataError, match=rf"{bad} is not UTF-8: byte 0xe9 at offset {offset} \(line \d\)") as err:
        load_dataset(d)
    assert "save the file as UTF-8" in str(err.value)


def test_utf16_file_is_named_as_such(tmp_path: Path) -> None:
    d = _write_bytes(tmp_path, ITEMS.encode("utf-16"), b"user_id,item_id,position\nu1,A,0\n")
    with pytest.raises(DataError, match=r"items.csv is not UTF-8 \(it looks like UTF-16\): byte 0x.. at offset 0"):
        load_dataset(d)


def test_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    bom = codecs.BOM_UTF8
    d = _write_bytes(tmp_path, bom + ITEMS.encode(), bom + b"user_id,item_id,position\nu1,A,0\nu1,B,1\n")
    ds = load_dataset(d)
    assert [it.item_id for it in ds.items] == ["A", "B", "C"]
    assert [(e.event_id, e.item_id) for e in ds.events] == [("u1:0", "A"), ("u1:1", "B")]
    assert [it.item_id for it in load_items_file(d / "items.csv")] == ["A", "B", "C"]


def test_bad_rows_are_skipped_and_counted_by_reason(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    events = (
        "user_id,item_id,position\n"
        "u1,A,0\nu1,B,1\nu1,C,2\nu2,A,0\nu2,B,1\nu2,C,2\nu3,A,0\n"
        "u3,B\n"  # line 9: short row (csv gives None today)
        ",B,1\n"  # empty user_id
        "u4,,0\n"  # empty item_id
        "u3,C,two\n"  # not an integer
        "u3,C,-1\n"  # out of range
        "u1,B,1\n"  # the very same row again
        "u3,A,1,oops\n"  # an extra non-empty field
        "u3,B,1,\n"  # an extra empty field is fine
    )
    d = _write(tmp_path, ITEMS, events)
    with caplog.at_level(logging.INFO, logger="fusionrec.data"):
        ds = load_dataset(d)
    r = ds.report
    assert isinstance(r, LoadReport)
    assert (r.rows_read, r.events) == (15, 8)
    assert dict(r.skipped) == {
        "missing_field": 1,
        "extra_field": 1,
        "empty_id": 2,
        "bad_ts": 0,
        "bad_position": 2,
        "duplicate_event": 1,
    }
    assert r.skipped_total == 7 and r.items == 3 and r.items_skipped_total == 0
    assert r.first_skipped == "events.csv line 9: 2 field(s) of 3: no 'position'"
    assert [e.event_id for e in ds.by_user()["u3"]] == ["u3:0", "u3:1"]
    (line,) = [rec.getMessage() for rec in caplog.records if rec.getMessage().startswith("dataset_loaded")]
    assert f"dataset_loaded name={d.name} items=3 events=8 rows=15 skipped_missing_field=1 " in line
    assert "skipped_empty_id=2" in line and "skipped_bad_position=2" in line and "skipped_duplicate_event=1" in line


def test_ts_rows_that_are_not_integers_are_counted(tmp_path: Path) -> None:
    d = _write(tmp_path, ITEMS, "user_id,item_id,ts\nu1,A,500\nu1,B,5.5\nu2,A,100\nu2,B,\nu2,C,300\n")
    ds = load_dataset(d)
    assert ds.report is not None and ds.report.skipped["bad_ts"] == 2
    assert [(e.event_id, e.ts) for e in ds.events] == [("u2:1", 100), ("u2:2", 300), ("u1:0", 500)]


@pytest.mark.parametrize(
    ("events", "where"),
    [
        (
            "user_id,item_id,position\nu1,A,x\nu1,B,y\nu1,C,2\n",
            r"2 of 3 rows are bad \(bad_position 2\); "
            r"the first, line 2: field 'position': not an integer: 'x'",
        ),
        ("user_id,item_id,ts\nu1,A\n", r"1 of 1 rows are bad \(missing_field 1\); the first, line 2: .*no 'ts'"),
        (
            "user_id,item_id,position\n,A,0\nu1,,1\n",
            r"2 of 2 rows are bad \(empty_id 2\); the first, line 2: "
            r"field 'user_id' is empty",
        ),
    ],
)
def test_a_file_of_mostly_bad_rows_is_rejected(tmp_path: Path, events: str, where: str) -> None:
    d = _write(tmp_path, ITEMS, events)
    with pytest.raises(DataError, match=rf"events.csv: {where}"):
        load_dataset(d)


def test_bad_item_rows_are_counted_and_a_bad_catalog_rejected(tmp_path: Path) -> None:
    items = 'item_id,title,category\nA,apple,fruit\nB,banana\n,nameless,x\nA,again,fruit\nC,"cherry, red",fruit\n'
    items += "D,dill,herb,extra\nE,egg,food\n"
    d = _write(tmp_path, items, "user_id,item_id,position\nu1,A,0\n")
    ds = load_dataset(d)
    assert [it.item_id for it in ds.items] == ["A", "C", "E"]
    assert ds.items[0].title == "apple" and ds.items[1].title == "cherry, red"
    assert ds.report is not None
    assert {k: v for k, v in ds.report.items_skipped.items() if v} == {
        "missing_field": 1,
        "empty_id": 1,
        "duplicate_item": 1,
        "extra_field": 1,
    }
    assert ds.report.first_skipped == "items.csv line 3: 2 field(s) of 3: no 'category'"
    (d / "items.csv").write_text("item_id,text\nA\nB\nC,cherry\n")
    with pytest.raises(DataError, match=r"items.csv: 2 of 3 rows are bad .*line 2: .*no 'text'"):
        load_items(d / "items.csv")


def test_unknown_items_are_kept_and_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    d = _write(tmp_path, ITEMS, "user_id,item_id,position\nu1,A,0\nu1,Z,1\nu2,Y,0\nu2,Z,1\n")
    with caplog.at_level(logging.INFO, logger="fusionrec.data"):
        ds = load_dataset(d)
    assert [e.item_id for e in ds.events] == ["A", "Y", "Z", "Z"]
    r = ds.report
    assert r is not None
    assert (r.unknown_items, r.unknown_item_events, r.unknown_item_examples) == (2, 3, ("Y", "Z"))
    assert "unknown_items=2 unknown_item_events=3 unknown_item_examples=Y,Z" in caplog.text


@pytest.mark.parametrize(
    ("items", "events", "message"),
    [
        ("item_id,text\n", "user_id,item_id,position\nu1,A,0\n", r"items.csv has no items"),
        (ITEMS, "user_id,item_id,position\n", r"events.csv has no events"),
        (ITEMS, "user_id,item_id,position\n\n\n", r"events.csv has no events"),
        ("", "user_id,item_id,position\nu1,A,0\n", r"items.csv is empty: expected a header row"),
        (ITEMS, "", r"events.csv is empty: expected a header row"),
    ],
)
def test_empty_catalog_or_no_events_is_an_error(tmp_path: Path, items: str, events: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        load_dataset(_write(tmp_path, items, events))


def test_no_order_column_and_oversized_field_are_errors(tmp_path: Path) -> None:
    d = _write(tmp_path, ITEMS, "user_id,item_id\nu1,A\n")
    with pytest.raises(ConfigError, match=r"events.csv needs a 'ts' or a 'position' column"):
        load_dataset(d)
    d = _write(tmp_path, 'item_id,text\nA,"' + "x" * 200_000 + '"\n', "user_id,item_id,position\nu1,A,0\n")
    with pytest.raises(DataError, match=r"items.csv line 2: not readable as CSV: field larger than field limit"):
        load_dataset(d)


def test_repeated_positions_get_unique_deterministic_ids(tmp_path: Path) -> None:
    events = "user_id,item_id,position\nu1,A,0\nu1,B,1\nu1,C,1\nu2,A,0\nu1,A,1\n"
    d = _write(tmp_path, ITEMS, events)
    ds = load_dataset(d, spacing_ms=10)
    assert [(e.event_id, e.item_id) for e in ds.events] == [
        ("u1:0", "A"),
        ("u2:0", "A"),
        ("u1:1", "B"),
        ("u1:1#2", "C"),
        ("u1:1#3", "A"),
    ]
    assert len({e.event_id for e in ds.events}) == len(ds.events)
    assert ds.report is not None and ds.report.repeated_position == 2 and ds.report.skipped_total == 0
    assert load_dataset(d, spacing_ms=10).digest() == ds.digest()


def test_ts_layout_ids_stay_unique_with_or_without_positions(tmp_path: Path) -> None:
    # ids from the row index (no position) never meet ids from a position: a clash gets '#n'
    d = _write(tmp_path, ITEMS, "user_id,item_id,ts,position\nu1,A,10,1\nu1,B,20,\nu1,C,30,1\n")
    ds = load_dataset(d)
    assert [e.event_id for e in ds.events] == ["u1:1", "u1:1#2", "u1:1#3"]


def test_limit_users_is_reported(tmp_path: Path) -> None:
    d = _write(tmp_path, ITEMS, "user_id,item_id,position\nu1,A,0\nu2,B,0\nu1,B,1\n")
    ds = load_dataset(d, limit_users=1)
    assert [e.event_id for e in ds.events] == ["u1:0", "u1:1"]
    assert ds.report is not None and ds.report.outside_limit == 1 and ds.report.skipped_total == 0


def test_items_jsonl_bad_lines_are_counted_or_rejected(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = [f'{{"item_id": "I{i}", "title": "thing {i}"}}' for i in range(4)]
    p = tmp_path / "items.jsonl"
    lines = [*good, "{not json", '{"item_id": "", "title": "x"}', good[0], '{"item_id": "Z", "title": "caf']
    p.write_bytes(codecs.BOM_UTF8 + "\n".join(lines).encode() + b'\xe9"}\n\n')
    with caplog.at_level(logging.INFO, logger="fusionrec.data"):
        items = load_items_file(p)
    assert [it.item_id for it in items] == ["I0", "I1", "I2", "I3"]
    assert "items_loaded path=" in caplog.text
    assert "items=4 rows=8 skipped_not_utf8=1 skipped_bad_json=1 skipped_invalid_item=1 skipped_duplicate_item=1" in (
        caplog.text
    )
    p.write_text("\n".join([good[0], '{"item_id": "X", "title": "t", "price": -1}', "[1, 2]", ""]))
    with pytest.raises(
        DataError,
        match=r"items.jsonl: 2 of 3 lines are bad \(bad_json 1, invalid_item 1\); the first, "
        r"line 2: invalid item: field 'price': expected a non-negative number",
    ):
        load_items_file(p)
    with pytest.raises(ConfigError, match=r"nowhere\.jsonl not found"):
        load_items_file(tmp_path / "nowhere.jsonl")
    with pytest.raises(ConfigError, match=r"nowhere\.csv not found"):
        load_items_file(tmp_path / "nowhere.csv")


def test_scientific_loads_clean_and_unchanged() -> None:
    if not (SCIENTIFIC / "events.csv").is_file():
        pytest.skip("shared Scientific data not present")
    ds = load_dataset(SCIENTIFIC)
    assert (len(ds.items), len(ds.events), len(ds.by_user())) == (4385, 50985, 8442)
    assert ds.digest() == "11ed15e3e99d58fc"  # the same events, order, ids and times as the loader before
    r = ds.report
    assert r is not None and r.skipped_total == r.items_skipped_total == r.unknown_items == r.repeated_position == 0


# --- reviews (serving.reviews.load_reviews) -----------------------------------------------------------


def test_reviews_load_from_csv_and_jsonl(tmp_path: Path) -> None:
    csv_path = tmp_path / "reviews.csv"
    csv_path.write_bytes(codecs.BOM_UTF8 + b'item_id,text\nA,great\nB,"ok, fine"\nA,again\n')
    assert load_reviews(csv_path) == {"A": ["great", "again"], "B": ["ok, fine"]}
    jsonl = tmp_path / "reviews.jsonl"
    jsonl.write_bytes(codecs.BOM_UTF8 + b'{"item_id": "A", "text": "great"}\n\n{"item_id": 7, "text": "n"}\n')
    assert load_reviews(jsonl) == {"A": ["great"], "7": ["n"]}


@pytest.mark.parametrize(
    ("name", "content", "error", "message"),
    [
        ("r.csv", b"item_id,body\nA,x\n", ConfigError, r"r.csv: needs columns item_id,text; has \['item_id', 'body'\]"),
        (
            "r.csv",
            b"item_id,text\nA,ok\nB,caf\xe9\n",
            DataError,
            r"r.csv is not UTF-8: byte 0xe9 at offset 23 \(line 3\)",
        ),
        ("r.csv", b"item_id,text\nA,ok\nB\n", DataError, r"r.csv:3: 1 field\(s\) of 2"),
        ("r.csv", b"item_id,text\n,ok\n", DataError, r"r.csv:2: field 'item_id' is empty"),
        ("r.jsonl", b'{"item_id": "A", "text": "x"}\n{"item_id": "B", \n', DataError, r"r.jsonl:2: not valid JSON"),
        ("r.jsonl", b'{"item_id": "A", "text": "x"}\n["A", "x"]\n', DataError, r"r.jsonl:2: a review needs item_id"),
        (
            "r.jsonl",
            b'{"item_id": "A", "text": "caf\xe9"}\n',
            DataError,
            r"r.jsonl:1: not UTF-8: byte 0xe9 at offset 29",
        ),
    ],
)
def test_bad_reviews_files_name_file_and_line(
    tmp_path: Path, name: str, content: bytes, error: type[Exception], message: str
) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(error, match=message):
        load_reviews(tmp_path / name)


def test_missing_reviews_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nowhere.csv not found"):
        load_reviews(tmp_path / "nowhere.csv")

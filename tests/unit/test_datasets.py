from __future__ import annotations

from pathlib import Path

import pytest

from schemas.codec import decode_event, encode_event
from schemas.errors import ConfigError
from schemas.events import EventType
from shopdata.loader import BASE_TS_MS, load_dataset
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

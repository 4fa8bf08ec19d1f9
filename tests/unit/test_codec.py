from __future__ import annotations

import orjson
import pytest

from schemas.codec import decode_event, decode_item, encode_event, encode_item
from schemas.errors import InvalidEvent, InvalidItem
from schemas.events import Event, EventType
from schemas.items import Item


def _ok(**over: object) -> bytes:
    base: dict[str, object] = {"event_id": "e1", "type": "view", "user_id": "u1", "ts": 1000, "item_id": "i1"}
    base.update(over)
    return orjson.dumps({k: v for k, v in base.items() if v is not ...})


@pytest.mark.parametrize("etype", ["view", "click", "add_to_cart", "purchase"])
def test_item_events_round_trip(etype: str) -> None:
    ev = decode_event(_ok(type=etype, context={"page": "home", "pos": 3}))
    assert ev == Event("e1", EventType(etype), "u1", 1000, item_id="i1", context={"page": "home", "pos": 3})
    assert decode_event(encode_event(ev)) == ev


def test_search_event_round_trip() -> None:
    ev = decode_event(_ok(type="search", item_id=..., query="red shoes"))
    assert ev.item_id is None and ev.query == "red shoes" and ev.type is EventType.SEARCH
    assert decode_event(encode_event(ev)) == ev


@pytest.mark.parametrize(
    ("raw", "field", "reason_part"),
    [
        (b"{not json", "$", "not valid JSON"),
        (b"[1, 2]", "$", "JSON object"),
        (_ok(event_id=...), "event_id", "missing"),
        (_ok(user_id=...), "user_id", "missing"),
        (_ok(ts=...), "ts", "missing"),
        (_ok(item_id=...), "item_id", "missing"),
        (_ok(type="teleport"), "type", "unknown event type"),
        (_ok(ts="1000"), "ts", "integer"),
        (_ok(ts=True), "ts", "integer"),
        (_ok(ts=10.5), "ts", "integer"),
        (_ok(ts=-1), "ts", "out of range"),
        (_ok(user_id=42), "user_id", "string"),
        (_ok(user_id="  "), "user_id", "empty"),
        (_ok(item_id="x" * 300), "item_id", "longer than"),
        (_ok(type="search", item_id=...), "query", "missing"),
        (_ok(type="search", query="q"), "item_id", "absent"),
        (_ok(context=[1]), "context", "object"),
        (_ok(context={"a": {"b": 1}}), "context.a", "scalar"),
    ],
)
def test_invalid_events_name_field_and_reason(raw: bytes, field: str, reason_part: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        decode_event(raw)
    assert info.value.field == field
    assert reason_part in info.value.reason
    assert field in str(info.value)


def test_unknown_extra_keys_are_ignored() -> None:
    assert decode_event(_ok(extra="x")).item_id == "i1"


def test_item_round_trip_and_errors() -> None:
    item = Item("i1", "Red shoe", "comfy", "Shoes", "Acme", ("red",), 9.5, {"size": "42"})
    assert decode_item(encode_item(item)) == item
    assert item.text() == "Red shoe. comfy. Shoes. Acme. red"
    with pytest.raises(InvalidItem) as info:
        decode_item(b'{"item_id": "i1"}')
    assert info.value.field == "title"
    with pytest.raises(InvalidItem) as info:
        decode_item(b'{"item_id": "i1", "title": "t", "price": -1}')
    assert info.value.field == "price"

"""JSON codecs (orjson) with strict validation: bad input raises an error naming the field."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from schemas.errors import InvalidEvent, InvalidItem
from schemas.events import ITEM_EVENT_TYPES, Event, EventType
from schemas.items import Item
from schemas.recommendations import RecommendationList, ScoredItem

__all__ = [
    "MAX_ID_LEN",
    "MAX_QUERY_LEN",
    "decode_event",
    "decode_item",
    "decode_recommendations",
    "encode_event",
    "encode_item",
    "encode_recommendations",
    "event_from_dict",
    "event_to_dict",
]

MAX_ID_LEN = 256
MAX_QUERY_LEN = 1024
MAX_CONTEXT_KEYS = 32
_TS_MAX = 2**53  # epoch ms far in the future, still exact in a JSON double


def _require_str(obj: Mapping[str, Any], name: str, max_len: int) -> str:
    if name not in obj or obj[name] is None:
        raise InvalidEvent(name, "missing")
    value = obj[name]
    if not isinstance(value, str):
        raise InvalidEvent(name, f"expected a string, got {type(value).__name__}")
    if not value.strip():
        raise InvalidEvent(name, "empty")
    if len(value) > max_len:
        raise InvalidEvent(name, f"longer than {max_len} characters")
    return value


def event_from_dict(obj: Any) -> Event:
    """Validate a decoded JSON object into an Event; unknown extra keys are ignored (forward compatible)."""
    if not isinstance(obj, dict):
        raise InvalidEvent("$", f"expected a JSON object, got {type(obj).__name__}")
    event_id = _require_str(obj, "event_id", MAX_ID_LEN)
    raw_type = _require_str(obj, "type", 32)
    try:
        etype = EventType(raw_type)
    except ValueError:
        allowed = ", ".join(t.value for t in EventType)
        raise InvalidEvent("type", f"unknown event type '{raw_type[:40]}' (allowed: {allowed})") from None
    user_id = _require_str(obj, "user_id", MAX_ID_LEN)
    if "ts" not in obj or obj["ts"] is None:
        raise InvalidEvent("ts", "missing")
    ts = obj["ts"]
    if isinstance(ts, bool) or not isinstance(ts, int):
        raise InvalidEvent("ts", f"expected integer epoch milliseconds, got {type(ts).__name__}")
    if not 0 <= ts < _TS_MAX:
        raise InvalidEvent("ts", f"out of range: {ts}")
    item_id: str | None = None
    query: str | None = None
    if etype in ITEM_EVENT_TYPES:
        item_id = _require_str(obj, "item_id", MAX_ID_LEN)
    else:
        query = _require_str(obj, "query", MAX_QUERY_LEN)
        if obj.get("item_id") is not None:
            raise InvalidEvent("item_id", "must be absent for a search event")
    context = obj.get("context") or {}
    if not isinstance(context, dict):
        raise InvalidEvent("context", f"expected an object, got {type(context).__name__}")
    if len(context) > MAX_CONTEXT_KEYS:
        raise InvalidEvent("context", f"more than {MAX_CONTEXT_KEYS} keys")
    for key, value in context.items():
        if not isinstance(value, str | int | float | bool):
            raise InvalidEvent(f"context.{key}", f"expected a scalar, got {type(value).__name__}")
    return Event(event_id=event_id, type=etype, user_id=user_id, ts=ts, item_id=item_id, query=query, context=context)


def decode_event(raw: bytes | str) -> Event:
    """Decode and validate one JSON event; raises InvalidEvent naming the field and the reason."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent("$", f"not valid JSON: {exc}") from None
    return event_from_dict(obj)


def event_to_dict(event: Event) -> dict[str, Any]:
    out: dict[str, Any] = {
        "event_id": event.event_id,
        "type": event.type.value,
        "user_id": event.user_id,
        "ts": event.ts,
    }
    if event.item_id is not None:
        out["item_id"] = event.item_id
    if event.query is not None:
        out["query"] = event.query
    if event.context:
        out["context"] = dict(event.context)
    return out


def encode_event(event: Event) -> bytes:
    return orjson.dumps(event_to_dict(event))


def decode_item(raw: bytes | str) -> Item:
    """Decode and validate one JSON item record; raises InvalidItem naming the field."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidItem("$", f"not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise InvalidItem("$", "expected a JSON object")
    for name in ("item_id", "title"):
        if not isinstance(obj.get(name), str) or not obj[name].strip():
            raise InvalidItem(name, "missing or not a non-empty string")
    for name in ("description", "category", "brand"):
        if name in obj and not isinstance(obj[name], str):
            raise InvalidItem(name, "expected a string")
    tags = obj.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise InvalidItem("tags", "expected a list of strings")
    price = obj.get("price")
    if price is not None and (isinstance(price, bool) or not isinstance(price, int | float) or price < 0):
        raise InvalidItem("price", "expected a non-negative number")
    attrs = obj.get("attributes", {})
    if not isinstance(attrs, dict) or not all(isinstance(v, str) for v in attrs.values()):
        raise InvalidItem("attributes", "expected an object of strings")
    return Item(
        item_id=obj["item_id"],
        title=obj["title"],
        description=obj.get("description", ""),
        category=obj.get("category", ""),
        brand=obj.get("brand", ""),
        tags=tuple(tags),
        price=None if price is None else float(price),
        attributes=attrs,
    )


def encode_item(item: Item) -> bytes:
    return orjson.dumps(
        {
            "item_id": item.item_id,
            "title": item.title,
            "description": item.description,
            "category": item.category,
            "brand": item.brand,
            "tags": list(item.tags),
            "price": item.price,
            "attributes": dict(item.attributes),
        }
    )


def encode_recommendations(rec: RecommendationList) -> bytes:
    return orjson.dumps(
        {
            "user_id": rec.user_id,
            "items": [[s.item_id, s.score] for s in rec.items],
            "model_version": rec.model_version,
            "config_digest": rec.config_digest,
            "generated_at": rec.generated_at,
            "newest_event_ts": rec.newest_event_ts,
            "source": rec.source,
        }
    )


def decode_recommendations(raw: bytes | str) -> RecommendationList:
    obj = orjson.loads(raw)
    return RecommendationList(
        user_id=obj["user_id"],
        items=tuple(ScoredItem(i, float(s)) for i, s in obj["items"]),
        model_version=obj["model_version"],
        config_digest=obj["config_digest"],
        generated_at=int(obj["generated_at"]),
        newest_event_ts=int(obj["newest_event_ts"]),
        source=obj.get("source", "personal"),
    )

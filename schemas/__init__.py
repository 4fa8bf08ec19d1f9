"""Contracts only: event, item and recommendation records, their codecs, errors and the CQL DDL."""

from schemas.codec import decode_event, decode_item, encode_event, encode_item
from schemas.errors import (
    ConfigError,
    FusionrecError,
    InvalidEvent,
    InvalidItem,
    InvalidRecord,
    ServiceError,
    StoreUnavailable,
)
from schemas.events import ITEM_EVENT_TYPES, Event, EventType
from schemas.items import Item
from schemas.recommendations import RecommendationList, ScoredItem

__all__ = [
    "ITEM_EVENT_TYPES",
    "ConfigError",
    "Event",
    "EventType",
    "FusionrecError",
    "InvalidEvent",
    "InvalidItem",
    "InvalidRecord",
    "Item",
    "RecommendationList",
    "ScoredItem",
    "ServiceError",
    "StoreUnavailable",
    "decode_event",
    "decode_item",
    "encode_event",
    "encode_item",
]

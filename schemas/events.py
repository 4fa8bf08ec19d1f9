"""Clickstream event records: the contract between shops and the worker."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["EVENT_TYPE_INDEX", "ITEM_EVENT_TYPES", "Event", "EventType"]


class EventType(StrEnum):
    VIEW = "view"
    CLICK = "click"
    ADD_TO_CART = "add_to_cart"
    PURCHASE = "purchase"
    SEARCH = "search"


#: Event types that name an item (every type but search).
ITEM_EVENT_TYPES = frozenset(t for t in EventType if t is not EventType.SEARCH)

#: Event type -> the index the user encoder embeds (0 is padding). Part of a bundle's contract:
#: training and the online rankers must agree on it, so it lives with the event vocabulary.
EVENT_TYPE_INDEX = {t.value: i + 1 for i, t in enumerate(EventType)}

ContextValue = str | int | float | bool


@dataclass(frozen=True, slots=True)
class Event:
    """One user action. `item_id` is None exactly for searches, `query` set exactly for searches.

    `ts` is epoch milliseconds when the action happened (the shop's clock), `event_id` is unique
    per action and is what makes at-least-once delivery safe (de-duplication).
    """

    event_id: str
    type: EventType
    user_id: str
    ts: int
    item_id: str | None = None
    query: str | None = None
    context: Mapping[str, ContextValue] = field(default_factory=dict)

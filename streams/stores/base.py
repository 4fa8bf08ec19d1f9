"""The store port: user state (source of truth) and recommendation lists (read by services).

One interface, three implementations (memory, SQLite, Cassandra), one contract test suite.
Writes are idempotent upserts keyed by user, so at-least-once delivery is safe. A store that
cannot be reached raises `StoreUnavailable`, which the pipeline turns into back-pressure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from ranker.state import UserState
from schemas.recommendations import RecommendationList

__all__ = ["DeadLetter", "Store"]


class DeadLetter(Protocol):
    source: str
    offset: int
    field: str
    reason: str
    raw: bytes


@runtime_checkable
class Store(Protocol):
    url: str

    def setup(self) -> None:
        """Connect and create what is missing (idempotent); raises StoreUnavailable when unreachable."""

    def close(self) -> None: ...

    def get_states(self, user_ids: Sequence[str]) -> dict[str, UserState]:
        """States of the users that have one; unknown users are absent from the answer."""
        ...

    def put_states(self, states: Sequence[UserState]) -> None: ...

    def put_recommendations(self, lists: Sequence[RecommendationList]) -> None: ...

    def get_recommendations(self, user_id: str) -> RecommendationList | None: ...

    def put_results(self, lists: Sequence[RecommendationList], states: Sequence[UserState]) -> None:
        """A batch's outcome: every touched user's list and state. Atomic per user where the store
        allows (Cassandra: one single-partition batch per user; SQLite: one transaction); elsewhere
        lists are written before states, so a crash in between replays the events, not skips them."""

    def count_states(self) -> int: ...

    def put_item_tags(self, tags: Mapping[str, Sequence[tuple[str, float]]], model: str) -> None:
        """Upsert each item's (tag, score) list, best first, and the encoder that scored them."""

    def get_item_tags(self, item_ids: Sequence[str]) -> dict[str, list[tuple[str, float]]]:
        """Tags of the items that have some; others are absent from the answer."""
        ...

"""The store ports, split by what they hold, so each caller depends on the little it uses.

- `StateStore`: user state, the source of truth (only the pipeline reads and writes it).
- `RecommendationStore`: the ranked lists, derived from state; what downstream services read.
- `ResultsStore`: both, plus `put_results`: what the pipeline writes after every batch.
- `CatalogStore`: what the catalog knows about items beyond the bundle (today: their tags).
- `DeadLetterStore`: records that broke their contract, kept where no dead-letter topic exists
  (embedded mode; Kafka mode publishes them to a topic instead).

Implementations (memory, SQLite, Cassandra) implement the ports they can; one contract suite per
port runs over each. Writes are idempotent upserts, so at-least-once delivery is safe. A store that
cannot be reached raises `StoreUnavailable`, which the pipeline turns into back-pressure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ranker.state import UserState
from schemas.recommendations import RecommendationList

__all__ = [
    "CatalogStore",
    "DeadLetterRecord",
    "DeadLetterStore",
    "RecommendationStore",
    "ResultsStore",
    "StateStore",
]


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    """A record that failed validation, as it arrived: where from, which field broke and why.
    The same fields the Kafka runtime puts in a dead-letter message's headers."""

    source: str
    offset: int
    field: str
    reason: str
    raw: bytes


@runtime_checkable
class StateStore(Protocol):
    """User state, the source of truth: lists can be recomputed from it, never the reverse."""

    url: str

    def setup(self) -> None:
        """Connect, and create what is missing unless the store was opened with `create=False`
        (idempotent); raises StoreUnavailable when unreachable, ConfigError when absent."""

    def close(self) -> None: ...

    def get_states(self, user_ids: Sequence[str]) -> dict[str, UserState]:
        """States of the users that have one; unknown users are absent from the answer."""
        ...

    def put_states(self, states: Sequence[UserState]) -> None: ...

    def count_states(self) -> int: ...


@runtime_checkable
class RecommendationStore(Protocol):
    """The stored lists: one key lookup per user, all the read API needs of the pipeline's output."""

    def get_recommendations(self, user_id: str) -> RecommendationList | None: ...

    def put_recommendations(self, lists: Sequence[RecommendationList]) -> None: ...


@runtime_checkable
class ResultsStore(StateStore, RecommendationStore, Protocol):
    """What the pipeline needs: read states, then write each touched user's list and state together."""

    def put_results(self, lists: Sequence[RecommendationList], states: Sequence[UserState]) -> None:
        """A batch's outcome: every touched user's list and state. Atomic per user where the store
        allows (Cassandra: one mutation per user; SQLite: one transaction); elsewhere lists are
        written before states, so a crash in between replays the events (the state's watermark has
        not moved) instead of leaving a state whose list is missing."""


@runtime_checkable
class CatalogStore(Protocol):
    """Item catalog data kept in the store (today: each item's tags), read by the API per request."""

    def put_item_tags(self, tags: Mapping[str, Sequence[tuple[str, float]]], model: str) -> None:
        """Upsert each item's (tag, score) list, best first, and the encoder that scored them."""

    def get_item_tags(self, item_ids: Sequence[str]) -> dict[str, list[tuple[str, float]]]:
        """Tags of the items that have some; others are absent from the answer."""
        ...


@runtime_checkable
class DeadLetterStore(Protocol):
    """Dead letters where there is no dead-letter topic (embedded mode): kept for an operator to
    inspect. A replayed record is kept once (keyed by source and offset)."""

    def put_dead_letters(self, records: Sequence[DeadLetterRecord]) -> None: ...

    def dead_letters(self) -> list[DeadLetterRecord]:
        """Every dead letter kept, oldest first."""
        ...

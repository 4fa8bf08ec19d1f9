"""Recommendation lists: one row per user in the results store, read in one key lookup."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

__all__ = ["RecommendationList", "ScoredItem"]


class ScoredItem(NamedTuple):
    """One ranked item (a named tuple: the worker builds hundreds of thousands a minute)."""

    item_id: str
    score: float


@dataclass(frozen=True, slots=True)
class RecommendationList:
    """A user's ranked list and where it came from.

    `model_version` and `config_digest` name what made it, `generated_at` (epoch ms) when, and
    `newest_event_ts` (epoch ms) the newest event that shaped it, so stale lists are detectable.
    """

    user_id: str
    items: tuple[ScoredItem, ...]
    model_version: str
    config_digest: str
    generated_at: int
    newest_event_ts: int
    source: str = "personal"

    def item_ids(self) -> list[str]:
        return [s.item_id for s in self.items]

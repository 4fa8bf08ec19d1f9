"""In-memory twin of the stores (every port), for tests of the pure core and the embedded runtime."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ranker.state import UserState
from schemas.errors import StoreUnavailable
from schemas.recommendations import RecommendationList
from streams.stores.base import DeadLetterRecord

__all__ = ["MemoryStore"]


class MemoryStore:
    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self.states: dict[str, UserState] = {}
        self.lists: dict[str, RecommendationList] = {}
        self.tags: dict[str, list[tuple[str, float]]] = {}
        self.letters: dict[tuple[str, int], DeadLetterRecord] = {}  # insertion order: oldest first
        self.available = True  # flip to simulate an outage in tests

    def _check(self) -> None:
        if not self.available:
            raise StoreUnavailable("memory store switched off")

    def setup(self) -> None:
        self._check()

    def close(self) -> None:
        pass

    def get_states(self, user_ids: Sequence[str]) -> dict[str, UserState]:
        self._check()
        return {u: self.states[u] for u in user_ids if u in self.states}

    def put_states(self, states: Sequence[UserState]) -> None:
        self._check()
        for s in states:
            self.states[s.user_id] = s

    def put_recommendations(self, lists: Sequence[RecommendationList]) -> None:
        self._check()
        for rec in lists:
            self.lists[rec.user_id] = rec

    def put_results(self, lists: Sequence[RecommendationList], states: Sequence[UserState]) -> None:
        # not atomic: lists first, so a failure in between leaves the states (and the watermark) behind
        self.put_recommendations(lists)
        self.put_states(states)

    def get_recommendations(self, user_id: str) -> RecommendationList | None:
        self._check()
        return self.lists.get(user_id)

    def count_states(self) -> int:
        self._check()
        return len(self.states)

    def put_item_tags(self, tags: Mapping[str, Sequence[tuple[str, float]]], model: str) -> None:
        self._check()
        for item_id, pairs in tags.items():
            self.tags[item_id] = [(t, float(v)) for t, v in pairs]

    def get_item_tags(self, item_ids: Sequence[str]) -> dict[str, list[tuple[str, float]]]:
        self._check()
        return {i: list(self.tags[i]) for i in item_ids if i in self.tags}

    def put_dead_letters(self, records: Sequence[DeadLetterRecord]) -> None:
        self._check()
        for d in records:
            self.letters.setdefault((d.source, d.offset), d)  # a replay keeps the first, like SQLite

    def dead_letters(self) -> list[DeadLetterRecord]:
        self._check()
        return list(self.letters.values())

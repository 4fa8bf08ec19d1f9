"""Online ranking with a model bundle: every touched user's state -> one batched ONNX user-encoder
run -> exact retrieval over the fused item vectors -> ranking policy; popular items for users the
model knows nothing about (cold start). No torch."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ranker.bundle import ModelBundle
from ranker.data import EVENT_TYPE_INDEX
from ranker.ranking import RankingPolicy, rank_candidates
from ranker.retrieval import ExactRetriever
from ranker.state import UserState

__all__ = ["BundleRanker"]


class BundleRanker:
    def __init__(self, bundle: ModelBundle, policy: RankingPolicy = RankingPolicy(), popular: Sequence[str] = ()
                 ) -> None:
        self.bundle = bundle
        self.policy = policy
        self.rows = {item_id: r for r, item_id in enumerate(bundle.item_ids)}
        self.retriever = ExactRetriever(bundle.item_vectors)
        self.popular = [self.rows[i] for i in popular if i in self.rows] or list(range(min(200, len(self.rows))))

    @property
    def version(self) -> str:
        return self.bundle.version

    def rank(self, state: UserState, k: int) -> tuple[list[tuple[str, float]], str]:
        return self.rank_many([state], k)[0]

    def rank_many(self, states: Sequence[UserState], k: int) -> list[tuple[list[tuple[str, float]], str]]:
        out: list[tuple[list[tuple[str, float]], str] | None] = [None] * len(states)
        known: list[int] = []
        histories: list[list[int]] = []
        types: list[list[int]] = []
        for n, state in enumerate(states):
            pairs = [(self.rows[i], EVENT_TYPE_INDEX.get(t, 1)) for i, t in
                     zip(state.recent_items, state.recent_types, strict=True) if i in self.rows]
            if pairs:
                known.append(n)
                histories.append([p[0] for p in pairs])
                types.append([p[1] for p in pairs])
            else:
                out[n] = (self._popular(state, k), "popular")
        if known:
            vectors = self.bundle.user_vectors(histories, types)
            want = k + (max(len(h) for h in histories) if self.policy.exclude_seen else 0) + 32
            rows, scores = self.retriever.search(vectors, want)
            for j, n in enumerate(known):
                ranked = rank_candidates(rows[j], scores[j], k, self.policy, histories[j],
                                         self.bundle.item_categories)
                out[n] = ([(self.bundle.item_ids[r], s) for r, s in ranked], "personal")
        return [o for o in out if o is not None]

    def _popular(self, state: UserState, k: int) -> list[tuple[str, float]]:
        seen = {self.rows[i] for i in state.recent_items if i in self.rows}
        picks = [r for r in self.popular if r not in seen][:k]
        return [(self.bundle.item_ids[r], 1.0 / (rank + 1)) for rank, r in enumerate(picks)]

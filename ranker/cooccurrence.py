"""The thin first model: item co-occurrence over user histories with a popularity fallback.

Fit offline from interaction sequences (pure, no I/O); `recommend` scores the neighbours of the
user's recent items, weighting recent ones more, drops seen items, and fills from popularity.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ranker.popularity import popular_items
from ranker.state import UserState

__all__ = ["CooccurrenceModel", "fit_cooccurrence"]


@dataclass(frozen=True)
class CooccurrenceModel:
    neighbours: dict[str, tuple[tuple[str, float], ...]]
    popular: tuple[tuple[str, float], ...]
    version: str
    recent: int = 5
    decay: float = 0.7

    def recommend(
        self, recent_items: Sequence[str], k: int, exclude_seen: bool = True
    ) -> tuple[list[tuple[str, float]], str]:
        """Top-k (item, score) and the source that produced it: 'personal' or 'popular'."""
        seen = set(recent_items) if exclude_seen else set()
        scores: dict[str, float] = defaultdict(float)
        weight = 1.0
        for item in list(reversed(recent_items))[: self.recent]:
            for other, s in self.neighbours.get(item, ()):
                if other not in seen:
                    scores[other] += weight * s
            weight *= self.decay
        ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
        source = "personal" if ranked else "popular"
        if len(ranked) < k:
            have = {i for i, _ in ranked} | seen
            floor = ranked[-1][1] if ranked else 1.0
            for item, pop in self.popular:
                if len(ranked) >= k:
                    break
                if item not in have:
                    # popularity fills below every personal score, keeping its own order
                    ranked.append((item, floor * 0.5 * pop))
        return [(i, round(s, 6)) for i, s in ranked], source

    def rank(self, state: UserState, k: int) -> tuple[list[tuple[str, float]], str]:
        """A user's state in, top-k and its source out."""
        return self.recommend(state.recent_items, k)

    def rank_many(self, states: Sequence[UserState], k: int) -> list[tuple[list[tuple[str, float]], str]]:
        """The pipeline's ranking port: every touched user of a batch."""
        return [self.recommend(s.recent_items, k) for s in states]


def fit_cooccurrence(
    sequences: Iterable[Sequence[str]], window: int = 3, top_n: int = 50, popular_n: int = 200
) -> CooccurrenceModel:
    """Count ordered pairs within `window` steps in each history; normalise by sqrt of item counts."""
    pair: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    freq: Counter[str] = Counter()
    digest = hashlib.blake2b(digest_size=8)
    for seq in sequences:
        digest.update("\x1f".join(seq).encode())
        digest.update(b"\x1e")
        freq.update(seq)
        for i, a in enumerate(seq):
            for j in range(max(0, i - window), min(len(seq), i + window + 1)):
                b = seq[j]
                if b != a:
                    pair[a][b] += 1.0 / abs(i - j)
    neighbours: dict[str, tuple[tuple[str, float], ...]] = {}
    for a, counter in pair.items():
        scored = [(b, c / ((freq[a] * freq[b]) ** 0.5)) for b, c in counter.items()]
        scored.sort(key=lambda kv: (-kv[1], kv[0]))
        neighbours[a] = tuple(scored[:top_n])
    top = popular_items(freq, popular_n)
    max_count = freq[top[0]] if top else 1
    popular = tuple((item, freq[item] / max_count) for item in top)
    return CooccurrenceModel(neighbours=neighbours, popular=popular, version=f"cooc-{digest.hexdigest()}")

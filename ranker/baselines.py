"""Baselines scored by the same evaluation code: popularity, item-kNN co-occurrence, text-only. Pure numpy.

Each returns a score matrix [users, n_items] (column j = item index j + 1).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["ItemKNN", "popularity_scores", "recency_weights", "text_profile_scores"]


def recency_weights(n: int, decay: float) -> np.ndarray:
    """Weights for a history of n steps, oldest first: decay ** (steps from the end), summing to 1."""
    w = decay ** np.arange(n - 1, -1, -1, dtype=np.float64)
    return w / w.sum()


def popularity_scores(train: Sequence[Sequence[int]], n_items: int, n_users: int) -> np.ndarray:
    counts = np.zeros(n_items, dtype=np.float32)
    for seq in train:
        for i in seq:
            counts[i - 1] += 1
    return np.broadcast_to(counts, (n_users, n_items))


class ItemKNN:
    """Item-item co-occurrence within a window, cosine-normalised; a user scores the neighbours
    of their recent items, recent ones weighted more."""

    def __init__(
        self,
        train: Sequence[Sequence[int]],
        n_items: int,
        window: int = 3,
        recent: int = 5,
        decay: float = 0.7,
    ) -> None:
        sim = np.zeros((n_items, n_items), dtype=np.float32)
        freq = np.zeros(n_items, dtype=np.float32)
        for seq in train:
            idx = [i - 1 for i in seq]
            for a_pos, a in enumerate(idx):
                freq[a] += 1
                for b_pos in range(max(0, a_pos - window), min(len(idx), a_pos + window + 1)):
                    if b_pos != a_pos and idx[b_pos] != a:
                        sim[a, idx[b_pos]] += 1.0 / abs(a_pos - b_pos)
        norm = np.sqrt(np.maximum(freq, 1.0))
        self.sim = sim / norm[:, None] / norm[None, :]
        self.popularity = freq / max(freq.max(), 1.0)
        self.recent = recent
        self.decay = decay

    def scores(self, histories: Sequence[Sequence[int]]) -> np.ndarray:
        out = np.zeros((len(histories), self.sim.shape[0]), dtype=np.float32)
        for u, hist in enumerate(histories):
            recent = [i - 1 for i in hist[-self.recent :]]
            w = self.decay ** np.arange(len(recent) - 1, -1, -1)
            out[u] = w @ self.sim[recent]
        # popularity breaks ties among unscored items, always below any co-occurrence evidence
        return out + 1e-6 * self.popularity[None, :]


def text_profile_scores(histories: Sequence[Sequence[int]], text: np.ndarray, decay: float = 0.8) -> np.ndarray:
    """Cosine between a recency-weighted mean of history text vectors and every item's text vector.

    text: [n_items + 1, dim] unit rows (row 0 padding)."""
    profiles = np.zeros((len(histories), text.shape[1]), dtype=np.float32)
    for u, hist in enumerate(histories):
        profiles[u] = recency_weights(len(hist), decay) @ text[list(hist)]
    profiles /= np.maximum(np.linalg.norm(profiles, axis=1, keepdims=True), 1e-9)
    return profiles @ text[1:].T

"""Retrieval behind one interface: exact inner product (catalogs up to ~200k items) or an HNSW
index (hnswlib) beyond. Both return the top-k item rows and scores per user vector."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

__all__ = ["EXACT_UP_TO", "ExactRetriever", "HnswRetriever", "Retriever", "make_retriever"]

EXACT_UP_TO = 200_000  # items: beyond this, exact retrieval per micro-batch costs more than HNSW


class Retriever(Protocol):
    def search(
        self, queries: np.ndarray, k: int, exclude: Sequence[Sequence[int]] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(rows [n, k], scores [n, k]) best first; rows index the item matrix; excluded rows never appear."""
        ...


class ExactRetriever:
    def __init__(self, items: np.ndarray) -> None:
        self.items = np.ascontiguousarray(items, dtype=np.float32)

    def search(
        self, queries: np.ndarray, k: int, exclude: Sequence[Sequence[int]] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        scores = np.asarray(queries, dtype=np.float32) @ self.items.T
        if exclude is not None:
            for r, banned in enumerate(exclude):
                if len(banned):
                    scores[r, list(banned)] = -np.inf
        k = min(k, scores.shape[1])
        n = scores.shape[1]
        top = np.argpartition(scores, n - k, axis=1)[:, n - k :]  # no negated copy of the score matrix
        part = np.take_along_axis(scores, top, axis=1)
        order = np.lexsort((top, -part), axis=1)  # score desc, then row asc: deterministic ties
        rows = np.take_along_axis(top, order, axis=1)
        return rows, np.take_along_axis(part, order, axis=1)


class HnswRetriever:
    """Approximate inner-product search for large catalogs (needs `pip install hnswlib`)."""

    def __init__(self, items: np.ndarray, ef: int = 200, m: int = 32, seed: int = 42) -> None:
        try:  # lazy: hnswlib is optional, only for catalogs too large for exact search
            import hnswlib
        except ImportError as exc:
            raise ImportError("HNSW retrieval needs hnswlib: pip install hnswlib") from exc
        self.index = hnswlib.Index(space="ip", dim=items.shape[1])
        self.index.init_index(max_elements=len(items), ef_construction=ef, M=m, random_seed=seed)
        self.index.add_items(np.asarray(items, dtype=np.float32), np.arange(len(items)))
        self.index.set_ef(ef)
        self.n = len(items)

    def search(
        self, queries: np.ndarray, k: int, exclude: Sequence[Sequence[int]] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        extra = max((len(e) for e in exclude), default=0) if exclude else 0
        want = min(self.n, k + extra)
        labels, dist = self.index.knn_query(np.asarray(queries, dtype=np.float32), k=want)
        rows = np.zeros((len(queries), k), dtype=np.int64)
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        for r in range(len(queries)):
            banned = set(exclude[r]) if exclude else set()
            kept = [(int(i), 1.0 - float(d)) for i, d in zip(labels[r], dist[r], strict=True) if int(i) not in banned]
            for c, (i, s) in enumerate(kept[:k]):
                rows[r, c], scores[r, c] = i, s
        return rows, scores


def make_retriever(items: np.ndarray, exact_up_to: int = EXACT_UP_TO) -> Retriever:
    return ExactRetriever(items) if len(items) <= exact_up_to else HnswRetriever(items)

"""Hybrid search: BM25 over item text + dense retrieval with the ONNX text encoder, fused by a
convex combination of per-query normalised scores, then optionally re-ranked with the user's
affinity (their model vector · each candidate's fused item vector). Pure given the query vector.

Why score fusion and not reciprocal-rank fusion: BM25 ties whole categories (every item with the
same category path scores the same on a category query); normalised scores keep the dense score's
order inside a tie, and leave room for a personal term to break it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ranker.bm25 import BM25Index

__all__ = ["MODES", "Candidates", "HybridIndex", "Mode", "SearchWeights", "rank_of"]

Mode = Literal["bm25", "dense", "hybrid", "personal"]
MODES: tuple[Mode, ...] = ("bm25", "dense", "hybrid", "personal")


@dataclass(frozen=True, slots=True)
class SearchWeights:
    """dense: share of the dense score in the hybrid (1 - dense goes to BM25); personal: weight of
    the user's affinity added on top; candidates: how many each retriever contributes."""

    dense: float = 0.2
    personal: float = 0.5
    candidates: int = 200


@dataclass(frozen=True, slots=True)
class Candidates:
    rows: np.ndarray
    lexical: np.ndarray
    dense: np.ndarray
    affinity: np.ndarray | None

    def combine(self, w: SearchWeights) -> np.ndarray:
        score = (1.0 - w.dense) * self.lexical + w.dense * self.dense
        if self.affinity is not None and w.personal > 0:
            score = score + w.personal * self.affinity
        return score


def _zscore(x: np.ndarray) -> np.ndarray:
    sd = float(x.std()) if len(x) else 0.0
    return np.zeros_like(x) if sd < 1e-9 else ((x - x.mean()) / sd).astype(np.float32)


def _top(scores: np.ndarray, n: int) -> np.ndarray:
    n = min(n, len(scores))
    idx = np.argpartition(-scores, n - 1)[:n] if n < len(scores) else np.arange(len(scores))
    return idx[np.lexsort((idx, -scores[idx]))]


class HybridIndex:
    """Rows are catalog items in `item_ids` order; `text_vectors` are their unit text vectors."""

    def __init__(
        self,
        item_ids: Sequence[str],
        texts: Sequence[str] | BM25Index,
        text_vectors: np.ndarray,
        weights: SearchWeights = SearchWeights(),
    ) -> None:
        """`texts`: the items' texts, or their BM25 index already built (ranker.bm25_cache)."""
        n_texts = texts.n_docs if isinstance(texts, BM25Index) else len(texts)
        if len(item_ids) != n_texts or n_texts != len(text_vectors):
            raise ValueError(f"{len(item_ids)} ids, {n_texts} texts, {len(text_vectors)} vectors: must match")
        self.item_ids = list(item_ids)
        self.bm25 = texts if isinstance(texts, BM25Index) else BM25Index(texts)
        self.text_vectors = np.ascontiguousarray(text_vectors, dtype=np.float32)
        self.weights = weights

    def candidates(
        self, query: str, query_vector: np.ndarray, affinity: np.ndarray | None = None, n: int | None = None
    ) -> Candidates:
        """The union of BM25's and the dense retriever's top-n rows, with each signal z-scored over
        that union (measured on validation: z-scores beat max- and min-max-scaling for the hybrid)."""
        n = n or self.weights.candidates
        dense = self.text_vectors @ query_vector.astype(np.float32)
        lex_all = self.bm25.scores(query)
        lex_rows, _ = self.bm25.top_of(lex_all, n)
        rows = np.unique(np.concatenate([lex_rows, _top(dense, n)]))
        lex = lex_all[rows]
        return Candidates(
            rows=rows,
            lexical=_zscore(lex),
            dense=_zscore(dense[rows]),
            affinity=None if affinity is None else _zscore(affinity[rows].astype(np.float32)),
        )

    def rank(
        self,
        query: str,
        query_vector: np.ndarray,
        k: int,
        mode: Mode = "hybrid",
        affinity: np.ndarray | None = None,
        weights: SearchWeights | None = None,
    ) -> list[tuple[int, float]]:
        """Top-k (row, score). `affinity` (one value per row, higher = the user likes it more) is
        used in mode "personal"; without it "personal" is "hybrid"."""
        w = weights or self.weights
        if mode == "bm25":
            rows, scores = self.bm25.top(query, k)
            return [(int(r), float(s)) for r, s in zip(rows, scores, strict=True)]
        if mode == "dense":
            dense = self.text_vectors @ query_vector.astype(np.float32)
            return [(int(r), float(dense[r])) for r in _top(dense, k)]
        c = self.candidates(query, query_vector, affinity if mode == "personal" else None, w.candidates)
        score = c.combine(w)
        order = _top(score, k)
        return [(int(c.rows[i]), float(score[i])) for i in order]

    def rank_explained(
        self,
        query: str,
        query_vector: np.ndarray,
        k: int,
        affinity: np.ndarray | None = None,
        weights: SearchWeights | None = None,
    ) -> list[tuple[int, float, dict[str, float | None]]]:
        """`rank` in mode personal (hybrid without affinity), each row with its parts: the raw BM25
        score and dense cosine, the hybrid score ((1 − dense)·z(BM25) + dense·z(cosine)) and the
        personal term added on top (None without affinity). What the console shows side by side."""
        w = weights or self.weights
        c = self.candidates(query, query_vector, affinity, w.candidates)
        score = c.combine(w)
        hybrid = (1.0 - w.dense) * c.lexical + w.dense * c.dense
        lex = self.bm25.scores(query)[c.rows]
        cos = self.text_vectors[c.rows] @ query_vector.astype(np.float32)
        out: list[tuple[int, float, dict[str, float | None]]] = []
        for i in _top(score, k):
            parts: dict[str, float | None] = {
                "bm25": round(float(lex[i]), 4),
                "dense": round(float(cos[i]), 4),
                "hybrid": round(float(hybrid[i]), 4),
                "personal": None if c.affinity is None else round(float(w.personal * c.affinity[i]), 4),
            }
            out.append((int(c.rows[i]), float(score[i]), parts))
        return out


def rank_of(scores: np.ndarray, rows: np.ndarray, target_row: int) -> int | None:
    """0-based rank the target gets when `scores` (aligned with `rows`) are sorted as `rank` sorts
    them (score desc, then row asc); None when the target is not among the rows."""
    hit = np.flatnonzero(rows == target_row)
    if not len(hit):
        return None
    t = scores[hit[0]]
    return int(np.count_nonzero(scores > t) + np.count_nonzero((scores == t) & (rows < target_row)))

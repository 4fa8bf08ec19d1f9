"""Search quality on a dataset, as product-search studies measure it.

For every user the target is their last event, the history everything before it (validation: the
event before the last, history before that). Each target yields two queries (ranker.text):
a category-path query and a known-item query from the shortened title. Every mode ranks the whole
catalog; MRR@10 and Recall@10 per mode and query kind. The hybrid's dense share and the personal
weight are chosen on validation only (grid below), then the test split is scored once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ranker.search import MODES, HybridIndex, SearchWeights, rank_of
from ranker.text import category_query, common_category_terms, known_item_query
from schemas.progress import progress as progress_bar

__all__ = ["QUERY_KINDS", "SearchCase", "build_cases", "evaluate_search"]

QUERY_KINDS = ("category", "known-item")
DENSE_GRID = tuple(round(0.05 * i, 2) for i in range(1, 20))
PERSONAL_GRID = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5)


@dataclass(frozen=True, slots=True)
class SearchCase:
    user_id: str
    kind: str
    query: str
    target_row: int
    history: tuple[str, ...]


def build_cases(
    sequences: dict[str, list[str]],
    items: Sequence[Any],
    split: str = "test",
) -> list[SearchCase]:
    """Deterministic cases: users in sorted order, category then known-item query per target.

    `items` are schemas.items.Item in index row order; targets unknown to the catalog, or whose
    query comes out empty, are left out (counted by the caller as the difference)."""
    offset = 1 if split == "test" else 2
    rows = {it.item_id: r for r, it in enumerate(items)}
    common = common_category_terms([it.category for it in items])
    cases = []
    for user in sorted(sequences):
        seq = sequences[user]
        if len(seq) < offset + 1 or seq[-offset] not in rows:
            continue
        target = seq[-offset]
        it = items[rows[target]]
        history = tuple(seq[: len(seq) - offset])
        for kind, query in (
            ("category", category_query(it.category, common)),
            ("known-item", known_item_query(it.title, it.brand)),
        ):
            if query:
                cases.append(SearchCase(user, kind, query, rows[target], history))
    return cases


@dataclass
class _Prepared:
    case: SearchCase
    bm25_rank: int | None
    dense_rank: int | None
    rows: np.ndarray
    lexical: np.ndarray
    dense: np.ndarray
    affinity: np.ndarray | None


def _metrics(ranks: Sequence[int | None], k: int = 10) -> dict[str, float]:
    hits = [r for r in ranks if r is not None and r < k]
    n = max(1, len(ranks))
    return {"mrr@10": sum(1.0 / (r + 1) for r in hits) / n, "recall@10": len(hits) / n, "queries": float(len(ranks))}


def _prepare(
    index: HybridIndex,
    cases: Sequence[SearchCase],
    encode: Callable[[list[str]], np.ndarray],
    affinity: Callable[[Sequence[SearchCase]], np.ndarray | None],
    progress: bool,
    desc: str,
) -> list[_Prepared]:
    queries = sorted({c.query for c in cases})
    qvec = dict(zip(queries, encode(queries), strict=True))
    aff = affinity(cases)
    out = []
    for n, c in enumerate(progress_bar(cases, desc=desc, unit="query", enabled=progress)):
        v = qvec[c.query]
        bm = index.bm25.scores(c.query)
        dense = index.text_vectors @ v
        all_rows = np.arange(len(bm))
        bm_rank = rank_of(bm, all_rows, c.target_row) if bm[c.target_row] > 0 else None
        cand = index.candidates(c.query, v, None if aff is None else aff[n])
        out.append(
            _Prepared(
                c, bm_rank, rank_of(dense, all_rows, c.target_row), cand.rows, cand.lexical, cand.dense, cand.affinity
            )
        )
    return out


def _hybrid_ranks(prepared: Sequence[_Prepared], w: SearchWeights, personal: bool) -> list[int | None]:
    ranks = []
    for p in prepared:
        score = (1.0 - w.dense) * p.lexical + w.dense * p.dense
        if personal and p.affinity is not None:
            score = score + w.personal * p.affinity
        ranks.append(rank_of(score, p.rows, p.case.target_row))
    return ranks


def _table(prepared: Sequence[_Prepared], w: SearchWeights) -> dict[str, dict[str, dict[str, float]]]:
    table: dict[str, dict[str, dict[str, float]]] = {}
    for kind in (*QUERY_KINDS, "all"):
        sub = [p for p in prepared if kind == "all" or p.case.kind == kind]
        table[kind] = {
            "bm25": _metrics([p.bm25_rank for p in sub]),
            "dense": _metrics([p.dense_rank for p in sub]),
            "hybrid": _metrics(_hybrid_ranks(sub, w, personal=False)),
            "personal": _metrics(_hybrid_ranks(sub, w, personal=True)),
        }
    return table


def evaluate_search(
    index: HybridIndex,
    sequences: dict[str, list[str]],
    items: Sequence[Any],
    encode: Callable[[list[str]], np.ndarray],
    user_affinity: Callable[[Sequence[Sequence[str]]], np.ndarray] | None,
    *,
    tune_users: int | None = 3000,
    progress: bool = True,
) -> dict[str, Any]:
    """Tune on validation (the first `tune_users` users in a fixed hashed order), score the test split.

    `user_affinity(histories)` -> [len(histories), n_items] affinity per catalog row; None skips
    the personal mode (it then equals hybrid)."""

    def affinity(cases: Sequence[SearchCase]) -> np.ndarray | None:
        return None if user_affinity is None else user_affinity([c.history for c in cases])

    val_cases = build_cases(sequences, items, "validation")
    if tune_users is not None:
        keep = set(sorted({c.user_id for c in val_cases}, key=lambda u: hash_user(u))[:tune_users])
        val_cases = [c for c in val_cases if c.user_id in keep]
    val = _prepare(index, val_cases, encode, affinity, progress, "search: validation")
    base = index.weights
    best_dense = max(
        DENSE_GRID, key=lambda d: _metrics(_hybrid_ranks(val, replace(base, dense=d), personal=False))["mrr@10"]
    )
    tuned = replace(base, dense=best_dense)
    grid_personal = {
        p: _metrics(_hybrid_ranks(val, replace(tuned, personal=p), personal=True))["mrr@10"] for p in PERSONAL_GRID
    }
    tuned = replace(tuned, personal=max(PERSONAL_GRID, key=lambda p: grid_personal[p]))
    test_cases = build_cases(sequences, items, "test")
    test = _prepare(index, test_cases, encode, affinity, progress, "search: test")
    return {
        "weights": {"dense": tuned.dense, "personal": tuned.personal, "candidates": tuned.candidates},
        "validation": {"users": len({c.user_id for c in val_cases}), "table": _table(val, tuned)},
        "validation_personal_grid": grid_personal,
        "test": {"users": len({c.user_id for c in test_cases}), "table": _table(test, tuned)},
        "modes": list(MODES),
    }


def hash_user(user_id: str) -> str:
    return hashlib.blake2b(user_id.encode(), digest_size=8).hexdigest()

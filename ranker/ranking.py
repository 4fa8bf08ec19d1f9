"""The ranking stage after retrieval: seen-item filtering, business filters, optional diversity. Pure."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from itertools import chain
from math import isfinite

import numpy as np

__all__ = ["RankingPolicy", "first_unseen", "rank_candidates"]


@dataclass(frozen=True)
class RankingPolicy:
    exclude_seen: bool = True
    categories: Collection[int] | None = None  # only these category indices, when set
    unavailable: Collection[int] = ()  # item rows that must not be shown
    max_per_category: int | None = None  # diversity: cap items per category in the list


def rank_candidates(
    rows: Sequence[int],
    scores: Sequence[float],
    k: int,
    policy: RankingPolicy,
    seen: Collection[int],
    item_categories: np.ndarray,
) -> list[tuple[int, float]]:
    """Filter and re-order retrieved (row, score) candidates, best first, to at most k."""
    if policy.categories is None and not policy.unavailable and policy.max_per_category is None:
        # the hot path of the streaming worker: plain Python ints/floats, no per-element numpy scalars
        seen_only = set(seen) if policy.exclude_seen else set()
        row_list = rows.tolist() if isinstance(rows, np.ndarray) else list(rows)
        score_list = scores.tolist() if isinstance(scores, np.ndarray) else list(scores)
        fast: list[tuple[int, float]] = []
        for r, s in zip(row_list, score_list, strict=True):
            if r not in seen_only and isfinite(s):
                fast.append((r, s))
                if len(fast) >= k:
                    break
        return fast
    out: list[tuple[int, float]] = []
    per_cat: dict[int, int] = {}
    seen_set = set(seen) if policy.exclude_seen else set()
    unavailable = set(policy.unavailable)
    allowed = set(policy.categories) if policy.categories is not None else None
    for row, score in zip(rows, scores, strict=True):
        if row in seen_set or row in unavailable or not np.isfinite(score):
            continue
        cat = int(item_categories[row])
        if allowed is not None and cat not in allowed:
            continue
        if policy.max_per_category is not None:
            if per_cat.get(cat, 0) >= policy.max_per_category:
                continue
            per_cat[cat] = per_cat.get(cat, 0) + 1
        out.append((int(row), float(score)))
        if len(out) >= k:
            break
    return out


def first_unseen(
    rows: np.ndarray, scores: np.ndarray, k: int, seen: Sequence[Sequence[int]] | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The default policy for a whole batch at once: per user (row of `rows`/`scores`, best first),
    the first k candidates with a finite score that are not in that user's `seen` rows.

    Same result as `rank_candidates` with `RankingPolicy()` row by row, vectorised: the streaming
    worker ranks hundreds of users per micro-batch, and a Python loop per candidate was a fifth of
    its time. Returns (rows, scores) arrays per user, each of length <= k."""
    n = rows.shape[0]
    keep = np.isfinite(scores)
    if seen is not None and any(len(s) for s in seen):
        span = int(max(rows.max(initial=0), max((max(s) for s in seen if len(s)), default=0))) + 1
        user = np.arange(n, dtype=np.int64)
        seen_keys = np.repeat(user, [len(s) for s in seen]) * span + np.fromiter(
            chain.from_iterable(seen), dtype=np.int64
        )
        keep &= ~np.isin(user[:, None] * span + rows, seen_keys)
    keep &= np.cumsum(keep, axis=1) <= k
    flat_rows, flat_scores = rows[keep], scores[keep]
    ends = np.cumsum(keep.sum(axis=1))
    starts = ends - keep.sum(axis=1)
    return [(flat_rows[a:b], flat_scores[a:b]) for a, b in zip(starts.tolist(), ends.tolist(), strict=True)]

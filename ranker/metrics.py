"""Ranking metrics for one held-out target per user, over the full catalog. Pure numpy, no I/O.

Every function takes `ranks`: the 0-based rank of each user's target among all candidate items
(0 = ranked first). `target_ranks` computes it from a score matrix, ties counted against the
target (pessimistic), with excluded items (e.g. the user's history) never outranking it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "auc",
    "catalog_coverage",
    "cross_category_share",
    "f1_at_k",
    "mrr",
    "ndcg_at_k",
    "precision_at_k",
    "recall_at_k",
    "summarize",
    "target_ranks",
]


def target_ranks(
    scores: np.ndarray, targets: np.ndarray, exclude: Sequence[Sequence[int]] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(ranks, n_candidates) per row. scores: [users, items]; targets: [users] item indices.

    rank = #candidates scoring above the target + #other candidates tying with it. Excluded items
    (e.g. the history) are removed from the candidates; a target that is itself excluded can never
    be shown, so it is a miss: rank = n_items, past every cut-off (the `production` protocol).
    """
    s = np.array(scores, dtype=np.float32, copy=True)
    n_users, n_items = s.shape
    rows = np.arange(n_users)
    n_cand = np.full(n_users, n_items, dtype=np.int64)
    excluded_target = np.zeros(n_users, dtype=bool)
    if exclude is not None:
        for u, items in enumerate(exclude):
            drop = set(items)
            excluded_target[u] = int(targets[u]) in drop
            drop.discard(int(targets[u]))
            if drop:
                s[u, list(drop)] = -np.inf
                n_cand[u] -= len(drop)
            if excluded_target[u]:
                n_cand[u] -= 1
    t = s[rows, targets][:, None]
    ranks = (s > t).sum(axis=1) + ((s == t).sum(axis=1) - 1)
    ranks[excluded_target] = n_items
    return ranks.astype(np.int64), n_cand


def recall_at_k(ranks: np.ndarray, k: int) -> float:
    """Share of users whose target is in the top k (= hit rate with one target). Range [0, 1]."""
    return float(np.mean(ranks < k)) if len(ranks) else 0.0


def ndcg_at_k(ranks: np.ndarray, k: int) -> float:
    """Mean of 1/log2(rank + 2) when rank < k, else 0 (ideal DCG is 1 with one target). Range [0, 1]."""
    if not len(ranks):
        return 0.0
    gains = np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0)
    return float(np.mean(gains))


def mrr(ranks: np.ndarray) -> float:
    """Mean reciprocal rank over the full ranking: mean of 1/(rank + 1). Range (0, 1]."""
    return float(np.mean(1.0 / (ranks + 1.0))) if len(ranks) else 0.0


def precision_at_k(ranks: np.ndarray, k: int) -> float:
    """Hits in the top k divided by k: with one target, recall@k / k. Range [0, 1/k]."""
    return recall_at_k(ranks, k) / k


def f1_at_k(ranks: np.ndarray, k: int) -> float:
    """Mean per-user F1 of precision@k and recall@k: 2/(k+1) for a hit, 0 otherwise."""
    return float(np.mean(np.where(ranks < k, 2.0 / (k + 1.0), 0.0))) if len(ranks) else 0.0


def auc(ranks: np.ndarray, n_candidates: np.ndarray) -> float:
    """Mean share of negatives ranked below the target: 1 - rank / (n_candidates - 1), 0 for a miss
    by exclusion. Range [0, 1]."""
    if not len(ranks):
        return 0.0
    return float(np.mean(np.clip(1.0 - ranks / np.maximum(n_candidates - 1, 1), 0.0, 1.0)))


def catalog_coverage(top_k: np.ndarray, n_items: int) -> float:
    """Distinct items appearing in any user's top-k list, over the catalog size. Range [0, 1]."""
    return float(len(np.unique(top_k)) / n_items) if n_items else 0.0


def cross_category_share(ranks: np.ndarray, k: int, crosses: np.ndarray) -> float:
    """Among top-k hits, the share whose target's category is absent from the user's history."""
    hits = ranks < k
    return float(np.mean(crosses[hits])) if hits.any() else 0.0


def summarize(
    ranks: np.ndarray,
    n_candidates: np.ndarray,
    top_k: np.ndarray,
    n_items: int,
    crosses: np.ndarray | None = None,
) -> dict[str, float]:
    out: dict[str, float] = {}
    for k in (10, 20, 50):
        out[f"recall@{k}"] = recall_at_k(ranks, k)
        out[f"ndcg@{k}"] = ndcg_at_k(ranks, k)
    out["mrr"] = mrr(ranks)
    out["precision@10"] = precision_at_k(ranks, 10)
    out["f1@10"] = f1_at_k(ranks, 10)
    out["auc"] = auc(ranks, n_candidates)
    out["coverage@10"] = catalog_coverage(top_k, n_items)
    if crosses is not None:
        out["cross_category_hits@10"] = cross_category_share(ranks, 10, crosses)
    return {k: round(v, 6) for k, v in out.items()}

"""The ranking stage after retrieval: seen-item filtering, business filters, optional diversity. Pure."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from itertools import chain
from math import isfinite

import numpy as np

__all__ = ["RankingPolicy", "first_unseen", "new_item_slots", "rank_candidates", "slot_order", "with_new_item_slots"]


@dataclass(frozen=True)
class RankingPolicy:
    exclude_seen: bool = True
    categories: Collection[int] | None = None  # only these category indices, when set
    unavailable: Collection[int] = ()  # item rows that must not be shown
    max_per_category: int | None = None  # diversity: cap items per category in the list
    # new arrivals (items without events when the model was trained, or added live): from position
    # `new_items_after` on, at least one in every `new_items_every` positions holds the best remaining
    # new item that is among the user's top `new_items_share` of the catalog by text similarity, while
    # any is left (0: off). The top positions stay the model's; see `with_new_item_slots`
    new_items_after: int = 10
    new_items_every: int = 2
    new_items_share: float = 0.1

    def new_slots(self, k: int) -> list[int]:
        """The positions below k that new arrivals may claim (none when the rule is off)."""
        return new_item_slots(k, self.new_items_after, self.new_items_every)

    @property
    def new_share(self) -> float:
        """The text share within which a new item qualifies for a slot; 0 when the rule is off."""
        return self.new_items_share if self.new_items_every > 0 else 0.0


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
    keep = np.isfinite(scores)
    if seen is not None:
        keep &= ~_seen_mask(rows, seen)
    keep &= np.cumsum(keep, axis=1) <= k
    flat_rows, flat_scores = rows[keep], scores[keep]
    ends = np.cumsum(keep.sum(axis=1))
    starts = ends - keep.sum(axis=1)
    return [(flat_rows[a:b], flat_scores[a:b]) for a, b in zip(starts.tolist(), ends.tolist(), strict=True)]


def new_item_slots(k: int, after: int, every: int) -> list[int]:
    """0-based positions below k that must hold a new item (while one is left): the last of every
    `every` positions from `after` on. after=10, every=3: 12, 15, 18, ..."""
    if every <= 0:
        return []
    return list(range(max(after, 0) + every - 1, k, every))


def slot_order(eligible: Sequence[bool], k: int, after: int, every: int) -> list[int]:
    """The rule for one user (`with_new_item_slots` computes the same for a batch at once).
    Positions into the user's list (best first, already filtered) reordered so that by each slot
    position (`new_item_slots`) the list holds at least that many eligible items, taking the best
    eligible one not yet placed when it falls short; every other position takes the best item not yet
    placed. The first k positions are decided; the rest follow in their order. Eligible items that
    rank high enough on their own keep their places (a quota, not reserved seats)."""
    slots = set(new_item_slots(k, after, every))
    if not slots:
        return list(range(len(eligible)))
    queue = [j for j, e in enumerate(eligible) if e]
    placed: list[int] = []
    taken: set[int] = set()
    nxt = qi = shown = 0
    need = 0
    while len(placed) < min(k, len(eligible)):
        if len(placed) in slots:
            need += 1
        pick = -1
        if shown < need:
            while qi < len(queue) and queue[qi] in taken:
                qi += 1
            if qi < len(queue):
                pick = queue[qi]
        if pick < 0:
            while nxt in taken:
                nxt += 1
            pick = nxt
        placed.append(pick)
        taken.add(pick)
        shown += bool(eligible[pick])
    return placed + [j for j in range(len(eligible)) if j not in taken]


def with_new_item_slots(
    rows: np.ndarray,
    scores: np.ndarray,
    eligible: np.ndarray,
    k: int,
    after: int,
    every: int,
    seen: Sequence[Sequence[int]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """`rows`/`scores` [U, C] (best first, -inf invalid) with each user's `seen` rows and invalid
    entries scored -inf and moved to the end, and the new-item quota of `slot_order` applied to the
    first k positions, using `eligible` [U, C]: the same lists as `slot_order` user by user, for the
    whole batch at once (a Python loop per user cost the worker a tenth of its batch). Scores stay
    the model's: a promoted new item keeps its own (lower) score, so the list's order is its positions.

    How: the rule keeps the order among eligible items and among the others, and puts the j-th
    eligible item (0-based) at position min(its own, slot j) for the slots below k; it then follows
    exactly p - j of the others, so it sorts just before the (p - j)-th of them."""
    keep = np.isfinite(scores)
    if seen is not None:
        keep &= ~_seen_mask(rows, seen)
    el = eligible & keep
    slots = np.array(new_item_slots(k, after, every), dtype=np.int64)
    out_scores = np.where(keep, scores, -np.inf)
    front = np.argsort(~keep, axis=1, kind="stable")  # the kept entries first, in their order
    if not len(slots) or not el.any():
        return np.take_along_axis(rows, front, axis=1), np.take_along_axis(out_scores, front, axis=1)
    width = rows.shape[1]
    col = np.broadcast_to(np.arange(width, dtype=np.int64), rows.shape)
    kept = np.take_along_axis(keep, front, axis=1)
    el = np.take_along_axis(el, front, axis=1)
    j = np.cumsum(el, axis=1) - 1
    own = np.where(el & (j < len(slots)), np.minimum(col, slots[np.clip(j, 0, len(slots) - 1)]), col)
    others = kept & ~el
    at = np.argsort(~others, axis=1, kind="stable")
    other_pos = np.where(np.take_along_axis(others, at, axis=1), at, 2 * width)  # t-th other's position
    before = np.take_along_axis(other_pos, np.clip(own - j, 0, width - 1), axis=1) - 0.5
    before = np.where(own - j < width, before, 2 * width - 0.5)
    key = np.where(el, before, col.astype(np.float64))
    key = np.where(kept, key, 4 * width + col)
    order = np.take_along_axis(front, np.argsort(key, axis=1, kind="stable"), axis=1)
    return np.take_along_axis(rows, order, axis=1), np.take_along_axis(out_scores, order, axis=1)


def _seen_mask(rows: np.ndarray, seen: Sequence[Sequence[int]]) -> np.ndarray:
    """[U, C] True where the candidate is one of that user's `seen` rows. A dense [U, rows] table
    when it is small (a few MB for a batch of a thousand users: 2 ms, where `np.isin` over the
    batch's keys took 12), else one sorted key per (user, row)."""
    n = rows.shape[0]
    lens = [len(s) for s in seen]
    if not any(lens):
        return np.zeros(rows.shape, dtype=bool)
    flat = np.fromiter(chain.from_iterable(seen), dtype=np.int64, count=sum(lens))
    span = int(max(rows.max(initial=0), flat.max(initial=0))) + 1
    owner = np.repeat(np.arange(n, dtype=np.int64), lens)
    if n * span <= DENSE_SEEN_CELLS:
        table = np.zeros((n, span), dtype=bool)
        table[owner, flat] = True
        return np.take_along_axis(table, np.maximum(rows, 0), axis=1) & (rows >= 0)
    return np.isin(np.arange(n, dtype=np.int64)[:, None] * span + rows, owner * span + flat)


#: the largest [users, rows] table `_seen_mask` builds (bytes: one per cell)
DENSE_SEEN_CELLS = 64_000_000

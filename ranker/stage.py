"""The learned ranking stage: candidates from several retrievers, merged, re-ranked by a LightGBM
lambdarank model over features of each (user, candidate) pair. numpy + LightGBM, no torch: the
worker, the API and `evaluate` run the same `RankingStage.rerank`, so its features are computed the
same offline and online.

Retrievers (each gives candidates and features):
  sequential  the bundle's user encoder over the fused item vectors (its top `seq_top`);
  co-visit    items bought near the user's recent items in the training sequences (item-kNN,
              sparse: each item keeps its `neighbours` best);
  text        cosine of the item's text vector to a recency-weighted profile of the history's;
  popular     the most bought items; and the user's own last items (repeat purchases);
  new         the items without events (new on the items topic, or none in the training data)
              closest to the text profile: no other retriever can find them (no co-visits, no
              popularity, and a sequential score from their text alone).

Why a learned stage: the sequential model and co-visitation are right about different users (long
vs short histories, niche vs popular items); a ranker over both, trained on the validation
targets (never the test ones), takes the better of each per candidate.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "FEATURES",
    "RETRIEVERS",
    "CoVisitation",
    "RankingStage",
    "StageConfig",
    "choose_quotas",
    "history_matrix",
    "top_rows",
]

log = logging.getLogger("fusionrec.stage")

#: the model's input columns, in order (a bundle records them; a mismatch refuses to load)
FEATURES = (
    "seq_score",
    "seq_rank",
    "seq_gap",
    "cov_score",
    "cov_rank",
    "cov_share",
    "text_score",
    "text_rank",
    "log_popularity",
    "since_seen",
    "times_seen",
    "history_len",
    "cos_last",
    "cos_recent_max",
    "category_match",
    "brand_match",
    "category_share",
    "last_type",
)


#: the retrievers whose candidate counts (seq_top, cov_top) are chosen per shop (choose_quotas); the
#: text retriever keeps its count: it is how items without events (new ones) become candidates, and
#: validation targets, all items with events, cannot say what it is worth to them
RETRIEVERS = ("seq", "cov")


def choose_quotas(
    ranks: np.ndarray, total: int, covered: np.ndarray | None = None, step: int = 5, minimum: int = 5
) -> tuple[int, ...]:
    """Candidate counts for RETRIEVERS summing to `total`: the ones under which the most validation
    targets are among some retriever's candidates (the union's recall), `step` slots at a time to
    whichever retriever adds the most, each at least `minimum`. `ranks` [users, len(RETRIEVERS)]:
    the target's 0-based rank in each retriever's list (inf where it cannot be found); `covered`
    [users]: targets the other candidates (text, popular, own, new) already hold.

    Why: which retriever finds the next purchase depends on the shop. On Scientific's short histories
    the sequential model finds most; on a shop with long, repetitive histories co-visits do, and with
    the counts fixed at 30/20 the candidates missed targets that item-kNN alone ranks."""
    quotas = [minimum] * ranks.shape[1]
    left = total - sum(quotas)
    done = np.zeros(len(ranks), bool) if covered is None else covered
    while left >= step:
        hit = done | (ranks < np.array(quotas)[None, :]).any(axis=1)
        gains = []
        for r in range(len(quotas)):
            widened = (ranks[:, r] >= quotas[r]) & (ranks[:, r] < quotas[r] + step)
            gains.append(int((widened & ~hit).sum()))
        best = int(np.argmax(gains))  # ties: the first (the sequential model's)
        quotas[best] += step
        left -= step
    quotas[0] += max(left, 0)  # a remainder below one step goes to the sequential model
    return tuple(quotas)


@dataclass(frozen=True)
class StageConfig:
    """Candidate counts per retriever and the co-visit / text-profile shapes."""

    seq_top: int = 30
    cov_top: int = 20
    text_top: int = 20
    popular_top: int = 5
    history_top: int = 5
    new_top: int = 10  # items without events, by text similarity (0 in bundles from before it existed)
    window: int = 3  # co-visit: positions apart that still count (weight 1/distance)
    neighbours: int = 50  # co-visit: best neighbours kept per item
    recent: int = 5  # co-visit: the user's last items that vote
    decay: float = 0.7  # co-visit: each older item's vote weight
    text_decay: float = 0.8  # text profile: recency weight per step back
    history_window: int = 50  # events the features read (<= ranker.state.RECENT_ITEMS, what a worker keeps)

    @property
    def max_candidates(self) -> int:
        return self.seq_top + self.cov_top + self.text_top + self.popular_top + self.history_top + self.new_top


@dataclass
class CoVisitation:
    """Sparse item-item co-visitation (cosine-normalised counts within `window`), top neighbours per item."""

    neighbours: np.ndarray  # [n, M] int32 rows, -1 padding
    weights: np.ndarray  # [n, M] float32

    @classmethod
    def fit(cls, sequences: Sequence[Sequence[int]], n_items: int, window: int = 3, keep: int = 50) -> CoVisitation:
        """`sequences` of 0-based rows. The same weighting as ranker.baselines.ItemKNN, kept sparse."""
        from scipy import sparse  # fitting only: scipy.sparse was 0.1 s of every worker's start

        lens = np.array([len(s) for s in sequences], dtype=np.int64)
        flat = np.fromiter((i for s in sequences for i in s), dtype=np.int64, count=int(lens.sum()))
        owner = np.repeat(np.arange(len(sequences)), lens)
        rows, cols, vals = [], [], []
        for d in range(1, window + 1):
            same = owner[:-d] == owner[d:]
            a, b = flat[:-d][same], flat[d:][same]
            diff = a != b
            a, b = a[diff], b[diff]
            rows += [a, b]
            cols += [b, a]
            vals.append(np.full(2 * len(a), 1.0 / d, dtype=np.float32))
        r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        c = np.concatenate(cols) if cols else np.zeros(0, np.int64)
        v = np.concatenate(vals) if vals else np.zeros(0, np.float32)
        m = sparse.csr_matrix((v, (r, c)), shape=(n_items, n_items), dtype=np.float32)
        m.sum_duplicates()
        inv = 1.0 / np.sqrt(np.maximum(np.bincount(flat, minlength=n_items), 1.0)).astype(np.float32)
        m = sparse.csr_matrix(sparse.diags(inv) @ m @ sparse.diags(inv), dtype=np.float32)
        nb = np.full((n_items, keep), -1, dtype=np.int32)
        wt = np.zeros((n_items, keep), dtype=np.float32)
        for i in range(n_items):
            lo, hi = m.indptr[i], m.indptr[i + 1]
            if hi == lo:
                continue
            idx, val = m.indices[lo:hi], m.data[lo:hi]
            if len(val) > keep:
                part = np.argpartition(-val, keep - 1)[:keep]
                idx, val = idx[part], val[part]
            order = np.lexsort((idx, -val))
            nb[i, : len(order)] = idx[order]
            wt[i, : len(order)] = val[order]
        return cls(nb, wt)

    @property
    def n_items(self) -> int:
        return int(self.neighbours.shape[0])

    def scores(self, histories: Sequence[Sequence[int]], n_rows: int, recent: int, decay: float) -> np.ndarray:
        """[users, n_rows]: the neighbours of each user's last `recent` rows, the latest weighted 1
        (rows beyond the fitted ones, e.g. live items, have none).

        Straight from the [n, M] neighbour arrays: what a sparse product of the users' votes and the
        neighbour matrix gives, to the bit (a row repeated in a history sums first, then each user's
        rows in ascending order add up in float32), without scipy, whose import was 0.1 s of every
        worker's start, or the [n, n] matrix that its first call built."""
        users, items, votes = [], [], []
        for u, hist in enumerate(histories):
            last = [r for r in hist[-recent:] if r < self.n_items]
            w = decay ** np.arange(len(last) - 1, -1, -1, dtype=np.float32)
            users += [u] * len(last)
            items += last
            votes.append(w)
        out = np.zeros((len(histories), n_rows), dtype=np.float32)
        if not items:
            return out
        key = np.asarray(users, dtype=np.int64) * self.n_items + np.asarray(items, dtype=np.int64)
        order = np.argsort(key, kind="stable")
        key, v = key[order], np.concatenate(votes).astype(np.float32)[order]
        first = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        owner, rows = np.divmod(key[first], self.n_items)
        v = np.add.reduceat(v, first)
        dst = self.neighbours[rows].astype(np.int64)
        ok = (dst >= 0) & (dst < n_rows)
        weighted = self.weights[rows] * v[:, None]
        np.add.at(out, (np.broadcast_to(owner[:, None], dst.shape)[ok], dst[ok]), weighted[ok])
        return out


def history_matrix(histories: Sequence[Sequence[int]], width: int) -> np.ndarray:
    """[users, width] each history's last `width` rows, right-aligned (latest last), -1 padding."""
    out = np.full((len(histories), width), -1, dtype=np.int64)
    for u, h in enumerate(histories):
        tail = h[-width:]
        if tail:
            out[u, width - len(tail) :] = tail
    return out


def top_rows(scores: np.ndarray, k: int, positive: bool = False) -> np.ndarray:
    """[users, k] rows of the k highest scores per user, best first (ties: lower row first). With
    `positive`, only scores above 0 count and a user with fewer gets -1 padding (a co-visit list is
    the items bought near the user's, not zeros in catalogue order).

    Exact, and cheap on a catalogue: the k-th largest of the row's block maxima is a floor that at
    least k scores reach, so only the scores at or above it (tens per user) are sorted, instead of
    a selection over every item (argpartition over [users, n] was 13% of a worker's time)."""
    users, n = scores.shape
    k = min(k, n)
    if k <= 0 or users == 0:
        return np.zeros((users, max(k, 0)), dtype=np.int64)
    # groups of columns j, j + blocks, j + 2 * blocks, ...: the max runs along contiguous memory
    width = max(n // (8 * k), 1)
    blocks = n // width
    maxima = scores[:, : blocks * width].reshape(users, width, blocks).max(axis=1)
    if blocks * width < n:
        maxima = np.concatenate([maxima, scores[:, blocks * width :].max(axis=1, keepdims=True)], axis=1)
    floor = np.partition(maxima, maxima.shape[1] - k, axis=1)[:, maxima.shape[1] - k]
    keep = scores >= floor[:, None]
    if positive:
        keep &= scores > 0
    r, c = np.divmod(np.flatnonzero(keep), n)
    v = scores[r, c]
    order = np.lexsort((c, -v, r))
    r, c = r[order], c[order]
    starts = np.searchsorted(r, np.arange(users))
    pos = np.arange(len(r)) - starts[r]
    first = pos < k
    out = np.full((users, k), -1, dtype=np.int64)
    out[r[first], pos[first]] = c[first]
    return out


def _profile_weights(histories: Sequence[Sequence[int]], decay: float) -> tuple[np.ndarray, np.ndarray]:
    """[users, L] rows of each history (L its longest; 0 padding) and their recency weights (latest 1,
    each step back x `decay`, normalised per user; 0 padding): the text profile is their weighted
    sum of the text vectors (`_weighted_sum`), a row seen twice counting twice."""
    lens = np.array([len(h) for h in histories], dtype=np.int64)
    width = int(lens.max()) if len(lens) else 0
    back = np.concatenate([np.arange(m - 1, -1, -1) for m in lens]) if len(lens) else np.zeros(0, np.int64)
    w = np.power(np.float32(decay), back.astype(np.float32))
    owner = np.repeat(np.arange(len(histories)), lens)
    totals = np.bincount(owner, weights=w, minlength=len(histories))
    w = (w / np.maximum(totals[owner], 1e-12)).astype(np.float32)
    cols = np.fromiter((r for h in histories for r in h), dtype=np.int64, count=int(lens.sum()))
    at = np.arange(len(cols)) - np.repeat(np.cumsum(lens) - lens, lens)
    rows = np.zeros((len(histories), width), dtype=np.int64)
    weights = np.zeros((len(histories), width), dtype=np.float32)
    rows[owner, at] = cols
    weights[owner, at] = w
    return rows, weights


def _weighted_sum(rows: np.ndarray, weights: np.ndarray, vectors: np.ndarray, chunk: int = 64) -> np.ndarray:
    """[users, dim]: each user's `weights` times the `vectors` of its `rows` ([users, L] each), summed.
    A few users at a time, as `_cosines_to` gathers: a [users, L, dim] gather at once is tens of MB."""
    out = np.zeros((len(rows), vectors.shape[1]), dtype=np.float32)
    for lo in range(0, len(rows), chunk):
        hi = lo + chunk
        out[lo:hi] = (weights[lo:hi, None, :] @ vectors[rows[lo:hi]])[:, 0]
    return out


def _cosines_to(text: np.ndarray, recent: np.ndarray, cands: np.ndarray, chunk: int = 16) -> np.ndarray:
    """[U, R, C] dot products of each user's `recent` rows' text with its candidates' ([U, R] and
    [U, C] rows): over the candidates only, never [U, n]. Gathered a few users at a time into one
    reused buffer: a [U, C, d] gather at once (40 MB for 300 users) cost twice as long in page faults."""
    users, width = cands.shape
    out = np.empty((users, recent.shape[1], width), dtype=np.float32)
    buf = np.empty((min(chunk, users), width, text.shape[1]), dtype=np.float32)
    for lo in range(0, users, chunk):
        hi = min(lo + chunk, users)
        part = buf[: hi - lo]
        np.take(text, cands[lo:hi], axis=0, out=part)
        np.matmul(text[recent[lo:hi]], part.transpose(0, 2, 1), out=out[lo:hi])
    return out


def _rank_in(cands: np.ndarray, top: np.ndarray) -> np.ndarray:
    """[users, C] position of each candidate in that user's `top` list (its first, if listed twice),
    len(top) when absent (-1 padding never matches). One sorted key per (user, row) and a binary
    search: no [U, n] table (n is the catalogue) and no [U, C, K] comparison cube."""
    users, k = top.shape
    if k == 0 or users == 0:
        return np.full(cands.shape, float(k), dtype=np.float32)
    span = np.int64(max(int(cands.max(initial=0)), int(top.max(initial=0))) + 2)
    owner = np.arange(users, dtype=np.int64)[:, None] * span
    keys = (owner + top + 1).ravel()
    order = np.argsort(keys, kind="stable")
    keys, pos = keys[order], np.tile(np.arange(k), users)[order]
    query = (owner + cands + 1).ravel()
    at = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    return np.where(keys[at] == query, pos[at], k).reshape(cands.shape).astype(np.float32)


class RankingStage:
    """Candidates + features + the LightGBM model; `rerank` is the one entry point of every caller."""

    def __init__(
        self,
        config: StageConfig,
        covisit: CoVisitation,
        text: np.ndarray,
        log_popularity: np.ndarray,
        brands: np.ndarray,
        booster: Any = None,
        threads: int = 1,
        scorer: Any = None,
        model_file: Path | None = None,
    ) -> None:
        """`model_file`: where the LightGBM model is, read only when `booster` is first asked for
        (LightGBM's import costs 1.3-2 s of a worker's start, and the compiled `scorer` needs none of it)."""
        self.config = config
        self.covisit = covisit
        self.text = np.ascontiguousarray(text, dtype=np.float32)  # [n, d] unit rows (0 for items without text)
        self.log_popularity = log_popularity.astype(np.float32)
        self.brands = brands.astype(np.int64)
        self._booster = booster
        self._model_file = model_file
        self.threads = threads
        #: the booster's trees compiled (ranker.stage_compiled), same scores; None: LightGBM predicts
        self.scorer = scorer
        self._popular = np.argsort(-self.log_popularity, kind="stable")[: config.popular_top]

    @property
    def booster(self) -> Any:
        """The LightGBM model (None for a stage not trained yet), loaded on first use."""
        if self._booster is None and self._model_file is not None:
            import lightgbm as lgb  # training's library; at run time only when the compiled trees are unavailable

            self._booster = lgb.Booster(model_file=str(self._model_file))
        return self._booster

    @booster.setter
    def booster(self, booster: Any) -> None:
        self._booster = booster

    @property
    def n_rows(self) -> int:
        return int(self.text.shape[0])

    def add_rows(self, text: np.ndarray, brands: np.ndarray) -> None:
        """Live items appended to the bundle: their text vectors and brands; no co-visits, popularity 0."""
        self.text = np.vstack([self.text, text.astype(np.float32)])
        self.brands = np.concatenate([self.brands, brands.astype(np.int64)])
        self.log_popularity = np.concatenate([self.log_popularity, np.zeros(len(text), np.float32)])

    def set_rows(self, rows: Sequence[int], text: np.ndarray, brands: np.ndarray) -> None:
        """Changed items keep their rows: new text vectors and brands."""
        self.text[list(rows)] = text.astype(np.float32)
        self.brands[list(rows)] = brands.astype(np.int64)

    def features(
        self,
        user_vectors: np.ndarray,
        item_vectors: np.ndarray,
        categories: np.ndarray,
        histories: Sequence[Sequence[int]],
        types: Sequence[Sequence[int]],
        seq_rows: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(candidates [U, C] rows, valid [U, C] bool, features [U, C, len(FEATURES)]) for users with a
        non-empty history of rows. `seq_rows`: the sequential model's top rows per user, best first
        (at least `seq_top`), as a retriever returns them."""
        cands, valid, feats, _ = self._features(user_vectors, item_vectors, categories, histories, types, seq_rows)
        return cands, valid, feats

    def _features(
        self,
        user_vectors: np.ndarray,
        item_vectors: np.ndarray,
        categories: np.ndarray,
        histories: Sequence[Sequence[int]],
        types: Sequence[Sequence[int]],
        seq_rows: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """`features`, and the users' text-profile scores of every row [U, n] it computed on the way."""
        cfg = self.config
        # the last `history_window` events only: what a worker's user state keeps (ranker.state.RECENT_ITEMS),
        # so an offline history of any length gives the features the worker would compute
        histories = [h[-cfg.history_window :] for h in histories]
        types = [t[-cfg.history_window :] for t in types]
        n = min(self.n_rows, len(item_vectors), len(categories))
        users = len(histories)
        seq_top = seq_rows[:, : cfg.seq_top].astype(np.int64)
        cov = self.covisit.scores(histories, n, cfg.recent, cfg.decay)
        cov_top = top_rows(cov, cfg.cov_top, positive=True)
        text = self.text[:n]
        text_all = self._text_profiles(histories, n) @ text.T
        text_top = top_rows(text_all, cfg.text_top)
        new_top = self._new_top(text_all, n)
        hist = history_matrix(histories, cfg.history_window)
        own = hist[:, -cfg.history_top :]
        top_popular = self._popular[self._popular < n]
        popular = np.broadcast_to(top_popular, (users, len(top_popular)))
        raw = np.concatenate([seq_top, cov_top, text_top, popular, own, new_top], axis=1)
        cands = np.sort(raw, axis=1)
        valid = cands >= 0
        valid[:, 1:] &= cands[:, 1:] != cands[:, :-1]
        cands = np.where(valid, cands, 0)
        # retriever scores and ranks (batched matmuls over gathered rows; ranks by a dense lookup)
        seq_score = (item_vectors[cands] @ user_vectors[:, :, None])[:, :, 0]
        seq_best = np.einsum("ud,ud->u", item_vectors[seq_top[:, 0]], user_vectors) if seq_top.shape[1] else None
        cov_score = np.take_along_axis(cov, cands, axis=1)
        cov_best = np.maximum(cov.max(axis=1, keepdims=True), 1e-9)
        text_score = np.take_along_axis(text_all, cands, axis=1)
        # history features: where each candidate was last seen (steps back) and how often, per user
        # ([U, C, window] comparisons: no [U, n] table)
        same = (cands[:, :, None] == hist[:, None, :]) & (hist >= 0)[:, None, :]
        times_seen = same.sum(axis=2).astype(np.float32)
        width = hist.shape[1]
        last_pos = np.where(same.any(axis=2), width - 1 - same[:, :, ::-1].argmax(axis=2), -1)
        since_seen = np.where(last_pos >= 0, width - last_pos, cfg.history_window + 1).astype(np.float32)
        lengths = np.array([len(h) for h in histories], dtype=np.float32)
        last = hist[:, -1]
        recent = hist[:, -3:]
        cos_each = _cosines_to(text, np.maximum(recent, 0), cands)
        cos_last = cos_each[:, -1, :]
        cos_recent = np.where((recent >= 0)[:, :, None], cos_each, -1.0).max(axis=1)
        cat = categories[:n].astype(np.int64)
        cand_cat, last_cat = cat[cands], cat[last][:, None]
        category_match = (cand_cat == last_cat) & (last_cat > 0)
        brand = self.brands[:n]
        cand_brand, last_brand = brand[cands], brand[last][:, None]
        brand_match = (cand_brand == last_brand) & (last_brand > 0)
        hist_cat = np.where(hist >= 0, cat[np.maximum(hist, 0)], -1)[:, -10:]
        n_recent = np.maximum((hist[:, -10:] >= 0).sum(axis=1, keepdims=True), 1)
        category_share = ((cand_cat[:, :, None] == hist_cat[:, None, :]) & (cand_cat[:, :, None] > 0)).sum(
            axis=2
        ) / n_recent
        last_type = np.array([t[-1] if len(t) else 0 for t in types], dtype=np.float32)
        cols = [
            seq_score,
            _rank_in(cands, seq_top),
            seq_score - seq_best[:, None] if seq_best is not None else seq_score,
            cov_score,
            _rank_in(cands, cov_top),
            cov_score / cov_best,
            text_score,
            _rank_in(cands, text_top),
            self.log_popularity[:n][cands],
            since_seen,
            times_seen,
            np.broadcast_to(lengths[:, None], cands.shape),
            cos_last,
            cos_recent,
            category_match,
            brand_match,
            category_share,
            np.broadcast_to(last_type[:, None], cands.shape),
        ]
        feats = np.stack([np.asarray(c, dtype=np.float32) for c in cols], axis=2)
        return cands, valid, feats, text_all

    def target_ranks(
        self,
        user_vectors: np.ndarray,
        item_vectors: np.ndarray,
        histories: Sequence[Sequence[int]],
        targets: np.ndarray,
    ) -> np.ndarray:
        """[users, 3] each target's 0-based rank in the sequential, co-visit and text retrievers' full
        lists as `features` builds them (inf where co-visits never reach it): what choose_quotas reads.
        Ties count against the target."""
        cfg = self.config
        histories = [h[-cfg.history_window :] for h in histories]
        n = min(self.n_rows, len(item_vectors))
        users = np.arange(len(histories))
        t = np.asarray(targets, dtype=np.int64)
        inside = t < n
        t = np.where(inside, t, 0)
        out = np.full((len(histories), 3), np.inf)
        seq = user_vectors @ item_vectors[:n].T
        cov = self.covisit.scores(histories, n, cfg.recent, cfg.decay)
        for r, scores in enumerate((seq, cov, self._text_profiles(histories, n) @ self.text[:n].T)):
            at = scores[users, t][:, None]
            rank = (scores > at).sum(axis=1) + (scores == at).sum(axis=1) - 1
            found = inside & ((at[:, 0] > 0) if r == 1 else True)
            out[:, r] = np.where(found, rank, np.inf)
        return out

    def _text_profiles(self, histories: Sequence[Sequence[int]], n: int) -> np.ndarray:
        """[users, dim] unit recency-weighted means of the history items' text vectors (rows < n)."""
        text = self.text[:n]
        profiles = _weighted_sum(*_profile_weights(histories, self.config.text_decay), text)
        profiles /= np.maximum(np.linalg.norm(profiles, axis=1, keepdims=True), 1e-9)
        return profiles

    def _new_top(self, text_all: np.ndarray, n: int, top: int | None = None) -> np.ndarray:
        """[users, <= top] (default `new_top`) rows of the items without events (popularity 0) by text
        score, best first: a column over the new items only, so its cost follows how many there are."""
        new = np.flatnonzero(self.log_popularity[:n] <= 0)
        k = min(self.config.new_top if top is None else top, len(new))
        if k <= 0:
            return np.zeros((text_all.shape[0], 0), dtype=np.int64)
        return new[top_rows(text_all[:, new], k)]

    def new_eligible(self, text_all: np.ndarray, rows: np.ndarray, share: float) -> np.ndarray:
        """[U, C] True where `rows` is a new item (no events: popularity 0) among the user's top `share`
        of the catalog by text-profile score (`text_all` [U, n]): the new arrivals worth a slot in
        that user's list (ranker.ranking.with_new_item_slots). The cut is each user's score at that
        share, taken over an even sample of 1,024 items on larger catalogs (a partial sort of the
        whole catalog per user would cost a good part of the stage)."""
        n = text_all.shape[1]
        pop = self.log_popularity[:n]
        if share <= 0 or n == 0 or not (pop <= 0).any():
            return np.zeros(rows.shape, dtype=bool)
        sample = text_all if n <= 2048 else text_all[:, np.linspace(0, n - 1, 1024).astype(np.int64)]
        m = sample.shape[1]
        at = min(max(int(np.ceil(share * m)), 1), m) - 1  # 0-based place of the cut in the sample
        cut = -np.partition(-sample, at, axis=1)[:, at]
        inside = (rows >= 0) & (rows < len(pop))
        safe = np.where(inside, rows, 0)
        score = np.take_along_axis(text_all, safe, axis=1)
        return inside & (pop[safe] <= 0) & (score >= cut[:, None])

    def predict(self, feats: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """[U, C] model scores, -inf for invalid (duplicate) candidates."""
        if self.scorer is None and self.booster is None:
            raise RuntimeError("this ranking stage has no trained model")
        out = np.full(valid.shape, -np.inf, dtype=np.float64)
        if valid.any():
            rows = feats[valid]
            if self.scorer is not None:
                out[valid] = self.scorer(rows)
            else:
                out[valid] = self.booster.predict(rows, num_threads=self.threads)
        return out

    def rerank(
        self,
        user_vectors: np.ndarray,
        item_vectors: np.ndarray,
        categories: np.ndarray,
        histories: Sequence[Sequence[int]],
        types: Sequence[Sequence[int]],
        seq_rows: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(rows [U, C'], scores [U, C']) best first: the candidates by model score, then the rest of
        `seq_rows` in their order with scores below every candidate's (so a policy that drops seen
        items still finds k). Invalid slots score -inf."""
        rows, scores, _ = self.rerank_new(user_vectors, item_vectors, categories, histories, types, seq_rows, 0.0)
        return rows, scores

    def rerank_new(
        self,
        user_vectors: np.ndarray,
        item_vectors: np.ndarray,
        categories: np.ndarray,
        histories: Sequence[Sequence[int]],
        types: Sequence[Sequence[int]],
        seq_rows: np.ndarray,
        new_share: float,
        new_extra: int = 0,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`rerank`, and [U, C'] which of its rows are new items worth a slot (`new_eligible` at
        `new_share`; all False at 0). With `new_extra` the new-items retriever's next `new_extra`
        items by text score (after its `new_top` candidates) follow the candidates, unscored, before
        the rest of `seq_rows`: enough new arrivals for the slots of a list longer than the
        candidates hold. A row listed twice scores -inf after its first place (in `rerank` too)."""
        cands, valid, feats, text_all = self._features(
            user_vectors, item_vectors, categories, histories, types, seq_rows
        )
        scores = self.predict(feats, valid)
        order = np.argsort(-scores, axis=1, kind="stable")
        rows = np.take_along_axis(cands, order, axis=1)
        scores = np.take_along_axis(scores, order, axis=1)
        floor = np.where(np.isfinite(scores), scores, np.inf).min(axis=1, keepdims=True)
        floor = np.where(np.isfinite(floor), floor, 0.0)
        below = 1.0
        if new_share > 0 and new_extra > 0:  # after the candidates, before the rest: one list for any batch
            more = self._new_top(text_all, text_all.shape[1], self.config.new_top + new_extra)
            listed = np.where(np.isfinite(scores), rows, -1)  # an invalid candidate's row 0 is no listing
            dup = (more < 0) | (more[:, :, None] == listed[:, None, :]).any(axis=2)
            tail = floor - below - np.arange(more.shape[1])[None, :] * 1e-3
            rows = np.concatenate([rows, np.maximum(more, 0)], axis=1)
            scores = np.concatenate([scores, np.where(dup, -np.inf, tail)], axis=1)
            below += 1.0
        # only the candidates and those new items qualify for a slot: the rest's length follows the batch
        # (its longest history), and a user's list must not
        new = self.new_eligible(text_all, rows, new_share)
        rest = seq_rows[:, self.config.seq_top :]
        if rest.shape[1]:
            # a row already listed (a candidate of another retriever, or a new item above) is not listed again
            listed = np.where(np.isfinite(scores), rows, -1)
            dup = (rest[:, :, None] == listed[:, None, :]).any(axis=2)
            tail = floor - below - np.arange(rest.shape[1])[None, :] * 1e-3
            rows = np.concatenate([rows, rest], axis=1)
            scores = np.concatenate([scores, np.where(dup, -np.inf, tail)], axis=1)
            new = np.concatenate([new, np.zeros(rest.shape, dtype=bool)], axis=1)
        return rows, scores, new

    # persistence: ranking/ in a bundle
    def save(self, folder: Path, info: dict[str, Any]) -> None:
        if self.booster is None:
            raise RuntimeError("this ranking stage has no trained model to save")
        folder.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(folder / "model.txt"))
        np.savez(
            folder / "arrays.npz",
            neighbours=self.covisit.neighbours,
            weights=self.covisit.weights,
            log_popularity=self.log_popularity,
            brands=self.brands,
        )
        doc = {"config": asdict(self.config), "features": list(FEATURES), **info}
        (folder / "stage.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, folder: Path, text: np.ndarray, threads: int = 1) -> RankingStage:
        """From a bundle's ranking/ (files already digest-checked by ModelBundle.load)."""
        from ranker.stage_compiled import compiled_predictor

        doc = json.loads((folder / "stage.json").read_text())
        if list(doc.get("features", [])) != list(FEATURES):
            raise ValueError(
                f"{folder}: the ranking model was trained on features {doc.get('features')}, this fusionrec "
                f"computes {list(FEATURES)}: retrain the bundle with `fusionrec train`"
            )
        arrays = np.load(folder / "arrays.npz")
        config = {"new_top": 0, **doc["config"]}  # a stage from before the new-items retriever never saw its candidates
        scorer = compiled_predictor(folder / "model.txt", threads)
        stage = cls(
            StageConfig(**config),
            CoVisitation(arrays["neighbours"], arrays["weights"]),
            text,
            arrays["log_popularity"],
            arrays["brands"],
            None,
            threads,
            scorer,
            model_file=folder / "model.txt",
        )
        if scorer is None:  # LightGBM predicts: load it now, so a model it cannot read fails here, not mid-stream
            _ = stage.booster
        return stage

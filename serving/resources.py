"""What the API and the search evaluation load once: the catalog, its text vectors (encoded with
the bundle's own text encoder, cached incrementally on disk), the hybrid index, the model bundle
and the popularity order. Built from files only; the stores are opened by the caller. With a
bundle, no dataset is needed: the catalog and the popularity are the bundle's own."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from encoders.catalog import encode_catalog, load_catalog_vectors
from encoders.session import SessionConfig
from encoders.text import TextEncoder
from ranker.bundle import ModelBundle
from ranker.online import BundleRanker
from ranker.popularity import popular_items, popular_rows
from ranker.ranking import RankingPolicy
from ranker.search import HybridIndex, SearchWeights
from ranker.state import UserState
from ranker.text_fusion import TextFusionModel
from schemas.errors import ConfigError
from schemas.events import EVENT_TYPE_INDEX
from schemas.items import Item

__all__ = ["ServingResources", "load_resources"]


@dataclass
class ServingResources:
    items: list[Item]
    rows: dict[str, int]
    index: HybridIndex
    encoder: TextEncoder
    bundle: ModelBundle | None
    bundle_rows: np.ndarray  # catalog row -> bundle row, -1 when the bundle lacks the item
    item_vectors: np.ndarray  # per catalog row: fused vector (bundle or text-fusion model) or text vector
    popular: list[int]  # catalog rows, most popular first
    #: the demo's text-fused model (`fusionrec demo` saves it), served when there is no bundle
    text_model: TextFusionModel | None = None

    @property
    def model_version(self) -> str:
        if self.bundle is not None:
            return self.bundle.version
        return self.text_model.version if self.text_model is not None else "text-only"

    def user_vectors(
        self, histories: Sequence[Sequence[str]], types: Sequence[Sequence[str]] | None = None
    ) -> np.ndarray:
        """[n, dim] user vectors from item-id histories (oldest first) through the bundle's user
        encoder; a history with no known item gets a zero vector (no personal signal)."""
        assert self.bundle is not None, "user vectors need a model bundle"
        brow = self._bundle_index()
        seqs, tps, which = [], [], []
        for n, hist in enumerate(histories):
            ts = types[n] if types is not None else ["purchase"] * len(hist)
            pairs = [(brow[i], EVENT_TYPE_INDEX.get(t, 1)) for i, t in zip(hist, ts, strict=True) if i in brow]
            if pairs:
                seqs.append([p[0] for p in pairs])
                tps.append([p[1] for p in pairs])
                which.append(n)
        dim = self.bundle.item_vectors.shape[1]
        out = np.zeros((len(histories), dim), np.float32)
        if seqs:
            out[which] = self.bundle.user_vectors(seqs, tps)
        return out

    def _bundle_index(self) -> dict[str, int]:
        assert self.bundle is not None
        cached: tuple[int, dict[str, int]] | None = getattr(self, "_brow", None)
        if cached is None or cached[0] != len(self.bundle.item_ids):  # the live index can grow
            cached = (len(self.bundle.item_ids), {i: r for r, i in enumerate(self.bundle.item_ids)})
            self._brow = cached
        return cached[1]

    def affinity(self, user_vectors: np.ndarray) -> np.ndarray:
        """[n_users, n_catalog_rows] model scores (0 for items the bundle does not know)."""
        return np.asarray(user_vectors @ self.item_vectors.T, dtype=np.float32)

    def list_taste(self, scored: Sequence[tuple[str, float]]) -> np.ndarray | None:
        """The user vector a stored list was ranked by, as far as the list shows it (the read API
        reads lists, never user state). A model list's scores are u·g_j over the bundle's fused item
        vectors, so the least-squares, minimum-norm solution of G u = s is u's projection onto the
        listed items' span. On Scientific (search-eval, all queries) it personalises search as well
        as the state's history did: MRR@10 0.5874 vs 0.5872, Recall@10 0.807 vs 0.815. A bundle with
        a ranking stage stores the stage's scores, on a scale and offset of their own: the fit then
        takes an intercept (G u + b = s), and only u's direction is used (search z-scores the
        affinity). None without a bundle or when no listed item is in it."""
        if self.bundle is None:
            return None
        pairs = [(r, s) for i, s in scored if (r := self.rows.get(i)) is not None and self.bundle_rows[r] >= 0]
        if not pairs:
            return None
        vectors = self.item_vectors[[r for r, _ in pairs]].astype(np.float64)
        if self.bundle.has_ranking_stage():
            vectors = np.hstack([vectors, np.ones((len(pairs), 1))])
        taste, *_ = np.linalg.lstsq(vectors, np.array([s for _, s in pairs], dtype=np.float64), rcond=None)
        taste = taste[: self.item_vectors.shape[1]]
        return taste.astype(np.float32) if np.any(taste) else None

    def list_affinity_from_histories(
        self, histories: Sequence[Sequence[str]], k: int = 20, policy: RankingPolicy = RankingPolicy()
    ) -> np.ndarray:
        """Offline twin of what the API serves, for search-eval: each history's list as the worker
        writes it (ranker.online.BundleRanker with the worker's `policy`, the ranking stage included
        when the bundle has one; scores rounded as stored), then the affinity of that list's `list_taste`."""
        assert self.bundle is not None, "list affinity needs a bundle"
        ranker = BundleRanker(self.bundle, policy=policy)
        out = np.zeros((len(histories), len(self.items)), dtype=np.float32)
        for lo in range(0, len(histories), 256):
            chunk = histories[lo : lo + 256]
            states = [
                UserState(f"offline-{lo + n}", recent_items=tuple(h), recent_types=("purchase",) * len(h))
                for n, h in enumerate(chunk)
            ]
            for n, (listed, source) in enumerate(ranker.rank_many(states, k)):
                taste = self.list_taste(listed) if source == "personal" else None
                if taste is not None:
                    out[lo + n] = self.affinity(taste[None, :])[0]
        return out


def load_resources(
    items: Sequence[Item] | None = None,
    *,
    bundle: str | Path | None = None,
    encoder: str | Path | None = None,
    cache: str | Path,
    popularity: dict[str, int] | None = None,
    weights: SearchWeights = SearchWeights(),
    session: SessionConfig = SessionConfig(),
    progress: bool = True,
    text_model: str | Path | None = None,
) -> ServingResources:
    """`items` defaults to the bundle's catalog (items.jsonl) and `popularity` (event counts per
    item id) to the bundle's (popularity.json); without a bundle, items are required and
    popularity is optional (no counts: catalog order). `encoder` defaults to the bundle's own copy
    (bundle/encoder), so query and item vectors come from the same model the bundle was trained
    with. Raises BundleError / EncoderError (ConfigErrors) naming a damaged file."""
    mb = ModelBundle.load(bundle, session) if bundle is not None else None
    if items is None:
        if mb is None:
            raise ConfigError("no catalog: give an items file (or a dataset), or a --bundle, which carries its own")
        items = mb.items()
    items = list(items)
    if not items:
        raise ConfigError("the catalog is empty: give an items file with at least one item")
    enc_dir = Path(encoder) if encoder is not None else (Path(bundle) / "encoder" if bundle is not None else None)
    if enc_dir is None:
        raise ConfigError("search needs a text encoder: give --encoder or a --bundle that holds one")
    enc = TextEncoder(enc_dir, session)
    encode_catalog(items, enc, cache, progress=progress)
    ids, vectors = load_catalog_vectors(cache)
    by_id = dict(zip(ids, vectors, strict=True))
    text_vectors = np.stack([by_id[it.item_id] for it in items]).astype(np.float32)
    index = HybridIndex([it.item_id for it in items], [it.text() for it in items], text_vectors, weights)
    rows = {it.item_id: r for r, it in enumerate(items)}
    if mb is not None:
        brow = {i: r for r, i in enumerate(mb.item_ids)}
        bundle_rows = np.array([brow.get(it.item_id, -1) for it in items], dtype=np.int64)
        fused = np.zeros((len(items), mb.item_vectors.shape[1]), np.float32)
        known = bundle_rows >= 0
        fused[known] = mb.item_vectors[bundle_rows[known]]
        item_vectors = fused
    else:
        bundle_rows = np.full(len(items), -1, dtype=np.int64)
        item_vectors = text_vectors
    tm = TextFusionModel.load(text_model) if text_model is not None and mb is None else None
    if tm is not None:  # its fused space, where the catalog holds its items; text vectors elsewhere
        fused = tm.fused_item_vectors()
        item_vectors = np.zeros((len(items), fused.shape[1]), np.float32)
        item_vectors[:, : text_vectors.shape[1]] = text_vectors
        for r, it in enumerate(items):
            if (m := tm.rows.get(it.item_id)) is not None:
                item_vectors[r] = fused[m]
    counts = popularity if popularity is not None else (mb.popularity if mb is not None else {})
    popular = popular_rows(popular_items(counts), rows, len(items))  # most popular first, then catalog order
    return ServingResources(items, rows, index, enc, mb, bundle_rows, item_vectors, popular, tm)

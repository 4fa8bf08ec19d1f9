"""The read side, without HTTP: stored lists with a fallback chain, similar items, personalised
hybrid search, item tags. The HTTP app (serving.app) is a thin shell over this.

It reads the derived lists and the catalog only, never user state (the pipeline's source of
truth): a read replica or a list-only keyspace is enough to serve, and reads cannot contend with
the worker's state writes."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from schemas.errors import StoreUnavailable
from serving.resources import ServingResources
from serving.search import Mode
from streams.stores.base import CatalogStore, RecommendationStore

__all__ = ["Limits", "NotFound", "ServingService"]

log = logging.getLogger("fusionrec.serving")


class NotFound(LookupError):
    """A named thing (an item) the catalog does not hold: answered as 404."""


@dataclass(frozen=True, slots=True)
class Limits:
    max_k: int = 100
    max_query_chars: int = 256
    max_id_chars: int = 128


class _TagCache:
    """Item tags read from the store, kept for `ttl_s`: tags change when `tag-items` runs, not per request."""

    def __init__(self, catalog: CatalogStore, ttl_s: float, clock: Callable[[], float]) -> None:
        self.catalog, self.ttl_s, self.clock = catalog, ttl_s, clock
        self._tags: dict[str, tuple[float, list[str]]] = {}
        self._lock = threading.Lock()

    def preload(self, item_ids: Sequence[str]) -> None:
        """Read every item's tags once at start, so requests do not pay for the first reads."""
        try:
            got = self.catalog.get_item_tags(item_ids)
        except StoreUnavailable as exc:
            log.warning("event=tags_unavailable error=%r", str(exc))
            return
        now = self.clock()
        with self._lock:
            for i in item_ids:
                self._tags[i] = (now, [t for t, _ in got.get(i, [])])

    def get(self, item_ids: Sequence[str]) -> dict[str, list[str]]:
        now = self.clock()
        with self._lock:
            fresh = {i: v[1] for i in item_ids if (v := self._tags.get(i)) is not None and now - v[0] < self.ttl_s}
        missing = [i for i in item_ids if i not in fresh]
        if missing:
            try:
                got = self.catalog.get_item_tags(missing)
            except StoreUnavailable as exc:  # tags are decoration: answer without them
                log.warning("event=tags_unavailable error=%r", str(exc))
                return fresh
            with self._lock:
                for i in missing:
                    tags = [t for t, _ in got.get(i, [])]
                    self._tags[i] = (now, tags)
                    fresh[i] = tags
        return fresh


class ServingService:
    def __init__(
        self,
        resources: ServingResources,
        lists: RecommendationStore,
        catalog: CatalogStore,
        limits: Limits = Limits(),
        clock: Callable[[], float] = time.time,
        tag_ttl_s: float = 300.0,
    ) -> None:
        """`lists`: the stored recommendation lists; `catalog`: item tags (often the same store)."""
        self.res = resources
        self.lists = lists
        self.limits = limits
        self.clock = clock
        self.tags = _TagCache(catalog, tag_ttl_s, clock)
        self.tags.preload([it.item_id for it in resources.items])
        self._categories = [it.category.lower() for it in resources.items]

    # -- helpers -------------------------------------------------------------------------------
    def _items(self, scored: Sequence[tuple[str, float]]) -> list[dict[str, Any]]:
        tags = self.tags.get([i for i, _ in scored])
        out = []
        for item_id, score in scored:
            row = self.res.rows.get(item_id)
            it = self.res.items[row] if row is not None else None
            out.append(
                {
                    "item_id": item_id,
                    "score": round(float(score), 6),
                    "title": it.title if it else None,
                    "category": it.category if it else None,
                    "brand": it.brand if it else None,
                    "tags": tags.get(item_id, []),
                }
            )
        return out

    def _in_category(self, item_id: str, category: str | None) -> bool:
        if not category:
            return True
        row = self.res.rows.get(item_id)
        return row is not None and category.lower() in self._categories[row]

    # -- endpoints -----------------------------------------------------------------------------
    def recommendations(self, user_id: str, k: int, category: str | None = None) -> dict[str, Any]:
        """Stored list (filtered by category) -> topped up / replaced by popular items."""
        now_ms = int(self.clock() * 1000)
        store_error = None
        try:
            stored = self.lists.get_recommendations(user_id)
        except StoreUnavailable as exc:
            stored, store_error = None, str(exc)
            log.warning("event=store_unavailable endpoint=recommendations error=%r", store_error)
        picked: list[tuple[str, float]] = []
        if stored is not None:
            picked = [(s.item_id, s.score) for s in stored.items if self._in_category(s.item_id, category)][:k]
        n_stored = len(picked)
        if len(picked) < k:
            have = {i for i, _ in picked}
            for rank, row in enumerate(self.res.popular):
                item_id = self.res.items[row].item_id
                if item_id not in have and self._in_category(item_id, category):
                    picked.append((item_id, 1.0 / (rank + 1)))
                    if len(picked) == k:
                        break
        source = "stored" if n_stored == len(picked) and n_stored else ("stored+popular" if n_stored else "popular")
        answer: dict[str, Any] = {
            "user_id": user_id,
            "source": source,
            "model_version": stored.model_version if stored is not None and n_stored else "popularity",
            "generated_at": stored.generated_at if stored is not None else None,
            "age_ms": now_ms - stored.generated_at if stored is not None else None,
            "newest_event_ts": stored.newest_event_ts if stored is not None else None,
            "category": category,
            "items": self._items(picked),
        }
        if store_error:
            answer["degraded"] = store_error
        return answer

    def similar(self, item_id: str, k: int) -> dict[str, Any]:
        row = self.res.rows.get(item_id)
        if row is None:
            raise NotFound(f"unknown item {item_id!r}")
        vectors = self.res.item_vectors
        basis = "model"
        if not np.any(vectors[row]):  # an item the bundle does not know: its text vector
            vectors, basis = self.res.index.text_vectors, "text"
        scores = vectors @ vectors[row]
        scores[row] = -np.inf
        n = min(k, len(scores) - 1)
        top = np.argpartition(-scores, n - 1)[:n] if n < len(scores) - 1 else np.flatnonzero(np.isfinite(scores))
        top = top[np.lexsort((top, -scores[top]))]
        return {
            "item_id": item_id,
            "basis": basis,
            "model_version": self.res.model_version,
            "items": self._items([(self.res.items[r].item_id, float(scores[r])) for r in top]),
        }

    def search(self, query: str, k: int, user_id: str | None = None) -> dict[str, Any]:
        qvec = self.res.encoder.encode([query])[0]
        affinity, note = self._list_affinity(user_id) if user_id else (None, None)
        personalized = affinity is not None
        mode: Mode = "personal" if personalized else "hybrid"
        ranked = self.res.index.rank(query, qvec, k, mode=mode, affinity=affinity)
        answer: dict[str, Any] = {
            "query": query,
            "user_id": user_id,
            "personalized": personalized,
            "mode": mode,
            "model_version": self.res.model_version,
            "items": self._items([(self.res.items[r].item_id, s) for r, s in ranked]),
        }
        if note:
            answer["degraded"] = note
        return answer

    def _list_affinity(self, user_id: str) -> tuple[np.ndarray | None, str | None]:
        """(affinity per catalog row, degradation note). The user's taste is read from their stored
        list, not their state (one key lookup): the user vector its scores were ranked by
        (`ServingResources.list_taste`). Only a list this bundle made carries it: no list, a
        popularity list, or a list from another model version (its scores are in another space)
        gives no affinity."""
        try:
            stored = self.lists.get_recommendations(user_id)
        except StoreUnavailable as exc:
            return None, f"not personalised: {exc}"
        if stored is None or stored.source == "popular" or stored.model_version != self.res.model_version:
            return None, None
        taste = self.res.list_taste(stored.items)
        return (None, None) if taste is None else (self.res.affinity(taste[None, :])[0], None)

    def ready(self) -> tuple[bool, str]:
        try:
            self.lists.get_recommendations("__readyz__")
        except StoreUnavailable as exc:
            return False, str(exc)
        return True, "ok"

"""The read side, without HTTP: stored lists with a fallback chain, similar items, personalised
hybrid search, item tags. The HTTP app (serving.app) is a thin shell over this.

It reads the derived lists and the catalog only, never user state (the pipeline's source of
truth): a read replica or a list-only keyspace is enough to serve, and reads cannot contend with
the worker's state writes."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ranker.search import Mode
from ranker.text_fusion import because
from schemas.errors import StoreUnavailable
from serving.live import LiveScraper
from serving.resources import ServingResources
from streams.stores.base import CatalogStore, RecommendationStore, StateStore

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


class _QueryVectors:
    """Text vectors of recent queries, least recently used out: shoppers' queries repeat heavily
    (the head of a shop's query log), and encoding one is most of a search's CPU (~2.5 ms of a
    3-4 ms search on the 2-core reference machine). `size` 0 turns it off."""

    def __init__(self, encode: Callable[[list[str]], np.ndarray], size: int) -> None:
        self.encode, self.size = encode, size
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, query: str) -> np.ndarray:
        if self.size <= 0:
            return self.encode([query])[0]
        with self._lock:
            vector = self._vectors.get(query)
            if vector is not None:
                self._vectors.move_to_end(query)
                self.hits += 1
                return vector
        vector = self.encode([query])[0]
        vector.flags.writeable = False  # shared between requests
        with self._lock:
            self.misses += 1
            self._vectors[query] = vector
            while len(self._vectors) > self.size:
                self._vectors.popitem(last=False)
        return vector


class ServingService:
    def __init__(
        self,
        resources: ServingResources,
        lists: RecommendationStore,
        catalog: CatalogStore,
        limits: Limits = Limits(),
        clock: Callable[[], float] = time.time,
        tag_ttl_s: float = 300.0,
        *,
        states: StateStore | None = None,
        live: LiveScraper | None = None,
        reports_dir: str | Path | None = None,
        query_cache: int = 10_000,
    ) -> None:
        """`lists`: the stored recommendation lists; `catalog`: item tags (often the same store).
        `query_cache`: how many recent queries' text vectors are kept (0: none).
        For the console only: `states` (a user's recent events, read-only; None: a list-only
        keyspace, the activity view then shows the list alone), `live` (the workers' metrics) and
        `reports_dir` (an evaluation report folder: `fusionrec evaluate --report DIR`)."""
        self.res = resources
        self.lists = lists
        self.states = states
        self.live = live or LiveScraper(())
        self.reports_dir = Path(reports_dir) if reports_dir is not None else None
        self.limits = limits
        self.clock = clock
        self.tags = _TagCache(catalog, tag_ttl_s, clock)
        self.tags.preload([it.item_id for it in resources.items])
        self._categories = [it.category.lower() for it in resources.items]
        self.query_vectors = _QueryVectors(resources.encoder.encode, query_cache)

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
        return self._recommendations(user_id, k, category)[0]

    def _recommendations(self, user_id: str, k: int, category: str | None = None) -> tuple[dict[str, Any], int]:
        """(the answer, how many of its items came from the stored list: the rest are popular fill)."""
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
        return answer, n_stored

    def similar(self, item_id: str, k: int) -> dict[str, Any]:
        row = self.res.rows.get(item_id)
        if row is None:
            raise NotFound(f"unknown item {item_id!r}")
        vectors = self.res.item_vectors
        basis = "model" if self.res.bundle is not None or self.res.text_model is not None else "text"
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

    def search(self, query: str, k: int, user_id: str | None = None, explain: bool = False) -> dict[str, Any]:
        """`explain`: each item also carries its BM25 score, dense cosine, hybrid and personal parts."""
        qvec = self.query_vectors.get(query)
        affinity, note = self._list_affinity(user_id) if user_id else (None, None)
        personalized = affinity is not None
        mode: Mode = "personal" if personalized else "hybrid"
        if explain:
            explained = self.res.index.rank_explained(query, qvec, k, affinity=affinity)
            items = self._items([(self.res.items[r].item_id, s) for r, s, _ in explained])
            for item, (_, _, parts) in zip(items, explained, strict=True):
                item["scores"] = parts
        else:
            ranked = self.res.index.rank(query, qvec, k, mode=mode, affinity=affinity)
            items = self._items([(self.res.items[r].item_id, s) for r, s in ranked])
        answer: dict[str, Any] = {
            "query": query,
            "user_id": user_id,
            "personalized": personalized,
            "mode": mode,
            "model_version": self.res.model_version,
            "items": items,
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

    # -- the console's reads ---------------------------------------------------------------------
    def item(self, item_id: str) -> dict[str, Any]:
        row = self.res.rows.get(item_id)
        if row is None:
            raise NotFound(f"unknown item {item_id!r}")
        it = self.res.items[row]
        return {
            "item_id": it.item_id,
            "title": it.title,
            "description": it.description,
            "category": it.category,
            "brand": it.brand,
            "tags": self.tags.get([item_id]).get(item_id, []),
        }

    def activity(self, user_id: str, k: int) -> dict[str, Any]:
        """The user's recent events (from their state, read-only) beside their list, and per listed
        item the history item it is closest to in the served model's item space ("because")."""
        state, available = None, self.states is not None
        if self.states is not None:
            try:
                state = self.states.get_states([user_id]).get(user_id)
            except StoreUnavailable as exc:
                log.warning("event=store_unavailable endpoint=activity error=%r", str(exc))
                available = False
        listing, n_stored = self._recommendations(user_id, k)
        events: list[dict[str, Any]] = []
        history: list[str] = []
        if state is not None:
            items, kinds, times = state.recent_items, state.recent_types, state.recent_ts
            offset = len(items) - len(times)  # states written before times were kept carry fewer
            for n in range(len(items) - 1, -1, -1):
                row = self.res.rows.get(items[n])
                events.append(
                    {
                        "item_id": items[n],
                        "title": self.res.items[row].title if row is not None else None,
                        "type": kinds[n],
                        "ts": times[n - offset] if n >= offset else None,
                    }
                )
            history = list(items)
        hist_rows = [r for i in history if (r := self.res.rows.get(i)) is not None]
        # only the model's own picks get a reason; popular fill is not "because" of anything
        listed_rows = [
            self.res.rows.get(it["item_id"]) if n < n_stored else None for n, it in enumerate(listing["items"])
        ]
        known = [r for r in listed_rows if r is not None]
        reasons = iter(because(known, hist_rows, self.res.item_vectors) if hist_rows else [])
        for item, row in zip(listing["items"], listed_rows, strict=True):
            near, sim = next(reasons) if row is not None and hist_rows else (-1, 0.0)
            item["because"] = (
                None
                if near < 0
                else {"item_id": self.res.items[near].item_id, "title": self.res.items[near].title, "similarity": sim}
            )
        return {
            "user_id": user_id,
            "state_available": available,
            "n_events": state.n_events if state is not None else None,
            "last_ts": state.last_ts if state is not None else None,
            "events": events,
            "queries": list(reversed(state.recent_queries)) if state is not None else [],
            "list": listing,
        }

    def model(self) -> dict[str, Any]:
        """What ranks and searches: the bundle's manifest (version, variant, validation metrics) or,
        without a bundle, the text encoder's; and the evaluation report's plots when configured."""
        bundle = self.res.bundle
        manifest: dict[str, Any]
        if bundle is not None:
            manifest = {k: v for k, v in bundle.manifest.items() if k != "files"}
            validation = manifest.get("validation") or manifest.get("metrics")
            variant = manifest.get("variant") or manifest.get("fusion")
        elif self.res.text_model is not None:
            tm = self.res.text_model
            manifest = {"alpha": tm.alpha, "recent": tm.recent, "decay": tm.decay, "items": len(tm.item_ids)}
            manifest["encoder"] = asdict(self.res.encoder.manifest)
            validation, variant = tm.validation, f"text-fusion alpha={tm.alpha}"
        else:
            manifest = {"encoder": asdict(self.res.encoder.manifest)}
            validation, variant = None, None
        kind = "bundle" if bundle is not None else ("text-fusion" if self.res.text_model is not None else "text")
        return {
            "model_version": self.res.model_version,
            "kind": kind,
            "variant": variant,
            "manifest": manifest,
            "validation": validation,
            "encoder": str(self.res.encoder.folder),
            "reports": [{"name": p.name, "url": f"/v1/model/reports/{p.name}"} for p in self.report_files()],
        }

    def report_files(self) -> list[Path]:
        if self.reports_dir is None or not self.reports_dir.is_dir():
            return []
        return sorted(p for p in self.reports_dir.iterdir() if p.suffix == ".png" and p.is_file())

    def report_file(self, name: str) -> Path:
        for p in self.report_files():
            if p.name == name:
                return p
        raise NotFound(f"no report plot {name!r}")

    def ready(self) -> tuple[bool, str]:
        try:
            self.lists.get_recommendations("__readyz__")
        except StoreUnavailable as exc:
            return False, str(exc)
        return True, "ok"

"""Online ranking with a model bundle: every touched user's state -> one batched ONNX user-encoder
run -> exact retrieval over the fused item vectors -> ranking policy; popular items for users the
model knows nothing about (cold start). No torch, and no dataset: the popular items are the
bundle's own (popularity.json, from its training events).

The fallback chain, one per user, first that applies (the list's `source` names it):
  1. personal  the user has at least one item the bundle knows: the user encoder over that history,
               and, when the bundle has one, the learned ranking stage (ranker.stage) over the
               candidates of every retriever. When the user's latest event is a search (after
               their last item event), the hybrid search results for that query re-ranked by the
               user's taste (`personal+search`, as /v1/search ranks for a known caller): what they
               just asked for, in the order they would like it; their next item event ends it;
  2. search    no known item but recent search queries: hybrid search (BM25 + the text encoder,
               ranker.search) for the latest queries, the latest weighted most; with
               `search_users="encoder"`, the queries fused like items and fed to the user encoder
               instead (the path before; measured beside it by bench/search_users.py);
  3. popular   otherwise (cold start): the bundle's most popular items, seen items left out,
               scored 1/rank.
"""

from __future__ import annotations

import atexit
import json
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from encoders.session import SessionConfig
from encoders.topk import OnnxExactRetriever
from ranker.bm25 import BM25Index
from ranker.bm25_cache import cached_bm25
from ranker.bundle import ModelBundle, fuse_items
from ranker.popularity import popular_rows
from ranker.ranking import RankingPolicy, first_unseen, rank_candidates, with_new_item_slots
from ranker.retrieval import EXACT_UP_TO, Retriever, make_retriever
from ranker.search import HybridIndex
from ranker.stage import RankingStage
from ranker.state import UserState
from schemas.events import EVENT_TYPE_INDEX
from schemas.items import Item
from shopdata.loader import category_labels

log = logging.getLogger("fusionrec.ranker")

__all__ = ["POPULAR_N", "SEARCH_USERS", "BundleRanker"]

#: popular items kept for cold starts (enough to fill k after leaving out what the user has seen)
POPULAR_N = 500

#: a batch's users are ranked in chunks of at most this many: the ranking stage's [users, catalogue]
#: and [users, candidates, d] arrays of 1,000 users at once left the cache (Scientific bundle, one
#: BLAS thread: 250-400 ms for 1,000 users in one go, 230-260 ms in chunks of 256 or 500)
RANK_CHUNK = 256
#: with `threads` > 1, a batch of at least twice this many users is split over the threads (smaller
#: chunks cost more in per-call overhead than a second thread gains)
PARALLEL_MIN_CHUNK = 64


def _chunks(n: int, threads: int) -> list[tuple[int, int]]:
    """[lo, hi) bounds of the contiguous, near-equal chunks `rank_many` ranks `n` users in: at most
    RANK_CHUNK users each, and at least `threads` chunks when each still has PARALLEL_MIN_CHUNK."""
    parts = max(-(-n // RANK_CHUNK), min(threads, n // PARALLEL_MIN_CHUNK), 1)
    step, extra = divmod(n, parts)
    bounds, lo = [], 0
    for i in range(parts):
        hi = lo + step + (i < extra)
        bounds.append((lo, hi))
        lo = hi
    return bounds


#: how long the process's exit waits for a search warm-up still running: a daemon thread still inside
#: ONNX Runtime when the interpreter finalizes takes the process down ("terminate called without an
#: active exception", exit 134), as a worker stopped in its first second after the join was
SEARCH_WARM_EXIT_WAIT_S = 30.0

#: how a search-only shopper is ranked (module doc, step 2)
SEARCH_USERS = ("hybrid", "encoder")
#: a search-only shopper's last queries that count, and each older one's weight
SEARCH_QUERIES = 3
SEARCH_DECAY = 0.5


def _primary(category: str) -> str:
    """An item's primary category label, as training indexes it (ranker.data.build_catalog)."""
    labels = category_labels(category)
    return labels[0] if labels else ""


def _rounded(scores: np.ndarray) -> np.ndarray:
    """Scores to 6 decimals in one vectorised step (float64, so each prints as its short decimal)."""
    return np.round(scores.astype(np.float64), 6)


class BundleRanker:
    """Ranks users with a ModelBundle; see the module doc for the personal -> search -> popular chain."""

    def __init__(
        self,
        bundle: ModelBundle,
        policy: RankingPolicy = RankingPolicy(),
        popular: Sequence[str] | None = None,
        retrieval: SessionConfig = SessionConfig(provider="cpu", allow_spinning=False),
        ranking_stage: bool = True,
        search_users: str = "hybrid",
        threads: int = 1,
    ) -> None:
        """`popular` overrides the bundle's popularity order (item ids, most popular first); by
        default the bundle's own (`bundle.popular`), then the items without events in catalog order:
        POPULAR_N in all. `ranking_stage=False` ranks by the user encoder alone even when the
        bundle has a ranking stage. `search_users`: "hybrid" or "encoder" (see the module doc).
        `threads` > 1: a large batch's chunks are ranked on that many threads at once (`rank_many`)."""
        if search_users not in SEARCH_USERS:
            raise ValueError(f"search_users must be one of {SEARCH_USERS}, not {search_users!r}")
        if threads < 1:
            raise ValueError(f"threads must be at least 1, not {threads}")
        self.threads = threads
        self._pool: ThreadPoolExecutor | None = None
        self.search_users = search_users
        self._hybrid: HybridIndex | None = None
        self._live_texts: dict[str, str] = {}  # texts of items that came on the items topic
        self.bundle = bundle
        self.policy = policy
        self.rows = {item_id: r for r, item_id in enumerate(bundle.item_ids)}
        self.retrieval = retrieval
        self.retriever = self._retriever(bundle.item_vectors)
        order = bundle.popular if popular is None else popular
        self.popular = popular_rows(order, self.rows, len(self.rows), POPULAR_N)
        self._fusion: tuple[Any, Any] | None = None
        # the search path's lazy parts (text encoder, item fusion, hybrid index) and the live items that
        # change them: built by the pipeline thread or by the warm-up's background thread, one at a time
        self._lazy = threading.RLock()
        self.search_warming: threading.Thread | None = None
        self._ids: np.ndarray | None = None
        names = bundle.folder / "brand_names.json"
        self.brand_names: list[str] = json.loads(names.read_text()) if names.is_file() else [""]
        self.stage: RankingStage | None = bundle.ranking_stage() if ranking_stage else None
        #: set per batch by a worker whose batch is already late (streams.batch_runner.StageShedding):
        #: rank that batch by the sequential model alone
        self.shed_stage = False
        #: seconds per user that the warm-up's largest batch took to rank with the stage: what
        #: StageShedding projects a batch's cost with until a real batch ranked with the stage teaches it
        self.warm_stage_per_user_s: float | None = None

    @property
    def version(self) -> str:
        return self.bundle.version

    def rank(self, state: UserState, k: int) -> tuple[list[tuple[str, float]], str]:
        return self.rank_many([state], k)[0]

    def rank_many(self, states: Sequence[UserState], k: int) -> list[tuple[list[tuple[str, float]], str]]:
        """Each state's top k and its source, in order. A batch is ranked in chunks (`_chunks`); with
        `threads` > 1 the chunks run on that many threads at once: the encoder and retrieval sessions,
        the matrix products and the compiled trees run outside the interpreter lock, so a second
        thread nearly doubles a large batch's speed where a core is free (1,000 users of the Scientific
        bundle, one BLAS thread each: 145-160 ms on two threads against 230-260 ms on one). Users are
        ranked independently of each other, so the split changes no list beyond float rounding."""
        bounds = _chunks(len(states), self.threads)
        if len(bounds) == 1:
            return self._rank_chunk(states, k)
        if self.threads == 1:
            return [r for lo, hi in bounds for r in self._rank_chunk(states[lo:hi], k)]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="rank")
        parts = [self._pool.submit(self._rank_chunk, states[lo:hi], k) for lo, hi in bounds]
        return [r for part in parts for r in part.result()]

    def _rank_chunk(self, states: Sequence[UserState], k: int) -> list[tuple[list[tuple[str, float]], str]]:
        out: list[tuple[list[tuple[str, float]], str] | None] = [None] * len(states)
        known: list[int] = []
        searched: list[int] = []
        histories: list[list[int]] = []
        types: list[list[int]] = []
        for n, state in enumerate(states):
            pairs = [
                (self.rows[i], EVENT_TYPE_INDEX.get(t, 1))
                for i, t in zip(state.recent_items, state.recent_types, strict=True)
                if i in self.rows
            ]
            if pairs:
                known.append(n)
                histories.append([p[0] for p in pairs])
                types.append([p[1] for p in pairs])
            elif state.recent_queries and self._can_fuse():
                searched.append(n)
            else:
                out[n] = (self._popular(state, k), "popular")
        if searched and self.search_users == "hybrid":
            for n in searched:
                out[n] = (self._search_list(states[n].recent_queries, k), "search")
        elif searched:
            # no item yet, only searches: the queries, fused like items with that text, are the history
            seqs = [self.query_vectors(list(states[n].recent_queries)) for n in searched]
            trained_type = EVENT_TYPE_INDEX["purchase"]
            vectors = self.bundle.encoder.encode(seqs, [[trained_type] * len(q) for q in seqs])
            rows, scores = self.retriever.search(vectors, k + self._slack())
            for n, ranked in zip(searched, self._select(rows, _rounded(scores), k, None), strict=True):
                out[n] = (ranked, "search")
        if known:
            vectors = self.bundle.user_vectors(histories, types)
            # a shopper whose latest event is a search gets the search list: their personal list (the
            # retrieval and the ranking stage, the costly part) is not computed only to be discarded
            searching = self._blends()
            searched_now = [j for j, n in enumerate(known) if searching and self._just_searched(states[n])]
            for j in searched_now:
                n = known[j]
                query = states[n].recent_queries[-1]
                out[n] = (self._searched_list(query, vectors[j], histories[j], k), "personal+search")
            taken = set(searched_now)
            personal = [j for j in range(len(known)) if j not in taken]
            if personal:
                if taken:
                    vectors = vectors[personal]
                    histories = [histories[j] for j in personal]
                    types = [types[j] for j in personal]
                for j, ranked in zip(personal, self._personal(vectors, histories, types, k), strict=True):
                    out[known[j]] = (ranked, "personal")
        return [o for o in out if o is not None]

    def _personal(
        self, vectors: np.ndarray, histories: list[list[int]], types: list[list[int]], k: int
    ) -> list[list[tuple[str, float]]]:
        """Personal lists: the sequential model's retrieval, re-ranked by the stage (unless shed)."""
        longest = max(len(h) for h in histories) if self.policy.exclude_seen else 0
        if self.stage is not None and not self.shed_stage:
            want = max(self.stage.config.seq_top, k) + longest + self._slack()
            rows, _ = self.retriever.search(vectors, want)
            b = self.bundle
            p = self.policy
            rows, scores, new = self.stage.rerank_new(
                vectors, b.item_vectors, b.item_categories, histories, types, rows, p.new_share, len(p.new_slots(k))
            )
            if new.any():  # new arrivals get their slots (RankingPolicy.new_items_*) after the seen are out
                seen = histories if p.exclude_seen else None
                rows, scores = with_new_item_slots(rows, scores, new, k, p.new_items_after, p.new_items_every, seen)
                return self._select(rows, _rounded(scores), k, None)  # the seen are out already (-inf)
        else:
            rows, scores = self.retriever.search(vectors, k + longest + self._slack())
        return self._select(rows, _rounded(scores), k, histories)

    def _blends(self) -> bool:
        return self.search_users == "hybrid" and self._can_fuse()

    @staticmethod
    def _just_searched(state: UserState) -> bool:
        """The user's latest event is a search: its time is after their last item event's."""
        return bool(state.recent_queries) and bool(state.recent_ts) and state.last_ts > state.recent_ts[-1]

    def _searched_list(
        self, query: str, user_vector: np.ndarray, history: list[int], k: int
    ) -> list[tuple[str, float]]:
        """A shopper with a history whose latest event is a search: the hybrid search results for that
        query re-ranked by the user's taste (ranker.search, mode "personal": BM25 + dense text score
        plus SearchWeights.personal x their z-scored affinity, the user encoder's score of each
        candidate), as /v1/search ranks for a known caller; seen items out when the policy says so.
        What they asked for, in the order they would like it; their next item event ends it."""
        index = self._hybrid_index()
        encoder, _ = self._item_fusion()
        n = len(index.item_ids)
        scored = self.bundle.item_vectors[:n] @ user_vector
        affinity = np.full(n, float(scored.min()) if len(scored) else 0.0, dtype=np.float32)
        affinity[: len(scored)] = scored
        seen = set(history) if self.policy.exclude_seen else set()
        found = index.rank(query, encoder.encode([query])[0], k + len(seen), mode="personal", affinity=affinity)
        picks = [(r, s) for r, s in found if r not in seen][:k]
        return [(self.bundle.item_ids[r], round(s, 6)) for r, s in picks]

    def warm_up(self, batch_sizes: Sequence[int] = (1, 16, 128, 512), k: int = 20, search: str = "background") -> float:
        """Runs every ONNX session the first real batches need (user encoder, retrieval, and the text
        encoder and item fusion behind the search path) on synthetic users with real shapes: histories
        of every length up to the encoder's window, in the batch sizes a worker sees. Nothing is
        stored or changed; a cold worker's first batches took 0.3-1 s otherwise. Returns seconds.

        `search`: "background" warms the search path (the text encoder's session, item fusion, the
        hybrid index: about 0.35 s here) in a thread (`search_warming`), started first so that it
        overlaps the sessions' runs and the worker's wait for its store, and returns without waiting
        for it; only a search event or a live item needs it, and one that comes first waits for it.
        "wait" warms it here; "off" leaves it to the first use."""
        if search not in ("background", "wait", "off"):
            raise ValueError(f"search must be 'background', 'wait' or 'off', not {search!r}")
        started = time.perf_counter()
        if not self.bundle.item_ids:
            return 0.0
        searching = search != "off" and self._can_fuse()
        if searching and search == "background":  # first: it overlaps the sessions' runs below
            self.warm_search_in_background(k)
        window = max(int(getattr(self.bundle.encoder, "max_length", 50)), 1)
        ids = self.bundle.item_ids
        types = list(EVENT_TYPE_INDEX)
        for size in batch_sizes:
            states = []
            for n in range(size):
                length = n % window + 1
                items = tuple(ids[(n * 7919 + j) % len(ids)] for j in range(length))
                kinds = tuple(types[j % len(types)] for j in range(length))
                states.append(UserState(f"__warm_up__{n}", recent_items=items, recent_types=kinds))
            began = time.perf_counter()
            self.rank_many(states, k)
            if size == max(batch_sizes) and size > 1 and self.stage is not None and not self.shed_stage:
                self.warm_stage_per_user_s = (time.perf_counter() - began) / size
        if searching and search == "wait":
            self._warm_search(k)
        return time.perf_counter() - started

    def warm_search_in_background(self, k: int = 20) -> None:
        """Starts the search path's warm-up (`_warm_search`) in a daemon thread, once; a no-op when the
        bundle cannot fuse items or it has started already. A worker calls it once it has caught up
        with its backlog (streams.batch_runner), where it no longer takes the interpreter from the
        join and the backlog's batches. The process's exit waits for it (`SEARCH_WARM_EXIT_WAIT_S`)."""
        if self.search_warming is not None or not self.bundle.item_ids or not self._can_fuse():
            return
        self.search_warming = threading.Thread(target=self._warm_search, args=(k,), name="warm_search", daemon=True)
        self.search_warming.start()
        atexit.register(self.search_warming.join, SEARCH_WARM_EXIT_WAIT_S)

    def _warm_search(self, k: int) -> None:
        """The search path on synthetic search-only users (one to four queries); what it builds is kept.
        A failure is logged, not raised: the first real search builds it again and fails there."""
        try:
            with self._lazy:  # built before a search or a live item on the pipeline thread can ask
                self._item_fusion()
                self._hybrid_index()
            for n in range(1, 5):
                self._search_list(("warm up query",) * n, k)
        except Exception as exc:
            log.warning("warm_up_search_failed error=%s", exc)
            return
        log.info("warm_up_search_done")

    def _select(
        self, rows: np.ndarray, scores: np.ndarray, k: int, histories: list[list[int]] | None
    ) -> list[list[tuple[str, float]]]:
        """The ranking policy over retrieved candidates: vectorised for the default policy."""
        seen = histories if self.policy.exclude_seen else None
        if self._plain_policy():
            ids = self._id_array()
            return [list(zip(ids[r].tolist(), s.tolist(), strict=True)) for r, s in first_unseen(rows, scores, k, seen)]
        ranked = [
            rank_candidates(rows[j], scores[j], k, self.policy, seen[j] if seen else [], self.bundle.item_categories)
            for j in range(len(rows))
        ]
        return [[(self.bundle.item_ids[r], s) for r, s in picks] for picks in ranked]

    def _plain_policy(self) -> bool:
        """Only seen items are filtered: k + len(history) candidates always hold the top k."""
        p = self.policy
        return p.categories is None and not p.unavailable and p.max_per_category is None

    def _slack(self) -> int:
        """Extra candidates for business filters (categories, availability, diversity) to drop."""
        return 0 if self._plain_policy() else 32

    def _id_array(self) -> np.ndarray:
        """Item ids as a numpy object array (fancy-indexed per batch), rebuilt when items are added."""
        if self._ids is None or len(self._ids) != len(self.bundle.item_ids):
            self._ids = np.array(self.bundle.item_ids, dtype=object)
        return self._ids

    def add_items(self, items: Sequence[Item]) -> int:
        """Encode new or changed items (ONNX text encoder + item fusion) into the live index.

        A changed item keeps its row (and learned ID embedding). A new item has no learned ID
        embedding. A model trained with item dropout (ranker.model) encodes it as it learned new
        items: text, category and brand, no ID embedding, popularity bucket 0. An older model never
        learned that path, so there the item borrows the ID embedding of its nearest catalog item by
        text (the collaborative signal of its closest text twin)."""
        if not items:
            return 0
        with self._lazy:  # not while the warm-up's thread builds the search index from the catalog
            return self._add_items(items)

    def _add_items(self, items: Sequence[Item]) -> int:
        encoder, session = self._item_fusion()
        cats = {n: i for i, n in enumerate(self.bundle.category_names)}
        brands = {n: i for i, n in enumerate(self.brand_names)}
        text = encoder.encode([it.text() for it in items])
        existing = [self.rows.get(it.item_id, -1) for it in items]
        id_rows = np.array([r + 1 if r >= 0 else 0 for r in existing], dtype=np.int64)
        fresh = [n for n, r in enumerate(existing) if r < 0]
        known_text = self._known_text()
        if fresh and known_text is not None and self._borrows_twin():
            id_rows[fresh] = np.argmax(text[fresh] @ known_text.T, axis=1) + 1
        feed = {
            "text_vectors": text.astype(np.float32),
            "item_rows": id_rows,
            "categories": np.array([cats.get(_primary(it.category), 0) for it in items], dtype=np.int64),
            "brands": np.array([brands.get(it.brand, 0) for it in items], dtype=np.int64),
            "pop_buckets": np.zeros(len(items), dtype=np.int64),
        }
        vectors = fuse_items(session, feed)
        b = self.bundle
        new_rows = []
        for it, row, vec, cat in zip(items, existing, vectors, feed["categories"], strict=True):
            if row >= 0:
                b.item_vectors[row] = vec
                b.item_categories[row] = cat
            else:
                new_rows.append((it.item_id, vec, cat))
        self._live_texts.update({it.item_id: it.text() for it in items})
        self._hybrid = None  # search-only shoppers' index: rebuilt with these texts on next use
        if self.stage is not None:  # the ranking stage's text and brand features follow the catalog
            changed = [n for n, r in enumerate(existing) if r >= 0]
            if changed:
                self.stage.set_rows([existing[n] for n in changed], text[changed], feed["brands"][changed])
            if fresh:
                self.stage.add_rows(text[fresh], feed["brands"][fresh])
        if new_rows:
            b.item_vectors = np.vstack([b.item_vectors, np.stack([v for _, v, _ in new_rows])])
            b.item_categories = np.concatenate([b.item_categories, np.array([c for _, _, c in new_rows])])
            for item_id, _, _ in new_rows:
                self.rows[item_id] = len(b.item_ids)
                b.item_ids.append(item_id)
        self.retriever = self._retriever(b.item_vectors)
        return len(items)

    def _retriever(self, vectors: np.ndarray) -> Retriever:
        """Exact retrieval on ONNX Runtime (Gemm + TopK); HNSW beyond `make_retriever`'s exact limit."""
        if len(vectors) > EXACT_UP_TO:
            return make_retriever(vectors)
        return OnnxExactRetriever(vectors, self.retrieval)

    def _borrows_twin(self) -> bool:
        """True for a model trained without item dropout: its new-item path (no ID embedding) is untrained."""
        return float(self.bundle.manifest.get("model", {}).get("item_dropout", 0.0)) <= 0.0

    def _can_fuse(self) -> bool:
        return (self.bundle.folder / "item_fusion.onnx").is_file() and (self.bundle.folder / "encoder").is_dir()

    def query_vectors(self, queries: Sequence[str]) -> np.ndarray:
        """Search queries in the fused item space: each query is fused as a new item with that text
        (no category or brand, lowest popularity; the ID embedding as add_items gives a new item)."""
        encoder, session = self._item_fusion()
        text = encoder.encode(list(queries)).astype(np.float32)
        known_text = self._known_text()
        id_rows = (
            np.argmax(text @ known_text.T, axis=1).astype(np.int64) + 1
            if known_text is not None and self._borrows_twin()
            else np.zeros(len(text), np.int64)
        )
        zeros = np.zeros(len(text), dtype=np.int64)
        feed = {"text_vectors": text, "item_rows": id_rows, "categories": zeros, "brands": zeros, "pop_buckets": zeros}
        return fuse_items(session, feed)

    def _search_list(self, queries: Sequence[str], k: int) -> list[tuple[str, float]]:
        """Hybrid search for a shopper known only by their searches: each of the last
        SEARCH_QUERIES queries ranked by BM25 + dense text similarity (ranker.search, z-scored
        over its candidates), summed with weight SEARCH_DECAY per step back; top k."""
        index = self._hybrid_index()
        encoder, _ = self._item_fusion()
        recent = list(queries)[-SEARCH_QUERIES:]
        vectors = encoder.encode(recent)
        total: dict[int, float] = {}
        for age, (query, vector) in enumerate(zip(reversed(recent), vectors[::-1], strict=True)):
            c = index.candidates(query, vector)
            for row, score in zip(c.rows.tolist(), c.combine(index.weights).tolist(), strict=True):
                total[row] = total.get(row, 0.0) + SEARCH_DECAY**age * score
        best = sorted(total.items(), key=lambda rs: (-rs[1], rs[0]))[:k]
        return [(self.bundle.item_ids[r], round(s, 6)) for r, s in best]

    def _item_fusion(self) -> tuple[Any, Any]:
        """(text encoder, item-fusion session) of the bundle, loaded on first use."""
        with self._lazy:
            if self._fusion is None:
                self._fusion = self.bundle.item_fusion()
            return self._fusion

    def _hybrid_index(self) -> HybridIndex:
        """BM25 + dense index over the bundle's items (rebuilt when live items were added)."""
        with self._lazy:
            n = len(self.bundle.item_ids)
            if self._hybrid is None or len(self._hybrid.item_ids) != n:
                vectors = self._text_rows(n)
                files = getattr(self.bundle, "manifest", {}).get("files", {})
                digests = [files.get("items.jsonl"), files.get("item_ids.json")]
                lexical: list[str] | BM25Index
                if self._live_texts or not all(digests):  # live items' texts are in no file: built here
                    lexical = self._catalog_texts()
                else:  # the bundle's catalog as it was trained: kept between starts (its 0.1 s+ of Python)
                    lexical = cached_bm25(f"{digests[0]}|{digests[1]}|{n}", self._catalog_texts)
                self._hybrid = HybridIndex(list(self.bundle.item_ids), lexical, vectors)
            return self._hybrid

    def _catalog_texts(self) -> list[str]:
        """Every row's text: the bundle's items, and the live items' (empty for a row without one)."""
        texts_of = {it.item_id: it.text() for it in self.bundle.items()} | self._live_texts
        return [texts_of.get(i, "") for i in self.bundle.item_ids]

    def _text_rows(self, n: int) -> np.ndarray:
        """Text vectors for every row: the bundle's, and live items' from the ranking stage (or zeros)."""
        if self.stage is not None and self.stage.n_rows >= n:
            return self.stage.text[:n]
        known = self._known_text()
        dim = known.shape[1] if known is not None else 1
        out = np.zeros((n, dim), dtype=np.float32)
        if known is not None:
            out[: len(known)] = known[:n]
        return out

    def _known_text(self) -> np.ndarray | None:
        """Text vectors of the items the model was trained on (rows = ID embedding rows - 1)."""
        if not hasattr(self, "_text_cache"):
            path = self.bundle.folder / "text_vectors.npy"
            self._text_cache = np.load(path).astype(np.float32) if path.is_file() else None
        return self._text_cache

    def _popular(self, state: UserState, k: int) -> list[tuple[str, float]]:
        seen = {self.rows[i] for i in state.recent_items if i in self.rows}
        picks = [r for r in self.popular if r not in seen][:k]
        return [(self.bundle.item_ids[r], round(1.0 / (rank + 1), 6)) for rank, r in enumerate(picks)]

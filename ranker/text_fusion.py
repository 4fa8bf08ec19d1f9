"""The text-fused model that needs no training run: the brief's fusion with fitted, not learned, parts.

Item side: z_j is the item's BERT text vector (ONNX encoder), G(j) a behaviour embedding from
item co-occurrence (truncated SVD of the positive PMI matrix of items seen near each other in
histories). User side: z_u is the recency-weighted mean of the text vectors of the user's recent
items (or of their recent queries when they have no item yet), F(x_u) the same mean over
behaviour embeddings. The score of item j is the fused inner product

    s_j = α·cos(z_u, z_j) + (1−α)·cos(F_u, G_j)

i.e. f_u = α·z_u ⊕ (1−α)·F_u against g_j = z_j ⊕ G_j (block concatenation, so each side keeps
its own geometry). α is chosen by validation (hold out each user's last item, pick the α with
the best Recall@10), never guessed. An item no history has touched (a new item) has G_j = 0 and
is ranked by its text alone: the cold-start path.

Pure numpy + scipy (no torch; scipy for fitting only): `fusionrec demo` runs it from the runtime install.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ranker.baselines import recency_weights
from ranker.popularity import popular_items
from ranker.state import UserState
from schemas.errors import ConfigError

__all__ = ["TextFusionModel", "because", "fit_text_fusion"]

QueryEncoder = Callable[[Sequence[str]], np.ndarray]
ALPHAS = tuple(round(a * 0.1, 1) for a in range(11))


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.where(norms > 0, x / np.maximum(norms, 1e-12), 0.0).astype(np.float32)


def behaviour_embeddings(
    sequences: Sequence[Sequence[int]], n_items: int, dim: int = 64, window: int = 3
) -> np.ndarray:
    """[n_items, dim] unit rows (zero for items no sequence holds twice-near anything): the SVD of
    the positive PMI of within-`window` co-occurrence, weighted 1/distance."""
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    for seq in sequences:
        for i, a in enumerate(seq):
            for j in range(i + 1, min(len(seq), i + window + 1)):
                b = seq[j]
                if a != b:
                    w = 1.0 / (j - i)
                    rows += [a, b]
                    cols += [b, a]
                    vals += [w, w]
    out = np.zeros((n_items, dim), np.float32)
    if not vals or n_items < 3:
        return out
    from scipy.sparse import coo_matrix  # training only: scipy.sparse was 0.1 s of every worker's start

    counts = coo_matrix((vals, (rows, cols)), shape=(n_items, n_items)).tocsr()
    counts.sum_duplicates()
    total = counts.sum()
    marg = np.asarray(counts.sum(axis=1)).ravel()
    coo = counts.tocoo()
    pmi = np.log(coo.data * total / (marg[coo.row] * marg[coo.col]))
    keep = pmi > 0
    ppmi = coo_matrix((pmi[keep], (coo.row[keep], coo.col[keep])), shape=(n_items, n_items)).tocsr()
    k = min(dim, n_items - 2, max(ppmi.nnz - 1, 1))
    if ppmi.nnz == 0 or k < 1:
        return out
    from scipy.sparse.linalg import svds

    u, s, vt = svds(ppmi.astype(np.float64), k=k, random_state=0)
    # context + word vectors (u + v): for the symmetric, hollow PPMI of pairs, u alone can put two
    # items that always co-occur at right angles (U = I, V = swap is a valid SVD)
    emb = (u + vt.T) * np.sqrt(s)[None, :]
    out[:, :k] = _unit_rows(emb.astype(np.float32))
    return out


def because(
    listed: Sequence[int],
    history: Sequence[int],
    vectors: np.ndarray,
    alpha: float | None = None,
    behaviour: np.ndarray | None = None,
) -> list[tuple[int, float]]:
    """For each listed row, the history row it is closest to and the similarity: the one-line
    "because you viewed …". With `behaviour` (and α), similarity is the model's fused one."""
    if not history or not listed:
        return [(-1, 0.0) for _ in listed]
    h = np.asarray(history, dtype=np.int64)
    lst = np.asarray(listed, dtype=np.int64)
    sims = vectors[lst] @ vectors[h].T
    if behaviour is not None and alpha is not None:
        sims = alpha * sims + (1 - alpha) * (behaviour[lst] @ behaviour[h].T)
    best = sims.argmax(axis=1)
    return [(int(h[b]), round(float(sims[n, b]), 4)) for n, b in enumerate(best)]


@dataclass
class TextFusionModel:
    """Online ranking over fused text + behaviour vectors; implements the pipeline's Ranker port."""

    item_ids: list[str]
    text: np.ndarray  # [n, d_text] unit rows
    behaviour: np.ndarray  # [n, d_beh] unit rows or zeros
    alpha: float
    popular: tuple[tuple[str, float], ...]
    version_tag: str
    query_encoder: QueryEncoder | None = None
    recent: int = 20
    decay: float = 0.8
    validation: dict[str, float] = field(default_factory=dict)
    rows: dict[str, int] = field(init=False)
    _cold: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.rows = {i: r for r, i in enumerate(self.item_ids)}
        self._cold = np.asarray(~self.behaviour.any(axis=1))

    @property
    def version(self) -> str:
        return self.version_tag

    def user_vectors(self, histories: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        """(z_u, F_u) per history of catalog rows (oldest first), unit rows or zeros."""
        z = np.zeros((len(histories), self.text.shape[1]), np.float32)
        f = np.zeros((len(histories), self.behaviour.shape[1]), np.float32)
        for n, hist in enumerate(histories):
            hist = list(hist)[-self.recent :]
            if hist:
                w = recency_weights(len(hist), self.decay).astype(np.float32)  # rows are unit-normed after
                z[n] = w @ self.text[hist]
                f[n] = w @ self.behaviour[hist]
        return _unit_rows(z), _unit_rows(f)

    def scores(self, histories: Sequence[Sequence[int]], alpha: float | None = None) -> np.ndarray:
        """α·text + (1−α)·behaviour; an item without behaviour (new, never co-viewed) is scored by
        its text in both parts, so it competes on its text instead of sinking to the bottom."""
        a = self.alpha if alpha is None else alpha
        z, f = self.user_vectors(histories)
        text = z @ self.text.T
        beh = f @ self.behaviour.T
        beh[:, self._cold] = text[:, self._cold]
        return np.asarray(a * text + (1 - a) * beh, dtype=np.float32)

    def rank_many(self, states: Sequence[UserState], k: int) -> list[tuple[list[tuple[str, float]], str]]:
        histories = [[r for i in s.recent_items if (r := self.rows.get(i)) is not None] for s in states]
        scores = self.scores(histories)
        searchers = [n for n, h in enumerate(histories) if not h and states[n].recent_queries]
        if searchers and self.query_encoder is not None:
            # a shopper whose only signal is a search: rank by the query's text vector
            q = _unit_rows(np.asarray(self.query_encoder([states[n].recent_queries[-1] for n in searchers])))
            scores[searchers] = q @ self.text.T
        out: list[tuple[list[tuple[str, float]], str]] = []
        for n, hist in enumerate(histories):
            if not hist and n not in searchers:
                out.append((self._popular(k), "popular"))
                continue
            s = scores[n].copy()
            s[hist] = -np.inf
            top = np.argpartition(-s, min(k, len(s) - 1))[:k] if k < len(s) else np.arange(len(s))
            top = top[np.isfinite(s[top])]
            top = top[np.lexsort((top, -s[top]))]
            source = "search" if not hist else "personal"
            out.append(([(self.item_ids[r], round(float(s[r]), 6)) for r in top], source))
        return out

    def rank(self, state: UserState, k: int) -> tuple[list[tuple[str, float]], str]:
        return self.rank_many([state], k)[0]

    def _popular(self, k: int) -> list[tuple[str, float]]:
        return [(i, round(float(p), 6)) for i, p in self.popular[:k]]

    def fused_item_vectors(self) -> np.ndarray:
        """[n, d_text + d_beh] rows [√α·z_j, √(1−α)·G_j]: their dot products are the model's fused
        item similarity α·z·z' + (1−α)·G·G' (what `explain` uses), for serving similar items."""
        a = float(self.alpha)
        return np.hstack([np.sqrt(a) * self.text, np.sqrt(1 - a) * self.behaviour]).astype(np.float32)

    def save(self, folder: str | Path) -> Path:
        """item_ids.json, text.npy, behaviour.npy and model.json (α, version, popularity, validation):
        what `fusionrec serve --text-model` loads to serve the demo's model beside its lists."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        (out / "item_ids.json").write_text(json.dumps(self.item_ids))
        np.save(out / "text.npy", self.text)
        np.save(out / "behaviour.npy", self.behaviour)
        meta = {
            "format": "fusionrec-text-fusion/1",
            "version": self.version_tag,
            "alpha": self.alpha,
            "recent": self.recent,
            "decay": self.decay,
            "popular": [list(p) for p in self.popular],
            "validation": self.validation,
        }
        (out / "model.json").write_text(json.dumps(meta, indent=2))
        return out

    @classmethod
    def load(cls, folder: str | Path, query_encoder: QueryEncoder | None = None) -> TextFusionModel:
        root = Path(folder)
        try:
            meta = json.loads((root / "model.json").read_text())
            if meta.get("format") != "fusionrec-text-fusion/1":
                raise ValueError(f"format {meta.get('format')!r}")
            ids = json.loads((root / "item_ids.json").read_text())
            text, behaviour = np.load(root / "text.npy"), np.load(root / "behaviour.npy")
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(f"{root}: not a text-fusion model saved by `fusionrec demo` ({exc})") from exc
        if not (len(ids) == len(text) == len(behaviour)):
            raise ConfigError(f"{root}: {len(ids)} ids, {len(text)} text and {len(behaviour)} behaviour rows")
        return cls(
            ids,
            text,
            behaviour,
            float(meta["alpha"]),
            tuple((str(i), float(p)) for i, p in meta["popular"]),
            str(meta["version"]),
            query_encoder=query_encoder,
            recent=int(meta["recent"]),
            decay=float(meta["decay"]),
            validation=dict(meta["validation"]),
        )

    def explain(self, listed: Sequence[str], history: Sequence[str]) -> list[tuple[str | None, float]]:
        """Per listed item id, the history item it is closest to in the model's fused space."""
        lr = [self.rows[i] for i in listed if i in self.rows]
        hr = [self.rows[i] for i in history if i in self.rows]
        pairs = because(lr, hr, self.text, self.alpha, self.behaviour)
        by_item = {self.item_ids[r]: p for r, p in zip(lr, pairs, strict=True)}
        return [
            (self.item_ids[p[0]], p[1]) if (p := by_item.get(i)) is not None and p[0] >= 0 else (None, 0.0)
            for i in listed
        ]


def _recall_by_alpha(
    model: TextFusionModel, histories: list[list[int]], targets: list[int], k: int = 10, chunk: int = 2048
) -> dict[float, float]:
    """Recall@k of the held-out targets (history removed) for every α in ALPHAS: the text and
    behaviour scores are computed once per chunk and blended per α."""
    hits = dict.fromkeys(ALPHAS, 0)
    for lo in range(0, len(histories), chunk):
        hist, tgt = histories[lo : lo + chunk], np.asarray(targets[lo : lo + chunk])
        text = model.scores(hist, 1.0)
        beh = model.scores(hist, 0.0)
        mask = np.zeros_like(text, dtype=bool)
        for n, h in enumerate(hist):
            mask[n, h] = True
        rows = np.arange(len(hist))
        for a in ALPHAS:
            s = a * text + (1 - a) * beh
            s[mask] = -np.inf
            t = s[rows, tgt]
            hits[a] += int((np.isfinite(t) & ((s > t[:, None]).sum(axis=1) < k)).sum())
    return {a: h / max(len(histories), 1) for a, h in hits.items()}


def fit_text_fusion(
    sequences: Sequence[Sequence[str]],
    item_ids: Sequence[str],
    text_vectors: np.ndarray,
    *,
    text_digest: str = "",
    query_encoder: QueryEncoder | None = None,
    dim: int = 64,
    max_validation_users: int = 5000,
    cases_per_user: int = 3,
    seed: int = 0,
) -> TextFusionModel:
    """Fit G on the histories, choose α on each user's held-out last item, refit G on everything."""
    ids = list(item_ids)
    rows = {i: r for r, i in enumerate(ids)}
    seqs = [[rows[i] for i in s if i in rows] for s in sequences]
    text = _unit_rows(np.asarray(text_vectors, np.float32))
    counts: dict[str, int] = {}
    for s in sequences:
        for i in s:
            counts[i] = counts.get(i, 0) + 1
    order = popular_items(counts, 200)
    top = counts[order[0]] if order else 1
    popular = tuple((i, counts[i] / top) for i in order)
    # validation cases per user: the last `cases_per_user` items they reached for the first time,
    # each with the history before it; behaviour is fitted on what comes before the earliest case
    cases: dict[int, list[int]] = {}
    for n, seq in enumerate(seqs):
        firsts = sorted({r: p for p, r in reversed(list(enumerate(seq)))}.values())
        if len(firsts) >= 2:
            cases[n] = firsts[1:][-cases_per_user:]
    users = sorted(cases)
    rng = np.random.default_rng(seed)
    if len(users) > max_validation_users:
        users = sorted(rng.choice(users, max_validation_users, replace=False).tolist())
    chosen = set(users)
    train = [seq[: cases[n][0]] if n in chosen else seq for n, seq in enumerate(seqs)]
    probe = TextFusionModel(ids, text, behaviour_embeddings(train, len(ids), dim), 0.5, popular, "probe")
    validation: dict[str, float] = {}
    alpha = 0.5
    if users:
        hist = [seqs[n][:p] for n in users for p in cases[n]]
        targets = [seqs[n][p] for n in users for p in cases[n]]
        by_alpha = _recall_by_alpha(probe, hist, targets)
        validation = {f"recall@10[alpha={a}]": round(r, 4) for a, r in by_alpha.items()}
        validation["users"] = len(users)
        validation["cases"] = len(targets)
        alpha = max(ALPHAS, key=lambda a: (validation[f"recall@10[alpha={a}]"], -abs(a - 0.5)))
    digest = hashlib.blake2b(digest_size=6)
    digest.update(text_digest.encode())
    for seq in seqs:
        digest.update(np.asarray(seq, np.int64).tobytes())
        digest.update(b"|")
    digest.update(f"{alpha}".encode())
    return TextFusionModel(
        ids,
        text,
        behaviour_embeddings(seqs, len(ids), dim),
        alpha,
        popular,
        f"textfusion-a{alpha}-{digest.hexdigest()}",
        query_encoder=query_encoder,
        validation=validation,
    )

"""Item tags: candidate phrases (1-3 word n-grams of the title, description and reviews) scored
against the item's own vector with the same text encoder, picked with maximal marginal relevance
so the tags are not five spellings of one idea (the KeyBERT recipe). Candidates are shared across
the catalog and each unique phrase is encoded once."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from ranker.text import STOPWORDS, tokenize
from schemas.items import Item

__all__ = ["candidate_phrases", "mmr", "tag_items"]


_UNITS_TEXT = "inch inches ft feet foot yd mm cm ml oz ounce ounces lb lbs count gauge gallon quart liter pound size"
UNITS = frozenset(_UNITS_TEXT.split())


def candidate_phrases(text: str, max_words: int = 3, exclude: frozenset[str] = frozenset()) -> list[str]:
    """n-grams that neither start nor end with a stopword or unit, hold no model number and no
    `exclude` word (the brand's: it is a field of its own), in order of appearance."""
    words = tokenize(text)
    out: dict[str, None] = {}
    for n in range(1, max_words + 1):
        for i in range(len(words) - n + 1):
            gram = words[i : i + n]
            if gram[0] in STOPWORDS or gram[-1] in STOPWORDS or gram[0] in UNITS or gram[-1] in UNITS:
                continue
            if exclude.intersection(gram):
                continue
            if any(any(c.isdigit() for c in w) or len(w) < 2 for w in gram):
                continue
            out[" ".join(gram)] = None
    return list(out)


def mmr(item: np.ndarray, phrases: np.ndarray, k: int, diversity: float = 0.3) -> list[int]:
    """Indices of k phrases: each next one maximises (1-d)·sim(item) - d·max sim(already picked)."""
    rel = phrases @ item
    picked: list[int] = []
    left = list(range(len(phrases)))
    while left and len(picked) < k:
        if picked:
            red = (phrases[left] @ phrases[picked].T).max(axis=1)
            score = (1 - diversity) * rel[left] - diversity * red
        else:
            score = rel[left]
        best = left[int(np.argmax(score))]
        picked.append(best)
        left.remove(best)
    return picked


def tag_items(
    items: Sequence[Item],
    encode: Callable[[list[str]], np.ndarray],
    reviews: Mapping[str, Sequence[str]] | None = None,
    *,
    k: int = 5,
    max_candidates: int = 24,
    diversity: float = 0.3,
) -> dict[str, list[tuple[str, float]]]:
    """item_id -> [(tag, cosine to the item's vector)], best first, for every item.

    Per item the candidates are cut to the `max_candidates` with the highest tf-idf (reviews add
    term frequency), then scored by the encoder; `encode` returns unit vectors."""
    reviews = reviews or {}
    per_item: list[list[str]] = []
    tf: list[dict[str, int]] = []
    df: dict[str, int] = {}
    for it in items:
        counts: dict[str, int] = {}
        brand = frozenset(tokenize(it.brand))
        for source in (it.title, it.description, *reviews.get(it.item_id, ())):
            for p in candidate_phrases(source, exclude=brand):
                counts[p] = counts.get(p, 0) + 1
        tf.append(counts)
        for p in counts:
            df[p] = df.get(p, 0) + 1
    n = max(1, len(items))
    for counts in tf:
        ranked = sorted(counts, key=lambda p: (-counts[p] * math.log(1 + n / df[p]) * len(p.split()) ** 0.5, p))
        per_item.append(ranked[:max_candidates])
    phrases = sorted({p for ps in per_item for p in ps})
    row = {p: i for i, p in enumerate(phrases)}
    phrase_vecs = encode(phrases) if phrases else np.zeros((0, 1), np.float32)
    # the document the tags must describe: the item's text and what its reviewers said
    item_vecs = encode([" ".join([it.text(), *reviews.get(it.item_id, ())]) for it in items])
    out: dict[str, list[tuple[str, float]]] = {}
    for it, vec, cands in zip(items, item_vecs, per_item, strict=True):
        if not cands:
            out[it.item_id] = []
            continue
        pv = phrase_vecs[[row[p] for p in cands]]
        picks = mmr(vec, pv, k, diversity)
        tags = [(cands[i], round(float(pv[i] @ vec), 4)) for i in picks]
        out[it.item_id] = sorted(tags, key=lambda t: -t[1])
    return out

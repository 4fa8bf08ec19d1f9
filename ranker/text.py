"""Lexical text handling for search and tags: tokens, stopwords, and the evaluation queries built
the way Amazon product-search studies build them (Van Gysel et al. 2016; Ai et al. 2017). Pure."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

__all__ = ["STOPWORDS", "category_query", "common_category_terms", "known_item_query", "tokenize"]

_TOKEN = re.compile(r"[a-z0-9]+")
_STOPWORDS_TEXT = """
a an and are as at be but by for from has have in into is it its of on or over per than that the
this to under up with without x vs via not no your you our all any each other others more most new
set pack pcs pc piece pieces
"""
STOPWORDS = frozenset(_STOPWORDS_TEXT.split())


def tokenize(text: str) -> list[str]:
    """Lower-case alphanumeric runs: what BM25 indexes and queries are made of."""
    return _TOKEN.findall(text.lower())


def _dedupe(tokens: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(tokens))


def common_category_terms(categories: Sequence[str], share: float = 0.5) -> frozenset[str]:
    """Terms found in more than `share` of the category paths (the root category, say): they say
    nothing about the item, so category queries leave them out."""
    counts: dict[str, int] = {}
    for cat in categories:
        for t in set(tokenize(cat)):
            counts[t] = counts.get(t, 0) + 1
    return frozenset(t for t, n in counts.items() if n > share * len(categories))


def category_query(category: str, common: frozenset[str] = frozenset()) -> str:
    """Ai et al. 2017: the terms of the item's category path, stopwords and repeats removed.

    `common` (from `common_category_terms`) drops the terms every item shares. Empty when the
    item has no category."""
    return " ".join(t for t in _dedupe(tokenize(category)) if t not in STOPWORDS and t not in common)


def known_item_query(title: str, brand: str = "", max_terms: int = 5) -> str:
    """A known-item query: the title's first `max_terms` content words, without the brand's
    words, model numbers (any token holding a digit) or stopwords."""
    brand_terms = set(tokenize(brand))
    words = [
        t
        for t in _dedupe(tokenize(title))
        if t not in brand_terms and t not in STOPWORDS and not any(c.isdigit() for c in t) and len(t) > 1
    ]
    return " ".join(words[:max_terms])

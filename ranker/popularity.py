"""The one popularity order: item ids by event count, most first, ties by id. Pure.

`fusionrec train` writes it into the bundle (popularity.json, from the training events); the
worker's cold starts and the API's popular fallback read it from there, so they agree with each
other and with the model they serve.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from itertools import islice

__all__ = ["popular_items", "popular_rows"]


def popular_items(counts: Mapping[str, int], n: int | None = None) -> list[str]:
    """Item ids with a positive count, most events first, ties broken by id; the first `n` when given."""
    ranked = sorted((i for i, c in counts.items() if c > 0), key=lambda i: (-counts[i], i))
    return ranked if n is None else ranked[:n]


def popular_rows(order: Iterable[str], rows: Mapping[str, int], n_rows: int, limit: int | None = None) -> list[int]:
    """Catalog rows in fallback order: the ids of `order` (most popular first) that the catalog
    holds, then every other row in catalog order; the first `limit` when given. What the worker's
    cold starts and the API's popular fallback both serve."""

    def ranked() -> Iterator[int]:
        listed: set[int] = set()
        for item_id in order:
            row = rows.get(item_id)
            if row is not None and row not in listed:
                listed.add(row)
                yield row
        yield from (r for r in range(n_rows) if r not in listed)

    return list(islice(ranked(), limit))

"""The one popularity order: item ids by event count, most first, ties by id. Pure.

`fusionrec train` writes it into the bundle (popularity.json, from the training events); the
worker's cold starts and the API's popular fallback read it from there, so they agree with each
other and with the model they serve.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["popular_items"]


def popular_items(counts: Mapping[str, int], n: int | None = None) -> list[str]:
    """Item ids with a positive count, most events first, ties broken by id; the first `n` when given."""
    ranked = sorted((i for i, c in counts.items() if c > 0), key=lambda i: (-counts[i], i))
    return ranked if n is None else ranked[:n]

"""The API's cache of query vectors: the same vector as encoding anew, least recently used out, off at 0."""

from __future__ import annotations

import numpy as np
import pytest

from serving.service import _QueryVectors


class CountingEncoder:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls.extend(texts)
        return np.array([[len(t), t.count("a")] for t in texts], dtype=np.float32)


def test_repeated_queries_are_encoded_once_and_the_oldest_goes_first() -> None:
    enc = CountingEncoder()
    cache = _QueryVectors(enc, size=2)
    first = cache.get("tape")
    assert np.array_equal(cache.get("tape"), first) and enc.calls == ["tape"]
    cache.get("glue")
    cache.get("tape")  # now "glue" is the least recently used
    cache.get("saw")  # evicts "glue"
    cache.get("glue")
    assert enc.calls == ["tape", "glue", "saw", "glue"]
    assert (cache.hits, cache.misses) == (2, 4)
    with pytest.raises(ValueError):
        first[0] = 1.0  # shared between requests: read-only


def test_size_zero_encodes_every_time() -> None:
    enc = CountingEncoder()
    cache = _QueryVectors(enc, size=0)
    assert np.array_equal(cache.get("a"), cache.get("a"))
    assert enc.calls == ["a", "a"] and cache.hits == 0

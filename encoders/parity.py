"""How close one encoder's vectors are to a reference's: the bars an export must clear.

Pure numpy, shared by the parity tests and `bench/encoders.py`, so the figures a closing note
quotes and the thresholds the tests hold are computed the same way.
"""

from __future__ import annotations

import numpy as np

__all__ = ["nearest_neighbours", "neighbour_overlap", "row_cosines"]


def row_cosines(got: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Cosine of each row of `got` with the same row of `ref` (both unit vectors)."""
    return np.asarray((got * ref).sum(axis=1))


def nearest_neighbours(vectors: np.ndarray, k: int = 10) -> np.ndarray:
    """[n, k] indices of each row's k most similar other rows (unordered within the k)."""
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -2.0)  # never its own neighbour
    return np.argpartition(-sims, k, axis=1)[:, :k]


def neighbour_overlap(got: np.ndarray, ref: np.ndarray, k: int = 10) -> float:
    """Mean share of each item's k nearest neighbours under `ref` that `got` also finds."""
    pairs = zip(nearest_neighbours(got, k), nearest_neighbours(ref, k), strict=True)
    return float(np.mean([len(set(a) & set(b)) / k for a, b in pairs]))

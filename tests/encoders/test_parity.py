"""The parity measures behind the export bars (pure numpy)."""

from __future__ import annotations

import numpy as np

from encoders.parity import nearest_neighbours, neighbour_overlap, row_cosines


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_row_cosines_pair_rows_in_order() -> None:
    a = _unit(np.array([[1.0, 0.0], [0.0, 1.0]]))
    b = _unit(np.array([[1.0, 1.0], [0.0, 1.0]]))
    np.testing.assert_allclose(row_cosines(a, b), [np.sqrt(0.5), 1.0])


def test_nearest_neighbours_never_include_the_row_itself() -> None:
    x = _unit(np.random.default_rng(0).standard_normal((50, 8)))
    nn = nearest_neighbours(x, k=5)
    assert nn.shape == (50, 5)
    assert not (nn == np.arange(50)[:, None]).any()
    sims = x @ x.T
    np.fill_diagonal(sims, -2.0)
    assert set(nn[0]) == set(np.argsort(-sims[0])[:5])


def test_neighbour_overlap_is_one_for_equal_sets_and_drops_when_they_change() -> None:
    x = _unit(np.random.default_rng(1).standard_normal((40, 6)))
    assert neighbour_overlap(x, x, k=10) == 1.0
    shuffled = x[np.random.default_rng(2).permutation(40)]  # rows no longer match their neighbours
    assert neighbour_overlap(shuffled, x, k=10) < 0.6

"""k-center greedy against a brute-force reference."""

from __future__ import annotations

import numpy as np
import pytest

from frugalft.design.kcenter import k_center_greedy


def _brute(x, k, first):
    """The textbook loop: all pairwise distances, farthest point from the chosen set, ties to lower index."""
    d = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    chosen, radius = [first], [np.nan]
    for _ in range(k - 1):
        nearest = d[:, chosen].min(axis=1)
        j = int(np.argmax(nearest))
        chosen.append(j)
        radius.append(nearest[j])
    return np.array(chosen), np.array(radius)


@pytest.mark.parametrize("dtype,chunk", [(np.float64, 1 << 18), (np.float64, 7), (np.float32, 13)])
def test_matches_brute_force(dtype, chunk):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5)).astype(dtype)
    ref, ref_r = _brute(x.astype(np.float64), 25, first=11)
    got, r = k_center_greedy(x, 25, first=11, chunk=chunk)
    assert got.tolist() == ref.tolist()
    np.testing.assert_allclose(r[1:], ref_r[1:], rtol=1e-4 if dtype == np.float32 else 1e-10)
    assert np.isnan(r[0]) and np.all(np.diff(r[1:]) <= 1e-6)  # cover radius never grows


def test_covers_every_point_and_errors():
    x = np.eye(4)
    got, _ = k_center_greedy(x, 4, first=2)
    assert sorted(got.tolist()) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="k must be in 1..4"):
        k_center_greedy(x, 5)
    with pytest.raises(ValueError, match="first must be a row"):
        k_center_greedy(x, 2, first=9)

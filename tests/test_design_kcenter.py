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


@pytest.mark.parametrize("dtype,chunk,threads", [(np.float64, 1 << 18, None), (np.float64, 7, 3),
                                                 (np.float32, 13, 2), (np.float32, 13, 1)])
def test_matches_brute_force(dtype, chunk, threads):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5)).astype(dtype)
    ref, ref_r = _brute(x.astype(np.float64), 25, first=11)
    got, r = k_center_greedy(x, 25, first=11, chunk=chunk, threads=threads)
    assert got.tolist() == ref.tolist()
    np.testing.assert_allclose(r[1:], ref_r[1:], rtol=1e-4 if dtype == np.float32 else 1e-10)
    assert np.isnan(r[0]) and np.all(np.diff(r[1:]) <= 1e-6)  # cover radius never grows


@pytest.mark.parametrize("chunk", [1, 3, 1 << 16])
def test_ties_go_to_the_lower_index_across_blocks(chunk):
    """Duplicated points tie exactly; the lower row must win wherever the block boundaries fall."""
    base = np.random.default_rng(1).normal(size=(6, 3))
    x = np.concatenate([base, base, base])  # rows i, i + 6, i + 12 are the same point
    got, _ = k_center_greedy(x, 6, first=4, chunk=chunk, threads=2)
    assert got.tolist() == _brute(x, 6, first=4)[0].tolist()
    assert max(got) < 6  # every pick is the first copy


def test_covers_every_point_and_errors():
    x = np.eye(4)
    got, _ = k_center_greedy(x, 4, first=2)
    assert sorted(got.tolist()) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="k must be in 1..4"):
        k_center_greedy(x, 5)
    with pytest.raises(ValueError, match="first must be a row"):
        k_center_greedy(x, 2, first=9)
    with pytest.raises(ValueError, match="chunk must be"):
        k_center_greedy(x, 2, chunk=0)

"""Facility location: our greedy against apricot-select on the same matrix, and our kernels against dense ones."""

from __future__ import annotations

import numpy as np
import pytest

from frugalft.design import facility_location as fl


def _points(n=240, d=8, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(6, d)) * 3
    return (centers[rng.integers(6, size=n)] + rng.normal(size=(n, d))).astype(np.float64)


def _rbf(x, sigma):
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    return np.exp(-d2 / sigma**2)


@pytest.mark.slow  # apricot compiles its numba kernels per instance: ~10-30 s however small the data
def test_matches_apricot_dense_lazy_greedy():
    from apricot import FacilityLocationSelection

    s = _rbf(_points(), 2.0)
    k = 25
    ref = FacilityLocationSelection(k, metric="precomputed", optimizer="lazy").fit(s)
    picks, gains = fl.lazy_greedy(fl.DenseKernel(s), k, batch=4)
    ours, theirs = fl.objective(fl.DenseKernel(s), picks), fl.objective(fl.DenseKernel(s), ref.ranking)
    assert abs(ours - theirs) <= 1e-6 * abs(theirs)
    assert picks.tolist() == ref.ranking.tolist()  # random data: no ties
    np.testing.assert_allclose(gains, ref.gains, rtol=1e-9)
    assert abs(gains.sum() - ours) <= 1e-9 * ours  # gains add up to the objective


def test_objective_matches_brute_force():
    s = _rbf(_points(60), 2.0)
    picks = np.array([3, 17, 42])
    assert fl.objective(fl.DenseKernel(s), picks) == pytest.approx(s[picks].max(axis=0).sum(), rel=1e-12)


def test_chunked_rbf_kernel_equals_dense(monkeypatch):
    monkeypatch.setattr(fl, "BLOCK", 32)  # many blocks and panels on small data
    x = _points(300).astype(np.float32)
    dense = _rbf(x.astype(np.float64), 2.5)
    ker = fl.RbfKernel(x, 2.5)
    np.testing.assert_allclose(ker.row_sums(), dense.sum(1), rtol=1e-5)
    np.testing.assert_allclose(ker.rows(np.array([5, 0, 299])), dense[[5, 0, 299]], atol=1e-6)
    # Same greedy picks as on the dense matrix (itself checked against apricot above), whether every row fits
    # the row cache, a quarter of them (evictions and prefetching), or none.
    exact, g_exact = fl.lazy_greedy(fl.DenseKernel(dense), 30)
    monkeypatch.setattr(fl, "PREFETCH", 16)
    for cache_mb in (2048, 300 * 300 * 4 / 4 / 2**20, 0):
        picks, g = fl.lazy_greedy(ker, 30, cache_mb=cache_mb)
        assert picks.tolist() == exact.tolist(), cache_mb
        np.testing.assert_allclose(g, g_exact, rtol=1e-4)
        picks, _ = fl.stochastic_greedy(ker, 30, seed=2, cache_mb=cache_mb)
        assert picks.tolist() == fl.stochastic_greedy(fl.DenseKernel(dense), 30, seed=2)[0].tolist()


def test_cosine_kernel_is_clipped_cosine(monkeypatch):
    monkeypatch.setattr(fl, "BLOCK", 16)
    x = _points(100, seed=2)
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    dense = np.maximum(u @ u.T, 0)
    ker = fl.CosineKernel(x)
    np.testing.assert_allclose(ker.row_sums(), dense.sum(1), rtol=1e-5)
    exact, _ = fl.lazy_greedy(fl.DenseKernel(dense), 10)
    picks, _ = fl.lazy_greedy(ker, 10)
    assert picks.tolist() == exact.tolist()


def test_knn_kernel_with_all_neighbours_is_exact():
    x = _points(150, seed=3)
    dense = _rbf(x, 2.0)
    ker = fl.KnnKernel(x, k=150, sigma=2.0)
    np.testing.assert_allclose(ker.row_sums(), dense.sum(1), rtol=1e-4)
    exact, g_exact = fl.lazy_greedy(fl.DenseKernel(dense), 12)
    picks, g = fl.lazy_greedy(ker, 12)
    assert picks.tolist() == exact.tolist()
    np.testing.assert_allclose(g, g_exact, rtol=1e-4)


def test_sparse_knn_and_stochastic_stay_close_to_exact():
    x = _points(400, seed=4)
    dense = fl.DenseKernel(_rbf(x, 2.0))
    exact = fl.objective(dense, fl.lazy_greedy(dense, 20)[0])
    knn = fl.objective(dense, fl.lazy_greedy(fl.KnnKernel(x, k=40, sigma=2.0), 20)[0])
    stoch = fl.objective(dense, fl.stochastic_greedy(fl.RbfKernel(x, 2.0), 20, epsilon=0.01, seed=0)[0])
    assert 0.98 * exact <= knn and 0.95 * exact <= stoch  # measured: 1.000 and 0.977
    # Stochastic picks are distinct and their gains decrease weakly as a greedy sequence should on average.
    p, g = fl.stochastic_greedy(fl.RbfKernel(x, 2.0), 50, seed=1)
    assert len(set(p.tolist())) == 50 and abs(g.sum() - fl.objective(fl.RbfKernel(x, 2.0), p)) < 1e-3 * g.sum()


def test_auto_sigma_lands_between_flat_and_collapsed():
    x = _points(300, d=16, seed=5)
    sigma, curves = fl.auto_sigma(x, budget=30, seed=0, sample=300)
    levels = {float(s): float(np.mean(c)) for s, c in curves.items()}
    smaller = [lv for s, lv in levels.items() if s < sigma]
    larger = [lv for s, lv in levels.items() if s > sigma]
    assert smaller and larger and min(smaller) >= 0.5 >= max(larger)
    assert all(len(c) == 30 and c[0] == 1.0 for c in curves.values())


def test_bad_k():
    with pytest.raises(ValueError, match="k must be in 1..3"):
        fl.lazy_greedy(fl.DenseKernel(np.eye(3)), 4)
    with pytest.raises(ValueError, match="epsilon"):
        fl.stochastic_greedy(fl.DenseKernel(np.eye(3)), 2, epsilon=0)


def test_fill_is_the_exact_symmetric_kernel(monkeypatch):
    # Several row blocks and column panels, n not a multiple of either: the upper-triangle blocks, their tiled
    # mirror (tiles cut at the panel edges) and the fused row sums must give the whole kernel.
    monkeypatch.setattr(fl, "BLOCK", 24)
    x = _points(203, seed=6).astype(np.float32)
    dense = _rbf(x.astype(np.float64), 2.5)
    store = np.full((203, 203), np.nan, dtype=np.float32)
    sums = fl.RbfKernel(x, 2.5).fill(store)
    assert np.array_equal(store, store.T)  # exactly symmetric: the lower triangle is a copy
    np.testing.assert_allclose(store, dense, atol=2e-5)  # float32 dot products
    np.testing.assert_allclose(sums, dense.sum(1), rtol=1e-5)


def test_fused_gains_equal_numpy():
    rng = np.random.default_rng(7)
    rows = rng.random((9, 1000), dtype=np.float32)
    cover = rng.random(1000, dtype=np.float32)
    which = np.array([8, 0, 3, 3])
    out = np.empty(4)
    fl._row_gains(rows, which, cover, out)
    np.testing.assert_allclose(out, np.maximum(rows[which] - cover, 0).sum(1), rtol=1e-6)


def _pairs(ker):
    """The (candidate, covered row) pairs of a KnnKernel, as sorted keys."""
    j = np.repeat(np.arange(ker.n), np.diff(ker.indptr))
    return np.sort(j * ker.n + ker.indices)


@pytest.mark.parametrize("sigma", [2.0, None])
def test_cluster_knn_probing_every_list_is_exact(sigma):
    x = _points(500, seed=8)
    flat = fl.KnnKernel(x, k=12, sigma=sigma, method="flat")
    clus = fl.KnnKernel(x, k=12, sigma=sigma, method="cluster", clusters=9, nprobe=9)
    assert set(clus.timings) == {"kmeans", "neighbours", "csr"}
    np.testing.assert_array_equal(clus.indptr, flat.indptr)
    np.testing.assert_array_equal(clus.indices, flat.indices)
    np.testing.assert_allclose(clus.data, flat.data, rtol=1e-4, atol=1e-6)
    assert fl.lazy_greedy(clus, 15)[0].tolist() == fl.lazy_greedy(flat, 15)[0].tolist()


def test_cluster_knn_recall_and_small_lists():
    x = _points(3000, d=8, seed=9)
    flat = _pairs(fl.KnnKernel(x, k=16, sigma=2.0, method="flat"))
    clus = fl.KnnKernel(x, k=16, sigma=2.0, method="cluster", clusters=40, nprobe=4)
    recall = len(np.intersect1d(_pairs(clus), flat)) / len(flat)
    assert recall >= 0.8, recall  # measured: 0.853
    # Lists far smaller than k: each list searches more lists until it has k candidates, so every row still
    # gets exactly k neighbours, itself among them.
    tiny = fl.KnnKernel(x[:400], k=16, sigma=2.0, method="cluster", clusters=100, nprobe=1)
    assert np.array_equal(np.bincount(tiny.indices, minlength=400), np.full(400, 16))
    assert np.all(np.isin(np.arange(400) * 400 + np.arange(400), _pairs(tiny)))
    with pytest.raises(ValueError, match="method"):
        fl.KnnKernel(x, method="ivf")

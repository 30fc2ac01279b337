"""Task-aware diversity (a quota per task, then facility location / k-center / uniform within each task) and the
task-free facility-location kernels that do not collapse onto one dense region (cosine, adaptive widths)."""

from __future__ import annotations

import numpy as np
import pytest

from frugalft.design import DesignError, pool_from_rows, select_prompts
from frugalft.design import facility_location as fl
from frugalft.design.quotas import (
    allocate,
    balanced_quota,
    confidence_quota,
    graph_cut_greedy,
    smart_quota,
    taylor_softmax,
)


def _pool(tasks: list[str]):
    return pool_from_rows([{"id": f"q{i}", "prompt": f"prompt {i}", "task": t} for i, t in enumerate(tasks)])


def _features(tmp_path, x) -> str:
    path = tmp_path / "x.npy"
    np.save(path, x)
    return str(path)


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)  # strategies see unit rows (features.py normalises)


def _clustered(sizes, d=8, seed=0):
    """Rows of several tasks, each task a few Gaussian clusters of its own."""
    rng = np.random.default_rng(seed)
    out = []
    for n in sizes:
        centers = rng.normal(size=(3, d)) * 3
        out.append(centers[rng.integers(3, size=n)] + rng.normal(size=(n, d)))
    return np.concatenate(out)


# --- quotas ---------------------------------------------------------------------------------------------------
def test_balanced_quota_by_hand():
    # Share 10/3 each; task 0 holds 2: it gives both, and the other 8 split evenly.
    assert balanced_quota(10, np.array([2, 50, 50])).tolist() == [2, 4, 4]
    # Shares 3: tasks of 3 and 1 are filled; 13 - 4 = 9 left for two tasks: 4.5 each, the spare label to the
    # lower task index.
    assert balanced_quota(13, np.array([3, 10, 10, 1])).tolist() == [3, 5, 4, 1]
    assert balanced_quota(7, np.array([0, 5, 5])).tolist() == [0, 4, 3]  # an empty task gets nothing


def test_quotas_sum_to_the_budget_and_respect_sizes():
    rng = np.random.default_rng(0)
    for _ in range(200):
        sizes = rng.integers(0, 30, size=rng.integers(1, 8))
        if sizes.sum() == 0:
            continue
        budget = int(rng.integers(1, sizes.sum() + 1))
        means = rng.normal(size=(len(sizes), 5))
        for q in (balanced_quota(budget, sizes), confidence_quota(budget, sizes, rng.random(len(sizes))),
                  smart_quota(budget, sizes, means)[0]):
            assert q.sum() == budget and np.all(q >= 0) and np.all(q <= sizes), (sizes, budget, q)
    sizes = np.array([4, 1, 9])
    for q in (balanced_quota(14, sizes), confidence_quota(14, sizes, np.array([0.9, 0.1, 0.5])),
              smart_quota(14, sizes, np.eye(3))[0]):
        assert q.tolist() == [4, 1, 9]  # budget == pool size: every row
    with pytest.raises(DesignError, match="exceeds"):
        balanced_quota(15, sizes)


def test_confidence_quota_is_inverse_confidence():
    # Weights 1.25 : 2.5 : 5 -> 20 labels split 2.86 : 5.71 : 11.43 -> floors 2, 5, 11 + the largest remainder.
    assert confidence_quota(20, np.array([30, 30, 30]), np.array([0.8, 0.4, 0.2])).tolist() == [3, 6, 11]
    # A task smaller than its share gives all it has; the rest is re-shared in proportion.
    assert confidence_quota(20, np.array([30, 2, 30]), np.array([0.8, 0.1, 0.2])).tolist() == [4, 2, 14]


def test_smart_quota_by_hand():
    # Tasks 0 and 1 have the same mean embedding, task 2 an orthogonal one: s = [[1,1,0],[1,1,0],[0,0,1]].
    # Graph cut (lambda 0.4), gain of j given A = sum_i s_ij - 0.4 (2 sum_{i in A} s_ij + s_jj):
    #   step 1: 2 - 0.4 = 1.6 for tasks 0 and 1, 1 - 0.4 = 0.6 for task 2 -> task 0 (lower index), 1.6;
    #   step 2: task 1: 2 - 0.4 (2 + 1) = 0.8, task 2: 0.6 -> task 1, 0.8; step 3: task 2, 0.6.
    # Taylor softmax 1 + g + g^2/2: 3.88, 2.12, 1.78 (sum 7.78); of 30 labels: 14.96, 8.17, 6.86 -> 15, 8, 7.
    means = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    order, gains = graph_cut_greedy(np.maximum(_unit(means) @ _unit(means).T, 0))
    assert order.tolist() == [0, 1, 2] and gains == pytest.approx([1.6, 0.8, 0.6])
    quota, weight = smart_quota(30, np.array([100, 100, 100]), means)
    assert weight == pytest.approx(np.array([3.88, 2.12, 1.78]) / 7.78)
    assert quota.tolist() == [15, 8, 7]
    assert taylor_softmax(np.array([0.0, 0.0])).tolist() == [0.5, 0.5]
    assert allocate(30, np.array([100, 100, 100]), weight).tolist() == [15, 8, 7]


# --- task strategies through the registry ---------------------------------------------------------------------
def test_task_random_fills_each_quota_within_its_task(tmp_path, monkeypatch):
    tasks = ["a"] * 3 + ["b"] * 10 + ["c"] * 10 + ["d"] * 1
    pool = _pool(tasks)
    codes, names = pool.task_codes()
    sel = select_prompts(pool, "task-random", 13, seed=3)
    assert names == ["a", "b", "c", "d"] and sel.extras["quota"] == {"a": 3, "b": 5, "c": 4, "d": 1}
    assert np.bincount(codes[sel.indices], minlength=4).tolist() == [3, 5, 4, 1]
    # quota=balanced is task-balanced: the same picks for the same seed.
    assert sel.indices.tolist() == select_prompts(pool, "task-balanced", 13, seed=3).indices.tolist()
    # smart: the quota of smart_quota on the tasks' mean embeddings, filled within each task.
    x = _clustered([3, 10, 10, 1], seed=1)
    smart = select_prompts(pool, "task-random", 13, params={"quota": "smart", "features": _features(tmp_path, x)})
    u = _unit(x.astype(np.float32))
    want, _ = smart_quota(13, np.array([3, 10, 10, 1]), np.stack([u[codes == t].mean(0) for t in range(4)]))
    assert np.bincount(codes[smart.indices], minlength=4).tolist() == want.tolist()
    assert set(smart.extras["smart_weight"]) == set(names)
    # confidence: 1 / mean confidence per task, from the base model's uncertainty pass (faked here).
    import frugalft.design.uncertainty as unc

    conf = np.array([0.8, 0.4, 0.2, 0.5])[codes]
    monkeypatch.setattr(unc, "pool_uncertainty", lambda pool, model, **kw: {"least_confidence_norm": 1 - conf})
    sel = select_prompts(pool, "task-random", 12, model="fake", params={"quota": "confidence"})
    want = confidence_quota(12, np.array([3, 10, 10, 1]), np.array([0.8, 0.4, 0.2, 0.5]))
    assert np.bincount(codes[sel.indices], minlength=4).tolist() == want.tolist()
    assert sel.extras["task_confidence"] == pytest.approx({"a": 0.8, "b": 0.4, "c": 0.2, "d": 0.5})
    assert sel.indices.tolist() == select_prompts(pool, "task-weighted", 12, model="fake").indices.tolist()
    # budget == pool size: every row, once.
    assert sorted(select_prompts(pool, "task-random", 24).indices.tolist()) == list(range(24))
    with pytest.raises(DesignError, match="choose balanced, confidence, smart"):
        select_prompts(pool, "task-random", 3, params={"quota": "even"})
    with pytest.raises(DesignError, match="no task field"):
        select_prompts(pool_from_rows([{"id": "a", "prompt": "x"}]), "task-k-center", 1)


def test_task_k_center_is_k_center_within_each_task(tmp_path):
    from frugalft.design.kcenter import k_center_greedy

    sizes = [30, 20, 6]
    x = _clustered(sizes, seed=2)
    pool = _pool(["a"] * 30 + ["b"] * 20 + ["c"] * 6)
    codes, _ = pool.task_codes()
    sel = select_prompts(pool, "task-k-center", 15, seed=5, params={"features": _features(tmp_path, x)})
    assert sel.extras["quota"] == {"a": 5, "b": 5, "c": 5}
    u = _unit(x.astype(np.float32))
    rng = np.random.default_rng(5)  # one generator, each task's first center in task order
    for t in range(3):
        rows = np.flatnonzero(codes == t)
        want, _ = k_center_greedy(u[rows], 5, first=int(rng.integers(len(rows))))
        got = [i for i in sel.indices.tolist() if codes[i] == t]  # the interleave keeps each task's own order
        assert got == rows[want].tolist()
    # Interleaved by quota: with equal quotas, every run of 3 picks holds one pick of each task.
    assert all(sorted(codes[sel.indices[i:i + 3]].tolist()) == [0, 1, 2] for i in range(0, 15, 3))


@pytest.mark.slow  # apricot compiles its numba kernels per instance: ~10-30 s each however small the data
def test_task_facility_location_matches_apricot_per_task(tmp_path):
    from apricot import FacilityLocationSelection

    sizes = [40, 25, 12]
    x = _clustered(sizes, seed=3)
    pool = _pool(["a"] * 40 + ["b"] * 25 + ["c"] * 12)
    codes, names = pool.task_codes()
    sigma = 0.6
    sel = select_prompts(pool, "task-facility-location", 15,
                         params={"features": _features(tmp_path, x), "sigma": sigma})
    assert sel.extras["quota"] == {"a": 5, "b": 5, "c": 5}
    u = _unit(x.astype(np.float32)).astype(np.float64)
    for t in range(3):
        rows = np.flatnonzero(codes == t)
        xt = u[rows]
        s = np.exp(-((xt[:, None, :] - xt[None, :, :]) ** 2).sum(-1) / sigma**2)  # this task's kernel only
        ref = FacilityLocationSelection(5, metric="precomputed", optimizer="lazy").fit(s)
        mine = codes[sel.indices] == t  # the interleave keeps each task's own pick order
        local = np.searchsorted(rows, sel.indices[mine])
        ours, theirs = fl.objective(fl.DenseKernel(s), local), fl.objective(fl.DenseKernel(s), ref.ranking)
        assert abs(ours - theirs) <= 1e-6 * theirs, names[t]
        # Gains, not indices: task c holds an isolated pair (i, j), whose gains are equal by symmetry, and
        # apricot's heap breaks that tie the other way (both orders give the same objective and gains).
        np.testing.assert_allclose(sel.scores[mine], ref.gains, rtol=1e-5, err_msg=names[t])
        if names[t] != "c":  # no ties: the same picks in the same order
            assert local.tolist() == ref.ranking.tolist(), names[t]


def test_task_facility_location_uses_each_tasks_own_width(tmp_path):
    # A wide task and a tight one: sigma=auto is chosen per task, on that task's rows and quota.
    rng = np.random.default_rng(4)
    wide = rng.normal(size=(60, 6)) * 3 + 10
    tight = rng.normal(size=(40, 6)) * 0.05 + np.array([0, 10, 0, 0, 0, 0])
    x = np.concatenate([wide, tight])
    pool = _pool(["wide"] * 60 + ["tight"] * 40)
    sel = select_prompts(pool, "task-facility-location", 10, seed=2, params={"features": _features(tmp_path, x)})
    u = _unit(x.astype(np.float32))
    widths = sel.extras["task_sigma"]
    assert widths["wide"] == pytest.approx(fl.auto_sigma(u[:60], 5, seed=2)[0], rel=1e-6)
    assert widths["tight"] == pytest.approx(fl.auto_sigma(u[60:], 5, seed=2)[0], rel=1e-6)
    assert widths["wide"] > 10 * widths["tight"]
    # What chose each width is kept (the candidate curves of that task's auto_sigma run) and drawn, one panel a task.
    curves = sel.extras["task_sigma_curves"]
    assert curves["tight"] == fl.auto_sigma(u[60:], 5, seed=2)[1] and set(curves) == {"wide", "tight"}
    assert len(sel.extras["gains"]) == 10
    from frugalft.design.plots import gains_plot

    gains_plot(sel, tmp_path / "gains.png")
    assert (tmp_path / "gains.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ada = select_prompts(pool, "task-facility-location", 100, params={"features": _features(tmp_path, x),
                                                                     "kernel": "adaptive"})
    assert sorted(ada.indices.tolist()) == list(range(100)) and set(ada.extras["task_adaptive_sigma_median"]) == \
        {"wide", "tight"}


# --- task-free: kernels that do not collapse onto one dense region -------------------------------------------
R, C, A = 10.0, 1.0, 0.01  # cluster offset, spacing in the dense region and in the sparse clusters, tight groups
B = float(np.sqrt(C**2 + A**2))  # sparse spacing = the dense region's spacing between groups: equal row norms


def _dense_and_sparse(groups: int = 40, per_group: int = 4, sparse: int = 5, m: int = 8):
    """One dense region (``groups`` tight groups of ``per_group`` rows, members A apart, groups C apart) and
    ``sparse`` clusters of ``m`` rows, all B apart; every cluster sits R out along its own axis. Every
    distance is exact: the coordinates are offsets along orthogonal axes (a regular simplex per group)."""
    n_dense = groups * per_group
    dim = 1 + sparse + groups + n_dense + sparse * m
    x, label = np.zeros((n_dense + sparse * m, dim)), np.zeros(n_dense + sparse * m, dtype=np.int64)
    for g in range(groups):
        for j in range(per_group):
            r = g * per_group + j
            x[r, 0], x[r, 1 + sparse + g], x[r, 1 + sparse + groups + r] = R, C / np.sqrt(2), A / np.sqrt(2)
    for s in range(sparse):
        for j in range(m):
            r = n_dense + s * m + j
            x[r, 1 + s], x[r, 1 + sparse + groups + r] = R, B / np.sqrt(2)
            label[r] = 1 + s
    return x, label


def test_cosine_and_adaptive_spread_over_clusters_where_one_width_collapses(tmp_path):
    x, label = _dense_and_sparse()
    pool = pool_from_rows([{"id": str(i), "prompt": f"p{i}"} for i in range(len(x))])
    feats = _features(tmp_path, x)

    def counts(**params):
        sel = select_prompts(pool, "facility-location", 6, params={"features": feats, **params})
        return np.bincount(label[sel.indices], minlength=6).tolist(), sel.scores

    # Cosine. Same group: cos = (R^2 + C^2/2) / (R^2 + B^2/2) ~ 1; dense, other group: cd = R^2 / (R^2 + B^2/2);
    # same sparse cluster: the same cd; other clusters: 0. Pick 1: a dense row, 1 + 3 (~1) + 156 cd = 159.2.
    # A second dense row gains (1 - cd) + 3 (1 - cd) = 0.02; a sparse cluster's first row 1 + 7 cd = 7.97:
    # picks 2-6 are one per sparse cluster.
    cd = R**2 / (R**2 + B**2 / 2)
    cg = (R**2 + C**2 / 2) / (R**2 + B**2 / 2)
    got, gains = counts(kernel="cosine")
    assert got == [1, 1, 1, 1, 1, 1]
    np.testing.assert_allclose(gains, [1 + 3 * cg + 156 * cd] + [1 + 7 * cd] * 5, rtol=1e-5)
    # Adaptive (k = 7): a dense row has 3 neighbours A away, then 156 at B, so sigma = B; a sparse row has 7 at
    # B: sigma = B too. Pick 1: 1 + 3 exp(-A^2/B^2) + 156 / e = 61.39; then a fresh dense group gains
    # 4 (1 - 1/e) = 2.53 but a sparse cluster 1 + 7 / e = 3.58: one pick per cluster again.
    got, gains = counts(kernel="adaptive")
    assert got == [1, 1, 1, 1, 1, 1]
    np.testing.assert_allclose(gains, [1 + 3 * np.exp(-A**2 / B**2) + 156 / np.e] + [1 + 7 / np.e] * 5, rtol=1e-5)
    # One RBF width for all: 160 of the 200 rows are dense, so the width fits the dense region (the automatic
    # sigma, ~0.6 B here, or B/2), a fresh dense group gains 4 (1 - exp(-B^2/sigma^2)) ~ 3.9 against a sparse
    # cluster's 1 + 7 exp(-B^2/sigma^2) ~ 1.1: every pick goes to the dense region.
    bn = B / np.sqrt(R**2 + B**2 / 2)  # B on unit rows
    assert counts(kernel="rbf", sigma=bn / 2)[0] == [6, 0, 0, 0, 0, 0]
    assert counts()[0] == [6, 0, 0, 0, 0, 0]  # the default (rbf, sigma=auto)


def test_adaptive_widths_and_kernel_match_brute_force():
    rng = np.random.default_rng(6)
    x = np.concatenate([rng.normal(size=(50, 5)) * 0.1, rng.normal(size=(30, 5)) * 2 + 5]).astype(np.float32)
    x[7] = x[3]  # a duplicate pair
    d2 = ((x[:, None, :].astype(np.float64) - x[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d2, np.inf)
    want = np.sqrt(np.sort(d2, axis=1)[:, 6])  # the 7th nearest other row
    for block in (1 << 24, 200):  # one block, or 2 rows at a time
        np.testing.assert_allclose(fl.adaptive_widths(x, 7, block_elems=block), want, rtol=1e-4, atol=1e-5)
    w = fl.adaptive_widths(x, 1)
    assert w[3] > 0 and w[7] > 0  # a duplicate is at distance 0: the width is floored, not 0
    assert fl.adaptive_widths(x[:1], 7).tolist() == [1.0] and len(fl.adaptive_widths(x[:3], 7)) == 3
    w = fl.adaptive_widths(x, 7)
    np.fill_diagonal(d2, 0)
    dense = np.exp(-d2 / np.outer(w, w))
    ker = fl.AdaptiveKernel(x, w)
    np.testing.assert_allclose(ker.rows(np.array([0, 60, 79])), dense[[0, 60, 79]], atol=1e-5)
    np.testing.assert_allclose(ker.row_sums(), dense.sum(1), rtol=1e-4)
    exact, g_exact = fl.lazy_greedy(fl.DenseKernel(dense), 10)
    picks, g = fl.lazy_greedy(ker, 10)
    assert picks.tolist() == exact.tolist()
    np.testing.assert_allclose(g, g_exact, rtol=1e-4)
    # The sparse route with every neighbour kept is the same kernel (widths read off the neighbour lists).
    knn = fl.KnnKernel(x, k=80, adaptive=7)
    np.testing.assert_allclose(knn.widths, w, rtol=1e-3)
    np.testing.assert_allclose(knn.row_sums(), dense.sum(1), rtol=1e-3)
    assert fl.lazy_greedy(knn, 10)[0].tolist() == exact.tolist()
    with pytest.raises(ValueError, match="adaptive must be in 1..31"):
        fl.KnnKernel(x, k=32, adaptive=32)


def test_facility_location_kernel_settings(tmp_path):
    x = np.random.default_rng(8).normal(size=(40, 4))
    pool = pool_from_rows([{"id": str(i), "prompt": f"p{i}"} for i in range(40)])
    feats = _features(tmp_path, x)
    for params, match in [({"kernel": "poly"}, "choose rbf or cosine .*or adaptive"),
                          ({"kernel": "adaptive", "adaptive_k": 0}, "adaptive_k must be a positive integer"),
                          ({"kernel": "adaptive", "optimizer": "knn", "knn": 5, "adaptive_k": 5}, "below knn")]:
        with pytest.raises(DesignError, match=match):
            select_prompts(pool, "facility-location", 3, params={"features": feats, **params})
    sel = select_prompts(pool, "facility-location", 5, params={"features": feats, "kernel": "adaptive",
                                                               "optimizer": "stochastic"})
    assert len(set(sel.indices.tolist())) == 5 and sel.params["adaptive_sigma_median"] > 0
    knn = select_prompts(pool, "facility-location", 5, params={"features": feats, "kernel": "adaptive",
                                                              "optimizer": "knn", "knn": 40})
    lazy = select_prompts(pool, "facility-location", 5, params={"features": feats, "kernel": "adaptive"})
    assert knn.indices.tolist() == lazy.indices.tolist()  # every neighbour kept: the same kernel

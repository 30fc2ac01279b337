"""Strategies through the registry: each returns what its definition says, on data where that is checkable."""

from __future__ import annotations

import numpy as np
import pytest

from frugalft.design import STRATEGIES, DesignError, pool_from_rows, select_prompts, strategy
from frugalft.design.strategies import allocate


def _pool(n=60, tasks=("a", "b", "c")):
    return pool_from_rows([{"id": f"q{i}", "prompt": f"prompt {i}", "task": tasks[i % len(tasks)]}
                           for i in range(n)])


def _features(tmp_path, x):
    path = tmp_path / "x.npy"
    np.save(path, x)
    return str(path)


def test_allocate_is_proportional_capped_and_exact():
    assert allocate(9, np.array([10, 10, 10]), np.ones(3)).tolist() == [3, 3, 3]
    assert allocate(10, np.array([2, 50, 50]), np.ones(3)).tolist() == [2, 4, 4]  # capped task's rest re-shared
    assert allocate(10, np.array([50, 50]), np.array([3.0, 1.0])).tolist() == [8, 2]  # 7.5/2.5: tie -> lower
    q = allocate(17, np.array([5, 1, 40, 3]), np.array([1.0, 9.0, 0.5, 2.0]))
    assert q.sum() == 17 and np.all(q <= [5, 1, 40, 3])
    with pytest.raises(DesignError):
        allocate(5, np.array([2, 2]), np.ones(2))


def test_task_balanced_splits_evenly():
    pool = _pool(60, tasks=("a", "b", "c", "d"))
    sel = select_prompts(pool, "task-balanced", 12, seed=1)
    codes, _ = pool.task_codes()
    assert np.bincount(codes[sel.indices], minlength=4).tolist() == [3, 3, 3, 3]
    assert sel.extras["quota"] == {"a": 3, "b": 3, "c": 3, "d": 3}
    with pytest.raises(DesignError, match="no task field"):
        select_prompts(pool_from_rows([{"id": "a", "prompt": "x"}]), "task-balanced", 1)


def _fake_uncertainty(monkeypatch, scores):
    import frugalft.design.uncertainty as unc

    monkeypatch.setattr(unc, "pool_uncertainty", lambda pool, model, **kw: scores)


def test_task_weighted_follows_inverse_confidence(monkeypatch):
    pool = _pool(90)  # tasks a, b, c cycle
    codes, _ = pool.task_codes()
    conf = np.array([0.8, 0.4, 0.2])[codes]  # weights 1.25 : 2.5 : 5  -> 20 picks split 2.86 : 5.71 : 11.43
    _fake_uncertainty(monkeypatch, {"least_confidence_norm": 1 - conf})
    sel = select_prompts(pool, "task-weighted", 20, model="fake")
    assert np.bincount(codes[sel.indices], minlength=3).tolist() == [3, 6, 11]
    assert sel.extras["task_confidence"] == pytest.approx({"a": 0.8, "b": 0.4, "c": 0.2})


@pytest.mark.parametrize("name,key,higher", [("min-margin", "min_margin", False),
                                             ("mean-entropy", "mean_entropy", True),
                                             ("least-confidence-norm", "least_confidence_norm", True)])
def test_uncertainty_strategies_take_the_extreme_scores(monkeypatch, name, key, higher):
    pool = _pool(40)
    s = np.random.default_rng(0).random(40)
    _fake_uncertainty(monkeypatch, {key: s})
    sel = select_prompts(pool, name, 5, model="fake")
    want = np.argsort(-s if higher else s)[:5]
    assert sel.indices.tolist() == want.tolist() and np.allclose(sel.scores, s[want])
    with pytest.raises(DesignError, match="need the base model"):
        select_prompts(pool, name, 5)


def test_facility_location_and_k_center_on_given_features(tmp_path):
    from frugalft.design import facility_location as fl
    from frugalft.design.kcenter import k_center_greedy

    x = np.random.default_rng(1).normal(size=(80, 6)).astype(np.float32)
    feats = _features(tmp_path, x)
    u = x / np.linalg.norm(x, axis=1, keepdims=True)  # the strategies work on unit rows
    sel = select_prompts(_pool(80), "facility-location", 8, params={"features": feats, "sigma": 0.7})
    want, gains = fl.lazy_greedy(fl.RbfKernel(u, 0.7), 8)
    assert sel.indices.tolist() == want.tolist() and np.allclose(sel.scores, gains)
    assert sel.params["sigma"] == 0.7 and sel.params["optimizer"] == "auto"
    auto = select_prompts(_pool(80), "facility-location", 8, params={"features": feats})
    assert auto.params["sigma"] == "auto" and auto.extras["sigma"] > 0 and "sigma_curves" in auto.extras
    cos = select_prompts(_pool(80), "facility-location", 8, params={"features": feats, "kernel": "cosine",
                                                                   "optimizer": "stochastic"})
    assert len(set(cos.indices.tolist())) == 8
    kc = select_prompts(_pool(80), "k-center", 8, seed=4, params={"features": feats})
    first = int(np.random.default_rng(4).integers(80))
    assert kc.indices.tolist() == k_center_greedy(u, 8, first=first)[0].tolist()


def test_bad_features_and_settings_are_named(tmp_path):
    pool = _pool(10)
    bad = np.ones((10, 3), dtype=np.float32)
    bad[4, 1] = np.nan
    with pytest.raises(DesignError, match="1 rows are not finite.*ids q4"):
        select_prompts(pool, "k-center", 3, params={"features": _features(tmp_path, bad)})
    with pytest.raises(DesignError, match="9 rows of embeddings for a pool of 10"):
        select_prompts(pool, "k-center", 3, params={"features": _features(tmp_path, np.ones((9, 3)))})
    zero = np.random.default_rng(0).normal(size=(10, 3))
    zero[2] = 0
    with pytest.warns(UserWarning, match="1 rows have zero norm"):
        select_prompts(pool, "k-center", 3, params={"features": _features(tmp_path, zero)})
    feats = _features(tmp_path, np.random.default_rng(0).normal(size=(10, 3)))
    for params, match in [({"kernel": "poly"}, "choose rbf or cosine"), ({"optimizer": "magic"}, "auto, lazy"),
                          ({"sigma": -1}, "sigma must be positive"), ({"sigma": "wide"}, "sigma must be 'auto'")]:
        with pytest.raises(DesignError, match=match):
            select_prompts(pool, "facility-location", 3, params={"features": feats, **params})
    with pytest.raises(DesignError, match="choose sentence, lm"):
        select_prompts(pool, "k-center", 3, params={"features": "nope"})


def test_a_new_strategy_is_one_function():
    @strategy("test-last-b", "the last b rows (test only)")
    def last(ctx):
        return np.arange(len(ctx.pool))[-ctx.budget:], np.zeros(ctx.budget)

    try:
        assert select_prompts(_pool(10), "test-last-b", 3).ids == ["q7", "q8", "q9"]
    finally:
        del STRATEGIES["test-last-b"]


@pytest.mark.slow  # importing sentence-transformers alone takes 10-30 s on 2 shared cores
def test_sentence_and_lm_features_are_cached(tmp_path, monkeypatch):
    from frugalft.design.features import embeddings

    monkeypatch.setenv("FRUGALFT_CACHE", str(tmp_path / "cache"))
    pool = pool_from_rows([{"id": str(i), "prompt": p} for i, p in
                           enumerate(["sort a list", "sort the list", "capital of France", ""])])
    x = embeddings(pool, "sentence")
    assert x.shape == (4, 384) and np.allclose(np.linalg.norm(x[:3], axis=1), 1, atol=1e-5)
    assert x[0] @ x[1] > x[0] @ x[2]  # a real sentence model: paraphrases are closer
    files = list((tmp_path / "cache" / "features").glob("sentence-*.npy"))
    assert len(files) == 1 and np.array_equal(np.load(files[0]), x)
    lm = embeddings(pool, "lm", model="tiny-test", batch_size=3)
    assert lm.shape == (4, 64) and np.isfinite(lm).all()
    assert np.array_equal(embeddings(pool, "lm", model="tiny-test"), lm)  # from the cache


def test_uncertainty_strategy_end_to_end_with_tiny_model(tmp_path, monkeypatch):
    monkeypatch.setenv("FRUGALFT_CACHE", str(tmp_path / "cache"))
    pool = _pool(12)
    sel = select_prompts(pool, "min-margin", 4, model="tiny-test", params={"max_new_tokens": 3})
    assert len(sel) == 4 and np.all(np.diff(sel.scores) >= 0)
    assert len(list((tmp_path / "cache" / "features").glob("unc-*.npz"))) == 1

"""GreeDi (partition, greedy per part, greedy on the union) against exact centralised greedy."""

from __future__ import annotations

import numpy as np
import pytest

from frugalft.design import facility_location as fl
from frugalft.distributed.greedi import candidate_greedy, compare_with_exact, greedi, make_kernel


def clustered(n: int = 800, d: int = 8, clusters: int = 10, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, d)) * 3
    return (centers[rng.integers(0, clusters, n)] + rng.normal(size=(n, d))).astype(np.float32)


def brute_force_greedy(s: np.ndarray, candidates: np.ndarray, k: int) -> list[int]:
    """Plain greedy, every gain recomputed from the dense matrix (the reference for the lazy version)."""
    cover, picks = np.zeros(s.shape[1]), []
    for _ in range(k):
        gains = [np.maximum(s[j] - cover, 0).sum() if j not in picks else -1 for j in candidates]
        j = int(candidates[int(np.argmax(gains))])
        picks.append(j)
        cover = np.maximum(cover, s[j])
    return picks


def test_candidate_greedy_is_plain_greedy_over_the_candidates():
    x = clustered(200)
    kernel = make_kernel(x, 2.0)
    s = kernel.rows(np.arange(200)).astype(np.float64)
    cand = np.random.default_rng(1).choice(200, 40, replace=False)
    picks, gains = candidate_greedy(kernel, cand, 8)
    assert picks.tolist() == brute_force_greedy(s, cand, 8)
    assert np.all(np.diff(gains) <= 1e-4)  # submodular: gains never grow
    assert fl.objective(kernel, picks) == pytest.approx(gains.sum(), rel=1e-5)


def test_one_part_is_exact_greedy():
    x = clustered(300)
    exact, _ = fl.lazy_greedy(make_kernel(x, 2.5), 12)
    assert greedi(x, 12, parts=1, sigma=2.5).picks.tolist() == exact.tolist()


@pytest.mark.parametrize("parts", [2, 4, 8])
def test_greedi_objective_beside_exact_greedy(parts, capsys):
    """Stated bound: on clustered data GreeDi reaches >= 0.9 of exact greedy's objective (the worst-case
    guarantee, (1 - 1/e)^2 / min(m, k), is far lower; cluster structure is what makes partitioning cheap)."""
    x = clustered(800)
    res = compare_with_exact(x, 10, parts=parts, sigma="auto", seed=0)
    with capsys.disabled():
        print(f"\nGreeDi m={parts}: F={res['greedi']:.2f}  exact greedy F={res['exact']:.2f}  "
              f"ratio={res['ratio']:.4f}  ({res['candidates']} candidates, sigma={res['sigma']:.3f})")
    assert res["candidates"] <= parts * 10
    assert res["ratio"] >= 0.9


def test_greedi_rejects_bad_budgets():
    with pytest.raises(ValueError, match="k must be"):
        greedi(clustered(50), 0)
    with pytest.raises(ValueError, match="parts"):
        greedi(clustered(50), 5, parts=0)


def test_cli_greedi_writes_a_selection_file(tmp_path):
    import json

    from typer.testing import CliRunner

    from frugalft.cli.scale import app
    from frugalft.design import Selection

    x = clustered(120)
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "pool.jsonl").write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"prompt {i}"}) + "\n"
                                                 for i in range(120)))
    res = CliRunner().invoke(app, ["greedi", str(tmp_path / "pool.jsonl"), "-b", "6", "--parts", "3",
                                   "--features", str(tmp_path / "x.npy"), "--sigma", "2.5", "--compare",
                                   "-o", str(tmp_path / "sel.jsonl")])
    assert res.exit_code == 0, res.output
    sel = Selection.load(tmp_path / "sel.jsonl")
    want = greedi(x / np.linalg.norm(x, axis=1, keepdims=True), 6, parts=3, sigma=2.5)  # features are normalised
    assert sel.ids == [f"q{i}" for i in want.picks]
    assert "GreeDi / exact" in res.output
    bad = CliRunner().invoke(app, ["greedi", str(tmp_path / "pool.jsonl"), "-b", "500",
                                   "--features", str(tmp_path / "x.npy"), "-o", str(tmp_path / "s2.jsonl")])
    assert bad.exit_code != 0 and "1..120" in bad.output

"""The paired (by seed) bootstrap interval of the annotation savings, on synthetic seed curves with known answers."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from curvecells import write_cells
from frugalft.eval.curve import (
    CurveConfig,
    CurveError,
    annotation_savings,
    paired_savings_interval,
    summarize,
)

BUDGETS = (100, 200, 400)


def _curves(per_seed_means: dict[int, tuple[float, ...]]) -> dict[int, dict[int, float]]:
    """{seed: metric at each of BUDGETS} -> {budget: {seed: metric}}."""
    return {b: {s: m[i] for s, m in per_seed_means.items()} for i, b in enumerate(BUDGETS)}


def test_seed_luck_cancels_when_paired():
    # Each seed shifts every strategy by the same large amount (its SFT luck); the strategy is random's curve
    # moved 100 labels to the left. On any resample of seeds, random's mean is c + b/1000 and the strategy's
    # c + (b + 100)/1000, so it reaches random@400 at b = 300: savings exactly 0.25 in every resample.
    luck = {0: 0.0, 1: 0.3, 2: -0.2, 3: 0.1}
    per_seed = {"random": _curves({s: tuple(c + b / 1000 for b in BUDGETS) for s, c in luck.items()}),
                "fl": _curves({s: tuple(c + (b + 100) / 1000 for b in BUDGETS) for s, c in luck.items()})}
    out = paired_savings_interval(per_seed, 400, resamples=500)
    assert out["fl"]["savings_lo"] == pytest.approx(0.25) and out["fl"]["savings_hi"] == pytest.approx(0.25)
    assert out["fl"]["savings_p_gt0"] == 1.0 and out["fl"]["savings_seeds"] == 4
    assert out["random"]["savings_lo"] == pytest.approx(0.0) and out["random"]["savings_hi"] == pytest.approx(0.0)
    # Unpaired (the two curves' seeds drawn independently), the same data gives a wide interval: the luck of the
    # seeds no longer cancels. That is what pairing buys.
    rng = np.random.default_rng(0)
    unpaired = []
    for _ in range(500):
        da, dc = rng.integers(0, 4, 4), rng.integers(0, 4, 4)
        curves = {"random": {b: np.mean([per_seed["random"][b][k] for k in da]) for b in BUDGETS},
                  "fl": {b: np.mean([per_seed["fl"][b][k] for k in dc]) for b in BUDGETS}}
        v = annotation_savings(curves, 400)["fl"]["savings"]
        unpaired.append(-1.0 if v is None else v)  # not reached: below every measurable savings (>= 0 here)
    lo, hi = np.quantile(unpaired, [0.025, 0.975])
    assert hi - lo > 0.3


def test_two_seeds_interval_is_the_enumerated_resamples():
    # Random is the same on both seeds (target 0.4 at b = 400). The strategy reaches 0.4 at b = 200 on seed 0
    # (savings 1/2) and at b = 300 on seed 1 (1/4). With two seeds a resample is {0,0} (p 1/4), {0,1} (1/2) or
    # {1,1} (1/4); the mixed mean curve 0.15, 0.35, 0.55 reaches 0.4 at b = 250 (3/8). The 2.5% and 97.5%
    # quantiles fall inside the two pure groups (1/4 of the mass each): exactly 1/4 and 1/2.
    per_seed = {"random": _curves({0: (0.1, 0.2, 0.4), 1: (0.1, 0.2, 0.4)}),
                "s": _curves({0: (0.2, 0.4, 0.6), 1: (0.1, 0.3, 0.5)})}
    means = {name: {b: float(np.mean(list(v[b].values()))) for b in BUDGETS} for name, v in per_seed.items()}
    assert annotation_savings(means, 400)["s"]["savings"] == pytest.approx(3 / 8)  # the point estimate
    out = paired_savings_interval(per_seed, 400, resamples=4000, seed=1)["s"]
    assert out["savings_lo"] == pytest.approx(0.25) and out["savings_hi"] == pytest.approx(0.5)
    assert out["savings_p_gt0"] == 1.0
    assert paired_savings_interval(per_seed, 400, resamples=4000, seed=1)["s"] == out  # seeded: repeatable


def test_not_reached_resamples_rank_below_every_saving():
    # Seed 1 never reaches random's 0.4; seed 0 reaches it at b = 200 (1/2); the mix 0.15, 0.3, 0.45 at
    # b = 200 + 200 * 0.1 / 0.15 = 333.3 (1/6). {1,1} (a quarter of the resamples) is "not reached": the lower
    # bound lands there (None), the upper one on seed 0 alone; savings > 0 in the other three quarters.
    per_seed = {"random": _curves({0: (0.1, 0.2, 0.4), 1: (0.1, 0.2, 0.4)}),
                "s": _curves({0: (0.2, 0.4, 0.6), 1: (0.1, 0.2, 0.3)})}
    out = paired_savings_interval(per_seed, 400, resamples=4000)["s"]
    assert out["savings_lo"] is None and out["savings_hi"] == pytest.approx(0.5)
    assert out["savings_p_gt0"] == pytest.approx(0.75, abs=0.03)
    # Lower is better (a loss): the same curves negated give the same answer.
    neg = {k: {b: {s: -m for s, m in d.items()} for b, d in v.items()} for k, v in per_seed.items()}
    assert paired_savings_interval(neg, 400, higher_is_better=False, resamples=4000)["s"] == out


def test_unpaired_seeds_and_single_seed():
    # Only seeds both curves ran at every budget are paired; with fewer than two there is no interval.
    per_seed = {"random": _curves({0: (0.1, 0.2, 0.4), 1: (0.1, 0.2, 0.4)}),
                "s": _curves({0: (0.2, 0.4, 0.6), 7: (0.1, 0.3, 0.5)})}
    assert paired_savings_interval(per_seed, 400)["s"] == {"savings_lo": None, "savings_hi": None,
                                                           "savings_p_gt0": None, "savings_seeds": 1}
    with pytest.raises(CurveError, match="reference budget 300"):
        paired_savings_interval(per_seed, 300)
    with pytest.raises(CurveError, match="'random' strategy"):
        paired_savings_interval({"s": per_seed["s"]}, 400)


def test_summarize_writes_the_paired_interval(tmp_path):
    # Two seeds, each moving both strategies by the same +-0.01: paired, task-balanced saves 25% on every
    # resample (it reaches random@20 = 0.40 at b = 15), so the interval is [0.25, 0.25].
    write_cells(tmp_path)
    cfg = CurveConfig(strategies=["random", "task-balanced"], budgets=[10, 20], seeds=[0, 1], zero_shot=False,
                      out=str(tmp_path))
    result = summarize(cfg, tmp_path)
    tb = result["savings"]["task-balanced"]
    assert tb["savings"] == pytest.approx(0.25) and tb["status"] == "interpolated"  # the existing keys
    assert tb["savings_lo"] == pytest.approx(0.25) and tb["savings_hi"] == pytest.approx(0.25)
    assert tb["savings_seeds"] == 2 and tb["savings_p_gt0"] == 1.0
    with open(tmp_path / "savings.csv") as f:
        rows = {r["strategy"]: r for r in csv.DictReader(f)}
    assert list(rows["task-balanced"])[:6] == ["strategy", "reference_budget", "target", "budget_needed", "status",
                                               "savings"]
    assert float(rows["task-balanced"]["savings_lo"]) == pytest.approx(0.25)
    md = (tmp_path / "summary.md").read_text()
    assert "+25% (b_S = 15, interpolated) [paired 95%: +25%, +25%]" in md
    assert json.loads((tmp_path / "summary.json").read_text())["savings"]["task-balanced"]["savings_hi"] == \
        pytest.approx(0.25)

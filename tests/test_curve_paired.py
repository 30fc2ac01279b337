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
    comparisons,
    labels_per_task,
    paired_differences,
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


def test_paired_differences_by_hand():
    # Seeds 0-2 in both (seed 3 only in one: left out). Differences 0.1, 0.2, 0.3 at b = 100: mean 0.2, sd 0.1,
    # half-width t(0.975, 2) x 0.1 / sqrt(3) = 4.302653 x 0.057735 = 0.248414. At b = 200 both are equal: 0 +- 0.
    a = {100: {0: 0.5, 1: 0.6, 2: 0.7, 3: 9.0}, 200: {0: 0.8, 1: 0.8, 2: 0.8}}
    b = {100: {0: 0.4, 1: 0.4, 2: 0.4}, 200: {0: 0.8, 1: 0.8, 2: 0.8}}
    d = paired_differences({"s": a, "random": b}, "s", "random")
    assert d[100]["n"] == 3 and d[100]["by_seed"] == pytest.approx([0.1, 0.2, 0.3])
    assert d[100]["mean"] == pytest.approx(0.2)
    assert d[100]["lo"] == pytest.approx(0.2 - 0.248414, abs=1e-6) and d[100]["hi"] == pytest.approx(0.448414, abs=1e-6)
    assert (d[200]["mean"], d[200]["lo"], d[200]["hi"]) == pytest.approx((0.0, 0.0, 0.0))


def test_comparisons_pair_within_task_strategies_with_task_random():
    assert comparisons(["random", "task-random", "task-facility-location", "facility-location", "min-margin"]) == [
        ("task-random", "random"), ("task-facility-location", "random"), ("facility-location", "random"),
        ("min-margin", "random"), ("task-facility-location", "task-random")]
    assert comparisons(["facility-location", "k-center"]) == []  # no random: nothing to pair with
    assert comparisons(["random", "task-k-center"]) == [("task-k-center", "random")]


def test_labels_per_task_sums_over_seeds():
    rows = [{"strategy": "fl", "budget": 4, "seed": 0, "selected_tasks": {"a": 3, "b": 1}},
            {"strategy": "fl", "budget": 4, "seed": 1, "selected_tasks": {"a": 4}},
            {"strategy": "random", "budget": 4, "seed": 0, "selected_tasks": {"b": 2, "c": 2}}]
    assert labels_per_task(rows) == {"fl": {"4": {"a": 7, "b": 1}}, "random": {"4": {"b": 2, "c": 2}}}


def test_summarize_writes_paired_differences_and_label_counts(tmp_path):
    # The fixture's task-balanced is random + 0.1 on every seed and budget (ROUGE-L; eval_loss + 0.1 too):
    # a paired difference of exactly +0.1 with a zero-width interval.
    write_cells(tmp_path)
    cfg = CurveConfig(strategies=["random", "task-balanced"], budgets=[10, 20], seeds=[0, 1], zero_shot=False,
                      out=str(tmp_path))
    result = summarize(cfg, tmp_path)
    d = result["rougeL"]["paired"]["task-balanced - random"]["20"]
    assert (d["mean"], d["lo"], d["hi"], d["n"]) == pytest.approx((0.1, 0.1, 0.1, 2))
    with open(tmp_path / "paired_eval_loss.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["strategy"], r["versus"], r["budget"]) for r in rows] == [("task-balanced", "random", "10"),
                                                                        ("task-balanced", "random", "20")]
    assert float(rows[0]["mean_difference"]) == pytest.approx(-0.1) and rows[0]["by_seed"] == "-0.1000 -0.1000"
    md = (tmp_path / "summary.md").read_text()
    assert "| task-balanced - random | +0.100 [+0.100, +0.100] | +0.100 [+0.100, +0.100] |" in md

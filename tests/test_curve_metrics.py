"""ROUGE-L and exact match on known strings, per-task aggregation, the 95% band, and the savings definition."""

from __future__ import annotations

import math

import pytest

from frugalft.eval import exact_match, rouge_l, score
from frugalft.eval.curve import annotation_savings, budget_to_reach, mean_ci95


def test_rouge_l_by_hand():
    # LCS of "the cat sat on the mat" and "the cat on the mat" is 5 tokens: P = 5/6, R = 5/5.
    p, r = 5 / 6, 1.0
    assert rouge_l("the cat sat on the mat", "the cat on the mat") == pytest.approx(2 * p * r / (p + r))
    assert rouge_l("a b c d", "d c b a") == pytest.approx(0.25)  # LCS 1 of 4 both ways
    assert rouge_l("Hello, World!", "hello world") == pytest.approx(1.0)  # rouge-score's tokenizer: case/punct
    assert rouge_l("", "something") == 0.0


def test_exact_match_and_per_task():
    assert exact_match("  03/02/2001 \n", "03/02/2001") == 1.0
    assert exact_match("a  b", "a b") == 1.0
    assert exact_match("Paris", "paris") == 0.0
    s = score(["42", "x y", "cba", "no"], ["42", "x y z", "cba", "yes"], ["add", "add", "rev", "rev"])
    assert s["n"] == 4
    assert s["exact_match"] == pytest.approx(0.5)
    assert s["per_task"]["add"]["exact_match"] == pytest.approx(0.5)
    assert s["per_task"]["add"]["rougeL"] == pytest.approx((1 + 0.8) / 2)  # "x y" vs "x y z": P 1, R 2/3
    assert s["per_task"]["rev"]["rougeL"] == pytest.approx(0.5)
    assert s["rougeL"] == pytest.approx((1 + 0.8 + 1 + 0) / 4)
    assert s["macro_rougeL"] == pytest.approx((0.9 + 0.5) / 2)
    with pytest.raises(ValueError):
        score(["a"], ["a", "b"])


def test_ci95_is_the_student_t_interval():
    m, lo, hi = mean_ci95([1.0, 2.0, 3.0])
    half = 4.302652729911275 * 1.0 / math.sqrt(3)  # t_{0.975, 2} * sd / sqrt(n)
    assert (m, lo, hi) == pytest.approx((2.0, 2.0 - half, 2.0 + half))
    assert mean_ci95([0.5]) == (0.5, 0.5, 0.5)


def test_savings_hand_example():
    curves = {"random": {100: 0.20, 200: 0.30, 400: 0.40},
              "fl": {100: 0.25, 200: 0.35, 400: 0.50},
              "early": {100: 0.45, 200: 0.5, 400: 0.6},
              "worse": {100: 0.1, 200: 0.2, 400: 0.3}}
    sav = annotation_savings(curves, reference_budget=400)
    # fl reaches random@400 = 0.40 between 200 (0.35) and 400 (0.50): 200 + 0.05/0.15 * 200 = 266.67.
    assert sav["fl"]["budget_needed"] == pytest.approx(200 + 200 / 3)
    assert sav["fl"]["savings"] == pytest.approx(1 - (200 + 200 / 3) / 400)
    assert sav["fl"]["status"] == "interpolated"
    assert sav["random"]["savings"] == pytest.approx(0.0)
    assert sav["early"] == {**sav["early"], "budget_needed": 100.0, "status": "at_smallest", "savings": 0.75}
    assert sav["worse"]["savings"] is None and sav["worse"]["status"] == "not_reached"
    # A flat baseline (e.g. all scores 0) measures nothing, rather than crediting everyone at b_1.
    flat = annotation_savings({"random": {1: 0.0, 2: 0.0}, "x": {1: 0.0, 2: 0.1}}, reference_budget=2)
    assert {v["status"] for v in flat.values()} == {"baseline_flat"} and flat["x"]["savings"] is None
    # Lower-is-better (a loss): "reaching" the target means falling to it.
    loss = annotation_savings({"random": {100: 3.0, 200: 2.0}, "s": {100: 2.5, 200: 1.5}}, 200,
                              higher_is_better=False)
    assert loss["s"]["budget_needed"] == pytest.approx(150.0) and loss["s"]["savings"] == pytest.approx(0.25)
    # A reference budget in the middle: target = 0.30.
    assert budget_to_reach([100, 200, 400], [0.25, 0.35, 0.5], 0.30) == (pytest.approx(150.0), "interpolated")

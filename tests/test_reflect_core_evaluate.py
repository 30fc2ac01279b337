"""Evaluation: intervals, the random and oracle baselines through the same code, and the diagnostic."""

from __future__ import annotations

import pytest

from frugalft.reflect.evaluate import bootstrap_interval, evaluate, reflection_diagnostic, wilson_interval
from frugalft.reflect.rollout import Episode, Step, mentioned_actions
from frugalft.reflect.train import RLConfig, build_players


def test_wilson_interval_known_values():
    # Reference values of the Wilson score interval (z = 1.96), e.g. Newcombe (1998), Table I.
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(81, 263) == pytest.approx((0.2553, 0.3662), abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_bootstrap_interval_is_seeded_and_brackets_the_mean():
    xs = [0.1 * i for i in range(30)]
    lo, hi = bootstrap_interval(xs, seed=1)
    assert lo < sum(xs) / len(xs) < hi
    assert (lo, hi) == bootstrap_interval(xs, seed=1)
    # For a large sample the percentile interval approaches mean +- 1.96 * sd / sqrt(n).
    import numpy as np

    big = list(np.random.default_rng(0).normal(2.0, 1.0, 2000))
    lo, hi = bootstrap_interval(big, seed=0)
    half = 1.96 * np.std(big) / np.sqrt(len(big))
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.1)


CFG = RLConfig(policy_model="tiny-test", device="cpu")


def test_oracle_and_random_baselines_through_the_same_evaluation():
    oracle = evaluate("oracle", CFG, max_tasks=6, num_envs=6)
    assert oracle.episodes == 18 and oracle.success == 1.0
    assert oracle.diagnostic["oracle_agreement"] == 1.0
    assert oracle.success_ci[0] > 0.8
    rnd = evaluate("random", CFG, max_tasks=6, num_envs=6, repeats=2)
    assert rnd.episodes == 36 and rnd.success < 0.3
    assert rnd.ret < oracle.ret
    assert set(rnd.per_level) == {0, 1, 2}
    # Six actions, all listed, none favoured: the oracle's action has probability 1/6 at every step.
    assert rnd.diagnostic["oracle_prob"] == pytest.approx(1 / 6, abs=1e-6)
    with pytest.raises(ValueError, match="unknown baseline"):
        evaluate("clever", CFG)


def test_trained_players_with_reflection_report_the_counterfactual():
    cfg = RLConfig(policy_model="tiny-test", reflection_model="tiny-test", reflection_tokens=3, device="cpu")
    res = evaluate(build_players(cfg), cfg, max_tasks=2, levels=[0], num_envs=2, repeats=2)
    d = res.diagnostic
    assert res.episodes == 4
    assert 0.0 <= d["oracle_prob"] <= 1.0 and 0.0 <= d["oracle_prob_no_reflection"] <= 1.0
    assert {"reflection_mentions_oracle", "advice_rate", "oracle_agreement"} <= set(d)


def test_advice_statistics_by_hand():
    acts = ["south", "north", "east", "west", "pickup", "dropoff"]

    def step(refl, action, oracle):
        return Step(prompt_ids=[1], labels=list(range(6)), actions=acts, action=action, logprob=0.0, reward=0.0,
                    reflection=refl, oracle=oracle)

    steps = [step("Go east, the wall blocks north.", 2, 2),  # names two actions: no single advice
             step("Head EAST now.", 2, 2),  # advice east = oracle, followed
             step("Time to pickup.", 3, 4),  # advice pickup = oracle, not followed
             step("Northeast is open.", 0, 0)]  # "northeast" is not the word "north"/"east": no advice
    ep = Episode(env_index=0, episode_id=0, task_id="t", level=0, steps=steps)
    d = reflection_diagnostic([ep])
    assert d["oracle_agreement"] == 0.75
    assert d["reflection_mentions_oracle"] == 0.75
    assert d["advice_rate"] == 0.5
    assert d["advice_agrees_with_oracle"] == 1.0
    assert d["policy_follows_advice"] == 0.5
    assert mentioned_actions("cd .. then cat README.md", ["cd ..", "cat README.md", "cd src"]) == {0, 1}

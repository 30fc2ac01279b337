"""DangerousTaxi: Taxi-v3's dynamics, the dangerous rule, modes, oracle, determinism, gymnasium's checker."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.envs.toy_text.taxi import TaxiEnv
from gymnasium.utils.env_checker import check_env

import frugalft.envs  # noqa: F401  (registers the ids)
from frugalft.envs import InvalidActionError, VecTextEnv
from frugalft.envs.taxi import ACTIONS, DangerousTaxi


def play(env, policy, seed=None, options=None):
    obs, info = env.reset(seed=seed, options=options)
    transcript, total = [obs], 0.0
    while True:
        obs, r, term, trunc, info = env.step(policy(env, info))
        transcript.append(obs)
        total += r
        if term or trunc:
            return transcript, total, info


def oracle(env, info):
    return env.oracle_action()


def test_check_env_passes():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # gymnasium's checker only warns about some problems: treat them as errors
        check_env(gym.make("frugalft/DangerousTaxi-v0").unwrapped)
        check_env(gym.make("frugalft/DangerousTaxi-v0", mode="pickup", invalid_action="penalize").unwrapped)


def test_splits_disjoint_and_100_test_starts():
    env = DangerousTaxi()
    for level in env.levels:
        train, valid, test = (set(env.task_ids(sp, level)) for sp in ("train", "valid", "test"))
        assert (len(train), len(valid), len(test)) == (102, 40, 100)
        assert not train & test and not valid & test and not train & valid
    assert env.levels == [0, 1, 2]


@pytest.mark.parametrize("mode", ["pickup", "dropoff", "full"])
def test_oracle_solves_every_test_task(mode):
    env = DangerousTaxi(split="test", mode=mode)
    solved = 0
    for tid in env.task_ids("test", env.level):
        _, total, info = play(env, oracle, options={"task_id": tid})
        solved += info["success"]
        # optimal return: -1 per step and +20 at the end (pickup: the pickup step's -1 plus the bonus)
        steps = info["step"]
        assert total == pytest.approx((-(steps - 1) + (19 if mode == "pickup" else 20)) / 20)
    assert solved == 100


def test_oracle_is_shortest_against_bfs_on_gym_env():
    """The oracle's episode length equals a forward BFS over gymnasium's own Taxi-v3 step function."""
    gym_env = TaxiEnv()
    env = DangerousTaxi(split="test", mode="full")
    for tid in env.task_ids("test", 2)[:40]:
        start = int(tid.split("-")[1])
        frontier, seen, depth = {start}, {start}, 0
        found = None
        while found is None:
            depth += 1
            nxt = set()
            for s in frontier:
                for a in range(6):
                    gym_env.reset(seed=0)
                    gym_env.unwrapped.s = s
                    s2, _, term, _, _ = gym_env.step(a)
                    if term:
                        found = depth
                    if s2 != s and s2 not in seen:
                        seen.add(s2)
                        nxt.add(s2)
            frontier = nxt
        _, _, info = play(env, oracle, options={"task_id": tid})
        assert info["step"] == found


def test_moves_follow_gymnasium_taxi():
    rng = np.random.default_rng(0)
    gym_env = TaxiEnv()
    env = DangerousTaxi(mode="full")
    for episode in range(20):
        env.reset(seed=episode)
        gym_env.reset(seed=0)
        gym_env.s = env.state
        for _ in range(15):
            a = int(rng.integers(6))
            s_before = gym_env.s
            s2, r, term, _, _ = gym_env.step(a)
            _, reward, done, trunc, info = env.step(ACTIONS[a])
            if s2 == s_before:  # a wasted move: crash
                assert done and reward == -0.5 and not info["success"]
                break
            assert env.state == s2 and reward == pytest.approx(r / 20)
            if done or trunc:
                break


def test_dangerous_first_step_and_render():
    env = DangerousTaxi(mode="full")
    env.reset(seed=0)
    assert not env.privileged()["passenger_aboard"]
    obs, r, term, trunc, info = env.step("dropoff")  # nobody aboard: nothing changes
    assert (r, term, trunc, info["success"], info["actions"]) == (-0.5, True, False, False, [])
    with pytest.raises(RuntimeError, match="reset"):
        env.step("south")


def test_map_and_symbols():
    env = DangerousTaxi(mode="pickup")
    env.reset(seed=0)
    env.state = TaxiEnv().encode(2, 2, 1, 2)  # taxi in the middle, passenger at G, destination Y
    text = env.render_map()
    assert text.splitlines() == ["+---------+", "|R: | : :P|", "| : | : : |", "| : :T: : |",
                                 "| | : | : |", "|D| : |B: |", "+---------+"]
    env.state = TaxiEnv().encode(0, 4, 4, 2)
    assert env.render_map().splitlines()[1] == "|R: | : :X|"
    env.state = TaxiEnv().encode(0, 4, 1, 2)
    assert env.render_map().splitlines()[1] == "|R: | : :O|"


def test_pickup_bonus_and_dropoff_start():
    env = DangerousTaxi(mode="pickup")
    _, total, info = play(env, oracle, seed=3)
    assert info["success"] and total > 0.5
    env = DangerousTaxi(mode="dropoff", split="test")
    _, info = env.reset(seed=1)
    assert env.privileged()["passenger_aboard"]
    full = DangerousTaxi(mode="full", split="test")
    full.reset(options={"task_id": info["task_id"].replace("dropoff", "full")})
    steps_full = full.privileged()["distance"]
    assert env.privileged()["distance"] < steps_full  # the pickup leg is already done


def test_same_seed_same_transcript_and_random_differs():
    env = DangerousTaxi(mode="full")
    rng_policy = lambda seed: (lambda e, info, r=np.random.default_rng(seed): ACTIONS[int(r.integers(6))])  # noqa: E731
    a = play(env, rng_policy(5), seed=11)[0]
    b = play(env, rng_policy(5), seed=11)[0]
    assert a == b
    assert play(env, oracle, seed=11)[0] == play(env, oracle, seed=11)[0]
    first = {env.reset(seed=s)[1]["task_id"] for s in range(30)}
    assert len(first) > 10


def test_invalid_actions():
    env = DangerousTaxi(mode="full", invalid_action="raise")
    _, info = env.reset(seed=0)
    with pytest.raises(InvalidActionError, match="south"):
        env.step("fly")
    with pytest.raises(InvalidActionError):
        env.step(6)
    assert env.step(0)[4]["parts"]["history"] == "1. south"  # an index into info["actions"] works
    for env in (DangerousTaxi(mode="full", invalid_action="penalize"), DangerousTaxi(mode="full")):  # the default
        env.reset(seed=0)
        _, r, term, _, info = env.step("fly")  # a wasted move: the crash of the dangerous rule
        assert (r, term, info["success"]) == (-0.5, True, False)
    with pytest.raises(ValueError, match="mode"):
        DangerousTaxi(mode="drop")
    with pytest.raises(ValueError, match="levels"):
        DangerousTaxi(level=7)


def test_parts_and_horizon():
    env = DangerousTaxi(mode="full", horizon=2)
    obs, info = env.reset(seed=4)
    assert list(info["parts"]) == ["task", "map", "legend", "history", "last_result"]
    assert obs == env.render_parts(info["parts"]) and "pickup" not in info["parts"]["history"]
    env.step(env.oracle_action())
    _, _, term, trunc, info = env.step(env.oracle_action())
    assert trunc and not term and not info["success"] and info["actions"] == []
    assert info["parts"]["history"].count("\n") == 1


def test_vector_env():
    vec = VecTextEnv([lambda: DangerousTaxi(mode="full", split="test")] * 3)
    obs, infos = vec.reset(seeds=7)
    single = DangerousTaxi(mode="full", split="test")
    assert obs[1] == single.reset(seed=8)[0]
    out = vec.step([e.oracle_action() for e in vec.envs])
    assert out[1] == [-0.05] * 3
    # skip env 0, step the others
    obs2, rewards, _, _, _ = vec.step([None, vec.envs[1].oracle_action(), vec.envs[2].oracle_action()])
    assert obs2[0] == out[0][0] and rewards[0] == 0.0

"""gymnasium's contract with the default keywords, for every registered id: ``check_env`` on exactly
``gym.make(id)``, and random play that samples from ``info["action_mask"]``."""

from __future__ import annotations

import importlib.util
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import frugalft.envs  # noqa: F401  (registers the ids)
from frugalft.envs import ENV_IDS

HAS_TEXTWORLD = importlib.util.find_spec("textworld") is not None
needs_textworld = [pytest.mark.slow,
                   pytest.mark.skipif(not HAS_TEXTWORLD, reason="needs the textworld extra")]
IDS = [
    pytest.param(ENV_IDS["DangerousTaxi"], id="DangerousTaxi"),
    pytest.param(ENV_IDS["AutoExplore"], id="AutoExplore"),
    # TextWorld's generator loads its grammar (~20 s) before its first game; games are cached afterwards.
    pytest.param(ENV_IDS["TextWorld"], id="TextWorld", marks=needs_textworld),
    pytest.param(ENV_IDS["ALFWorld"], id="ALFWorld", marks=needs_textworld),
]


def test_every_registered_id_is_covered():
    assert {p.values[0] for p in IDS} == set(frugalft.envs._ENTRY_POINTS) == set(ENV_IDS.values())


@pytest.fixture()
def defaults_work(request, tmp_path_factory, monkeypatch):
    """ALFWorld's default keywords read $ALFWORLD_DATA: lay out one TextWorld game as ALFWorld's folders."""
    if request.node.callspec.id != "ALFWorld":
        return
    from frugalft.envs.textworld_env import TextWorld

    game = TextWorld(split="train", level=0, n_train=1, n_test=1).game_file("tw-coin_collector/L0/train-0")
    data = tmp_path_factory.mktemp("alfworld")
    for subset in ("train", "valid_unseen"):
        trial = data / "json_2.1.1" / subset / "pick_and_place_simple-Coin-None-Floor-1" / "trial_T0001"
        trial.mkdir(parents=True)
        for ext in (".z8", ".json"):
            (trial / f"game{ext}").symlink_to(game.replace(".z8", ext))
    monkeypatch.setenv("ALFWORLD_DATA", str(data))


@pytest.mark.parametrize("env_id", IDS)
def test_check_env_with_default_keywords(env_id, defaults_work):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # gymnasium's checker only warns about some problems: treat them as errors
        # A built-in repo at another version than the pinned one changes the task set, not the API under test.
        warnings.filterwarnings("ignore", message=".*is installed, not the pinned")
        check_env(gym.make(env_id).unwrapped)


@pytest.mark.parametrize("env_id", IDS)
def test_random_masked_steps(env_id, defaults_work):
    env = gym.make(env_id)
    n = int(env.action_space.n)
    # TextWorld games are generated on first play: replay the game check_env already made (its seed 123).
    games = env_id in (ENV_IDS["TextWorld"], ENV_IDS["ALFWorld"])
    episodes = 0
    _, info = env.reset(seed=123 if games else 0)
    env.action_space.seed(0)
    for _ in range(200):
        mask = info["action_mask"]
        assert mask.dtype == np.int8 and mask.shape == (n,)
        assert mask.tolist() == [1] * min(len(info["actions"]), n) + [0] * max(0, n - len(info["actions"]))
        action = env.action_space.sample(mask=mask)
        assert 0 <= action < len(info["actions"])
        obs, reward, terminated, truncated, info = env.step(action)
        assert env.observation_space.contains(obs) and isinstance(reward, float)
        assert "Invalid choice" not in info["parts"]["last_result"]  # a masked sample is always a listed action
        if terminated or truncated:
            assert not info["action_mask"].any() and info["actions"] == []
            episodes += 1
            _, info = env.reset(seed=123 if games else episodes)
    assert episodes > 0


def test_an_unlisted_index_is_the_costly_invalid_choice():
    env = gym.make(ENV_IDS["AutoExplore"])
    _, info = env.reset(seed=0)
    listed = len(info["actions"])
    _, reward, terminated, _, after = env.step(listed)  # in the space, beyond the list
    assert (reward, terminated) == (env.unwrapped.invalid_penalty, False)
    assert "Invalid choice" in after["parts"]["last_result"] and after["actions"] == info["actions"]
    after["action_mask"][:] = 0  # the caller's copy: the environment still offers its actions
    assert env.step(0)[4]["step"] == 2

"""TextWorld games (generated offline, cached) and the ALFWorld adapter's shared path, on two small games."""

from __future__ import annotations

import warnings

import gymnasium as gym
import pytest

pytest.importorskip("textworld")

from gymnasium.utils.env_checker import check_env  # noqa: E402

import frugalft.envs  # noqa: E402, F401
from envplay import play  # noqa: E402
from frugalft.envs import InvalidActionError  # noqa: E402
from frugalft.envs.textworld_env import ALFWorld, TextWorld, find_alfworld_games  # noqa: E402
from frugalft.reflect.teachers import Situation, TeacherConfig, make_teacher  # noqa: E402

pytestmark = pytest.mark.slow  # TextWorld's generator loads its grammar (~20 s) before the first game


@pytest.fixture(scope="module")
def games():
    """Two games: level 0 (train) and level 2 (test) of the coin collector (walkthroughs of 2 and 10 commands)."""
    train = TextWorld(split="train", level=0, n_train=1, n_test=1)
    test = TextWorld(split="test", level=2, n_train=1, n_test=1)
    return train, test


def test_tasks_splits_and_levels(games):
    train, _ = games
    env = TextWorld(n_train=3, n_test=2, n_valid=1)
    assert env.levels == [0, 1, 2]
    tr, va, te = (set(env.task_ids(sp)) for sp in ("train", "valid", "test"))
    assert len(tr) == 9 and len(va) == 3 and len(te) == 6 and not tr & te and not va & (tr | te)
    assert env.task_ids("test", 2) == ["tw-coin_collector/L2/test-100000", "tw-coin_collector/L2/test-100001"]
    assert env.task_ids("valid", 1) == ["tw-coin_collector/L1/valid-200000"]
    # The seed ranges stay apart: too many games per split is refused rather than overlapping.
    with pytest.raises(ValueError, match="seed ranges"):
        TextWorld(n_train=100_000)
    with pytest.raises(ValueError, match="known"):
        TextWorld(challenge="tw-nope")


def test_oracle_wins_with_the_walkthrough_length(games):
    for env, moves in zip(games, (2, 10), strict=True):
        tid = env.task_ids(env.split, env.level)[0]
        transcript, total, info = play(env, lambda e, i: e.oracle_action(), options={"task_id": tid})
        assert info["success"] and total == 1.0  # the coin collector's only point
        assert [a for a, _, _ in transcript[1:]] == env.privileged()["walkthrough"]
        assert len(transcript) - 1 == moves  # the coin collector's level is its walkthrough length
        assert "RESTART" not in transcript[-1][1]


def test_check_env_and_determinism(games):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(gym.make("frugalft/TextWorld-v0", level=0, n_train=1, n_test=1,
                           invalid_action="penalize").unwrapped)
    train, _ = games

    def first_action(env, info):
        return info["actions"][0]

    a = play(train, first_action, seed=3)[0]
    b = play(train, first_action, seed=3)[0]
    assert a == b
    obs, info = train.reset(seed=0)
    assert list(info["parts"]) == ["task", "location", "inventory", "history", "last_result"]
    assert info["actions"] == sorted(info["actions"]) and "look" in info["actions"]
    _, r, term, _, info = train.step("dance")  # the default: a costly invalid choice, the game goes on
    assert (r, term) == (-1.0, False) and "look" in info["actions"]
    strict = TextWorld(split="train", level=0, n_train=1, n_test=1, invalid_action="raise")
    strict.reset(seed=0)
    with pytest.raises(InvalidActionError, match="look"):
        strict.step("dance")


def test_alfworld_adapter_on_textworld_games(games, tmp_path, monkeypatch):
    train, test = games
    layout = {"train": train.game_file(train.task_ids("train", 0)[0]),
              "valid_unseen": test.game_file(test.task_ids("test", 2)[0])}
    for subset, game in layout.items():
        for family in ("pick_and_place_simple-Coin-None-Floor-1", "look_at_obj_in_light-Lamp-None-Desk-2"):
            trial = tmp_path / "json_2.1.1" / subset / family / "trial_T0001"
            trial.mkdir(parents=True)
            for ext in (".z8", ".json"):
                (trial / f"game{ext}").symlink_to(game.replace(".z8", ext))
    assert len(find_alfworld_games(tmp_path, "train", "pick_and_place_simple")) == 1
    monkeypatch.setenv("ALFWORLD_DATA", str(tmp_path))
    env = gym.make("frugalft/ALFWorld-v0", split="test").unwrapped
    assert env.task_ids("train") == ["train/pick_and_place_simple-Coin-None-Floor-1/trial_T0001"]
    assert env.task_ids("test") == ["test/pick_and_place_simple-Coin-None-Floor-1/trial_T0001"]
    _, total, info = play(env, lambda e, i: e.oracle_action(), seed=0)
    assert info["success"] and total == 1.0 and info["step"] == 10
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(gym.make("frugalft/ALFWorld-v0", invalid_action="penalize").unwrapped)


def test_alfworld_missing_data_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("ALFWORLD_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match="ALFWORLD_DATA"):
        ALFWorld()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ALFWorld(data_path=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="valid_unseen|train"):
        ALFWorld(data_path=str(tmp_path))


def test_the_textworld_teacher(games):
    env = games[1]  # level 2: ten rooms to the coin
    teacher = make_teacher(TeacherConfig(), "textworld")
    obs, info = env.reset(options={"task_id": env.task_ids("test", 2)[0]})
    before = env.privileged()
    text = teacher.reflect(Situation("textworld", obs, info["actions"], before, env.oracle_action()))
    assert "The goal is 10 steps away" in text and "coin" in text.lower() and env.oracle_action() not in text
    obs, _, _, _, info = env.step(env.oracle_action())  # one room on, going back is a wrong move
    before = env.privileged()
    wrong = next(a for a in info["actions"] if a.startswith("go ") and a != env.oracle_action())
    obs, _, _, _, info = env.step(wrong)
    text = teacher.reflect(Situation("textworld", obs, info["actions"], env.privileged(), env.oracle_action(),
                                     mistake=wrong, before=before))
    assert text.startswith(f"The last move, {wrong}, was a mistake: it led away from the goal (10 steps to go "
                           "now, 9 before)")
    brief = make_teacher(TeacherConfig(brief=True, reveal_action=True), "textworld")
    assert brief.reflect(Situation("textworld", obs, info["actions"], env.privileged(),
                                   env.oracle_action())).endswith(f"Next: {env.oracle_action()}.")

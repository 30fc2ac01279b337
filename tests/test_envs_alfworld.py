"""ALFWorld games generated from the alfworld wheel's engine files: the generator, the adapter and the teacher."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import gymnasium as gym
import pytest

pytest.importorskip("alfworld")
pytest.importorskip("fast_downward")  # TextWorld's PDDL engine (textworld[pddl], an alfworld dependency)

from gymnasium.utils.env_checker import check_env  # noqa: E402

import frugalft.envs  # noqa: E402, F401
from envplay import play  # noqa: E402
from frugalft.envs.alfworld_games import (  # noqa: E402
    _thor_id,
    demangled_names,
    generate_alfworld_games,
    mangle,
)
from frugalft.envs.textworld_env import ALFWorld  # noqa: E402
from frugalft.reflect.teachers import Situation, TeacherConfig, make_teacher  # noqa: E402

pytestmark = pytest.mark.slow  # the PDDL engine grounds a room at each reset (~0.5-2 s): ~20-40 s on 2 cores


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Two train games, one valid_seen and two valid_unseen ones."""
    out = tmp_path_factory.mktemp("alfworld")
    generate_alfworld_games(out, n_train=2, n_valid=1, n_test=2, seed=0)
    return out


def test_generator_is_deterministic_and_its_splits_are_disjoint(data, tmp_path):
    again = tmp_path / "again"
    generate_alfworld_games(again, n_train=2, n_valid=1, n_test=2, seed=0)
    assert _files(again) == _files(data)  # the same seed writes the same bytes
    other = tmp_path / "other"
    generate_alfworld_games(other, n_train=2, n_valid=1, n_test=2, seed=1)
    assert _files(other) != _files(data)

    # Enough games to see the splits: generating is cheap (no engine), playing is not.
    big = tmp_path / "big"
    m = generate_alfworld_games(big, n_train=60, n_valid=15, n_test=15, seed=3)
    folders = {sp: sorted(p.name for p in (big / sp).iterdir()) for sp in ("train", "valid_seen", "valid_unseen")}
    assert [len(m["splits"][sp]) for sp in ("train", "valid", "test")] == [60, 15, 15]
    scenes = {sp: {g["scene"] for g in games} for sp, games in m["splits"].items()}
    pairs = {sp: {(g["object"], g["receptacle"]) for g in games} for sp, games in m["splits"].items()}
    assert not scenes["test"] & (scenes["train"] | scenes["valid"])  # valid_unseen: unseen scenes
    assert not pairs["test"] & (pairs["train"] | pairs["valid"])  # and unseen (object, receptacle) goals
    assert scenes["valid"] <= scenes["train"] | set(range(1, 431)) and not set(folders["valid_unseen"]) & set(
        folders["train"])
    trials = {sp: {g["game"] for g in games} for sp, games in m["splits"].items()}
    assert not trials["train"] & trials["valid"] and not trials["train"] & trials["test"]
    # ALFWorld's names: basins are parts of their sink or bathtub ("sinkbasin 1", never "sinkbasinbasin 1").
    assert list(demangled_names([mangle(_thor_id("SinkBasin", 0.5, 0.9, -1.0))]).values()) == ["sinkbasin 1"]
    for game in big.rglob("game.tw-pddl"):
        problem = json.loads(game.read_text())["pddl_problem"]
        ids = [line.split(" - ")[0].strip() for line in problem.splitlines() if " - " in line]
        assert not any("basinbasin" in n for n in demangled_names(ids).values())
    # ALFWorld's folder names, and rooms of realistic size
    name = folders["train"][0]
    assert name.startswith("pick_and_place_simple-") and name.split("-")[2] == "None"
    assert min(g["receptacles"] for g in m["splits"]["train"]) >= 5
    assert min(g["objects"] for g in m["splits"]["train"]) >= 8


def test_a_generated_game_is_alfworlds_text_won_by_the_expert_and_lost_by_a_wrong_plan(data):
    env = ALFWorld(data_path=str(data), split="train")
    assert {sp: len(env.task_ids(sp)) for sp in ("train", "valid", "test")} == {"train": 2, "valid": 1, "test": 2}
    task = env.task_ids("train")[0]
    game = json.loads(Path(env.game_file(task)).read_text())
    assert game["solvable"] and "(:domain alfred)" in game["pddl_problem"]

    obs, info = env.reset(options={"task_id": task})
    p = env.privileged()
    assert "You are in the middle of a room" in obs and obs.startswith("Task:\nput ")
    assert p["policy_commands"] == game["walkthrough"]  # the engine's planner and the construction agree
    assert any(a.startswith("go to ") for a in info["actions"]) and "look" in info["actions"]
    transcript, total, info = play(env, lambda e, i: e.oracle_action(), options={"task_id": task})
    assert info["success"] and total == 1.0 and info["step"] == len(game["walkthrough"])
    assert transcript[-1][1].endswith("You move the " + game["walkthrough"][-1].split(" to ")[0][5:]
                                      + " to the " + game["walkthrough"][-1].split(" to ")[1] + ".")

    # A fixed wrong plan: go straight to the goal receptacle, then look around until the horizon.
    goal_go = next(c for c in game["walkthrough"][1:] if c.startswith("go to "))
    wrong = [goal_go] + ["look"] * 20
    _, total, info = play(env, lambda e, i: wrong[e.t], options={"task_id": task})
    assert not info["success"] and total == 0.0 and info["step"] == env.horizon


def test_check_env_and_the_teacher(data):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", ResourceWarning)  # TextWorld's PDDL loader leaves its game file open
        check_env(gym.make("frugalft/ALFWorld-v0", data_path=str(data), split="test").unwrapped)
    env = ALFWorld(data_path=str(data), split="test")
    teacher = make_teacher(TeacherConfig(), "alfworld")
    obs, info = env.reset(seed=0)
    p = env.privileged()
    text = teacher.reflect(Situation("alfworld", obs, info["actions"], p, env.oracle_action()))
    assert f"put a {p['goal_object']} in a {p['goal_receptacle']}" in text and "probably" in text
    assert env.oracle_action() not in text  # it points the way without naming the command
    # A wrong move: the corrective reflection says so, with the longer way now.
    wrong = next(a for a in info["actions"] if a.startswith("go to ") and a != env.oracle_action())
    obs, _, _, _, info = env.step(wrong)
    text = teacher.reflect(Situation("alfworld", obs, info["actions"], env.privileged(), env.oracle_action(),
                                     mistake=wrong, before=p))
    assert text.startswith(f"Going to {wrong[6:]} was a mistake")
    brief = make_teacher(TeacherConfig(brief=True, reveal_action=True), "alfworld")
    assert brief.reflect(Situation("alfworld", obs, info["actions"], env.privileged(),
                                   env.oracle_action())).endswith(f"Next: {env.oracle_action()}.")


def test_warmup_data_on_generated_games(data, tmp_path):
    from frugalft.reflect.warmup_data import DataConfig, generate

    config = DataConfig(env="ALFWorld", env_kwargs={"data_path": str(data)}, tasks_per_level=1)
    counts = generate(config, tmp_path, log=lambda *a: None)
    rows = [json.loads(line) for line in (tmp_path / "policy.jsonl").read_text().splitlines()]
    assert counts["behaviour_success_rate"] == 1.0 and counts["corrective_steps"] == 1
    assert all(r["reflection"].startswith(("The task is to put", "The last action", "Going to", "Taking",
                                           "Putting", "Opening", "Closing")) for r in rows)
    assert rows[0]["parts"]["task"].startswith("put ") and rows[0]["target"].startswith("go to ")


def test_the_engine_speedup_changes_no_text_and_no_command(data, monkeypatch):
    """frugalft.envs.pddl_speedup caches pure parts of TextWorld's PDDL engine: a seeded random play of every
    generated game gives the same observations, command lists, rewards and plans with and without it."""
    import random

    import textworld.envs.pddl.textgen as textgen

    from frugalft.envs import pddl_speedup

    def trace() -> list:
        out = []
        for split in ("train", "test"):
            env = ALFWorld(split=split, data_path=str(data), horizon=8)
            for i, task in enumerate(env.task_ids(split) * 2):  # each game twice: the reset cache is hit
                rng = random.Random(i)
                obs, info = env.reset(options={"task_id": task})
                out.append((obs, info["actions"], env.privileged()["policy_commands"]))
                for _ in range(6):
                    obs, reward, term, trunc, info = env.step(rng.choice(info["actions"]))
                    out.append((obs, reward, info["actions"]))
                    if term or trunc:
                        break
            env.close()
        return out

    install = pddl_speedup.install
    pddl_speedup.uninstall()
    original = textgen.copy_context
    try:
        monkeypatch.setattr(pddl_speedup, "install", lambda: None)  # the library's own code for the reference
        reference = trace()
        assert textgen.copy_context is original
        monkeypatch.setattr(pddl_speedup, "install", install)
        assert trace() == reference
        assert textgen.copy_context is not original
        install()  # idempotent
    finally:
        pddl_speedup.uninstall()
    assert textgen.copy_context is original


def test_the_search_expert_uses_only_what_the_player_has_seen(data):
    """oracle="search": it goes through the receptacles that can hold the goal object in the room's listing order
    (computed here from the game's canContain facts, independently of the env's code), takes the first goal
    object it sees, carries it to the first goal receptacle, and wins every generated game; its teacher's
    reflections never name a place the player has not seen the object in."""
    import re

    env = ALFWorld(data_path=str(data), split="train", horizon=40, oracle="search")
    teacher = make_teacher(TeacherConfig(brief=True), "alfworld")
    for split in ("train", "valid", "test"):
        for task in env.task_ids(split):
            obs, info = env.reset(options={"task_id": task})
            game = json.loads(Path(env.game_file(task)).read_text())
            problem = game["pddl_problem"]
            obj, recep = env._goal
            holders = {r.lower().removesuffix("type") for r, o in re.findall(r"\(canContain (\w+) (\w+)\)", problem)
                       if o.lower() == obj + "type"}
            listing = re.search(r"you see (.+)\.", info["parts"]["location"]).group(1)
            rooms = [x.removeprefix("and ").removeprefix("a ").strip() for x in listing.split(", ")]
            expected = [r for r in rooms if r.rsplit(" ", 1)[0] in holders - {recep}]
            gone, first_take = [], None
            for _ in range(40):
                p = env.privileged()
                text = teacher.reflect(Situation("alfworld", obs, info["actions"], p, env.oracle_action()))
                assert "probably" not in text and "likely" not in text
                if not p["holding_goal_object"] and not p["seen_here"]:
                    hidden = set(p["target_locations"].values()) - set(p["searched"])
                    assert not any(re.search(rf"\b{re.escape(h)}\b", text) for h in hidden if h not in p["search_left"][:3])
                a = env.oracle_action()
                if a.startswith("go to ") and first_take is None:
                    gone.append(a[6:])
                if a.startswith("take ") and first_take is None:
                    first_take = a
                obs, reward, term, trunc, info = env.step(a)
                if term or trunc:
                    break
            assert info["success"], (task, env.history)
            assert gone == expected[:len(gone)]  # the listing order, skipping what cannot hold the object
            assert first_take is not None and first_take.split(" ")[1] == obj


def test_the_notepad_is_the_opening_listing_minus_what_the_player_has_looked_into(data):
    """notepad=True adds "Not searched": the room's opening listing, in order, less the places whose contents the
    player has seen (surfaces it went to, receptacles it opened), recomputed here from the observations alone;
    the default observation has no such section, and the expert plays the same moves with or without it."""
    import re

    plain = ALFWorld(data_path=str(data), split="train", horizon=40, oracle="search")
    noted = ALFWorld(data_path=str(data), split="train", horizon=40, oracle="search", notepad=True)
    for task in plain.task_ids("train"):
        obs_p, info_p = plain.reset(options={"task_id": task})
        obs, info = noted.reset(options={"task_id": task})
        assert "not_searched" not in info_p["parts"] and "Not searched" not in obs_p
        listing = re.search(r"you see (.+)\.", info["parts"]["location"]).group(1)
        rooms = [x.removeprefix("and ").removeprefix("a ").strip() for x in listing.split(", ")]
        assert info["parts"]["not_searched"] == ", ".join(rooms) and "Not searched:\n" + ", ".join(rooms) in obs
        seen: set[str] = set()
        for _ in range(40):
            a = noted.oracle_action()
            assert a == plain.oracle_action()
            obs, _, term, trunc, info = noted.step(a)
            plain.step(a)
            here = re.match(r"You are at (.+?)\. (The .+? is (open|closed)|On the)", info["parts"]["location"])
            if here and here.group(3) != "closed":  # an open receptacle or a surface: its contents were shown
                seen.add(here.group(1))
            if term or trunc:
                break
            left = [r for r in rooms if r not in seen]
            assert info["parts"]["not_searched"] == (", ".join(left) or "nothing"), (task, noted.history)
        assert info["success"]

"""AutoExplore on the built-in repositories: tasks, splits, oracle, rewards, augmentation, determinism."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import frugalft.envs  # noqa: F401
from envplay import play
from frugalft.envs import InvalidActionError
from frugalft.envs.autoexplore import AutoExplore
from frugalft.envs.repo_tasks import BUILTIN_REPOS, cat_view, level_of_depth, visible_text
from frugalft.envs.sandbox import Sandbox


@pytest.fixture(scope="module")
def test_env():
    return AutoExplore(split="test")


@pytest.fixture(scope="module")
def train_env():
    return AutoExplore(split="train")


def oracle(env, info):
    return env.oracle_action()


def test_check_env():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(gym.make("frugalft/AutoExplore-v0", invalid_action="penalize").unwrapped)


def test_test_repos_never_seen_in_training(train_env, test_env):
    train_repos = train_env.repos_of("train")
    unseen = AutoExplore(split="test", test_tasks="unseen_repos")
    unseen_repos = unseen.repos_of("test")
    assert unseen_repos and not unseen_repos & train_repos
    assert {r.split("-")[0] for r in unseen_repos} == {p for p, *_, role in BUILTIN_REPOS if role == "test"}
    held = AutoExplore(split="test", test_tasks="held_out")
    assert held.repos_of("test") <= train_repos  # held-out questions about training repositories
    assert not set(train_env.task_ids("train")) & set(test_env.task_ids("test"))
    assert len(test_env.task_ids("test")) == len(unseen.task_ids("test")) + len(held.task_ids("test"))
    for split, env in (("train", train_env), ("valid", test_env), ("test", test_env)):
        for level in env.levels:
            assert env.task_ids(split, level), f"no {split} tasks at level {level}"
    # the valid split has an unseen repository of its own, and shares no task with train or test
    valid_unseen = unseen.repos_of("valid")
    assert {r.split("-")[0] for r in valid_unseen} == {p for p, *_, role in BUILTIN_REPOS if role == "valid"}
    assert not valid_unseen & (train_repos | unseen_repos)
    valid = set(test_env.task_ids("valid"))
    assert valid and not valid & set(train_env.task_ids("train")) and not valid & set(test_env.task_ids("test"))


def test_oracle_solves_every_test_task_at_every_level(test_env):
    for level in test_env.levels:
        ids = test_env.task_ids("test", level)
        for tid in ids:
            _, total, info = play(test_env, oracle, options={"task_id": tid})
            task = test_env.tasks[tid]
            assert info["success"], tid
            # cd into each folder, cat, id: -1 per step and +15 at the end
            assert info["step"] == task.depth + 2 and total == -(task.depth + 2) + 15


def test_tasks_are_verifiable_and_do_not_give_the_path_away(test_env, train_env):
    defined, sources = {}, {}
    for env in (train_env, test_env):
        for task in env.tasks.values():
            root = Path(task.root)
            fv = Sandbox(root).read(task.path)
            shown, _ = visible_text(fv, 40, 1600)
            assert task.evidence in shown, task
            stem = Path(task.path).name.split(".")[0].lower().strip("_")
            if len(stem) >= 4:
                assert stem not in task.question.lower().replace("_", ""), task
            assert task.level == level_of_depth(task.path.count("/"))
            if task.kind == "class":
                name = re.search(r"`(\w+)`", task.question).group(1)
                key = (task.repo, name)
                if task.repo not in sources:
                    sources[task.repo] = {str(p.relative_to(root)): p.read_text(errors="replace")
                                          for p in root.rglob("*.py")}
                if key not in defined:  # an independent check of uniqueness: grep every .py file
                    defined[key] = [p for p, text in sources[task.repo].items()
                                    if re.search(rf"^class {name}\b", text, re.M)]
                assert defined[key] == [task.path], (name, defined[key])


def test_rewards_wrong_answer_and_timeout(test_env):
    tid = next(t for t in test_env.task_ids("test") if test_env.tasks[t].depth == 1)
    _, info = test_env.reset(options={"task_id": tid})
    wrong = next(a for a in info["actions"] if a.startswith("id "))
    _, r, term, trunc, info = test_env.step(wrong)
    assert (r, term, trunc, info["success"]) == (-16.0, True, False, False)

    env = AutoExplore(split="test", horizon=3)
    _, info = env.reset(options={"task_id": tid})
    rewards = []
    for _ in range(3):
        _, r, term, trunc, info = env.step("cd .." if "cd .." in info["actions"] else info["actions"][0])
        rewards.append(r)
        if term or trunc:
            break
    assert rewards[-1] == -16.0 and trunc and not info["success"]


def test_commands_and_observation_parts(test_env):
    tid = next(t for t in test_env.task_ids("test") if test_env.tasks[t].depth == 2)
    obs, info = test_env.reset(options={"task_id": tid})
    assert list(info["parts"]) == ["task", "directory", "entries", "history", "last_result"]
    assert "cd .." not in info["actions"]  # at the root
    assert obs == test_env.render_parts(info["parts"]) and "0. " not in obs  # no action list in obs
    test_env.step(test_env.oracle_action())
    _, _, _, _, info = test_env.step(test_env.oracle_action())
    assert info["actions"][0] == "cd .." and info["parts"]["directory"].count("/") == 2
    f = test_env.target[-1]
    _, _, _, _, info = test_env.step(f"cat {f}")
    assert f"cat {f}" not in info["actions"] and f"id {f}" in info["actions"]
    assert test_env.privileged()["last_cat_showed_evidence"]
    assert test_env.privileged()["evidence"] in info["parts"]["last_result"]
    # an unlisted command: by default the costly invalid choice (a wasted step, nothing changes) ...
    _, r, term, _, after = test_env.step("cat /etc/passwd")
    assert (r, term) == (-1.0, False) and after["actions"] == info["actions"]
    assert "Invalid choice" in after["parts"]["last_result"]
    # ... and with invalid_action="raise" an error naming the valid actions
    env = AutoExplore(split="test", invalid_action="raise")
    env.reset(options={"task_id": tid})
    with pytest.raises(InvalidActionError, match="valid actions"):
        env.step("cat /etc/passwd")


def test_hide_prob_hides_only_unrelated_entries_in_train(train_env):
    env = AutoExplore(split="train", hide_prob=0.5)
    shown_plain, shown_hidden = [], []
    for seed in range(30):
        _, info = env.reset(seed=seed)
        _, info_plain = train_env.reset(options={"task_id": info["task_id"]})
        shown_hidden.append(len(info["actions"]))
        shown_plain.append(len(info_plain["actions"]))
        _, _, info = play(env, oracle, options={"task_id": info["task_id"]}, seed=seed)
        assert info["success"]  # the way to the answer is never hidden
    assert sum(shown_hidden) < sum(shown_plain)
    assert AutoExplore(split="test", hide_prob=0.5).hide_prob == 0.0  # augmentation is for training only


def test_same_seed_same_transcript():
    env = AutoExplore(split="train", hide_prob=0.3)

    def random_policy(seed):
        rng = np.random.default_rng(seed)
        return lambda e, info: info["actions"][int(rng.integers(len(info["actions"])))]

    a = play(env, random_policy(1), seed=42)[0]
    b = play(env, random_policy(1), seed=42)[0]
    assert a == b and len(a) > 1
    assert play(env, random_policy(1), seed=43)[0] != a


def test_cat_view_notes():
    from frugalft.envs.sandbox import FileView
    long = FileView("\n".join(f"line {i}" for i in range(100)), 1000, 1000)
    text = cat_view(long, 40, 1600)
    assert text.splitlines()[39] == "line 39" and "truncated" in text.splitlines()[40]
    assert cat_view(FileView("x", 1, 1), 40, 1600) == "x"


def test_builtin_repos_come_from_the_pinned_snapshot(test_env):
    from frugalft.envs.repo_tasks import builtin_repo, snapshot_manifest

    manifest = snapshot_manifest()
    # the manifest's "role" is the one at build time (tqdm was a test repository then); BUILTIN_REPOS decides
    assert [(r["package"], r["distribution"], r["version"]) for r in manifest["repos"]] == [
        r[:3] for r in BUILTIN_REPOS]
    root = builtin_repo("packaging")
    assert root.name == "packaging-26.4" and (root / "PKG-INFO").read_text().startswith("Metadata-Version:")
    assert not list(root.rglob("__pycache__")) and (root / "packaging" / "version.py").is_file()
    assert {t.root for t in test_env.tasks.values()} == {str(builtin_repo(p)) for p, *_ in BUILTIN_REPOS}


def _shop(tmp_path: Path) -> Path:
    """A four-file package where each file defines one class: the tasks are "which file defines class X"."""
    pkg = tmp_path / "shop" / "shop"
    pkg.mkdir(parents=True)
    for name, cls in [("alpha", "Basket"), ("beta", "Invoice"), ("gamma", "Receipt"), ("delta", "Voucher")]:
        (pkg / f"{name}.py").write_text(f'"""Part {name} of a demo shop."""\n\n\nclass {cls}:\n    """A {cls.lower()}."""\n')
    return tmp_path / "shop"


def test_searching_oracle_reads_the_folder_in_listed_order_until_the_answer_shows(tmp_path):
    from frugalft.reflect.teachers import TeacherConfig, make_teacher
    from frugalft.reflect.warmup_data import situation_of

    repo = str(_shop(tmp_path))
    teacher = make_teacher(TeacherConfig(kind="oracle", brief=True))
    runs = {}
    for search, horizon in ((False, 15), (True, 15), (True, 4)):
        env = AutoExplore(repos=[repo], split="train", horizon=horizon, oracle_search=search)
        tid = next(t for t, task in env.tasks.items() if "Voucher" in task.question)
        obs, info = env.reset(seed=0, options={"task_id": tid})
        played, reflections, done = [], [], False
        while not done:
            reflections.append(teacher.reflect(situation_of("autoexplore", env, obs, info)))
            played.append(env.oracle_action())
            obs, _, term, trunc, info = env.step(played[-1])
            done = term or trunc
        runs[search, horizon] = played, reflections, info["success"]
    assert runs[False, 15][:1] == (["cd shop", "cat delta.py", "id delta.py"],)
    # listed order is alphabetical: alpha, beta, delta (the answer), then it is named
    played, reflections, success = runs[True, 15]
    assert played == ["cd shop", "cat alpha.py", "cat beta.py", "cat delta.py", "id delta.py"] and success
    assert reflections[1:] == ["Answer is in this folder; read the next file.",
                               "Last file is not it. Answer is in this folder; read the next file.",
                               "Last file is not it. Answer is in this folder; read the next file.",
                               "Last file answers it. Found: answer now."]
    # the search fails honestly when the answer is listed too far down for the horizon
    assert runs[True, 4][0] == played[:4] and not runs[True, 4][2]

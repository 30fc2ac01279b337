"""Your own environment gets in (docs/custom_envs.md): ``frugalft.envs.make`` and every config's ``env:`` take
an import path ``"module:Class"``, a registered gymnasium id or gymnasium's ``"module:Env-v0"``; ``family_of``
names the teacher's family without making the environment; ``check_text_env`` checks the contract."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest

import frugalft.envs as envs
from frugalft.envs import TextEnv, check_text_env, family_of

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


class Toy(TextEnv):
    """The issue's environment in miniature: say "go" n times (n = the task's level + 1)."""

    section_titles = {"task": "Task", "done": "Said so far"}

    def __init__(self, split: str = "train", level: int | None = None, horizon: int = 5, **kw: Any) -> None:
        super().__init__(split, level, horizon, max_actions=2, **kw)
        self.need = self.said = 0

    @property
    def levels(self) -> list[int]:
        return [0, 1]

    def _all_tasks(self) -> dict[str, dict[str, int]]:
        return {s: {f"{s}-{lv}": lv for lv in self.levels} for s in ("train", "valid", "test")}

    def _start(self, task_id: str) -> None:
        self.need, self.said = int(task_id[-1]) + 1, 0

    def _actions(self) -> list[str]:
        return ["go", "stay"]

    def _apply(self, action: str) -> tuple[float, bool, bool, str]:
        self.said += action == "go"
        solved = self.said == self.need
        return float(solved), solved, solved, action

    def _parts(self) -> dict[str, str]:
        return {"task": f"Say go {self.need} times.", "done": str(self.said)}

    def oracle_action(self) -> str:
        return "go"

    def privileged(self) -> dict[str, Any]:
        return {"left": self.need - self.said}


class NamedToy(Toy):
    family = "toys"


class NamedToyChild(NamedToy):
    """Inherits its parent's family (a variant of an environment keeps its teacher)."""


def make_toy(**kwargs: Any) -> gym.Env:
    """An environment made by a function, wrapped as gymnasium wraps: ``make`` unwraps it."""
    return gym.wrappers.OrderEnforcing(Toy(**kwargs))


class NoValid(Toy):
    def _all_tasks(self) -> dict[str, dict[str, int]]:
        return {"train": {"train-0": 0}, "test": {"test-0": 0}}  # the layout before the valid split


if "toytest/Toy-v0" not in gym.registry:
    gym.register(id="toytest/Toy-v0", entry_point=Toy)  # as the user did: a gymnasium id of their own


def test_import_path_gymnasium_id_and_module_id_all_make_the_text_env():
    here = __name__
    for name in (f"{here}:Toy", "toytest/Toy-v0", f"{here}:toytest/Toy-v0", f"{here}:make_toy"):
        env = envs.make(name, split="valid", horizon=3)
        assert type(env) is Toy and env.split == "valid" and env.horizon == 3, name
        assert env.task_ids("valid") == ["valid-0", "valid-1"]
    env = envs.make("DangerousTaxi", split="train")  # the built-in short names still work
    assert family_of(env) == "taxi"


def test_family_from_the_class_attribute_or_name_without_making_the_env():
    here = __name__
    assert family_of(f"{here}:Toy") == family_of("toytest/Toy-v0") == family_of(Toy) == "toy"
    assert family_of(f"{here}:NamedToy") == family_of(NamedToyChild()) == "toys"
    assert family_of(f"{here}:make_toy") == "make_toy"  # a function: its own name
    assert [family_of(n) for n in ("DangerousTaxi", "frugalft/AutoExplore-v0", "TextWorld", "ALFWorld")] == [
        "taxi", "autoexplore", "textworld", "alfworld"]


def test_names_that_cannot_be_made_say_what_would_work():
    with pytest.raises(ValueError, match=r"unknown environment 'toy/Unseen-v0'; .*'module:toy/Unseen-v0'.*'module:Class'"):
        envs.make("toy/Unseen-v0")
    with pytest.raises(ValueError, match="cannot import 'no_such_pkg_xyz.envs' .* put its folder on PYTHONPATH"):
        envs.make("no_such_pkg_xyz.envs:MyEnv")
    with pytest.raises(ValueError, match=f"module '{__name__}' has no class 'Nope'"):
        envs.make(f"{__name__}:Nope")
    with pytest.raises(ValueError, match="is a CartPoleEnv, not a frugalft.envs.TextEnv"):
        envs.make("CartPole-v1")


def test_a_module_in_the_current_directory_is_found_as_python_m_would(tmp_path, monkeypatch):
    (tmp_path / "cwd_envs_mod.py").write_text(f"from {__name__} import Toy as HereToy\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    assert type(envs.make("cwd_envs_mod:HereToy")) is Toy
    assert str(tmp_path) == sys.path[-1]  # appended: it shadows no installed module


def test_check_text_env_passes_the_example_and_names_a_missing_split(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    summary = check_text_env("count_to.count_env:CountTo")
    assert summary == {"family": "count_to", "levels": [0, 1, 2], "train": 54, "valid": 18, "test": 18,
                       "oracle": True}
    assert check_text_env(Toy())["oracle"] is True
    with pytest.raises(ValueError, match="no valid tasks: every environment needs train, valid and test tasks"):
        check_text_env(NoValid())


@pytest.mark.parametrize("name", ["DangerousTaxi", "AutoExplore"])
def test_check_text_env_passes_the_built_in_environments(name):
    summary = check_text_env(name)
    assert summary["oracle"] is True and min(summary[s] for s in ("train", "valid", "test")) > 0

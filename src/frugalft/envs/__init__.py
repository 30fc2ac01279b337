"""Multi-turn text environments for Reflect-RL, as gymnasium environments (see docs/environments.md).

Importing this package registers (all four usable; details and measured figures in docs/environments.md):
- ``frugalft/DangerousTaxi-v0``: Taxi-v3 in ASCII; levels 0 pickup, 1 dropoff, 2 full (= ``mode``);
  100 fixed test starts, 142 train starts; actions ``south north east west pickup dropoff``.
- ``frugalft/AutoExplore-v0``: answer a question about a repository by navigating its files (cd/cat/id);
  levels by the answer's depth; built-in repositories (copied from installed packages) or ``repos=[paths]``.
- ``frugalft/TextWorld-v0``: TextWorld's generated games (needs the ``textworld`` extra), cached on first play.
- ``frugalft/ALFWorld-v0``: ALFWorld game files (needs ALFWorld's data; ``data_path=`` or ``$ALFWORLD_DATA``).

Common API (the environment contract): ``reset(seed, options={"task_id"|"level"}) -> (obs, info)``;
``step(action_str_or_index)``; ``info`` holds ``actions``, ``action_mask`` (gymnasium's int8 mask of the listed
indices), ``task_id``, ``level``, ``parts`` and at the end ``success``; an unlisted action is the costly
"invalid choice" step (``invalid_action="raise"`` makes it an ``InvalidActionError``, for debugging);
``env.unwrapped.oracle_action()``, ``.privileged()``, ``.task_ids(split, level)``, ``.levels``.

Your own environments (docs/custom_envs.md): ``make`` and every config's ``env:`` also take an import path
``"module:Class"`` (a ``TextEnv`` subclass or a function making one), any registered gymnasium id, or
gymnasium's ``"module:Env-v0"`` (import the module that registers the id); ``family_of`` names the environment
family a teacher writes for, and ``check_text_env`` checks the contract.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import gymnasium as gym
from gymnasium.envs.registration import parse_env_id

from frugalft.envs.base import SPLITS, InvalidActionError, TextEnv, TextSpace
from frugalft.envs.vector import VecTextEnv

ENV_IDS = {
    "DangerousTaxi": "frugalft/DangerousTaxi-v0",
    "AutoExplore": "frugalft/AutoExplore-v0",
    "TextWorld": "frugalft/TextWorld-v0",
    "ALFWorld": "frugalft/ALFWorld-v0",
}

_ENTRY_POINTS = {
    "frugalft/DangerousTaxi-v0": "frugalft.envs.taxi:DangerousTaxi",
    "frugalft/AutoExplore-v0": "frugalft.envs.autoexplore:AutoExplore",
    "frugalft/TextWorld-v0": "frugalft.envs.textworld_env:TextWorld",
    "frugalft/ALFWorld-v0": "frugalft.envs.textworld_env:ALFWorld",
}

# The teachers' names for the built-in classes (a class attribute ``family`` takes precedence, see family_of).
_FAMILIES = {
    "frugalft.envs.taxi:DangerousTaxi": "taxi",
    "frugalft.envs.autoexplore:AutoExplore": "autoexplore",
    "frugalft.envs.textworld_env:TextWorld": "textworld",
    "frugalft.envs.textworld_env:ALFWorld": "alfworld",
}


def _register() -> None:
    for env_id, entry in _ENTRY_POINTS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry, disable_env_checker=True, order_enforce=False)


_register()


def import_module(module: str, what: str) -> Any:
    """Import ``module`` for ``what`` (named in the error). When the module itself is not found, retry with the
    current directory on ``sys.path`` (last, so it shadows nothing), as ``python -m`` would find it: a config
    naming ``myenvs:MyEnv`` then works from the folder that holds ``myenvs.py``, with the ``frugalft`` script too.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        error: ImportError = e
        cwd = os.getcwd()
        if e.name == module.split(".")[0] and cwd not in sys.path:
            sys.path.append(cwd)
            try:
                return importlib.import_module(module)
            except ImportError as again:
                error = again  # the retry's error: it saw the current directory too
        raise ValueError(f"cannot import {module!r} for {what}: {error}. Install it, put its folder on PYTHONPATH, "
                         "or run from the folder that holds it") from error
    except ImportError as e:
        raise ValueError(f"cannot import {module!r} for {what}: {e}") from e


def import_object(path: str, what: str) -> Any:
    """The object an import path ``"package.module:attribute"`` names (a ValueError naming ``what`` if none)."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{what}: {path!r} is not an import path 'module:attribute'")
    module = import_module(module_name, what)
    if not hasattr(module, attr):
        raise ValueError(f"{what}: module {module_name!r} has no attribute {attr!r}")
    return getattr(module, attr)


def _lookup(name: str) -> tuple[str | None, Any]:
    """``(gymnasium id or None, the class or function that makes it)`` for an environment name."""
    env_id = ENV_IDS.get(name, name)
    if env_id in gym.registry:
        return env_id, _creator(env_id)
    if ":" in env_id:
        module_name, _, attr = env_id.partition(":")
        module = import_module(module_name, f"environment {name!r}")
        if attr in gym.registry:  # gymnasium's "module:Env-v0": importing the module registered the id
            return attr, _creator(attr)
        if not callable(getattr(module, attr, None)):
            raise ValueError(f"environment {name!r}: module {module_name!r} has no class {attr!r} and registers "
                             f"no gymnasium id {attr!r}")
        return None, getattr(module, attr)
    raise ValueError(f"unknown environment {name!r}; known: {sorted(ENV_IDS)}, a registered gymnasium id (one "
                     f"your module registers: 'module:{name}'), or an import path 'module:Class' of a TextEnv "
                     "subclass (docs/custom_envs.md)")


def _creator(env_id: str) -> Any:
    entry = gym.spec(env_id).entry_point
    return import_object(entry, f"environment {env_id!r}") if isinstance(entry, str) else entry


def make(name: str, **kwargs) -> TextEnv:
    """The unwrapped ``TextEnv`` an environment name stands for, made with ``kwargs``.

    ``name``: a short name (``DangerousTaxi``), a registered gymnasium id (``gymnasium.make``, wrappers dropped:
    the environment's own ``horizon`` bounds an episode), gymnasium's ``"module:Env-v0"``, or an import path
    ``"module:Class"`` of a ``TextEnv`` subclass (or of a function returning one).
    """
    env_id, creator = _lookup(name)
    # No passive checker: check_text_env checks the contract once; one on each of num_envs copies only costs.
    env = gym.make(env_id, disable_env_checker=True, **kwargs) if env_id else creator(**kwargs)
    env = env.unwrapped if isinstance(env, gym.Env) else env
    if not isinstance(env, TextEnv):
        raise ValueError(f"environment {name!r} is a {type(env).__name__}, not a frugalft.envs.TextEnv subclass: "
                         "Reflect-RL needs its info['parts'], info['actions'], task ids and levels "
                         "(docs/custom_envs.md)")
    return env


def family_of(env: str | type | gym.Env) -> str:
    """The environment family a teacher writes for (``Situation.env``): ``taxi``, ``autoexplore``, ...

    The first class attribute ``family`` along the class's bases, else a built-in class's family, else the
    class name in lower case; for an environment made by a function, the function's or the gymnasium id's name.
    Found without making the environment (for a name: its class is imported, not instantiated).
    """
    if isinstance(env, str):
        env_id, creator = _lookup(env)
        if not isinstance(creator, type):
            named = getattr(creator, "family", None)
            return str(named) if named else (parse_env_id(env_id)[1] if env_id else creator.__name__).lower()
        cls = creator
    else:
        cls = type(env.unwrapped) if isinstance(env, gym.Env) else env
    for c in cls.__mro__:
        if c is TextEnv or c is gym.Env:
            break
        if "family" in vars(c):
            return str(vars(c)["family"])
        builtin = _FAMILIES.get(f"{c.__module__}:{c.__qualname__}")
        if builtin:
            return builtin
    return cls.__name__.lower()


def check_text_env(env: str | gym.Env, episodes: int = 3, **kwargs: Any) -> dict[str, Any]:
    """Check that an environment keeps the contract Reflect-RL relies on (docs/custom_envs.md): gymnasium's
    ``check_env``; levels; non-empty, disjoint train / valid / test task sets at known levels; the ``info`` keys;
    and, when ``oracle_action()`` is implemented, that it plays ``episodes`` train tasks to success with listed
    actions while ``privileged()`` returns a dict. Raises ValueError naming the first breach; returns a summary.
    """
    from gymnasium.utils.env_checker import check_env

    made = make(env, **kwargs) if isinstance(env, str) else env.unwrapped
    if not isinstance(made, TextEnv):
        raise ValueError(f"{type(made).__name__} is not a frugalft.envs.TextEnv subclass")
    levels = list(made.levels)
    if not levels or not all(isinstance(lv, int) for lv in levels):
        raise ValueError(f"levels must be a non-empty list of ints, got {levels!r}")
    tasks = {split: made.task_ids(split) for split in SPLITS}
    for split, ids in tasks.items():
        if not ids:
            raise ValueError(f"no {split} tasks: every environment needs train, valid and test tasks")
        bad = sorted({made.level_of(t) for t in ids} - set(levels))
        if bad:
            raise ValueError(f"{split} tasks at levels {bad}, which are not in levels {levels}")
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1:]:
            shared = set(tasks[a]) & set(tasks[b])
            if shared:
                raise ValueError(f"{len(shared)} tasks are in both {a} and {b} (e.g. {sorted(shared)[0]!r})")
    check_env(made, skip_render_check=True)  # after the task checks: their errors are the clearer ones
    obs, info = made.reset(seed=0, options={"task_id": tasks["train"][0]})
    missing = {"actions", "action_mask", "task_id", "level", "parts"} - set(info)
    if missing:
        raise ValueError(f"info lacks {sorted(missing)}")
    if not isinstance(obs, str) or not isinstance(info["parts"], dict) or not info["actions"]:
        raise ValueError("reset must give a str observation, a dict info['parts'] and a non-empty info['actions']")
    try:
        made.oracle_action()
    except NotImplementedError:
        oracle = False
    else:
        oracle = True
        for task_id in tasks["train"][:episodes]:
            _, info = made.reset(seed=0, options={"task_id": task_id})
            done = False
            while not done:
                if not isinstance(made.privileged(), dict):
                    raise ValueError("privileged() must return a dict")
                action = made.oracle_action()
                if action not in info["actions"]:
                    raise ValueError(f"oracle_action() {action!r} is not listed in {info['actions']} ({task_id})")
                _, _, terminated, truncated, info = made.step(action)
                done = terminated or truncated
            if not info.get("success"):
                raise ValueError(f"the oracle did not solve train task {task_id!r} within the horizon")
    return {"family": family_of(made), "levels": levels, **{split: len(ids) for split, ids in tasks.items()},
            "oracle": oracle}


__all__ = ["ENV_IDS", "InvalidActionError", "TextEnv", "TextSpace", "VecTextEnv", "check_text_env", "family_of",
           "import_object", "make"]

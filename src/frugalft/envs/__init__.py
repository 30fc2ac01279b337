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
"""

from __future__ import annotations

import gymnasium as gym

from frugalft.envs.base import InvalidActionError, TextEnv, TextSpace
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


def _register() -> None:
    for env_id, entry in _ENTRY_POINTS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry, disable_env_checker=True, order_enforce=False)


_register()


def make(name: str, **kwargs) -> gym.Env:
    """``gymnasium.make`` by short name (``DangerousTaxi``) or full id, returning the unwrapped environment."""
    env_id = ENV_IDS.get(name, name)
    if env_id not in _ENTRY_POINTS:
        raise ValueError(f"unknown environment {name!r}; known: {sorted(ENV_IDS)}")
    return gym.make(env_id, **kwargs).unwrapped


__all__ = ["ENV_IDS", "InvalidActionError", "TextEnv", "TextSpace", "VecTextEnv", "make"]

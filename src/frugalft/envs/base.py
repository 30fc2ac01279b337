"""What every frugalft text environment shares: tasks, levels, the step/reset bookkeeping and the info dict.

A subclass says what a task is and how one step changes its state; this base turns that into the gymnasium
API of the environment contract (docs/environments.md): text observations rendered from ordered ``parts``,
string actions listed in ``info["actions"]`` (an index into that list works too) with gymnasium's
``info["action_mask"]`` over the ``Discrete`` action space, a horizon that truncates, and the paper's costly
"invalid choice" step for an action that is not offered (or, with ``invalid_action="raise"``, a clear error).
"""

from __future__ import annotations

import string
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

# Every environment has three disjoint task sets: train (warm-up data and RL), valid (early stopping, probes and
# every setting chosen by looking at a score) and test (read once, by a table's final evaluation).
SPLITS = ("train", "valid", "test")


class InvalidActionError(ValueError):
    """An action that is not one of the current state's valid actions (the message names those)."""


class TextSpace(spaces.Text):
    """Any string of bounded length. gymnasium's ``Text`` only accepts a fixed charset; file contents and game
    text can hold any character, so membership checks the length only (sampling still draws printable ASCII)."""

    def __init__(self, max_length: int) -> None:
        super().__init__(max_length, min_length=0, charset=string.printable)

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and self.min_length <= len(x) <= self.max_length

    def __repr__(self) -> str:
        return f"TextSpace(max_length={self.max_length})"


class TextEnv(gym.Env):
    """Base class: one episode = one task (a string id) played for at most ``horizon`` steps.

    Subclasses implement ``_all_tasks`` (task id -> level for each split), ``_start``, ``_actions``,
    ``_apply``, ``_parts``, ``oracle_action`` and ``privileged``, and set ``section_titles``.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}
    section_titles: dict[str, str] = {}
    # Reward of an action that is not offered (invalid_action="penalize", the default); and whether it ends the
    # episode.
    invalid_penalty: float = -1.0
    invalid_ends_episode: bool = False
    # Extra reward when the horizon runs out before the task is solved (AutoExplore: -15).
    timeout_penalty: float = 0.0
    max_obs_chars: int = 100_000

    def __init__(
        self,
        split: str = "train",
        level: int | None = None,
        horizon: int = 15,
        invalid_action: str = "penalize",
        max_actions: int = 256,
        render_mode: str | None = None,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
        if invalid_action not in ("raise", "penalize"):
            raise ValueError(f"invalid_action must be 'raise' or 'penalize', got {invalid_action!r}")
        if horizon < 1:
            raise ValueError(f"horizon must be at least 1, got {horizon}")
        if render_mode not in (None, "ansi"):
            raise ValueError(f"render_mode must be None or 'ansi', got {render_mode!r}")
        self.split = split
        self.level = level
        self.horizon = horizon
        self.invalid_action = invalid_action
        self.render_mode = render_mode
        # A bound on len(info["actions"]), for the Discrete action space (actions are really the listed strings):
        # index i < len(actions) plays actions[i]; info["action_mask"] marks those indices. The default
        # "penalize" keeps gymnasium's contract: any index of the space is a legal step (a costly one when not
        # listed), so check_env, action_space.sample() and wrappers written for gymnasium work unchanged.
        self.action_space = spaces.Discrete(max_actions)
        self.observation_space = TextSpace(self.max_obs_chars)
        self.task_id: str | None = None
        self.t = 0
        self.done = True
        self.history: list[str] = []
        self.last_result = ""
        self._obs = ""
        self._info: dict[str, Any] = {}

    # ---- what a subclass provides -------------------------------------------------------------------
    def _all_tasks(self) -> dict[str, dict[str, int]]:
        """``{split: {task_id: level}}``, ids in a stable order. Called once and cached."""
        raise NotImplementedError

    @property
    def levels(self) -> list[int]:
        """Difficulty levels, easiest first."""
        raise NotImplementedError

    def _start(self, task_id: str) -> None:
        """Put the environment in the start state of ``task_id``."""
        raise NotImplementedError

    def _actions(self) -> list[str]:
        """Valid actions of the current state, in a stable order."""
        raise NotImplementedError

    def _apply(self, action: str) -> tuple[float, bool, bool, str]:
        """Play a valid action: ``(reward, terminated, success, last_result)``."""
        raise NotImplementedError

    def _parts(self) -> dict[str, str]:
        """Ordered observation sections (keys of ``section_titles``)."""
        raise NotImplementedError

    def oracle_action(self) -> str:
        """An optimal valid action in the current state."""
        raise NotImplementedError

    def privileged(self) -> dict[str, Any]:
        """Ground truth an offline teacher may use; never shown to the policy."""
        raise NotImplementedError

    # ---- tasks and levels ---------------------------------------------------------------------------
    def _tasks(self) -> dict[str, dict[str, int]]:
        if not hasattr(self, "_task_table"):
            self._task_table = self._all_tasks()
        return self._task_table

    def task_ids(self, split: str, level: int | None = None) -> list[str]:
        """Task ids of a split (optionally one level), in a stable order."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
        self._check_level(level)
        return [t for t, lv in self._tasks().get(split, {}).items() if level is None or lv == level]

    def level_of(self, task_id: str) -> int:
        for split in SPLITS:
            if task_id in self._tasks().get(split, {}):
                return self._tasks()[split][task_id]
        raise KeyError(task_id)

    def _check_level(self, level: int | None) -> None:
        if level is not None and level not in self.levels:
            raise ValueError(f"unknown level {level}; levels are {self.levels}")

    # ---- gymnasium API ------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict]:
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = set(options) - {"task_id", "level"}
        if unknown:
            raise ValueError(f"unknown reset options {sorted(unknown)}; valid: ['level', 'task_id']")
        task_id = options.get("task_id")
        if task_id is not None:
            try:
                self.level_of(task_id)
            except KeyError:
                raise ValueError(f"unknown task_id {task_id!r}") from None
        else:
            level = options.get("level", self.level)
            pool = self.task_ids(self.split, level)
            if not pool:
                raise ValueError(f"no {self.split} tasks at level {level}")
            task_id = pool[int(self.np_random.integers(len(pool)))]
        self.task_id = task_id
        self.t = 0
        self.done = False
        self.history = []
        self.last_result = ""
        self._start(task_id)
        return self._observe({})

    def resolve_action(self, action: str | int) -> str | None:
        """The action string for ``action`` (a listed string or its index), or None when it is not offered."""
        actions = self._info["actions"]
        if isinstance(action, (int, np.integer)) and not isinstance(action, bool):
            return actions[int(action)] if 0 <= int(action) < len(actions) else None
        return action if isinstance(action, str) and action in actions else None

    def step(self, action: str | int) -> tuple[str, float, bool, bool, dict]:
        if self.task_id is None:
            raise RuntimeError("call reset() before step()")
        if self.done:
            raise RuntimeError("the episode is over; call reset() before stepping again")
        chosen = self.resolve_action(action)
        if chosen is None:
            valid = self._info["actions"]
            if self.invalid_action == "raise":
                raise InvalidActionError(
                    f"invalid action {action!r}; valid actions are {valid} (or their index 0..{len(valid) - 1})")
            self.history.append(f"(invalid choice: {action!r})")
            reward, terminated, success = self.invalid_penalty, self.invalid_ends_episode, False
            self.last_result = f"Invalid choice {action!r}: it is not one of the listed actions."
            self._invalid_step()
        else:
            self.history.append(chosen)
            reward, terminated, success, self.last_result = self._apply(chosen)
        self.t += 1
        truncated = not terminated and self.t >= self.horizon
        if truncated:
            reward += self.timeout_penalty
            self.last_result += f"\nOut of steps ({self.horizon})."
        self.done = terminated or truncated
        extra = {"success": bool(success)} if self.done else {}
        obs, info = self._observe(extra)
        return obs, float(reward), bool(terminated), bool(truncated), info

    def _invalid_step(self) -> None:
        """Hook: what else an invalid choice changes (nothing by default)."""

    def render(self) -> str | None:
        if self.render_mode == "ansi":
            actions = "\n".join(f"{i}. {a}" for i, a in enumerate(self._info.get("actions", [])))
            return self._obs + ("\n\nActions:\n" + actions if actions else "")
        return None

    # ---- observation --------------------------------------------------------------------------------
    def render_parts(self, parts: dict[str, str]) -> str:
        """The observation text: each section under its title, in order (the action list is not included)."""
        return "\n\n".join(f"{self.section_titles.get(k, k)}:\n{v}" for k, v in parts.items())

    def _observe(self, extra: dict[str, Any]) -> tuple[str, dict]:
        parts = self._parts()
        obs = self.render_parts(parts)
        if len(obs) > self.max_obs_chars:
            obs = obs[: self.max_obs_chars]
        actions = [] if self.done else list(self._actions())
        info = {
            "actions": actions,
            "action_mask": self.action_mask(actions),
            "task_id": self.task_id,
            "level": self.level_of(self.task_id),
            "parts": parts,
            "step": self.t,
            **extra,
        }
        self._obs, self._info = obs, info
        # The caller gets its own list and mask: changing them must not change what step() accepts.
        return obs, {**info, "actions": list(actions), "action_mask": info["action_mask"].copy()}

    def action_mask(self, actions: list[str]) -> np.ndarray:
        """gymnasium's mask over the Discrete action space: 1 for the indices of the listed actions (int8, as
        ``action_space.sample(mask=...)`` wants); all zeros once the episode is over."""
        mask = np.zeros(self.action_space.n, dtype=np.int8)
        mask[: min(len(actions), int(self.action_space.n))] = 1
        return mask

    def history_text(self) -> str:
        return "\n".join(f"{i + 1}. {h}" for i, h in enumerate(self.history)) or "(none yet)"

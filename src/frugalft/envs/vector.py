"""Step several text environments of one kind in lock-step, for batched rollouts (no auto-reset)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym


class VecTextEnv:
    """A list of text environments driven together.

    ``reset`` and ``step`` take and return lists. There is no auto-reset: an environment whose episode has
    ended must be reset (``reset_at``) before it is stepped again, and stepping it raises. Passing ``None`` as
    an environment's action skips it this step (its last observation comes back with reward 0), so rollouts
    whose episodes end at different times need not be split.
    """

    def __init__(self, env_fns: Sequence[Callable[[], gym.Env]]) -> None:
        if not env_fns:
            raise ValueError("VecTextEnv needs at least one environment")
        self.envs = [fn() for fn in env_fns]
        self._last: list[tuple[str, float, bool, bool, dict]] = [("", 0.0, False, False, {})] * len(self.envs)

    def __len__(self) -> int:
        return len(self.envs)

    @property
    def num_envs(self) -> int:
        return len(self.envs)

    def reset(self, seeds: int | Sequence[int | None] | None = None,
              options: dict[str, Any] | Sequence[dict[str, Any] | None] | None = None) -> tuple[list[str], list[dict]]:
        """Reset every environment. ``seeds``: a list (one per env), or an int s (env i gets s + i), or None.
        ``options``: one dict for all, or a list of dicts."""
        n = len(self.envs)
        if seeds is None or isinstance(seeds, int):
            seed_list = [None if seeds is None else seeds + i for i in range(n)]
        else:
            seed_list = list(seeds)
        opt_list = list(options) if isinstance(options, (list, tuple)) else [options] * n
        if len(seed_list) != n or len(opt_list) != n:
            raise ValueError(f"expected {n} seeds and options, got {len(seed_list)} and {len(opt_list)}")
        out = [self.reset_at(i, seed_list[i], opt_list[i]) for i in range(n)]
        return [o for o, _ in out], [info for _, info in out]

    def reset_at(self, i: int, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict]:
        """Reset environment ``i`` alone."""
        obs, info = self.envs[i].reset(seed=seed, options=options)
        self._last[i] = (obs, 0.0, False, False, info)
        return obs, info

    def step(self, actions: Sequence[str | int | None]) -> tuple[list[str], list[float], list[bool], list[bool],
                                                                   list[dict]]:
        if len(actions) != len(self.envs):
            raise ValueError(f"expected {len(self.envs)} actions, got {len(actions)}")
        results = []
        for i, (env, action) in enumerate(zip(self.envs, actions, strict=True)):
            if action is None:
                obs, _, term, trunc, info = self._last[i]
                results.append((obs, 0.0, term, trunc, info))
                continue
            self._last[i] = env.step(action)
            results.append(self._last[i])
        obs, rewards, terms, truncs, infos = (list(x) for x in zip(*results, strict=True))
        return obs, rewards, terms, truncs, infos

    def close(self) -> None:
        for env in self.envs:
            env.close()

"""Reference policies and their success rates: the floor (uniform random) and the ceiling (the oracle)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from frugalft.envs.base import TextEnv

Policy = Callable[[TextEnv, dict], str]


def oracle_policy(env: TextEnv, info: dict) -> str:
    return env.oracle_action()


def random_policy(seed: int) -> Policy:
    """Uniform over the listed actions, from its own seeded generator."""
    rng = np.random.default_rng(seed)
    return lambda env, info: info["actions"][int(rng.integers(len(info["actions"])))]


def play_episode(env: TextEnv, policy: Policy, task_id: str, seed: int | None = None) -> tuple[bool, float, int]:
    """One episode of ``task_id``: (success, return, steps)."""
    _, info = env.reset(seed=seed, options={"task_id": task_id})
    total = 0.0
    while True:
        _, reward, term, trunc, info = env.step(policy(env, info))
        total += reward
        if term or trunc:
            return bool(info["success"]), total, int(info["step"])


def success_table(env: TextEnv, split: str = "test", random_episodes: int = 5, seed: int = 0,
                  levels: list[int] | None = None, progress: Callable | None = None) -> list[dict]:
    """Per level of ``split``: task count and the success rate and mean return of the oracle (one episode per
    task) and of the random policy (``random_episodes`` per task)."""
    rows = []
    for level in env.levels if levels is None else levels:
        ids = env.task_ids(split, level)
        if not ids:
            continue
        oracle = [play_episode(env, oracle_policy, t, seed) for t in (progress(ids, f"oracle L{level}")
                                                                       if progress else ids)]
        policy = random_policy(seed)
        rand = [play_episode(env, policy, t, seed + k) for t in ids for k in range(random_episodes)]
        rows.append({
            "level": level, "tasks": len(ids),
            "oracle_success": float(np.mean([s for s, _, _ in oracle])),
            "oracle_return": float(np.mean([r for _, r, _ in oracle])),
            "oracle_steps": float(np.mean([n for _, _, n in oracle])),
            "random_success": float(np.mean([s for s, _, _ in rand])),
            "random_return": float(np.mean([r for _, r, _ in rand])),
        })
    return rows

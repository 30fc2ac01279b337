"""CountTo: a complete custom text environment for Reflect-RL, in one small file (docs/custom_envs.md).

A task is "count from S to T": the counter starts at S, each move adds 1, 2 or 3 or takes 1 away; reaching T
exactly solves it, going past T fails. A too small step or a step back can be recovered from, as the warm-up's
negative examples need. Levels by the moves the oracle needs: 0 (distance 1-3), 1 (4-6), 2 (7-9). Use it in a config as ``env: count_to.count_env:CountTo`` (with ``examples/`` on ``PYTHONPATH``), or
as the gymnasium id this module registers, ``toy/CountTo-v0``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from frugalft.envs import TextEnv

ACTIONS = ["up 1", "up 2", "up 3", "down 1"]
STEP = {"up 1": 1, "up 2": 2, "up 3": 3, "down 1": -1}
SPLIT_OF = ("test", "valid", "train", "train", "train")  # task i goes to SPLIT_OF[i % 5]: 60/20/20


class CountTo(TextEnv):
    family = "count_to"  # the teachers' name for it (without this line: the class name in lower case)
    section_titles = {"task": "Task", "counter": "Counter", "history": "Moves so far", "last_result": "Last move"}
    timeout_penalty = -0.5

    def __init__(self, split: str = "train", level: int | None = None, horizon: int = 8,
                 invalid_action: str = "penalize", render_mode: str | None = None, starts: int = 10) -> None:
        self.starts = starts  # how many start numbers (0 .. starts-1): 9 tasks each
        super().__init__(split, level, horizon, invalid_action, max_actions=len(ACTIONS), render_mode=render_mode)
        self.start = self.target = self.counter = 0

    @property
    def levels(self) -> list[int]:
        return [0, 1, 2]

    def _all_tasks(self) -> dict[str, dict[str, int]]:
        tasks: dict[str, dict[str, int]] = {split: {} for split in ("train", "valid", "test")}
        pairs = [(s, s + d) for s in range(self.starts) for d in range(1, 10)]
        for i, (start, target) in enumerate(pairs):
            tasks[SPLIT_OF[i % 5]][f"{start}->{target}"] = (target - start - 1) // 3
        return tasks

    def _start(self, task_id: str) -> None:
        self.start, self.target = (int(n) for n in task_id.split("->"))
        self.counter = self.start

    def _actions(self) -> list[str]:
        return list(ACTIONS)

    def _apply(self, action: str) -> tuple[float, bool, bool, str]:
        self.counter += STEP[action]
        if self.counter == self.target:
            return 1.0, True, True, f"{action}: the counter is at {self.counter}, the target. Done!"
        if self.counter > self.target:
            return -1.0, True, False, f"{action}: the counter is at {self.counter}, past the target. Failed."
        return -0.05, False, False, f"{action}: the counter is at {self.counter}."

    def _parts(self) -> dict[str, str]:
        return {"task": f"Count from {self.start} to {self.target}: reach {self.target} exactly.",
                "counter": str(self.counter), "history": self.history_text(),
                "last_result": self.last_result or "(none yet)"}

    def oracle_action(self) -> str:
        return f"up {min(self.target - self.counter, 3)}"  # the counter is below the target while a task runs

    def privileged(self) -> dict[str, Any]:
        return {"counter": self.counter, "target": self.target, "left": self.target - self.counter,
                "moves_left": self.horizon - self.t}


if "toy/CountTo-v0" not in gym.registry:
    gym.register(id="toy/CountTo-v0", entry_point=CountTo)

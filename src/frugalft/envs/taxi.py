"""DangerousTaxi: gymnasium's Taxi-v3 as a text game where a wasted move is fatal (SPEC A.4).

The dynamics are Taxi-v3's own transition table (5x5 grid, depots R/G/Y/B, walls); on top of it:
- *dangerous*: a step that changes nothing (driving into a wall or off the grid, a pickup with no passenger
  under the taxi, a dropoff with nobody aboard) gives -10 and ends the episode, the first step included; so
  does an action that is not one of the six (the default ``invalid_action="penalize"``: a wasted move);
- modes = curriculum levels: 0 ``pickup`` (ends at the pickup, +20 bonus), 1 ``dropoff`` (starts with the
  passenger aboard, at the state the oracle reaches by picking them up), 2 ``full`` (pick up, then drop off);
- rewards are Taxi's (-1 a step, +20 a successful dropoff) plus the above, divided by 20;
- tasks are *start states* (not maps: there is one 5x5 map). Taxi-v3 has 300; the 242 whose optimal full
  solution fits in 15 steps are split by a fixed seeded permutation into 100 test, 40 valid and 102 train starts.
  Every mode plays the same start ids. The test starts are new starts on a map the training data covers: most of
  the states on their oracle paths are states training paths visit (``split_overlap`` measures it).
- ``task_set="paper"`` makes the test split all 300 Taxi-v3 starts, the authors' evaluation distribution (they
  reset Taxi-v3 with a horizon of 15): 58 of them cannot be solved within 15 steps (the oracle's ceiling is
  242/300 = 80.7%), and the rest include the train and valid starts.
"""

from __future__ import annotations

from collections import deque
from functools import cache
from typing import Any

import numpy as np
from gymnasium.envs.toy_text.taxi import MAP, TaxiEnv

from frugalft.envs.base import TextEnv

MODES = ("pickup", "dropoff", "full")  # index = curriculum level, easiest first
ACTIONS = ("south", "north", "east", "west", "pickup", "dropoff")  # Taxi-v3's action order
DEPOTS = "RGYB"  # Taxi-v3's locs order
TASK_SPLIT_SEED = 2024  # fixes which starts are test starts
N_TEST = 100
N_VALID = 40  # the next 40 of the same permutation (the 100 test starts are those of earlier versions)
TASK_SETS = ("fits_horizon", "paper")
TASK_HORIZON = 15  # starts whose optimal full solution is longer are not used
SCALE = 20.0
CRASH = -10.0

TASK_TEXT = {
    "pickup": "Drive the taxi (T) to the passenger (P) and pick them up.",
    "dropoff": "The passenger is aboard the taxi (X). Drive to the destination (D) and drop them off.",
    "full": "Drive the taxi (T) to the passenger (P), pick them up, then drop them off at the destination (D).",
}
DANGER = ("Careful: a move into a wall or off the map, a pickup with no passenger under the taxi, or a dropoff "
          "that does nothing ends the episode with a penalty.")
LEGEND = ("T taxi, P passenger, D destination, O taxi on the passenger's square, X taxi with the passenger aboard, "
          "R/G/Y/B other depots; '|' is a wall the taxi cannot cross, ':' an open passage. North is up.")


@cache
def _table() -> tuple[TaxiEnv, np.ndarray]:
    """Taxi-v3's transitions as ``nxt[state, action]`` (its dry, deterministic table) and the env for decoding."""
    base = TaxiEnv()
    nxt = np.array([[base.P[s][a][0][1] for a in range(6)] for s in range(500)])
    return base, nxt


def _is_goal(mode: str, s: int, a: int, s2: int) -> bool:
    """Does playing ``a`` in ``s`` (leading to ``s2``) complete the task of ``mode``?"""
    base, _ = _table()
    _, _, p, d = base.decode(s)
    _, _, p2, _ = base.decode(s2)
    if mode == "pickup":
        return p < 4 and p2 == 4
    return p == 4 and p2 == d  # a dropoff at the destination


@cache
def _distances(mode: str) -> np.ndarray:
    """Fewest steps from each state to completing ``mode`` without a wasted move (inf if impossible)."""
    _, nxt = _table()
    dist = np.full(500, np.inf)
    preds: dict[int, list[int]] = {s: [] for s in range(500)}
    frontier: deque[int] = deque()
    for s in range(500):
        for a in range(6):
            s2 = int(nxt[s, a])
            if s2 == s:
                continue
            if _is_goal(mode, s, a, s2):
                if dist[s] > 1:
                    dist[s] = 1
                    frontier.append(s)
            else:
                preds[s2].append(s)
    while frontier:  # backward breadth-first search from the goal transitions
        s2 = frontier.popleft()
        for s in preds[s2]:
            if dist[s] > dist[s2] + 1:
                dist[s] = dist[s2] + 1
                frontier.append(s)
    return dist


def _oracle(mode: str, s: int) -> int:
    """First action (lowest index on ties) of a shortest safe solution from ``s``."""
    _, nxt = _table()
    dist = _distances(mode)
    best, best_a = np.inf, -1
    for a in range(6):
        s2 = int(nxt[s, a])
        if s2 == s:
            continue
        cost = 1 if _is_goal(mode, s, a, s2) else 1 + dist[s2]
        if cost < best:
            best, best_a = cost, a
    if best_a < 0:
        raise RuntimeError(f"no safe action from taxi state {s}")
    return best_a


@cache
def _dropoff_start(s: int) -> int:
    """The state the oracle reaches from start ``s`` at the moment it picks the passenger up."""
    base, nxt = _table()
    while base.decode(s)[2] != 4:
        s = int(nxt[s, _oracle("full", s)])
    return s


@cache
def _split_starts(task_set: str = "fits_horizon") -> dict[str, list[int]]:
    base, _ = _table()
    dist = _distances("full")
    every = [s for s in range(500) if base.initial_state_distrib[s] > 0]
    starts = [s for s in every if dist[s] <= TASK_HORIZON]
    order = np.random.default_rng(TASK_SPLIT_SEED).permutation(len(starts))
    test = sorted(starts[i] for i in order[:N_TEST])
    valid = sorted(starts[i] for i in order[N_TEST: N_TEST + N_VALID])
    train = sorted(starts[i] for i in order[N_TEST + N_VALID:])
    if task_set == "paper":
        test = every  # all 300, train and valid starts included: the paper's distribution, not a held-out set
    return {"train": train, "valid": valid, "test": test}


def oracle_path(mode: str, s: int) -> list[int]:
    """The states in which the oracle acts on its way from ``s`` to completing ``mode`` (``s`` first)."""
    base, nxt = _table()
    if mode == "dropoff":
        s = _dropoff_start(s)
    path = []
    while True:
        path.append(s)
        a = _oracle(mode, s)
        s2 = int(nxt[s, a])
        if _is_goal(mode, s, a, s2):
            return path
        s = s2


def split_overlap(mode: str = "full", against: tuple[str, ...] = ("train",), split: str = "test"
                  ) -> dict[str, float]:
    """How new ``split``'s episodes are: the states on its starts' oracle paths that the oracle paths of the
    ``against`` splits also visit (the warm-up data labels those states). Counts are over path steps."""
    starts = _split_starts()
    seen = {x for sp in against for s in starts[sp] for x in oracle_path(mode, s)}
    paths = [oracle_path(mode, s) for s in starts[split]]
    steps = sum(len(p) for p in paths)
    covered = sum(x in seen for p in paths for x in p)
    return {
        "starts": len(paths),
        "path_states": steps,
        "path_states_seen": covered,
        "share_seen": covered / steps,
        "starts_seen_mid_path": sum(p[0] in seen for p in paths),
        "episodes_seen_after_first_step": sum(all(x in seen for x in p[1:]) for p in paths),
        "distinct_states": len({x for p in paths for x in p}),
        "distinct_states_seen": len({x for p in paths for x in p} & seen),
    }


class DangerousTaxi(TextEnv):
    """Taxi-v3 in text, with fatal wasted moves. ``mode`` (or ``level``) picks the curriculum stage."""

    section_titles = {"task": "Task", "map": "Map", "legend": "Legend", "history": "History",
                      "last_result": "Last result"}
    invalid_penalty = CRASH / SCALE
    invalid_ends_episode = True  # an action that is not offered is a wasted move: fatal, like the rest
    max_obs_chars = 4000

    def __init__(self, split: str = "train", level: int | None = None, horizon: int = 15,
                 invalid_action: str = "penalize", mode: str | None = None, render_mode: str | None = None,
                 legend: bool = True, task_set: str = "fits_horizon") -> None:
        """legend: include the map legend and the danger warning, constant text that a pretrained model reads;
        a model trained from scratch cannot use it, and without it a prompt is a third shorter (the CPU configs).
        task_set: "fits_horizon" (the held-out test starts) or "paper" (test = all 300 Taxi-v3 starts)."""
        if task_set not in TASK_SETS:
            raise ValueError(f"task_set must be one of {list(TASK_SETS)}, got {task_set!r}")
        self.legend = legend
        self.task_set = task_set
        if mode is not None:
            if mode not in MODES:
                raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
            if level is not None and level != MODES.index(mode):
                raise ValueError(f"mode {mode!r} is level {MODES.index(mode)}, but level={level} was given")
            level = MODES.index(mode)
        super().__init__(split=split, level=level, horizon=horizon, invalid_action=invalid_action,
                         max_actions=len(ACTIONS), render_mode=render_mode)
        self._check_level(level)
        self.mode = "full"
        self.state = 0

    @property
    def levels(self) -> list[int]:
        return list(range(len(MODES)))

    def _all_tasks(self) -> dict[str, dict[str, int]]:
        starts = _split_starts(self.task_set)
        return {split: {f"{m}-{s:03d}": lv for lv, m in enumerate(MODES) for s in starts[split]}
                for split in starts}

    def _start(self, task_id: str) -> None:
        mode, s = task_id.split("-")
        self.mode = mode
        self.state = _dropoff_start(int(s)) if mode == "dropoff" else int(s)

    def _actions(self) -> list[str]:
        return list(ACTIONS)  # all six are always offered: choosing a useless one is the danger

    def _apply(self, action: str) -> tuple[float, bool, bool, str]:
        base, nxt = _table()
        a = ACTIONS.index(action)
        s, s2 = self.state, int(nxt[self.state, ACTIONS.index(action)])
        if s2 == s:
            why = {"pickup": "there is no passenger to pick up here",
                   "dropoff": "a dropoff is impossible here"}.get(action, "the taxi hit a wall")
            return CRASH / SCALE, True, False, f"{action}: nothing changed ({why}). Crash: the episode is over."
        reward = float(base.P[s][a][0][2])
        self.state = s2
        if _is_goal(self.mode, s, a, s2):
            if self.mode == "pickup":
                reward += 20.0
            return reward / SCALE, True, True, f"{action}: done, the task is complete."
        _, _, p, _ = base.decode(s)
        _, _, p2, _ = base.decode(s2)
        if action == "pickup":
            msg = "pickup: the passenger is aboard."
        elif action == "dropoff":
            msg = f"dropoff: the passenger got out at depot {DEPOTS[p2]}, which is not the destination."
        else:
            msg = f"{action}: the taxi moved."
        return reward / SCALE, False, False, msg

    def render_map(self) -> str:
        base, _ = _table()
        row, col, p, d = base.decode(self.state)
        grid = [list(line) for line in MAP]

        def put(r: int, c: int, ch: str) -> None:
            grid[r + 1][2 * c + 1] = ch

        dr, dc = base.locs[d]
        put(dr, dc, "D")
        if p < 4:
            pr, pc = base.locs[p]
            put(pr, pc, "P")
        put(row, col, "X" if p == 4 else "O" if p < 4 and base.locs[p] == (row, col) else "T")
        return "\n".join("".join(line) for line in grid)

    def _parts(self) -> dict[str, str]:
        parts = {
            "task": f"{TASK_TEXT[self.mode]} {DANGER}" if self.legend else TASK_TEXT[self.mode],
            "map": self.render_map(),
            "legend": LEGEND,
            "history": self.history_text(),
            "last_result": self.last_result or "(start)",
        }
        if not self.legend:
            del parts["legend"]
        return parts

    def oracle_action(self) -> str:
        return ACTIONS[_oracle(self.mode, self.state)]

    def privileged(self) -> dict[str, Any]:
        base, nxt = _table()
        row, col, p, d = base.decode(self.state)
        return {
            "mode": self.mode,
            "taxi": (row, col),
            "passenger": base.locs[p] if p < 4 else (row, col),
            "passenger_at": DEPOTS[p] if p < 4 else "taxi",
            "passenger_aboard": p == 4,
            "destination": base.locs[d],
            "destination_name": DEPOTS[d],
            "blocked_moves": [ACTIONS[a] for a in range(4) if int(nxt[self.state, a]) == self.state],
            "distance": int(_distances(self.mode)[self.state]),
        }

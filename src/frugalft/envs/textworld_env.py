"""TextWorld and ALFWorld: text games played through TextWorld's engine (the ``textworld`` extra).

``TextWorldGames`` plays any game file TextWorld can load: the actions are TextWorld's admissible commands
(sorted), the reward is the change of the game's score (its intermediate scores), a win or a loss ends the
episode, and the oracle is TextWorld's own winning policy from the current state (``policy_commands``, which
it recomputes after a detour). Two ways to get game files:

- ``TextWorld``: games generated offline by TextWorld's generator from one of its built-in challenges, at
  three difficulty settings = curriculum levels, generated on first use and cached under
  ``frugalft.cache.cache_dir("textworld")``. Training and test games use disjoint generator seeds
  (``tw-simple`` also draws test games from its test distribution).
- ``ALFWorld``: the game files of ALFWorld's data (``data_path=`` or ``$ALFWORLD_DATA``), one task family
  (default ``pick_and_place_simple``, as in the paper); train games for training, validation games for testing.
  ALFWorld's data cannot be downloaded here: this adapter's discovery and play are tested on TextWorld games
  laid out like ALFWorld's folders; real ``game.tw-pddl`` files need the ``alfworld`` package (its demangler
  and expert), which is used when installed.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any

from frugalft.atomic import atomic_path
from frugalft.cache import cache_dir
from frugalft.envs.base import TextEnv

# Per challenge: the generator settings of each curriculum level (easiest first). Chosen so that the
# winning walkthrough fits the default horizon of 15 and one game generates in seconds.
CHALLENGE_LEVELS: dict[str, list[dict[str, Any]]] = {
    "tw-coin_collector": [{"level": 2}, {"level": 5}, {"level": 10}],  # walkthrough = level moves
    "tw-treasure_hunter": [{"level": 1}, {"level": 5}, {"level": 10}],
    "tw-simple": [{"rewards": "dense", "goal": "detailed"}, {"rewards": "balanced", "goal": "brief"},
                  {"rewards": "sparse", "goal": "none"}],
}
TEST_SEED_OFFSET = 100_000  # test games use generator seeds from here on: never a training game
GENERATION_ATTEMPTS = 5
RETRY_SEED_STEP = 10_000_000


def _textworld():
    try:
        import textworld
    except ImportError:
        raise ImportError("this environment needs TextWorld: pip install 'frugalft[textworld]'") from None
    return textworld


def _request_infos():
    tw = _textworld()
    return tw.EnvInfos(admissible_commands=True, policy_commands=True, score=True, max_score=True, won=True,
                       lost=True, objective=True, description=True, inventory=True, extras=["walkthrough"])


def _clean(text: str | None) -> str:
    """Drop TextWorld's prompt and status line, its end-of-game menu and surplus blank lines."""
    text = (text or "").replace("\r", "")
    text = text.split("Would you like to RESTART")[0]
    text = re.sub(r"^\s*>.*$", "", text, flags=re.M)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


class TextWorldGames(TextEnv):
    """Base: one task = one game file."""

    section_titles = {"task": "Task", "location": "Location", "inventory": "Inventory", "history": "History",
                      "last_result": "Last result"}
    invalid_penalty = -1.0  # a point of score: choosing an unlisted command is costly, and changes nothing

    def __init__(self, split: str = "train", level: int | None = None, horizon: int = 15,
                 invalid_action: str = "penalize", max_actions: int = 256, render_mode: str | None = None) -> None:
        super().__init__(split=split, level=level, horizon=horizon, invalid_action=invalid_action,
                         max_actions=max_actions, render_mode=render_mode)
        self._game = None  # the running textworld environment
        self._state = None  # its last GameState
        self._score = 0.0

    def game_file(self, task_id: str) -> str:
        """Path of the game file of ``task_id`` (made first if needed)."""
        raise NotImplementedError

    def _wrappers(self) -> list:
        return []

    def _start(self, task_id: str) -> None:
        tw = _textworld()
        if self._game is not None:
            self._game.close()
        with warnings.catch_warnings():
            # jericho says every generated game is "not fully supported": TextWorld tracks score itself.
            warnings.filterwarnings("ignore", message=".*not fully supported")
            self._game = tw.start(self.game_file(task_id), request_infos=_request_infos(),
                                  wrappers=self._wrappers())
            self._state = self._game.reset()
        self._score = float(self._state.score or 0)
        self._start_feedback = _clean(self._state.feedback)

    def _actions(self) -> list[str]:
        return sorted(set(self._state.admissible_commands or []))

    def _apply(self, action: str) -> tuple[float, bool, bool, str]:
        self._state, _, done = self._game.step(action)
        score = float(self._state.score or 0)
        reward, self._score = score - self._score, score
        won, lost = bool(self._state.won), bool(self._state.lost)
        return reward, bool(done or won or lost), won, _clean(self._state.feedback)

    def _parts(self) -> dict[str, str]:
        s = self._state
        return {
            "task": _clean(s.objective) or "(no objective given: explore and find out)",
            "location": _clean(s.description),
            "inventory": _clean(s.inventory),
            "history": self.history_text(),
            "last_result": self.last_result or "(start)",
        }

    def oracle_action(self) -> str:
        policy = list(self._state.policy_commands or [])
        actions = self._actions()
        if policy and policy[0] in actions:
            return policy[0]
        if policy:
            raise RuntimeError(f"TextWorld's policy command {policy[0]!r} is not admissible here")
        raise RuntimeError("TextWorld gives no winning policy from this state")

    def privileged(self) -> dict[str, Any]:
        s = self._state
        return {
            "policy_commands": list(s.policy_commands or []),
            "walkthrough": list(s.get("extra.walkthrough") or []),
            "score": self._score,
            "max_score": float(s.max_score or 0),
            "won": bool(s.won),
            "lost": bool(s.lost),
            "game_file": self.game_file(self.task_id),
        }

    def close(self) -> None:
        if self._game is not None:
            self._game.close()
            self._game = None


class TextWorld(TextWorldGames):
    """Games from a TextWorld challenge; level i = the i-th setting of ``CHALLENGE_LEVELS[challenge]``.

    Task ids are ``<challenge>/L<level>/<split>-<seed>``. A game is generated (seconds; TextWorld's first
    generation in a process also loads its grammar, ~20 s) the first time it is played, then cached.
    """

    def __init__(self, split: str = "train", level: int | None = None, horizon: int = 15,
                 invalid_action: str = "penalize", challenge: str = "tw-coin_collector", n_train: int = 20,
                 n_test: int = 10, render_mode: str | None = None) -> None:
        """challenge: one of TextWorld's challenges in CHALLENGE_LEVELS. n_train, n_test: games per level."""
        if challenge not in CHALLENGE_LEVELS:
            raise ValueError(f"unknown challenge {challenge!r}; known: {sorted(CHALLENGE_LEVELS)}")
        self.challenge = challenge
        self.n_games = {"train": n_train, "test": n_test}
        super().__init__(split=split, level=level, horizon=horizon, invalid_action=invalid_action,
                         render_mode=render_mode)
        self._check_level(level)

    @property
    def levels(self) -> list[int]:
        return list(range(len(CHALLENGE_LEVELS[self.challenge])))

    def _all_tasks(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {"train": {}, "test": {}}
        for split, n in self.n_games.items():
            offset = TEST_SEED_OFFSET if split == "test" else 0
            for lv in self.levels:
                for i in range(n):
                    out[split][f"{self.challenge}/L{lv}/{split}-{offset + i}"] = lv
        return out

    def game_file(self, task_id: str) -> str:
        challenge, lv, rest = task_id.split("/")
        split, seed = rest.split("-")
        return str(generate_game(challenge, int(lv[1:]), int(seed), test=split == "test"))


def generate_game(challenge: str, level: int, seed: int, test: bool = False) -> Path:
    """The game file of (challenge, level, seed), generated with TextWorld's generator on first use and
    cached as ``<cache>/textworld/<challenge>/L<level>/<seed>/game.z8`` (with TextWorld's game.json)."""
    settings = dict(CHALLENGE_LEVELS[challenge][level])
    if challenge == "tw-simple":
        settings["test"] = test
    folder = cache_dir("textworld", challenge, f"L{level}") / f"{'test' if test else 'train'}-{seed}"
    path = folder / "game.z8"
    if path.is_file() and path.with_suffix(".json").is_file():
        return path
    tw = _textworld()
    from textworld.challenges import CHALLENGES
    from textworld.generator.chaining import QuestGenerationError
    from textworld.generator.game import GameOptions

    with atomic_path(folder) as tmp:
        tmp.mkdir()
        # Some seeds admit no quest of the asked length: retry with seed + k * RETRY_SEED_STEP (still disjoint
        # between splits, as long as there are fewer than TEST_SEED_OFFSET games per split).
        for attempt in range(GENERATION_ATTEMPTS):
            options = GameOptions()
            options.seeds = seed + attempt * RETRY_SEED_STEP
            options.path = str(tmp / "game.z8")
            options.file_ext = ".z8"
            try:
                game = CHALLENGES[challenge][1](settings, options)
                break
            except QuestGenerationError:
                if attempt == GENERATION_ATTEMPTS - 1:
                    raise
        tw.generator.compile_game(game, options)
    return path


# ---- ALFWorld ------------------------------------------------------------------------------------------
ALFWORLD_GAME_FILES = ("game.tw-pddl", "game.z8", "game.ulx")  # ALFWorld ships .tw-pddl


def find_alfworld_games(data_path: str | os.PathLike, subset: str, task_family: str) -> list[Path]:
    """Game files of one task family in one subset (train, valid_seen, valid_unseen) of ALFWorld's data:
    ``<data>/json_2.1.1/<subset>/<family>-<objects>-<n>/<trial>/game.tw-pddl``."""
    data = Path(data_path).expanduser()
    base = data / "json_2.1.1" if (data / "json_2.1.1").is_dir() else data
    folder = base / subset
    if not folder.is_dir():
        raise FileNotFoundError(f"ALFWorld data: no {subset!r} folder under {base} (expected the layout "
                                f"<data>/json_2.1.1/{{train,valid_seen,valid_unseen}}/...)")
    games = []
    for task_dir in sorted(folder.iterdir()):
        if not task_dir.name.startswith(task_family + "-"):
            continue
        for trial in sorted(p for p in task_dir.iterdir() if p.is_dir()):
            game = next((trial / g for g in ALFWORLD_GAME_FILES if (trial / g).is_file()), None)
            if game is not None:
                games.append(game)
    return games


class ALFWorld(TextWorldGames):
    """ALFWorld's household games of one task family (one level). Needs ALFWorld's data on disk."""

    def __init__(self, split: str = "train", level: int | None = None, horizon: int = 15,
                 invalid_action: str = "penalize", data_path: str | None = None,
                 task_family: str = "pick_and_place_simple", test_subset: str = "valid_unseen",
                 render_mode: str | None = None) -> None:
        """data_path: ALFWorld's data folder (default $ALFWORLD_DATA). test_subset: valid_unseen or valid_seen."""
        path = data_path or os.environ.get("ALFWORLD_DATA")
        if not path or not Path(path).expanduser().is_dir():
            where = f" ({path} does not exist)" if path else ""
            raise FileNotFoundError(
                "ALFWorld's game data is missing" + where + ": download it with ALFWorld's own tool "
                "(pip install alfworld; alfworld-download) on a machine with internet, then pass "
                "data_path=... (CLI: --data PATH) or set ALFWORLD_DATA to that folder.")
        self.data_path = Path(path).expanduser()
        self.task_family = task_family
        self.subsets = {"train": "train", "test": test_subset}
        super().__init__(split=split, level=level, horizon=horizon, invalid_action=invalid_action,
                         render_mode=render_mode)
        self._check_level(level)
        self._files: dict[str, str] = {}
        for sp in ("train", "test"):
            for game in find_alfworld_games(self.data_path, self.subsets[sp], task_family):
                self._files[f"{sp}/{game.parent.parent.name}/{game.parent.name}"] = str(game)
        if not self._files:
            raise FileNotFoundError(f"ALFWorld data at {self.data_path}: no games of the family {task_family!r}")

    @property
    def levels(self) -> list[int]:
        return [0]

    def _all_tasks(self) -> dict[str, dict[str, int]]:
        return {sp: {t: 0 for t in self._files if t.startswith(sp + "/")} for sp in ("train", "test")}

    def game_file(self, task_id: str) -> str:
        return self._files[task_id]

    def _wrappers(self) -> list:
        try:  # ALFWorld's own wrappers make its PDDL games readable and give its expert plan
            from alfworld.agents.environment.alfred_tw_env import AlfredDemangler
        except ImportError:
            return []
        return [AlfredDemangler()]

"""TextWorld and ALFWorld: text games played through TextWorld's engine (the ``textworld`` extra).

``TextWorldGames`` plays any game file TextWorld can load: the actions are TextWorld's admissible commands
(sorted), the reward is the change of the game's score (its intermediate scores), a win or a loss ends the
episode, and the oracle is TextWorld's own winning policy from the current state (``policy_commands``, which
it recomputes after a detour). Two ways to get game files:

- ``TextWorld``: games generated offline by TextWorld's generator from one of its built-in challenges, at
  three difficulty settings = curriculum levels, generated on first use and cached under
  ``frugalft.cache.cache_dir("textworld")``. Train, valid and test games use disjoint generator seed ranges
  (``tw-simple`` also draws valid and test games from its test distribution).
- ``ALFWorld``: the game files of ALFWorld's data (``data_path=`` or ``$ALFWORLD_DATA``), one task family
  (default ``pick_and_place_simple``, as in the paper). ALFWorld's subsets map to the splits train -> train,
  valid_seen -> valid, valid_unseen -> test (``valid_subset=`` / ``test_subset=`` change that). ALFWorld's data
  cannot be downloaded here; ``frugalft.envs.alfworld_games`` generates games in its layout from the
  ``alfworld`` wheel's own engine files (``frugalft env make-alfworld``). ``game.tw-pddl`` files are played by
  TextWorld's PDDL engine with ALFWorld's demangler (the ``alfworld`` extra); the oracle is the engine's
  planner (``policy_commands``), computed only when asked for. TextWorld games (``.z8``/``.ulx``) laid out in
  ALFWorld's folders play too (that is how the adapter is tested without the ``alfworld`` package).
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

from frugalft.atomic import atomic_path
from frugalft.cache import cache_dir
from frugalft.envs import pddl_speedup
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
VALID_SEED_OFFSET = 200_000  # and valid games from here on: disjoint from both (< 100_000 games per split)
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


def _pddl_game(path: str | None) -> bool:
    return bool(path) and path.endswith(".tw-pddl")


def _room_name(description: str | None) -> str | None:
    """The room's name from TextWorld's description header ``-= Kitchen =-``."""
    m = re.search(r"-=\s*(.+?)\s*=-", description or "")
    return m.group(1).lower() if m else None


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
        self._game_path: str | None = None  # the game file it runs
        self._state = None  # its last GameState
        self._score = 0.0

    def game_file(self, task_id: str) -> str:
        """Path of the game file of ``task_id`` (made first if needed)."""
        raise NotImplementedError

    def _wrappers(self) -> list:
        return []

    def _request_infos(self):
        return _request_infos()

    def _start(self, task_id: str) -> None:
        tw = _textworld()
        path = self.game_file(task_id)
        with warnings.catch_warnings():
            # jericho says every generated game is "not fully supported": TextWorld tracks score itself.
            warnings.filterwarnings("ignore", message=".*not fully supported")
            if self._game is not None and self._game_path != path and _pddl_game(path) and _pddl_game(
                    self._game_path):
                # Another PDDL game: load it into the running engine. Each new engine loads its own copy of
                # fast-downward's 34 MB library (never unloaded), so one engine per game would grow without end.
                self._game.load(path)
                self._game_path = path
            elif self._game is None or self._game_path != path:
                self.close()
                self._game = tw.start(path, request_infos=self._request_infos(), wrappers=self._wrappers())
                self._game_path = path
            # The same game again (negative examples branch off by replaying) is only reset: loading parses it.
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
            "objective": _clean(s.objective),
            "room": _room_name(s.description),
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
            self._game_path = None


class TextWorld(TextWorldGames):
    """Games from a TextWorld challenge; level i = the i-th setting of ``CHALLENGE_LEVELS[challenge]``.

    Task ids are ``<challenge>/L<level>/<split>-<seed>``: train seeds from 0, test seeds from
    ``TEST_SEED_OFFSET``, valid seeds from ``VALID_SEED_OFFSET``. A game is generated (seconds; TextWorld's first
    generation in a process also loads its grammar, ~20 s) the first time it is played, then cached.
    """

    family = "textworld"

    def __init__(self, split: str = "train", level: int | None = None, horizon: int = 15,
                 invalid_action: str = "penalize", challenge: str = "tw-coin_collector", n_train: int = 20,
                 n_test: int = 10, n_valid: int = 5, render_mode: str | None = None) -> None:
        """challenge: one of TextWorld's challenges in CHALLENGE_LEVELS. n_train, n_valid, n_test: games per
        level in each split."""
        if challenge not in CHALLENGE_LEVELS:
            raise ValueError(f"unknown challenge {challenge!r}; known: {sorted(CHALLENGE_LEVELS)}")
        if max(n_train, n_valid, n_test) >= TEST_SEED_OFFSET or min(n_train, n_valid, n_test) < 0:
            raise ValueError(f"games per split must be in [0, {TEST_SEED_OFFSET}) to keep the seed ranges apart")
        self.challenge = challenge
        self.n_games = {"train": n_train, "valid": n_valid, "test": n_test}
        super().__init__(split=split, level=level, horizon=horizon, invalid_action=invalid_action,
                         render_mode=render_mode)
        self._check_level(level)

    @property
    def levels(self) -> list[int]:
        return list(range(len(CHALLENGE_LEVELS[self.challenge])))

    def _all_tasks(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {split: {} for split in self.n_games}
        offsets = {"train": 0, "valid": VALID_SEED_OFFSET, "test": TEST_SEED_OFFSET}
        for split, n in self.n_games.items():
            for lv in self.levels:
                for i in range(n):
                    out[split][f"{self.challenge}/L{lv}/{split}-{offsets[split] + i}"] = lv
        return out

    def game_file(self, task_id: str) -> str:
        challenge, lv, rest = task_id.split("/")
        split, seed = rest.split("-")
        return str(generate_game(challenge, int(lv[1:]), int(seed), split=split))


def generate_game(challenge: str, level: int, seed: int, test: bool = False, split: str | None = None) -> Path:
    """The game file of (challenge, level, seed), generated with TextWorld's generator on first use and
    cached as ``<cache>/textworld/<challenge>/L<level>/<split>-<seed>/game.z8`` (with TextWorld's game.json).

    split: train, valid or test (default: test if ``test`` else train). ``tw-simple`` draws valid and test games
    from its test distribution, so model selection on valid sees what the test will."""
    split = split or ("test" if test else "train")
    settings = dict(CHALLENGE_LEVELS[challenge][level])
    if challenge == "tw-simple":
        settings["test"] = split != "train"
    folder = cache_dir("textworld", challenge, f"L{level}") / f"{split}-{seed}"
    path = folder / "game.z8"
    if path.is_file() and path.with_suffix(".json").is_file():
        return path
    tw = _textworld()
    from textworld.challenges import CHALLENGES
    from textworld.generator.chaining import QuestGenerationError
    from textworld.generator.game import GameOptions

    # TextWorld checks a new game's walkthrough by running a temporary story file, which jericho flags as "not
    # fully supported" (it disables score detection for that check only): noise about TextWorld's internals.
    with atomic_path(folder) as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is not fully supported.*")
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
ALFWORLD_SUBSETS = ("train", "valid_seen", "valid_unseen")
_GOAL_TEXT = re.compile(r"put (?:a|an|some) (\w+) (?:in|on|into|onto) (?:the |a )?(\w+)", re.I)


def find_alfworld_games(data_path: str | os.PathLike, subset: str, task_family: str) -> list[Path]:
    """Game files of one task family in one subset (train, valid_seen, valid_unseen) of ALFWorld's data:
    ``<data>/json_2.1.1/<subset>/<family>-<objects>-<n>/<trial>/game.tw-pddl`` (``json_2.1.1/`` optional)."""
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


def _alfworld_wrappers() -> list:
    try:  # ALFWorld's demangler turns PDDL names (apple_bar__minus_01_dot_65...) into "apple 1"
        from alfworld.agents.environment.alfred_tw_env import AlfredDemangler
    except ImportError:
        raise ImportError("ALFWorld's .tw-pddl games need the alfworld package (its demangler and TextWorld's "
                          "PDDL engine): pip install 'frugalft[alfworld]'") from None
    return [AlfredDemangler()]


class ALFWorld(TextWorldGames):
    """ALFWorld's household games of one task family (one level). Needs game files on disk: ALFWorld's data or
    games made by ``frugalft.envs.alfworld_games.generate_alfworld_games`` (same layout).

    Task ids are ``<split>/<task folder>/<trial>``. Splits: train = ALFWorld's ``train``, valid = ``valid_seen``,
    test = ``valid_unseen`` by default; a missing valid subset leaves the valid split empty.
    """

    family = "alfworld"
    section_titles = {**TextWorldGames.section_titles, "not_searched": "Not searched"}  # notepad=True

    def __init__(self, split: str = "train", level: int | None = None, horizon: int = 15,
                 invalid_action: str = "penalize", data_path: str | None = None,
                 task_family: str = "pick_and_place_simple", test_subset: str = "valid_unseen",
                 valid_subset: str = "valid_seen", oracle: str = "planner", notepad: bool = False,
                 render_mode: str | None = None) -> None:
        """data_path: ALFWorld's data folder (default $ALFWORLD_DATA). test_subset, valid_subset: which of
        ALFWorld's subsets (train, valid_seen, valid_unseen) are the test and valid splits; they must differ
        from each other and from train. oracle (``.tw-pddl`` games): ``planner``, the engine's plan, which
        knows where every object is; or ``search``, an expert that knows only what the player has seen: it
        looks in the receptacles that can hold the goal object (the game's ``canContain`` rules, never a goal
        receptacle), in the room's listing order, opening closed ones, until it sees the object, then carries
        it (``search_action``). A player can learn to imitate ``search`` on rooms it has never seen; the
        planner's first move in a new room is a guess to anyone without its privilege.

        notepad (``.tw-pddl`` games): add a "Not searched" section to the observation: the receptacles of the
        room's opening listing whose contents the player has not seen yet, in that order. Nothing hidden: it
        is the listing the player read at the start minus the surfaces it went to and the receptacles it opened
        (ALFWorld shows that listing only before the first move, so without the note a player must recall it). Off by
        default: ALFWorld's observation as the paper's agents read it."""
        if oracle not in ("planner", "search"):
            raise ValueError(f"oracle must be 'planner' or 'search', got {oracle!r}")
        self.oracle = oracle
        self.notepad = notepad
        path = data_path or os.environ.get("ALFWORLD_DATA")
        if not path or not Path(path).expanduser().is_dir():
            where = f" ({path} does not exist)" if path else ""
            raise FileNotFoundError(
                "ALFWorld's game data is missing" + where + ": download it with ALFWorld's own tool "
                "(pip install alfworld; alfworld-download) on a machine with internet, or generate games "
                "with `frugalft env make-alfworld --out DIR`, then pass data_path=... (CLI: --data PATH) or "
                "set ALFWORLD_DATA to that folder.")
        subsets = {"train": "train", "valid": valid_subset, "test": test_subset}
        if len(set(subsets.values())) != 3 or not set(subsets.values()) <= set(ALFWORLD_SUBSETS):
            raise ValueError(f"valid_subset and test_subset must be two different ones of {ALFWORLD_SUBSETS[1:]} "
                             f"(the splits must be disjoint), got valid={valid_subset!r}, test={test_subset!r}")
        self.data_path = Path(path).expanduser()
        self.task_family = task_family
        self.subsets = subsets
        super().__init__(split=split, level=level, horizon=horizon, invalid_action=invalid_action,
                         render_mode=render_mode)
        self._check_level(level)
        self._files: dict[str, str] = {}
        for sp, subset in subsets.items():
            try:
                games = find_alfworld_games(self.data_path, subset, task_family)
            except FileNotFoundError:
                if sp == "valid":  # older layouts and hand-made folders may have no valid_seen
                    continue
                raise
            for game in games:
                self._files[f"{sp}/{game.parent.parent.name}/{game.parent.name}"] = str(game)
        if not self._files:
            raise FileNotFoundError(f"ALFWorld data at {self.data_path}: no games of the family {task_family!r}")
        self._pddl = False  # is the running game a .tw-pddl one?
        self._plan: list[str] | None = None  # the planner's plan for the current state, computed on demand
        self._world_of: tuple[Any, dict[str, Any]] | None = None  # (engine state, _world() of it)
        self._goal: tuple[str, str] | None = None  # (object type, receptacle type), lower case

    @property
    def levels(self) -> list[int]:
        return [0]

    def _all_tasks(self) -> dict[str, dict[str, int]]:
        return {sp: {t: 0 for t in self._files if t.startswith(sp + "/")} for sp in self.subsets}

    def game_file(self, task_id: str) -> str:
        return self._files[task_id]

    # ---- .tw-pddl games: TextWorld's PDDL engine gives admissible commands, won and the raw facts; the rest
    # (location, inventory, the goal's whereabouts) is read from those facts.
    def _wrappers(self) -> list:
        return _alfworld_wrappers() if self._pddl else []

    def _request_infos(self):
        if not self._pddl:
            return _request_infos()
        # The plan is asked for only when needed (oracle_action, privileged): replanning costs 50-70 ms a step.
        return _textworld().EnvInfos(won=True, admissible_commands=True)

    def _start(self, task_id: str) -> None:
        self._pddl = _pddl_game(self.game_file(task_id))
        self._plan = None
        if self._pddl:
            pddl_speedup.install()  # the same text, ~6x the env steps per second (envs/pddl_speedup.py)
        super()._start(task_id)
        if self._pddl:
            self._goal = self._read_goal(task_id)

    def _apply(self, action: str) -> tuple[float, bool, bool, str]:
        self._plan = None
        if not self._pddl:
            return super()._apply(action)
        self._state, _, done = self._game.step(action)
        won = bool(self._state.won)
        reward, self._score = float(won) - self._score, float(won)
        return reward, bool(done or won), won, _clean(self._state.feedback)

    def _read_goal(self, task_id: str) -> tuple[str, str] | None:
        """The goal's (object type, receptacle type), lower case: from ALFWorld's traj_data.json beside the game,
        else from the task sentence ("put a apple in fridge")."""
        traj = Path(self.game_file(task_id)).with_name("traj_data.json")
        if traj.is_file():
            params = json.loads(traj.read_text(encoding="utf-8")).get("pddl_params", {})
            if params.get("object_target") and params.get("parent_target"):
                return params["object_target"].lower(), params["parent_target"].lower()
        m = _GOAL_TEXT.search(self._task_text())
        return (m.group(1).lower(), m.group(2).lower()) if m else None

    def _task_text(self) -> str:
        m = re.search(r"Your task is to:\s*(.+)", self._start_feedback)
        return m.group(1).strip() if m else ""

    def _world(self) -> dict[str, Any]:
        """The current state from the engine's facts, in the names the player sees; read once per engine state
        (the observation, the expert and privileged() all ask for it at every step). Read-only for callers."""
        if self._world_of is not None and self._world_of[0] is self._state:
            return self._world_of[1]
        names = {k: info.name.strip() for k, info in (self._state.get("_entity_infos") or {}).items()}
        out: dict[str, Any] = {"at": None, "holding": [], "opened": set(), "contents": {}, "openable": set(),
                               "types": {}, "receptacles": [], "can_contain": set()}
        loc_of: dict[str, str] = {}
        agent_loc = None
        for fact in self._state.get("_facts") or []:
            args = [a.name for a in fact.arguments]
            n = fact.name.lower()
            if n == "atlocation":
                agent_loc = args[1]
            elif n == "receptacleatlocation":
                loc_of[args[0]] = args[1]
            elif n == "holds":
                out["holding"].append(names.get(args[1], args[1]))
            elif n == "opened":
                out["opened"].add(names.get(args[0], args[0]))
            elif n == "openable":
                out["openable"].add(names.get(args[0], args[0]))
            elif n == "inreceptacle":
                out["contents"].setdefault(names.get(args[1], args[1]), []).append(names.get(args[0], args[0]))
            elif n in ("objecttype", "receptacletype"):
                out["types"][names.get(args[0], args[0])] = args[1].lower().removesuffix("type")
            elif n == "cancontain":  # (receptacle type, object type), e.g. (fridgetype, appletype)
                out["can_contain"].add(tuple(a.lower().removesuffix("type") for a in args))
        out["receptacles"] = sorted((names.get(r, r) for r in loc_of), key=_natural)
        here = sorted((names.get(r, r) for r, loc in loc_of.items() if loc == agent_loc), key=_natural)
        out["at"] = here[0] if here else None
        for things in out["contents"].values():
            things.sort(key=_natural)
        self._world_of = (self._state, out)
        return out

    def _parts(self) -> dict[str, str]:
        if not self._pddl:
            return super()._parts()
        w = self._world()
        at = w["at"]
        if at is None:
            where = ("You are in the middle of a room. Looking quickly around you, you see "
                     + _listing(w["receptacles"]) + ".")
        elif at in w["openable"] and at not in w["opened"]:
            where = f"You are at {at}. The {at} is closed."
        elif at in w["openable"]:
            where = f"You are at {at}. The {at} is open. In it, you see {_listing(w['contents'].get(at, []))}."
        else:
            where = f"You are at {at}. On the {at}, you see {_listing(w['contents'].get(at, []))}."
        carrying = (f"You are carrying: {_listing(w['holding'])}." if w["holding"]
                    else "You are not carrying anything.")
        parts = {"task": self._task_text() or "(no task given)", "location": where, "inventory": carrying}
        if self.notepad:
            parts["not_searched"] = ", ".join(self._unsearched(w)) or "nothing"
        return {**parts, "history": self.history_text(), "last_result": self.last_result or "(start)"}

    def _policy(self) -> list[str]:
        if not self._pddl:
            return list(self._state.policy_commands or [])
        if self._plan is None:
            engine = self._game.unwrapped  # TextWorld's PddlEnv: replan from the current state, as its
            self._plan = list(engine._pddl_state.replan(engine._entity_infos) or [])  # policy_commands does
        return list(self._plan)

    def _searched(self, w: dict[str, Any]) -> set[str]:
        """Receptacles whose contents the player has seen: opened ones, and open surfaces it went to."""
        went = {h.removeprefix("go to ") for h in self.history if h.startswith("go to ")}
        return {h.removeprefix("open ") for h in self.history if h.startswith("open ")} | (went - w["openable"])

    def _unsearched(self, w: dict[str, Any]) -> list[str]:
        """Receptacles not yet searched, in the room's listing order (the notepad)."""
        searched = self._searched(w)
        return [r for r in w["receptacles"] if r not in searched]

    def _search_candidates(self, w: dict[str, Any]) -> list[str]:
        """Receptacles that may hold the goal object and are not yet searched, in the room's listing order."""
        obj, recep = self._goal or (None, None)
        return [r for r in self._unsearched(w) if (w["types"].get(r), obj) in w["can_contain"]
                and w["types"].get(r) != recep]

    def search_action(self) -> str | None:
        """The ``search`` expert's command (see ``__init__``), or None when it has nothing left to try."""
        w = self._world()
        obj, recep = self._goal or (None, None)
        actions = set(self._actions())
        at = w["at"]

        def ok(command: str) -> str | None:
            return command if command in actions else None

        held = w["holding"]
        if any(w["types"].get(h) == obj for h in held):
            goals = [r for r in w["receptacles"] if w["types"].get(r) == recep]
            target = at if at in goals else (goals[0] if goals else None)
            if target is None:
                return None
            if at != target:
                return ok(f"go to {target}")
            if target in w["openable"] and target not in w["opened"]:
                return ok(f"open {target}")
            return ok(f"move {held[0]} to {target}")
        if held:  # something else in hand (an exploratory take): set it down here
            return ok(f"move {held[0]} to {at}") if at else None
        if at is not None and (at not in w["openable"] or at in w["opened"]):
            here = [o for o in w["contents"].get(at, []) if w["types"].get(o) == obj]
            if here:
                return ok(f"take {here[0]} from {at}")
        left = self._search_candidates(w)
        if at is not None and at in left and at in w["openable"]:
            return ok(f"open {at}")
        return ok(f"go to {left[0]}") if left else None

    def _oracle_or_none(self) -> str | None:
        try:
            return self.oracle_action()
        except RuntimeError:  # no winning plan from here: privileged() still describes the state
            return None

    def oracle_action(self) -> str:
        if not self._pddl:
            return super().oracle_action()
        if self.oracle == "search":
            action = self.search_action()
            if action is not None:
                return action  # else (nothing left to search: the object was missed) the planner finishes
        policy = self._policy()
        if policy and policy[0] in self._actions():
            return policy[0]
        if policy:
            raise RuntimeError(f"the planner's command {policy[0]!r} is not admissible here")
        raise RuntimeError("the planner finds no winning plan from this state")

    def privileged(self) -> dict[str, Any]:
        if not self._pddl:
            return super().privileged()
        w = self._world()
        obj, recep = self._goal or (None, None)
        targets = {o: r for r, things in w["contents"].items() for o in things if w["types"].get(o) == obj}
        goals = [r for r in w["receptacles"] if w["types"].get(r) == recep]
        went = {h.removeprefix("go to ") for h in self.history if h.startswith("go to ")}
        searched = self._searched(w)
        won = bool(self._state.won)
        return {
            "goal_text": self._task_text(),
            "goal_object": obj,
            "goal_receptacle": recep,
            # The planner's plan (50-70 ms a state, seconds in big kitchens): the search expert never reads it.
            "policy_commands": [] if won or self.oracle == "search" else self._policy(),
            "walkthrough": list(getattr(self._game.unwrapped, "walkthrough", None) or []),
            "at": w["at"],
            "holding": list(w["holding"]),
            "holding_goal_object": any(w["types"].get(h) == obj for h in w["holding"]),
            "target_locations": targets,  # goal-type object -> the receptacle it is in now
            "goal_receptacles": goals,
            "opened": sorted(w["opened"], key=_natural),
            "closed_receptacles": sorted(w["openable"] - w["opened"], key=_natural),
            "closed_goal_receptacles": [r for r in goals if r in w["openable"] and r not in w["opened"]],
            "visited": sorted(went, key=_natural),  # receptacles gone to so far this episode
            "searched": sorted(searched, key=_natural),  # and those whose contents the agent has seen
            # The search expert's view (oracle="search"): what is left to search, what it would do.
            "oracle": self.oracle,
            "search_left": self._search_candidates(w),
            "seen_here": [o for o in w["contents"].get(w["at"], []) if w["types"].get(o) == obj]
            if w["at"] is not None and (w["at"] not in w["openable"] or w["at"] in w["opened"]) else [],
            "oracle_action": None if won else self._oracle_or_none(),
            "won": won,
            "game_file": self.game_file(self.task_id),
        }


def _natural(name: str) -> tuple:
    """Sort key: "cabinet 2" before "cabinet 10"."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def _listing(names: list[str]) -> str:
    """ALFWorld's list: "a cabinet 1, a cabinet 2, and a fridge 1" (or "nothing")."""
    items = [f"a {n}" for n in names]
    if not items:
        return "nothing"
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + ", and " + items[-1]

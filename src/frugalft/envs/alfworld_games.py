"""ALFWorld ``pick_and_place_simple`` games generated offline from the ``alfworld`` wheel's own engine inputs.

ALFWorld's game files are not downloadable here, but the wheel ships what makes them: the PDDL domain
(``alfworld/data/alfred.pddl``), the text grammar (``alfred.twl2``), the AI2-THOR FloorPlan layouts (each
scene's receptacles with their interaction poses and its object types: ``alfworld/gen/layouts``), the goal
templates (``alfworld/gen/goal_library.py``) and the table of which objects go in which receptacles
(``VAL_RECEPTACLE_OBJECTS`` in ``alfworld/gen/constants.py``). ``generate_alfworld_games`` writes seeded
problems against them, in ALFWorld's naming scheme and folder layout::

    <out>/{train,valid_seen,valid_unseen}/pick_and_place_simple-<Obj>-None-<Recep>-<scene>/trial_<id>/
        game.tw-pddl     {"pddl_domain", "grammar", "pddl_problem", "solvable", "walkthrough"}
        traj_data.json   task_type, scene and pddl_params, as in ALFWorld's data

so ``frugalft.envs.textworld_env.ALFWorld`` (and ALFWorld's own loaders) read them like the real data. The games
are played by TextWorld's PDDL engine (``textworld[pddl]``, a dependency of ``alfworld``); generating needs only
the wheel's files (read as text: importing ``alfworld.gen`` modules may need cv2).

Splits: ``train`` and ``valid_seen`` use ALFRED's training scenes and the "seen" goal pairs; ``valid_unseen``
uses ALFRED's held-out scenes (``TEST_SCENE_NUMBERS``) and goal pairs (object type, receptacle type) that no
train or valid_seen game has. A room is one FloorPlan: all its receptacles (cabinets, drawers, countertops,
fridge, microwave, sink basin, stove burners, ...), the target object (1-3 instances, never already in a goal
receptacle) and distractor objects, each in a receptacle that can hold it (inside closed ones or on surfaces).
The agent starts in the middle of the room. These are *generated* scenes: scores on them are not comparable to
published ALFWorld numbers.
"""

from __future__ import annotations

import importlib.util
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from frugalft.atomic import atomic_path, write_json

TASK_TYPE = "pick_and_place_simple"
SPLIT_FOLDERS = {"train": "train", "valid": "valid_seen", "test": "valid_unseen"}
UNSEEN_PAIR_FRACTION = 0.25  # share of goal pairs held out for valid_unseen
# Receptacle types that rooms have but the layouts list without a pose (AI2-THOR kitchens have 4 burners).
EXTRA_RECEPTACLE_COUNT = {"StoveBurner": 4}
SCENE_ATTEMPTS = 200


# ---- the wheel's files ---------------------------------------------------------------------------------
def alfworld_root() -> Path:
    """The installed ``alfworld`` package folder, found without importing it (its ``__init__`` creates
    ``$ALFWORLD_DATA``)."""
    spec = importlib.util.find_spec("alfworld")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("generating ALFWorld games needs the alfworld package: pip install 'frugalft[alfworld]'")
    return Path(next(iter(spec.submodule_search_locations)))


def _load_constants(root: Path) -> ModuleType:
    """``alfworld/gen/constants.py`` executed on its own: it only imports the standard library, whereas importing
    it as ``alfworld.gen.constants`` runs ``alfworld/__init__`` first."""
    spec = importlib.util.spec_from_file_location("_alfworld_gen_constants", root / "gen" / "constants.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _goal_templates(root: Path) -> list[str]:
    """The ``pick_and_place_simple`` templates of ``goal_library.py``, read as text (importing it is safe, but
    reading keeps us independent of its module-level state)."""
    text = (root / "gen" / "goal_library.py").read_text(encoding="utf-8")
    block = text.split(f'gdict["{TASK_TYPE}"]', 1)[1].split("gdict[", 1)[0]
    templates = re.findall(r"'(put [^']*)'", block.split("'templates'", 1)[1])
    if not templates:
        raise RuntimeError(f"no {TASK_TYPE} templates found in {root / 'gen' / 'goal_library.py'}")
    return templates


@dataclass
class Engine:
    """Everything the generator reads from the wheel."""

    domain: str
    grammar: str
    templates: list[str]
    can_contain: dict[str, set[str]]  # receptacle type -> object types it holds
    openable: set[str]
    action_objects: dict[str, set[str]]  # Heatable, Coolable, Cleanable, Sliceable -> object types
    movable_receptacles: set[str]
    train_scenes: list[int]
    test_scenes: list[int]
    layouts: Path

    @classmethod
    def load(cls) -> Engine:
        root = alfworld_root()
        c = _load_constants(root)
        can_contain = {r: {o for o in objs if not o.endswith("Sliced")} for r, objs in c.VAL_RECEPTACLE_OBJECTS.items()}
        return cls(
            domain=(root / "data" / "alfred.pddl").read_text(encoding="utf-8"),
            grammar=(root / "data" / "alfred.twl2").read_text(encoding="utf-8"),
            templates=_goal_templates(root),
            can_contain=can_contain,
            openable=set(c.OPENABLE_CLASS_LIST),
            action_objects={k: set(v) for k, v in c.VAL_ACTION_OBJECTS.items()},
            movable_receptacles=set(c.MOVABLE_RECEPTACLES),
            train_scenes=sorted(c.TRAIN_SCENE_NUMBERS),
            test_scenes=sorted(c.TEST_SCENE_NUMBERS),
            layouts=root / "gen" / "layouts",
        )

    @property
    def static_receptacles(self) -> set[str]:
        return set(self.can_contain) - self.movable_receptacles

    @property
    def pickupable(self) -> set[str]:
        return set().union(*self.can_contain.values())

    def goal_pairs(self) -> list[tuple[str, str]]:
        """Every (object type, receptacle type) a pick-and-place goal can name."""
        return sorted((o, r) for r in self.static_receptacles for o in self.can_contain[r])


# ---- ALFWorld's naming ---------------------------------------------------------------------------------
_MANGLE = {"-": "_minus_", "|": "_bar_", "+": "_plus_", ".": "_dot_", ",": "_comma_"}


def mangle(name: str) -> str:
    """AI2-THOR id -> PDDL name, as ALFRED's ``fix_pddl_str_chars`` does (``Apple|-01.65|...`` ->
    ``Apple_bar__minus_01_dot_65...``)."""
    return "".join(_MANGLE.get(ch, ch) for ch in name)


def demangled_names(ids: list[str]) -> dict[str, str]:
    """What ALFWorld's ``Demangler`` shows for each PDDL name (``apple 2``, ``sinkbasin 1``): the same
    numbering (per class, over the sorted names) on the lowercased names the PDDL engine keeps."""
    ids = sorted(i.lower() for i in ids)
    counts: dict[str, int] = {}
    for i in ids:
        parts = i.split("_bar_", 1)
        if len(parts) > 1:
            name = parts[0] + ("basin" if "basin" in i else "")
            counts[name] = counts.get(name, 0) + 1
    left = {name: list(range(1, n + 1)) for name, n in counts.items()}
    out = {}
    for i in ids:
        parts = i.split("_bar_", 1)
        if len(parts) == 1:
            out[i] = i
        else:
            name = parts[0] + ("basin" if "basin" in i else "")
            out[i] = f"{name} {left[name].pop()}"
    return out


def _loc(x: float, z: float, rotation: int, horizon: int) -> str:
    """ALFRED's location name: the grid cell (0.25 m), the rotation index (0-3) and the camera horizon."""
    return f"loc|{round(x / 0.25)}|{round(z / 0.25)}|{rotation % 4}|{horizon}"


def _thor_id(kind: str, x: float, y: float, z: float) -> str:
    """An AI2-THOR-style id. Basins are parts of their sink or bathtub (``Sink|...|SinkBasin``): ALFWorld's
    demangler names them by the part before ``|`` plus "basin"."""
    coords = f"{x:+06.2f}|{y:+06.2f}|{z:+06.2f}"
    return f"{kind[:-5]}|{coords}|{kind}" if kind.endswith("Basin") else f"{kind}|{coords}"


# ---- one room -------------------------------------------------------------------------------------------
@dataclass
class Receptacle:
    id: str  # AI2-THOR id, e.g. Cabinet|+00.68|+00.50|-02.20 or Sink|+00.05|+00.90|-00.65|SinkBasin
    type: str  # ALFRED receptacle type: Cabinet, SinkBasin, ...
    location: str  # loc|x|z|rot|horizon
    x: float
    z: float


@dataclass
class Thing:
    id: str
    type: str
    receptacle: Receptacle


def _points(engine: Engine, scene: int) -> list[tuple[float, float]]:
    """The scene's reachable (x, z) floor points (metres, a 0.25 m grid): its ``-layout.npy``."""
    return [(float(x), float(z)) for x, z in np.load(engine.layouts / f"FloorPlan{scene}-layout.npy")]


def _scene_receptacles(engine: Engine, scene: int, rng: random.Random) -> list[Receptacle]:
    """The FloorPlan's receptacles at their interaction poses; receptacle types the scene has but the layout
    gives no pose for (coffee machine, stove burners, toaster, ...) stand at seeded reachable points."""
    poses = json.loads((engine.layouts / f"FloorPlan{scene}-openable.json").read_text(encoding="utf-8"))
    kinds = json.loads((engine.layouts / f"FloorPlan{scene}-objects.json").read_text(encoding="utf-8"))
    points = _points(engine, scene)
    used: set[str] = set()

    def free(x: float, z: float, rot: int, horizon: int) -> str:
        # Two receptacles at one pose would share a "go to" command: nudge the camera horizon apart.
        loc = _loc(x, z, rot, horizon)
        while loc in used:
            horizon += 15
            loc = _loc(x, z, rot, horizon)
        used.add(loc)
        return loc

    out: list[Receptacle] = []
    for thor_id, (x, z, rot, horizon) in sorted(poses.items()):
        kind = thor_id.split("|")[0]
        kind = {"Sink": "SinkBasin", "Bathtub": "BathtubBasin"}.get(kind, kind)
        if kind not in engine.static_receptacles:
            continue
        out.append(Receptacle(thor_id, kind, free(x, z, int(rot) // 90, int(horizon)), x, z))
    have = {r.type for r in out}
    for kind in sorted(set(kinds) & engine.static_receptacles - have):
        for _ in range(EXTRA_RECEPTACLE_COUNT.get(kind, 1)):
            x, z = rng.choice(points)
            while True:  # a unique AI2-THOR-style id for each added receptacle
                thor_id = _thor_id(kind, x + rng.uniform(-0.4, 0.4), rng.uniform(0.0, 1.2), z + rng.uniform(-0.4, 0.4))
                if all(r.id != thor_id for r in out):
                    break
            out.append(Receptacle(thor_id, kind, free(x, z, rng.randrange(4), 30), x, z))
    return out


@dataclass
class Room:
    scene: int
    obj: str  # goal object type
    recep: str  # goal receptacle type
    goal_text: str
    receptacles: list[Receptacle]
    things: list[Thing]
    start: str  # the agent's start location

    def problem(self, engine: Engine) -> str:
        """The PDDL problem, in ALFWorld's naming scheme."""
        m = mangle
        otypes = sorted({t.type for t in self.things})
        rtypes = sorted({r.type for r in self.receptacles})
        locs = sorted({r.location for r in self.receptacles} | {self.start})
        objects = (["agent1 - agent"] + [f"{m(loc)} - location" for loc in locs]
                   + [f"{m(r.id)} - receptacle" for r in self.receptacles]
                   + [f"{m(t.id)} - object" for t in self.things]
                   + [f"{o}Type - otype" for o in otypes] + [f"{r}Type - rtype" for r in rtypes])
        init = ["(= (total-cost) 0)", f"(atLocation agent1 {m(self.start)})"]
        for r in self.receptacles:
            init += [f"(receptacleType {m(r.id)} {r.type}Type)", f"(receptacleAtLocation {m(r.id)} {m(r.location)})"]
            if r.type in engine.openable:
                init.append(f"(openable {m(r.id)})")
        for t in self.things:
            init += [f"(objectType {m(t.id)} {t.type}Type)", f"(pickupable {m(t.id)})",
                     f"(inReceptacle {m(t.id)} {m(t.receptacle.id)})",
                     f"(objectAtLocation {m(t.id)} {m(t.receptacle.location)})"]
            for fact, kind in (("cleanable", "Cleanable"), ("heatable", "Heatable"), ("coolable", "Coolable"),
                               ("sliceable", "Sliceable")):
                if t.type in engine.action_objects.get(kind, ()):
                    init.append(f"({fact} {m(t.id)})")
            if t.type in engine.movable_receptacles:
                init.append(f"(isReceptacleObject {m(t.id)})")
        init += [f"(canContain {r}Type {o}Type)" for r in rtypes for o in otypes if o in engine.can_contain[r]]
        goal = (f"(exists (?r - receptacle) (exists (?o - object) (and (inReceptacle ?o ?r) "
                f"(objectType ?o {self.obj}Type) (receptacleType ?r {self.recep}Type))))")
        pad = "\n        "
        return (f"(define (problem plan_{TASK_TYPE}_{self.obj}_{self.recep}_{self.scene})\n"
                f"    (:domain alfred)\n"
                f"    (:objects{pad}{pad.join(objects)}\n    )\n"
                f"    (:init{pad}{pad.join(init)}\n    )\n"
                f"    (:goal (and {goal}))\n"
                f"    (:metric minimize (total-cost))\n)\n")

    def walkthrough(self, engine: Engine) -> list[str]:
        """A shortest winning plan, from the construction: fetch the target instance that is quickest to reach,
        put it in the nearest-to-do goal receptacle (an open surface before a closed one)."""
        names = demangled_names([mangle(x.id) for x in [*self.receptacles, *self.things]])

        def name(x: Receptacle | Thing) -> str:
            return names[mangle(x.id).lower()]

        def cost(r: Receptacle) -> int:
            return 1 + int(r.type in engine.openable)  # go there (+ open it)

        # No target starts in a goal receptacle, and the agent starts at none: always go, take, go, put.
        targets = [t for t in self.things if t.type == self.obj]
        goals = [r for r in self.receptacles if r.type == self.recep]
        t = min(targets, key=lambda t: (cost(t.receptacle), name(t)))
        g = min(goals, key=lambda r: (cost(r), name(r)))
        plan = [f"go to {name(t.receptacle)}"]
        if t.receptacle.type in engine.openable:
            plan.append(f"open {name(t.receptacle)}")
        plan += [f"take {name(t)} from {name(t.receptacle)}", f"go to {name(g)}"]
        if g.type in engine.openable:
            plan.append(f"open {name(g)}")
        plan.append(f"move {name(t)} to {name(g)}")
        return plan


def _room(engine: Engine, scene: int, pairs: set[tuple[str, str]], rng: random.Random) -> Room | None:
    """A seeded room of ``scene`` whose goal is one of ``pairs``; None when the scene offers none of them."""
    kinds = set(json.loads((engine.layouts / f"FloorPlan{scene}-objects.json").read_text(encoding="utf-8")))
    receptacles = _scene_receptacles(engine, scene, rng)
    rtypes = {r.type for r in receptacles}
    objects = sorted(kinds & engine.pickupable)
    options = sorted((o, r) for o, r in pairs if o in objects and r in rtypes
                     # the target must have somewhere to start that is not a goal receptacle
                     and any(o in engine.can_contain[x] for x in rtypes - {r}))
    if not options:
        return None
    obj, recep = rng.choice(options)
    distractors = [o for o in objects if o != obj and any(o in engine.can_contain[r] for r in rtypes)]
    chosen = rng.sample(distractors, min(len(distractors), rng.randint(8, 14)))
    things: list[Thing] = []
    ids: set[str] = set()
    for kind, n in [(obj, rng.randint(1, 3))] + [(k, rng.randint(1, 2)) for k in chosen]:
        holders = [r for r in receptacles if kind in engine.can_contain[r.type] and not (kind == obj and r.type == recep)]
        for _ in range(n):
            r = rng.choice(holders)
            while True:
                thor_id = _thor_id(kind, r.x + rng.uniform(-0.5, 0.5), rng.uniform(0.0, 2.0), r.z + rng.uniform(-0.5, 0.5))
                if thor_id not in ids:
                    ids.add(thor_id)
                    break
            things.append(Thing(thor_id, kind, r))
    # The agent starts in the middle of the room: a reachable point where no receptacle stands.
    points = _points(engine, scene)
    taken = {r.location.rsplit("|", 2)[0] for r in receptacles}
    free = [p for p in points if _loc(p[0], p[1], 0, 30).rsplit("|", 2)[0] not in taken] or points
    x, z = rng.choice(free)
    start = _loc(x, z, rng.randrange(4), 30)
    while start in {r.location for r in receptacles}:
        start = start.rsplit("|", 1)[0] + f"|{int(start.rsplit('|', 1)[1]) + 15}"
    template = rng.choice(engine.templates)
    goal_text = template.format(obj=obj.lower(), recep=recep.lower())
    return Room(scene, obj, recep, goal_text, receptacles, things, start)


def split_goal_pairs(engine: Engine, seed: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(seen, unseen) goal pairs: a seeded ``UNSEEN_PAIR_FRACTION`` of every pair, disjoint."""
    pairs = engine.goal_pairs()
    rng = random.Random(f"alfworld-pairs:{seed}")
    unseen = set(rng.sample(pairs, round(len(pairs) * UNSEEN_PAIR_FRACTION)))
    return [p for p in pairs if p not in unseen], sorted(unseen)


def generate_alfworld_games(out_dir: str | Path, n_train: int = 100, n_valid: int = 20, n_test: int = 20,
                            seed: int = 0) -> dict[str, Any]:
    """Write ``n_train`` / ``n_valid`` / ``n_test`` seeded ``pick_and_place_simple`` games under ``out_dir``
    (``train`` / ``valid_seen`` / ``valid_unseen``), each split folder replaced atomically, and a
    ``generation.json`` manifest; return the manifest. Deterministic for a seed."""
    if min(n_train, n_valid, n_test) < 0:
        raise ValueError(f"game counts must be >= 0, got train={n_train}, valid={n_valid}, test={n_test}")
    engine = Engine.load()
    out_dir = Path(out_dir)
    seen, unseen = split_goal_pairs(engine, seed)
    plan = {"train": (n_train, engine.train_scenes, seen), "valid": (n_valid, engine.train_scenes, seen),
            "test": (n_test, engine.test_scenes, unseen)}
    manifest: dict[str, Any] = {"generator": "frugalft.envs.alfworld_games", "task_type": TASK_TYPE, "seed": seed,
                                "split_folders": SPLIT_FOLDERS, "seen_pairs": seen, "unseen_pairs": unseen,
                                "splits": {}}
    for split, (n, scenes, pairs) in plan.items():
        rng = random.Random(f"alfworld-games:{seed}:{split}")
        pair_set = set(pairs)
        games = []
        with atomic_path(out_dir / SPLIT_FOLDERS[split]) as tmp:
            tmp.mkdir()
            for i in range(n):
                room = None
                for _ in range(SCENE_ATTEMPTS):
                    room = _room(engine, rng.choice(scenes), pair_set, rng)
                    if room is not None:
                        break
                if room is None:
                    raise RuntimeError(f"no {split} scene offers any of its goal pairs")
                task = f"{TASK_TYPE}-{room.obj}-None-{room.recep}-{room.scene}"
                trial = f"trial_G{seed:04d}_{split}_{i:05d}"
                folder = tmp / task / trial
                folder.mkdir(parents=True)
                walkthrough = room.walkthrough(engine)
                game = {"pddl_domain": engine.domain,
                        "grammar": engine.grammar.replace("UNKNOWN GOAL", room.goal_text),
                        "pddl_problem": room.problem(engine), "solvable": True, "walkthrough": walkthrough}
                (folder / "game.tw-pddl").write_text(json.dumps(game), encoding="utf-8")
                traj = {"task_type": TASK_TYPE, "task_id": trial,
                        "scene": {"floor_plan": f"FloorPlan{room.scene}", "scene_num": room.scene},
                        "pddl_params": {"object_target": room.obj, "parent_target": room.recep, "toggle_target": "",
                                        "mrecep_target": "", "object_sliced": False},
                        "turk_annotations": {"anns": [{"task_desc": room.goal_text.capitalize() + "."}]},
                        "generator": {"name": "frugalft", "seed": seed, "split": split}}
                (folder / "traj_data.json").write_text(json.dumps(traj, indent=1), encoding="utf-8")
                games.append({"game": f"{task}/{trial}", "scene": room.scene, "object": room.obj,
                              "receptacle": room.recep, "receptacles": len(room.receptacles),
                              "objects": len(room.things), "walkthrough_steps": len(walkthrough)})
        manifest["splits"][split] = games
    write_json(out_dir / "generation.json", manifest)
    return manifest

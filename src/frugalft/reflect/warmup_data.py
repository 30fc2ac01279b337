"""Warm-up data for Reflect-RL (SPEC A.1): oracle trajectories, teacher reflections, negative examples.

For every train task we play one or more episodes. The behaviour is the oracle's action, or with probability
``explore_prob`` a random *non-fatal* wrong action (so the data also covers states the oracle never visits);
every visited state is labelled with the oracle's action and a teacher reflection.

Negative example generation: at ``negatives_per_episode`` chosen steps of a trajectory we branch off a copy of
the environment, take a wrong action that does not end the episode (in AutoExplore preferably a ``cat`` of a
wrong file in the same folder, as in the paper), and keep only the step after it: the teacher's *corrective*
reflection (why that move was a mistake, how to recover) and the oracle's recovery action.

Output (JSONL, written atomically), one row per kept step, with ``parts`` (the state's sections), ``actions``,
``target_index`` (the oracle's action) and ``reflection``:

    reflection.jsonl          reflection SFT set (state -> reflection), all steps
    policy.jsonl              policy SFT set (state + reflection + actions -> label), all steps
    policy_noreflect.jsonl    the same without reflections (the SFT+RL-without-reflection baseline)
    reflection_noneg.jsonl    the two sets without the corrective steps (the "without negative examples"
    policy_noneg.jsonl        ablation)
    counts.json               how many of each
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from frugalft.atomic import write_json, write_jsonl, write_text
from frugalft.config import dump_yaml
from frugalft.reflect.teachers import Situation, Teacher, TeacherConfig, TeacherError, make_teacher

DATASETS = ("reflection", "policy", "policy_noreflect", "reflection_noneg", "policy_noneg")


@dataclass
class DataConfig:
    env: str = "DangerousTaxi"  # short name (DangerousTaxi, ...), gymnasium id, or "module:Class" (docs/custom_envs.md)
    env_kwargs: dict[str, Any] = field(default_factory=dict)  # extra constructor kwargs (e.g. AutoExplore repos)
    levels: list[int] | None = None  # curriculum levels to draw tasks from; None = all
    tasks_per_level: int | None = None  # cap on train tasks per level (a seeded sample); None = all
    episodes_per_task: int = 1  # > 1 only pays off with explore_prob > 0 (else the episodes are identical)
    explore_prob: float = 0.0  # chance that the behaviour takes a random non-fatal action instead of the oracle's
    negatives_per_episode: int = 1  # corrective examples branched off each trajectory (SPEC A.1); 0 = none
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    seed: int = 0  # task sample, exploration and negative steps


def env_family(env_name: str) -> str:
    """The teacher's name for an environment: ``taxi``, ``autoexplore``, or a custom environment's family (its
    class attribute ``family``, else its class name in lower case; see ``frugalft.envs.family_of``)."""
    from frugalft.envs import family_of

    return family_of(env_name)


def make_env(env_name: str, **kwargs: Any):
    import frugalft.envs as envs

    return envs.make(env_name, **kwargs)


def _step_record(env, obs: str, info: dict, kind: str, reflection: str, mistake: str | None = None) -> dict:
    oracle = env.oracle_action()
    return {
        "task_id": info["task_id"],
        "level": info["level"],
        "step": info.get("step", 0),
        "kind": kind,  # "oracle", "explore" (reached after an exploratory move) or "corrective"
        "parts": info["parts"],
        "actions": list(info["actions"]),
        "target": oracle,
        "target_index": info["actions"].index(oracle),
        "reflection": reflection,
        "mistake": mistake,
    }


def _replay(env, task_id: str, seed: int, actions: list[str]) -> tuple[str, dict, bool]:
    """Put ``env`` in the state reached by ``actions`` from the start of ``task_id``: (obs, info, episode over).

    Replaying is how we branch off a trajectory: cheaper and more general than copying an environment.
    """
    obs, info = env.reset(seed=seed, options={"task_id": task_id})
    done = False
    for a in actions:
        obs, _, terminated, truncated, info = env.step(a)
        done = terminated or truncated
    return obs, info, done


def _non_fatal_wrong_action(scratch, task_id: str, seed: int, prefix: list[str], oracle: str, actions: list[str],
                            rng: random.Random, prefer_cat: bool) -> tuple[str, str, dict] | None:
    """A wrong action (not the oracle's) after ``prefix`` whose step does not end the episode, with the
    observation and info after it (``scratch`` is left in that state); None when every wrong move is fatal."""
    candidates = [a for a in actions if a != oracle]
    rng.shuffle(candidates)
    if prefer_cat:  # the paper's negative: open a wrong file in the same folder
        candidates.sort(key=lambda a: not a.startswith("cat "))
    for a in candidates:
        obs, info, done = _replay(scratch, task_id, seed, [*prefix, a])
        if not done:
            return a, obs, info
    return None


def situation_of(family: str, env, obs: str, info: dict, mistake: str | None = None,
               before: dict | None = None) -> Situation:
    return Situation(env=family, observation=obs, actions=list(info["actions"]), privileged=env.privileged(),
                     oracle_action=env.oracle_action(), mistake=mistake, before=before)


def generate(config: DataConfig, out_dir: str | Path, teacher: Teacher | None = None,
             log=print) -> dict[str, Any]:
    """Play the train tasks, write the five datasets and counts.json into ``out_dir``; return the counts.

    A teacher failure (endpoint down) writes what was generated so far to ``partial.jsonl`` and re-raises,
    naming the failed request; the OpenAI teacher's disk cache makes the rerun skip every answered request.
    A configuration without a teacher for the environment's family fails before any episode is played.
    """
    out_dir = Path(out_dir)
    rng = random.Random(config.seed)
    family = env_family(config.env)  # imports the environment's module first: it may register its teacher
    teacher = teacher or make_teacher(config.teacher, family)
    env = make_env(config.env, split="train", **config.env_kwargs)
    scratch = make_env(config.env, split="train", **config.env_kwargs)  # for replayed branches
    levels = config.levels if config.levels is not None else env.levels
    tasks: list[str] = []
    for level in levels:
        ids = env.task_ids("train", level)
        if config.tasks_per_level is not None and len(ids) > config.tasks_per_level:
            ids = sorted(rng.sample(ids, config.tasks_per_level), key=ids.index)
        tasks += ids
    if not tasks:
        raise ValueError(f"no train tasks in {config.env} at levels {levels}")

    rows: list[dict] = []
    episodes = successes = 0
    try:
        for task_id in tasks:
            for _ in range(config.episodes_per_task):
                success = _episode(env, scratch, task_id, config, family, teacher, rng, rng.randrange(2**31), rows)
                episodes += 1
                successes += int(success)
    except TeacherError as e:
        write_jsonl(out_dir / "partial.jsonl", rows)
        # Only a teacher that keeps its answers (the OpenAI one's disk cache) makes a rerun resume; any other
        # reruns from the start, so don't promise otherwise.
        then = ("answered requests are cached, so a rerun resumes where this one stopped"
                if getattr(teacher, "resumable", False) else "a rerun starts over once the teacher is fixed")
        raise TeacherError(f"{e}. The {len(rows)} steps generated before it are in {out_dir / 'partial.jsonl'}; "
                           f"{then}") from e

    rows = rows
    positive = [r for r in rows if r["kind"] != "corrective"]
    sets = {
        "reflection": rows,
        "policy": rows,
        "policy_noreflect": [{**r, "reflection": None} for r in rows],
        "reflection_noneg": positive,
        "policy_noneg": positive,
    }
    for name in DATASETS:
        write_jsonl(out_dir / f"{name}.jsonl", sets[name])
    write_text(out_dir / "config.yaml", dump_yaml(config))  # what made these sets (a reuse is checked against it)
    counts = {
        "env": config.env,
        "tasks": len(tasks),
        "episodes": episodes,
        "steps": len(rows),
        "oracle_steps": sum(r["kind"] == "oracle" for r in rows),
        "behaviour_success_rate": round(successes / max(episodes, 1), 3),
        "explore_steps": sum(r["kind"] == "explore" for r in rows),
        "corrective_steps": sum(r["kind"] == "corrective" for r in rows),
        "reflection_words_mean": round(sum(len(r["reflection"].split()) for r in rows) / max(len(rows), 1), 1),
        "teacher": teacher.name,
        **{f"{name}.jsonl": len(sets[name]) for name in DATASETS},
    }
    write_json(out_dir / "counts.json", counts)
    log(f"warm-up data in {out_dir}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return counts


def _episode(env, scratch, task_id: str, config: DataConfig, family: str, teacher: Teacher,
             rng: random.Random, seed: int, rows: list[dict]) -> bool:
    """Append one behaviour trajectory on ``task_id`` and its corrective branches to ``rows`` (in play order,
    each row as soon as it is written, so a teacher failure keeps them); return whether it succeeded."""
    obs, info = env.reset(seed=seed, options={"task_id": task_id})
    played: list[str] = []
    steps: list[tuple[int, list[str], str, list[str], dict]] = []  # (row index, prefix, oracle, actions, priv)
    kind = "oracle"
    done = False
    while not done:
        oracle = env.oracle_action()
        steps.append((len(rows), list(played), oracle, list(info["actions"]), env.privileged()))
        rows.append(_step_record(env, obs, info, kind, teacher.reflect(situation_of(family, env, obs, info))))
        action, kind = oracle, "oracle"
        if config.explore_prob > 0 and rng.random() < config.explore_prob:
            wrong = _non_fatal_wrong_action(scratch, task_id, seed, played, oracle, info["actions"], rng, False)
            if wrong is not None:
                action, kind = wrong[0], "explore"
        obs, _, terminated, truncated, info = env.step(action)
        played.append(action)
        done = terminated or truncated
    success = bool(info.get("success", False))

    # Negative examples: the wrong move happens on a replayed copy; only the step after it (the corrective
    # reflection and the oracle's recovery action) is kept, right after the state it branched from.
    chosen = sorted(rng.sample(range(len(steps)), min(config.negatives_per_episode, len(steps))), reverse=True)
    for i in chosen:
        at, prefix, oracle, actions, before = steps[i]
        wrong = _non_fatal_wrong_action(scratch, task_id, seed, prefix, oracle, actions, rng,
                                        prefer_cat=family == "autoexplore")
        if wrong is None:
            continue
        mistake, bobs, binfo = wrong
        sit = situation_of(family, scratch, bobs, binfo, mistake=mistake, before=before)
        rows.insert(at + 1, _step_record(scratch, bobs, binfo, "corrective", teacher.reflect(sit), mistake))
    return success

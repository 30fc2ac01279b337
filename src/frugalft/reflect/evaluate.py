"""Evaluation on held-out tasks, with 95% confidence intervals, and the reflection-quality diagnostic.

Each test task is played ``repeats`` times, sampled at temperature 1 (the paper) or greedily. The random and
oracle baselines play through the same rollout code (``agent="random"`` / ``"oracle"``).

Intervals of one evaluation (one trained model): success rate -> Wilson score interval; mean return and mean
length -> percentile bootstrap (2,000 resamples, seeded), which needs no normality assumption for the skewed
returns of these games. Across seeds, the table uses the hierarchical bootstrap (``frugalft.eval.intervals``)
on the per-episode ``outcomes`` kept here.

Diagnostic (only where the environment has ``oracle_action()``; every step of every evaluated episode counts,
and the oracle action is the one ``oracle_action()`` names in that state, so an equally good alternative
counts as a disagreement):
- ``oracle_agreement``: fraction of steps where the policy's chosen action is the oracle action.
- ``oracle_prob``: mean probability the policy gave the oracle action, with the reflection in its prompt.
- ``oracle_prob_no_reflection``: the same states and label lists scored again with the reflection section
  removed (a counterfactual prompt); ``oracle_prob - oracle_prob_no_reflection`` is how much the reflections
  move the policy toward the oracle (> 0: reflection helps; ~ 0: the policy ignores it).
- ``reflection_mentions_oracle``: fraction of steps whose reflection names the oracle action (whole word).
- ``advice_rate``: fraction of steps whose reflection names exactly one valid action (its "advice").
- ``advice_agrees_with_oracle``: among advised steps, fraction where the advice is the oracle action.
- ``policy_follows_advice``: among advised steps, fraction where the policy chose the advised action.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from frugalft.eval.intervals import wilson_interval
from frugalft.reflect.backends import make_vec
from frugalft.reflect.prompts import LabelAlphabet
from frugalft.reflect.rollout import (
    Baseline,
    Episode,
    EpisodeSpec,
    OraclePolicy,
    RandomPolicy,
    collect_episodes,
    mentioned_actions,
)


def bootstrap_interval(values: list[float], level: float = 0.95, resamples: int = 2000,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (seeded, so reports repeat)."""
    if not values:
        return (float("nan"), float("nan"))
    x = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(resamples, len(x)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return (float(lo), float(hi))


@dataclass
class EvalResult:
    episodes: int
    success: float
    success_ci: tuple[float, float]
    ret: float
    ret_ci: tuple[float, float]
    length: float
    length_ci: tuple[float, float]
    per_level: dict[int, dict[str, float]] = field(default_factory=dict)
    diagnostic: dict[str, float] = field(default_factory=dict)
    # Per episode, in play order: task_id, success (0/1) and return; what seed-level intervals and paired
    # comparisons are computed from.
    outcomes: dict[str, list] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["return"] = d.pop("ret")
        d["return_ci"] = d.pop("ret_ci")
        d["per_level"] = {str(k): v for k, v in self.per_level.items()}
        return d


def summarize(episodes: list[Episode], seed: int = 0) -> EvalResult:
    n = len(episodes)
    wins = sum(ep.success for ep in episodes)
    rets = [ep.ret for ep in episodes]
    lens = [float(ep.length) for ep in episodes]
    per_level: dict[int, dict[str, float]] = {}
    for lv in sorted({ep.level for ep in episodes}):
        eps = [ep for ep in episodes if ep.level == lv]
        per_level[lv] = {"episodes": len(eps), "success": sum(e.success for e in eps) / len(eps),
                         "return": sum(e.ret for e in eps) / len(eps)}
    return EvalResult(
        episodes=n,
        success=wins / n if n else float("nan"),
        success_ci=wilson_interval(wins, n),
        ret=float(np.mean(rets)) if n else float("nan"),
        ret_ci=bootstrap_interval(rets, seed=seed),
        length=float(np.mean(lens)) if n else float("nan"),
        length_ci=bootstrap_interval(lens, seed=seed + 1),
        per_level=per_level,
        diagnostic=reflection_diagnostic(episodes),
        outcomes={"task_id": [ep.task_id for ep in episodes], "success": [int(ep.success) for ep in episodes],
                  "return": [round(ep.ret, 6) for ep in episodes]},
    )


def reflection_diagnostic(episodes: list[Episode]) -> dict[str, float]:
    """The step-level agreement statistics of the module docstring (empty when no oracle was recorded)."""
    steps = [s for ep in episodes for s in ep.steps if s.oracle is not None]
    if not steps:
        return {}
    out = {"steps": float(len(steps)),
           "oracle_agreement": float(np.mean([s.action == s.oracle for s in steps]))}
    probs = [s.oracle_prob for s in steps if s.oracle_prob is not None]
    if probs:
        out["oracle_prob"] = float(np.mean(probs))
    cf = [s.oracle_prob_without_reflection for s in steps if s.oracle_prob_without_reflection is not None]
    if cf:
        out["oracle_prob_no_reflection"] = float(np.mean(cf))
    reflected = [s for s in steps if s.reflection is not None]
    if reflected:
        mentions, advised, agrees, follows = 0, 0, 0, 0
        for s in reflected:
            named = mentioned_actions(s.reflection, s.actions)
            mentions += s.oracle in named
            if len(named) == 1:
                (advice,) = named
                advised += 1
                agrees += advice == s.oracle
                follows += advice == s.action
        out["reflection_mentions_oracle"] = mentions / len(reflected)
        out["advice_rate"] = advised / len(reflected)
        if advised:
            out["advice_agrees_with_oracle"] = agrees / advised
            out["policy_follows_advice"] = follows / advised
    return out


def evaluation_specs(env: Any, split: str, levels: list[int] | None, max_tasks: int | None, repeats: int,
                     seed: int, tasks: list[str] | None = None) -> list[EpisodeSpec]:
    """Every (task, repeat) of the split's levels, first ``max_tasks`` tasks per level, in a fixed order
    (or of the explicit ``tasks``)."""
    levels = levels if levels is not None else list(env.levels)
    groups = [list(tasks)] if tasks is not None else [env.task_ids(split, lv) for lv in levels]
    specs: list[EpisodeSpec] = []
    for ids in groups:
        ids = ids[:max_tasks] if max_tasks is not None else ids
        for r in range(repeats):
            for t in ids:
                eid = len(specs)
                specs.append(EpisodeSpec(task_id=t, seed=seed * 1_000_003 + 7_919 * r + eid, episode_id=eid))
    return specs


def evaluate(
    agent: Any,
    config: Any,
    split: str = "valid",
    levels: list[int] | None = None,
    max_tasks: int | None = None,
    repeats: int = 1,
    greedy: bool = False,
    temperature: float = 1.0,
    num_envs: int = 16,
    diagnostic: bool = True,
    seed: int = 0,
    tasks: list[str] | None = None,
    return_episodes: bool = False,
) -> EvalResult | tuple[EvalResult, list[Episode]]:
    """Play the split's tasks with ``agent``: a ``Players`` (trained policy + reflector) or ``"random"`` /
    ``"oracle"``. ``config`` is the RLConfig (env name and kwargs); ``tasks`` names the tasks explicitly
    (they may come from any split: the environment is built for ``split`` but plays any task id). Sampling uses a private seeded RNG, so an
    evaluation never changes the training run's random stream."""
    if isinstance(agent, str):
        baselines = {"random": RandomPolicy, "oracle": OraclePolicy}
        if agent not in baselines:
            raise ValueError(f"unknown baseline {agent!r}; use one of {sorted(baselines)} or trained players")
        policy: Any = baselines[agent]()
        tokenizer, alphabet, reflector = None, LabelAlphabet(), None
    else:
        policy, tokenizer, alphabet, reflector = agent.policy, agent.tokenizer, agent.alphabet, agent.reflector
    vec = make_vec(config, split, num_envs)
    env = vec.envs[0].unwrapped
    specs = evaluation_specs(env, split, levels, max_tasks, repeats, seed, tasks)
    record_oracle = diagnostic and _has_oracle(env, split)
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        if torch.cuda.is_available():
            torch.cuda.manual_seed_all(seed)
        episodes = collect_episodes(vec, specs, policy, tokenizer, alphabet, reflector, temperature, greedy,
                                    record_oracle=record_oracle,
                                    counterfactual=record_oracle and not isinstance(policy, Baseline),
                                    seed=seed + 1)
    vec.close()
    result = summarize(episodes, seed)
    return (result, episodes) if return_episodes else result


def _has_oracle(env: Any, split: str) -> bool:
    """Whether the environment implements ``oracle_action()`` (probed on the split's first task)."""
    try:
        env.reset(options={"task_id": env.task_ids(split)[0]})
        env.oracle_action()
        return True
    except (NotImplementedError, AttributeError, IndexError):
        return False

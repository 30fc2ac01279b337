"""Group-relative policy gradient (GRPO / RLOO style): no critic, the baseline is the other tries of the task.

Each iteration plays ``num_envs / group_size`` tasks, each ``group_size`` times (``train.group_episode_specs``:
the same task id, different episode ids, so different reset seeds and sampling streams; a group is
``group_size`` consecutive episodes of the batch). An episode's return is compared with its group's:

    A_i = (R_i - mean_g R) / (std_g R + 1e-6)      normalize_std: true (GRPO)
    A_i =  R_i - mean_g R                          normalize_std: false (Dr. GRPO; RLOO up to a factor n/(n-1))

with the population standard deviation (divisor n, not n-1) of the group's returns. A group whose returns are
all equal (all tries failed alike, or all succeeded alike) carries no signal: its advantages are exactly 0.
``advantage`` says what ``R`` is:

- ``episode`` (default): ``R_i`` is episode i's return (``sum_t gamma^t r_t``); every step of the episode gets
  the same advantage ``A_i``, as GRPO gives every token of a completion the completion's advantage.
- ``step``: step t of episode i gets its return-to-go ``G_{i,t}`` normalised against the returns-to-go at the
  same step index t of the group's episodes that lasted at least t+1 steps (episodes that ended earlier do
  not take part); a step index only one episode of the group reached gets 0.

The loss is the REINFORCE one with these advantages in place of returns, ``-mean_t[A_t log pi(a_t|s_t)]`` over
all steps of the batch (a step-level mean, as Dr. GRPO's token-level mean: long episodes weigh more), one
optimizer step per iteration (on-policy: no ratio, no clipping), plus ``kl_coef * mean_t KL(pi || pi_ref)``
to the warm-up policy when ``kl_coef > 0`` (the exact KL over the listed actions, as PPO's penalty). It reuses
``reinforce.policy_gradient_step`` (minibatching, data parallelism, clipping); there is no success replay.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from frugalft.parallel import SINGLE, DataParallel
from frugalft.reflect.policy import Policy
from frugalft.reflect.reinforce import policy_gradient_step, returns_to_go
from frugalft.reflect.rollout import Episode, Step

EPS = 1e-6  # added to the group's standard deviation


# ---- pure pieces -----------------------------------------------------------------------------------------
def group_advantages(returns: Sequence[float], group_ids: Sequence[Hashable],
                     normalize_std: bool = True) -> list[float]:
    """``(R - mean_g) / (std_g + 1e-6)`` (or ``R - mean_g``) within each group of equal id; population std.

    Groups need not be contiguous; a group of identical values (one member included) gets exactly 0."""
    if len(returns) != len(group_ids):
        raise ValueError(f"{len(returns)} returns but {len(group_ids)} group ids")
    members: dict[Hashable, list[int]] = {}
    for i, g in enumerate(group_ids):
        members.setdefault(g, []).append(i)
    out = [0.0] * len(returns)
    for idx in members.values():
        values = [float(returns[i]) for i in idx]
        if max(values) == min(values):
            continue  # no signal (and no 0/0): exactly zero
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
        for i, v in zip(idx, values, strict=True):
            out[i] = (v - mean) / (std + EPS) if normalize_std else v - mean
    return out


def step_group_advantages(returns_to_go: Sequence[Sequence[float]], group_ids: Sequence[Hashable],
                          normalize_std: bool = True) -> list[list[float]]:
    """Per episode, per step: ``G_{i,t}`` normalised among the group's episodes that have a step t."""
    flat, keys = [], []
    for rtg, g in zip(returns_to_go, group_ids, strict=True):
        flat += list(rtg)
        keys += [(g, t) for t in range(len(rtg))]
    adv = group_advantages(flat, keys, normalize_std)
    out, pos = [], 0
    for rtg in returns_to_go:
        out.append(adv[pos: pos + len(rtg)])
        pos += len(rtg)
    return out


def grpo_advantages(episodes: Sequence[Episode], group_size: int, normalize_std: bool = True,
                    advantage: Literal["episode", "step"] = "episode",
                    gamma: float = 1.0) -> tuple[list[Step], list[float], list[int]]:
    """All steps of the batch in order, each with its group-relative advantage and its group's index.

    Groups are ``group_size`` consecutive episodes (the order ``group_episode_specs`` makes); each must share
    one task id."""
    if group_size < 1 or len(episodes) % group_size:
        raise ValueError(f"{len(episodes)} episodes do not split into groups of group_size={group_size}")
    groups = [i // group_size for i in range(len(episodes))]
    for g in range(len(episodes) // group_size):
        tasks = {ep.task_id for ep in episodes[g * group_size: (g + 1) * group_size]}
        if len(tasks) != 1:
            raise ValueError(f"GRPO group {g} mixes tasks {sorted(tasks)}: a group must be group_size plays of one "
                             "task (train.group_episode_specs)")
    rtg = [returns_to_go([s.reward for s in ep.steps], gamma) for ep in episodes]
    if advantage == "episode":
        adv = group_advantages([r[0] if r else 0.0 for r in rtg], groups, normalize_std)
        per_step = [[a] * len(ep.steps) for a, ep in zip(adv, episodes, strict=True)]
    elif advantage == "step":
        per_step = step_group_advantages(rtg, groups, normalize_std)
    else:
        raise ValueError(f"unknown grpo_advantage {advantage!r}; valid: episode, step")
    steps = [s for ep in episodes for s in ep.steps]
    step_groups = [g for g, ep in zip(groups, episodes, strict=True) for _ in ep.steps]
    return steps, [a for row in per_step for a in row], step_groups


# ---- the update ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GRPOSettings:
    """What a GRPO update reads (train.py builds it once from RLConfig: group_size, grpo_normalize_std,
    grpo_advantage and the shared fields of the same names)."""

    group_size: int = 4  # episodes per group, all on the same task
    temperature: float = 1.0
    max_grad_norm: float = 0.3
    minibatch: int = 32
    normalize_std: bool = True  # divide by the group's std (DeepSeekMath); False: Dr. GRPO's mean-only
    advantage: Literal["episode", "step"] = "episode"
    kl_coef: float = 0.0
    entropy_coef: float = 0.0
    gamma: float = 1.0


def grpo_update(
    policy: Policy,
    optimizer: torch.optim.Optimizer,
    episodes: Sequence[Episode],
    settings: GRPOSettings = GRPOSettings(),
    dp: DataParallel = SINGLE,
) -> dict[str, float]:
    """One policy-gradient step on the batch with group-relative advantages (and the KL penalty if asked).

    Metrics: ``loss``, ``grad_norm``, ``entropy`` (as ``policy_gradient_step``), ``adv_std`` (population std of
    the steps' advantages), ``zero_adv_groups`` (fraction of groups whose steps all got advantage 0: no signal),
    and ``kl_penalty`` when ``kl_coef > 0``. Under data parallelism every process passes the whole batch."""
    c = settings
    steps, adv, step_groups = grpo_advantages(episodes, c.group_size, c.normalize_std, c.advantage, c.gamma)
    metrics = policy_gradient_step(policy, optimizer, steps, adv, c.temperature, c.max_grad_norm, c.minibatch,
                                   "none", c.entropy_coef, dp, kl_coef=c.kl_coef)
    mean = sum(adv) / max(len(adv), 1)
    metrics["adv_std"] = math.sqrt(sum((a - mean) ** 2 for a in adv) / max(len(adv), 1))
    n_groups = len(episodes) // c.group_size
    signal = {g for g, a in zip(step_groups, adv, strict=True) if a != 0.0}
    metrics["zero_adv_groups"] = (n_groups - len(signal)) / max(n_groups, 1)
    return metrics

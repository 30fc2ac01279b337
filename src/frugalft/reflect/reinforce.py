"""REINFORCE as the Reflect-RL authors ran it (SPEC A.3): return-to-go, no critic, plus a success-replay step.

Per iteration:
1. one optimizer step on every step of the fresh batch, loss ``-mean_t[(G_t - b) * log pi(a_t | s_t)]`` with
   the undiscounted return-to-go ``G_t = sum_{t' >= t} r_t'`` (gamma = 1) and ``b = 0`` (the authors' choice;
   ``baseline="batch_mean"`` subtracts the batch's mean return-to-go, a common variance reduction);
2. the batch's successful episodes join a FIFO replay buffer of successes (capacity 50, emptied whenever the
   curriculum moves to the next level); a second optimizer step then applies the same loss to a few episodes
   sampled from it: a self-imitation term that keeps rare successes from being forgotten.

The loss functions are pure (tensors in, tensor out) so tests can check them against a hand computation; the
update functions add the minibatching, gradient clipping and the optimizer step. Under ``accelerate launch``
(``dp``: ``frugalft.parallel``) each process scores its share of the steps and the gradients
are summed over processes before clipping: the same step as one process, up to float summation order.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from frugalft.parallel import SINGLE, DataParallel, share
from frugalft.reflect.policy import Policy, score_steps
from frugalft.reflect.ppo import exact_kl, pad_rows
from frugalft.reflect.rollout import Episode, Step


# ---- pure pieces -----------------------------------------------------------------------------------------
def returns_to_go(rewards: Sequence[float], gamma: float = 1.0) -> list[float]:
    """``G_t = r_t + gamma * G_{t+1}``, with ``G_T = 0`` after the last step."""
    out, g = [], 0.0
    for r in reversed(rewards):
        g = r + gamma * g
        out.append(g)
    return out[::-1]


def reinforce_loss(logprob: torch.Tensor, returns: torch.Tensor, baseline: torch.Tensor | float = 0.0,
                   entropy: torch.Tensor | None = None, entropy_coef: float = 0.0) -> torch.Tensor:
    """``-mean[(G - b) * log pi] - entropy_coef * mean[H]`` over the given steps."""
    loss = -((returns - baseline) * logprob).mean()
    if entropy is not None and entropy_coef:
        loss = loss - entropy_coef * entropy.mean()
    return loss


# ---- success replay --------------------------------------------------------------------------------------
class SuccessReplay:
    """FIFO buffer of successful episodes (successes only); cleared at each curriculum level."""

    def __init__(self, capacity: int = 50):
        self.capacity = capacity
        self.episodes: deque[Episode] = deque(maxlen=capacity)

    def __len__(self) -> int:
        return len(self.episodes)

    def add(self, episodes: Sequence[Episode]) -> None:
        for ep in episodes:
            if ep.success:
                self.episodes.append(ep)

    def clear(self) -> None:
        self.episodes.clear()

    def sample(self, k: int, rng: random.Random) -> list[Episode]:
        return rng.sample(list(self.episodes), min(k, len(self.episodes)))

    def state(self) -> list[dict[str, Any]]:
        return [ep.to_dict() for ep in self.episodes]

    def load(self, state: list[dict[str, Any]]) -> None:
        self.episodes = deque((Episode.from_dict(d) for d in state), maxlen=self.capacity)


# ---- the update ------------------------------------------------------------------------------------------
def flatten(episodes: Sequence[Episode], gamma: float = 1.0) -> tuple[list[Step], list[float]]:
    """All steps of the episodes in order, with their returns-to-go."""
    steps, returns = [], []
    for ep in episodes:
        steps += ep.steps
        returns += returns_to_go([s.reward for s in ep.steps], gamma)
    return steps, returns


def policy_gradient_step(
    policy: Policy,
    optimizer: torch.optim.Optimizer,
    steps: Sequence[Step],
    returns: Sequence[float],
    temperature: float,
    max_grad_norm: float,
    minibatch: int,
    baseline: str = "none",
    entropy_coef: float = 0.0,
    dp: DataParallel = SINGLE,
    kl_coef: float = 0.0,
) -> dict[str, float]:
    """One optimizer step of ``reinforce_loss`` over ``steps``, accumulating gradients in minibatches (of this
    process's share of the steps under data parallelism; the baseline is the whole batch's).

    ``kl_coef > 0`` adds ``kl_coef * mean_t KL(pi || pi_ref)``, the exact KL over each step's listed actions to
    the reference log-probs recorded at rollout (``Step.ref_logprobs``, as PPO's penalty), and reports its mean
    as ``kl_penalty``; with 0 (REINFORCE) nothing about the step changes."""
    n = len(steps)
    if kl_coef and any(s.ref_logprobs is None for s in steps):
        raise ValueError("kl_coef > 0 needs the reference policy's log-probs of every step (Step.ref_logprobs): "
                         "play the episodes with a reference (Players.reference)")
    g = torch.tensor(returns, dtype=torch.float32, device=policy.device)
    b = g.mean() if baseline == "batch_mean" else 0.0
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    entropy = 0.0
    kl_sum = 0.0
    mine = share(n, dp.rank, dp.world)
    for lo in range(mine.start, mine.stop, minibatch):
        hi = min(lo + minibatch, mine.stop)
        chunk = steps[lo:hi]
        scores = score_steps(policy, [s.prompt_ids for s in chunk], [s.labels for s in chunk],
                             [s.action for s in chunk], temperature)
        # The mean over all n steps, split across minibatches: each chunk's mean weighted by its share.
        loss = reinforce_loss(scores.logprob, g[lo:hi], b, scores.entropy, entropy_coef)
        if kl_coef:
            ref = pad_rows([s.ref_logprobs for s in chunk], scores.listed.shape[1], policy.device)  # type: ignore[misc]
            kl = exact_kl(scores.listed, ref)
            loss = loss + kl_coef * kl.mean()
            kl_sum += float(kl.detach().sum()) / n
        (loss * len(chunk) / n).backward()
        total += float(loss.detach()) * len(chunk) / n
        entropy += float(scores.entropy.detach().sum()) / n
    params = [p for group in optimizer.param_groups for p in group["params"]]
    dp.all_reduce_grads(params)
    total, entropy, kl_sum = dp.sum([total, entropy, kl_sum])
    grad_norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()
    out = {"loss": total, "grad_norm": float(grad_norm), "entropy": entropy}
    if kl_coef:
        out["kl_penalty"] = kl_sum
    return out


@dataclass(frozen=True)
class ReinforceSettings:
    """What a REINFORCE update reads (train.py builds it once from RLConfig's fields of the same names)."""

    temperature: float = 1.0  # the sampling temperature the log-probs are taken at, as in the rollout
    max_grad_norm: float = 0.3
    minibatch: int = 32  # steps scored per forward pass (gradients accumulate: one optimizer step)
    replay_episodes: int = 4  # successes replayed per iteration (0: no replay step)
    baseline: str = "none"  # "none" (the authors') or "batch_mean"
    entropy_coef: float = 0.0


def reinforce_update(
    policy: Policy,
    optimizer: torch.optim.Optimizer,
    episodes: Sequence[Episode],
    replay: SuccessReplay | None,
    rng: random.Random,
    settings: ReinforceSettings = ReinforceSettings(),
    dp: DataParallel = SINGLE,
) -> dict[str, float]:
    """The authors' iteration: a step on the fresh batch, then (if any successes are stored) a replay step.

    Under data parallelism every process passes the whole batch (and keeps the same replay buffer and ``rng``);
    each scores only its share of the steps."""
    c = settings
    steps, returns = flatten(episodes)
    metrics = policy_gradient_step(policy, optimizer, steps, returns, c.temperature, c.max_grad_norm, c.minibatch,
                                   c.baseline, c.entropy_coef, dp)
    metrics["replay_loss"] = 0.0
    if replay is not None:
        replay.add(episodes)
        if len(replay) and c.replay_episodes > 0:
            r_steps, r_returns = flatten(replay.sample(c.replay_episodes, rng))
            r = policy_gradient_step(policy, optimizer, r_steps, r_returns, c.temperature, c.max_grad_norm,
                                     c.minibatch, "none", c.entropy_coef, dp)
            metrics["replay_loss"] = r["loss"]
        metrics["replay_size"] = len(replay)
    return metrics

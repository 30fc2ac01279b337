"""PPO for the label policy: a value head on the policy's last hidden state, GAE, ratio clipping, and an exact
KL penalty to the reference (warm-up) policy.

The action space of one step is the handful of listed labels, so the KL between the policy and the reference
is computed exactly over them (no sampled estimator): ``KL(pi || pi_ref) = sum_a pi(a) (log pi(a) - log
pi_ref(a))``, with the reference's log-probs recorded at rollout time. Episodes end for good when terminated
or truncated at the horizon (the task is then failed), so GAE bootstraps with 0 after an episode's last step.
The authors' PPO option used clip 0.1 and 3 epochs (SPEC A.3); those are the defaults here. Under
``accelerate launch`` each process scores its share of every minibatch and gradients are summed over processes
(``frugalft.parallel``), so each optimizer step is the single-process one.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from frugalft.parallel import SINGLE, DataParallel
from frugalft.reflect.policy import Policy, score_steps
from frugalft.reflect.rollout import Episode


# ---- pure pieces -----------------------------------------------------------------------------------------
def gae(rewards: Sequence[float], values: Sequence[float], gamma: float = 1.0,
        lam: float = 0.95) -> tuple[list[float], list[float]]:
    """Generalised advantage estimates and returns (``A + V``) of one episode that ends after its last step."""
    adv, last = [0.0] * len(rewards), 0.0
    for t in reversed(range(len(rewards))):
        next_v = values[t + 1] if t + 1 < len(rewards) else 0.0
        delta = rewards[t] + gamma * next_v - values[t]
        last = delta + gamma * lam * last
        adv[t] = last
    return adv, [a + v for a, v in zip(adv, values, strict=True)]


def exact_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Row-wise ``KL(p || q)`` from log-probs; -inf entries (absent actions, padding) contribute nothing."""
    p = logprobs.exp()
    terms = p * (logprobs - ref_logprobs)
    return terms.masked_fill(p == 0, 0.0).sum(-1)


def ppo_loss(
    logprob: torch.Tensor,
    old_logprob: torch.Tensor,
    advantages: torch.Tensor,
    value: torch.Tensor,
    returns: torch.Tensor,
    kl: torch.Tensor,
    clip: float = 0.1,
    vf_coef: float = 0.5,
    kl_coef: float = 0.05,
    entropy: torch.Tensor | None = None,
    entropy_coef: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped surrogate + ``vf_coef`` * squared value error + ``kl_coef`` * KL - ``entropy_coef`` * entropy."""
    ratio = (logprob - old_logprob).exp()
    surrogate = torch.minimum(ratio * advantages, ratio.clamp(1 - clip, 1 + clip) * advantages)
    policy_loss = -surrogate.mean()
    value_loss = 0.5 * ((value - returns) ** 2).mean()
    loss = policy_loss + vf_coef * value_loss + kl_coef * kl.mean()
    if entropy is not None and entropy_coef:
        loss = loss - entropy_coef * entropy.mean()
    clipfrac = ((ratio - 1).abs() > clip).float().mean()
    return loss, {"policy_loss": policy_loss.detach(), "value_loss": value_loss.detach(),
                  "kl": kl.mean().detach(), "clipfrac": clipfrac}


# ---- the update ------------------------------------------------------------------------------------------
PARTS = ("policy_loss", "value_loss", "kl", "clipfrac")  # ppo_loss's diagnostics, in its order


@dataclass(frozen=True)
class PPOSettings:
    """What a PPO update reads (train.py builds it once from RLConfig: ppo_epochs, ppo_clip, gae_lambda and the
    shared fields of the same names)."""

    temperature: float = 1.0
    max_grad_norm: float = 0.3
    minibatch: int = 32  # steps per optimizer step
    epochs: int = 3  # passes over the batch
    clip: float = 0.1  # the ratio's clip range
    vf_coef: float = 0.5
    kl_coef: float = 0.05  # penalty on the exact KL to the reference policy over the listed actions
    gamma: float = 1.0
    lam: float = 0.95  # GAE's lambda
    entropy_coef: float = 0.0
    normalize_advantages: bool = True


def ppo_update(
    policy: Policy,
    optimizer: torch.optim.Optimizer,
    episodes: Sequence[Episode],
    rng: random.Random,
    settings: PPOSettings = PPOSettings(),
    dp: DataParallel = SINGLE,
) -> dict[str, float]:
    """``settings.epochs`` passes over the batch's steps in shuffled minibatches, one optimizer step per minibatch.

    Under data parallelism every process passes the whole batch and the same ``rng`` (the same minibatches);
    each scores its share of a minibatch, weighted by that share's size."""
    if policy.value_head is None:
        raise ValueError("PPO needs a policy with a value head (Policy(..., value_head=True))")
    c = settings
    steps, advs, rets = [], [], []
    for ep in episodes:
        a, r = gae([s.reward for s in ep.steps], [s.value for s in ep.steps], c.gamma, c.lam)
        steps += ep.steps
        advs += a
        rets += r
    device = policy.device
    adv = torch.tensor(advs, device=device)
    if c.normalize_advantages and len(adv) > 1:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    ret = torch.tensor(rets, device=device)
    old = torch.tensor([s.logprob for s in steps], device=device)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    sums = {"loss": 0.0, "policy_loss": 0.0, "value_loss": 0.0, "kl": 0.0, "clipfrac": 0.0, "entropy": 0.0,
            "grad_norm": 0.0}
    updates = 0
    for _ in range(c.epochs):
        order = list(range(len(steps)))
        rng.shuffle(order)
        for lo in range(0, len(order), c.minibatch):
            batch_idx = order[lo:lo + c.minibatch]
            idx = dp.mine(batch_idx)
            optimizer.zero_grad(set_to_none=True)
            stats = [0.0] * 6  # loss, entropy, then the parts, each weighted by this share's size
            if idx:
                chunk = [steps[i] for i in idx]
                scores = score_steps(policy, [s.prompt_ids for s in chunk], [s.labels for s in chunk],
                                     [s.action for s in chunk], c.temperature)
                if all(s.ref_logprobs is not None for s in chunk):
                    ref = pad_rows([s.ref_logprobs for s in chunk], scores.listed.shape[1], device)  # type: ignore[misc]
                    kl = exact_kl(scores.listed, ref)
                else:
                    kl = torch.zeros(len(chunk), device=device)
                ii = torch.tensor(idx, device=device)
                assert scores.value is not None
                loss, parts = ppo_loss(scores.logprob, old[ii], adv[ii], scores.value, ret[ii], kl, c.clip,
                                       c.vf_coef, c.kl_coef, scores.entropy, c.entropy_coef)
                w = len(idx) / len(batch_idx)  # the minibatch mean, split over processes
                (loss * w).backward()
                stats = [w * float(x) for x in (loss.detach(), scores.entropy.detach().mean(), *parts.values())]
            dp.all_reduce_grads(params)
            stats = dp.sum(stats)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, c.max_grad_norm)
            optimizer.step()
            updates += 1
            sums["loss"] += stats[0]
            sums["grad_norm"] += float(grad_norm)
            sums["entropy"] += stats[1]
            for k, v in zip(PARTS, stats[2:], strict=True):
                sums[k] += v
    return {k: v / max(updates, 1) for k, v in sums.items()}


def pad_rows(rows: Sequence[Sequence[float]], width: int, device: torch.device) -> torch.Tensor:
    out = torch.full((len(rows), width), float("-inf"), device=device)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.as_tensor(list(r), device=device)
    return out

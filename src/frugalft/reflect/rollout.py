"""Play a batch of episodes in a ``VecTextEnv``: reflect (batched) -> policy prompt -> sample a label -> step.

Each environment plays the episode it is given (an ``EpisodeSpec``: task, reset seed, episode id); all
environments still playing advance together, so the reflection model and the policy each run one batched
forward per step for the whole batch. Every step is stored as the token ids the policy read, the alphabet
indices of the labels it was shown, the chosen action, the sampling log-probability and the reward: the update
re-scores exactly these ids (nothing is re-tokenised). Episodes come back in the order of the specs, which the
caller derives from counters, so a resumed run plays the same episodes.

Randomness belongs to the episode, not to the process: every episode owns a ``torch.Generator`` seeded from
``(seed, episode_id)`` (training's episode ids are global counters, ``iteration * num_envs + slot``) and a
``random.Random`` for its label shuffle. Its reflection tokens (one uniform per token, inverse CDF) and its
label draws come from that generator in the episode's own order, so an episode samples the same whichever
episodes share its batch, environment slot, process or Ray worker: ``frugalft rl train`` with 0 or N rollout
workers, or N learner processes, plays the same episodes. Forward passes stay batched over the active
episodes (left padding changes a row's logits only by float rounding, see ``policy.collate_left``).
"""

from __future__ import annotations

import hashlib
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from frugalft.envs import VecTextEnv
from frugalft.reflect.policy import Action, Policy, valid_mask
from frugalft.reflect.prompts import LabelAlphabet, encode_policy_prompt
from frugalft.reflect.reflection import Reflector

# reference(prompts, valid, labels) -> (batch, n_labels) log-probabilities of the reference (warm-up) policy
Reference = Callable[[list[list[int]], torch.Tensor, list[list[int]]], torch.Tensor]


@dataclass
class EpisodeSpec:
    task_id: str
    seed: int  # reset seed (the task is fixed by task_id; the seed covers any other randomness of the env)
    episode_id: int  # global, increasing: names the episode and seeds its label shuffling


@dataclass
class Step:
    prompt_ids: list[int]  # the policy prompt exactly as scored
    labels: list[int]  # alphabet index of each listed action, in list order (the row's valid labels)
    actions: list[str]  # the listed actions' text, in list order
    action: int  # index of the chosen action in the list
    logprob: float  # log-probability of the choice when it was sampled
    reward: float
    entropy: float = 0.0
    value: float = 0.0  # critic estimate at sampling time (PPO)
    ref_logprobs: list[float] | None = None  # reference policy's log-probs of the listed actions, list order
    kl: float = 0.0  # exact KL(acting policy || reference) over the listed actions (0 without a reference)
    reflection: str | None = None
    oracle: int | None = None  # index of env.oracle_action() in the list, when recorded
    oracle_prob: float | None = None  # the policy's probability of the oracle action (diagnostic)
    oracle_prob_without_reflection: float | None = None  # diagnostic, see evaluate.py

    @property
    def label(self) -> int:
        return self.labels[self.action]


@dataclass
class Episode:
    env_index: int
    episode_id: int
    task_id: str
    level: int
    steps: list[Step] = field(default_factory=list)
    success: bool = False

    @property
    def ret(self) -> float:
        return float(sum(s.reward for s in self.steps))

    @property
    def length(self) -> int:
        return len(self.steps)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Episode:
        steps = [Step(**s) for s in d["steps"]]
        return cls(**{**d, "steps": steps})


def episode_generator(seed: int, episode_id: int) -> torch.Generator:
    """A CPU generator private to one episode of one run (a stable hash, not Python's salted ``hash``)."""
    digest = hashlib.blake2b(f"rollout-{seed}-{episode_id}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)


class Baseline:
    """A policy that ignores the prompt (random, oracle) but plays through the same rollout and evaluation."""

    name = "baseline"

    def choose(self, envs: Sequence[Any], actions: Sequence[Sequence[str]], labels: Sequence[Sequence[int]],
               valid: torch.Tensor, generators: Sequence[torch.Generator] | None = None) -> Action:
        """``generators``: one per row, as ``Policy.act``."""
        raise NotImplementedError


class RandomPolicy(Baseline):
    """Uniform over the valid actions (row j draws from ``generators[j]``, else the global torch RNG)."""

    name = "random"

    def choose(self, envs: Sequence[Any], actions: Sequence[Sequence[str]], labels: Sequence[Sequence[int]],
               valid: torch.Tensor, generators: Sequence[torch.Generator] | None = None) -> Action:
        probs = valid.float() / valid.float().sum(-1, keepdim=True)
        if generators is None:
            label = torch.multinomial(probs, 1).squeeze(-1)
        else:
            label = torch.tensor([int(torch.multinomial(probs[j], 1, generator=g)) for j, g in enumerate(generators)])
        logprobs = probs.log()
        return Action(label, logprobs.gather(1, label[:, None]).squeeze(1), -(probs * logprobs.nan_to_num(
            neginf=0.0)).sum(-1), None, logprobs)


class OraclePolicy(Baseline):
    """Plays ``env.unwrapped.oracle_action()``: the environment's optimal policy (an upper reference)."""

    name = "oracle"

    def choose(self, envs: Sequence[Any], actions: Sequence[Sequence[str]], labels: Sequence[Sequence[int]],
               valid: torch.Tensor, generators: Sequence[torch.Generator] | None = None) -> Action:
        chosen = [row[list(acts).index(env.unwrapped.oracle_action())]
                  for env, acts, row in zip(envs, actions, labels, strict=True)]
        label = torch.as_tensor(chosen, dtype=torch.long)
        logprobs = torch.full(valid.shape, float("-inf"))
        logprobs[torch.arange(len(chosen)), label] = 0.0
        zeros = torch.zeros(len(chosen))
        return Action(label, zeros, zeros, None, logprobs)


@dataclass
class RolloutStats:
    env_steps: int = 0
    seconds: float = 0.0
    reflect_seconds: float = 0.0
    policy_seconds: float = 0.0


def collect_episodes(
    vec: VecTextEnv,
    specs: Sequence[EpisodeSpec],
    policy: Policy | Baseline,
    tokenizer: PreTrainedTokenizerBase,
    alphabet: LabelAlphabet,
    reflector: Reflector | None = None,
    temperature: float = 1.0,
    greedy: bool = False,
    reference: Reference | None = None,
    record_oracle: bool = False,
    counterfactual: bool = False,
    seed: int = 0,
    stats: RolloutStats | None = None,
) -> list[Episode]:
    """Play one episode per spec on ``len(vec)`` environments; episodes return in spec order.

    An environment whose episode ends starts the next waiting spec at once, so the batch stays full until
    the queue runs dry. ``seed`` (the run's) and each spec's episode id seed the episode's random streams, so
    the episodes do not depend on ``len(vec)`` or on how the specs are split over calls. ``record_oracle``
    stores the oracle's action index per step; ``counterfactual`` also scores each prompt without its
    reflection (the diagnostic of evaluate.py; costs one more policy forward per step).
    """
    stats = stats if stats is not None else RolloutStats()
    start = time.perf_counter()
    episodes = _play(vec, specs, policy, tokenizer, alphabet, reflector, temperature, greedy, reference,
                     record_oracle, counterfactual, seed, stats)
    stats.seconds += time.perf_counter() - start
    return episodes


def _play(vec, specs, policy, tokenizer, alphabet, reflector, temperature, greedy, reference, record_oracle,
          counterfactual, seed, stats) -> list[Episode]:
    queue = list(range(len(specs)))[::-1]  # spec indices, next one last
    slot: list[int | None] = [None] * len(vec)  # the spec each environment is playing
    infos: list[dict] = [{} for _ in range(len(vec))]
    rngs: list[random.Random | None] = [None] * len(vec)  # label shuffles
    gens: list[torch.Generator | None] = [None] * len(vec)  # reflection tokens and action draws
    done: list[Episode | None] = [None] * len(specs)
    playing: dict[int, Episode] = {}

    def begin(i: int) -> None:
        k = queue.pop()
        spec = specs[k]
        _, infos[i] = vec.reset_at(i, seed=spec.seed, options={"task_id": spec.task_id})
        slot[i] = k
        playing[i] = Episode(env_index=i, episode_id=spec.episode_id, task_id=infos[i]["task_id"],
                             level=int(infos[i]["level"]))
        rngs[i] = random.Random(f"labels-{seed}-{spec.episode_id}")
        gens[i] = episode_generator(seed, spec.episode_id)

    for i in range(min(len(vec), len(specs))):
        begin(i)
    active = sorted(playing)
    while active:
        parts = [infos[i]["parts"] for i in active]
        t0 = time.perf_counter()
        row_gens = [gens[i] for i in active]
        reflections = reflector.reflect(parts, row_gens) if reflector is not None else [None] * len(active)
        t1 = time.perf_counter()
        stats.reflect_seconds += t1 - t0
        labels = [alphabet.pick(len(infos[i]["actions"]), rngs[i]) for i in active]
        valid = valid_mask(labels, len(alphabet))
        envs = [vec.envs[i] for i in active]
        prompts: list[list[int]] = []
        ref_lp = None
        if isinstance(policy, Baseline):
            act = policy.choose(envs, [infos[i]["actions"] for i in active], labels, valid, row_gens)
            prompts = [[] for _ in active]  # a baseline reads no prompt; nothing to store
        else:
            prompts = [encode_policy_prompt(tokenizer, p, r, infos[i]["actions"], alphabet.strings(lab))
                       for i, p, r, lab in zip(active, parts, reflections, labels, strict=True)]
            act = policy.act(prompts, valid, temperature=temperature, greedy=greedy, generators=row_gens,
                             labels=labels)
            if reference is not None:
                ref_lp = reference(prompts, valid, labels).float().cpu()
                p_act = act.logprobs.float().cpu().exp()
                kls = (p_act * (act.logprobs.float().cpu() - ref_lp)).masked_fill(p_act == 0, 0.0).sum(-1)
        oracle_idx = None
        if record_oracle:
            oracle_idx = [infos[i]["actions"].index(env.unwrapped.oracle_action()) for i, env in zip(
                active, envs, strict=True)]
        cf_prob = None
        if counterfactual and isinstance(policy, Policy) and reflector is not None and reflector.enabled:
            bare = [encode_policy_prompt(tokenizer, p, None, infos[i]["actions"], alphabet.strings(lab))
                    for i, p, lab in zip(active, parts, labels, strict=True)]
            with torch.no_grad():
                logits, _ = policy(bare, valid, temperature=temperature, labels=labels)
            cf_prob = torch.softmax(logits, -1).cpu()
        stats.policy_seconds += time.perf_counter() - t1
        # One device-to-host copy per tensor (not one sync per environment and field).
        label = act.label.cpu().tolist()
        logprob, entropy = act.logprob.float().cpu().tolist(), act.entropy.float().cpu().tolist()
        value = act.value.float().cpu().tolist() if act.value is not None else None
        act_probs = act.logprobs.float().exp().cpu() if oracle_idx is not None else None
        chosen = [lab.index(lb) for lab, lb in zip(labels, label, strict=True)]
        actions: list[int | None] = [None] * len(vec)
        for j, i in enumerate(active):
            actions[i] = chosen[j]
        _, rewards, terms, truncs, new_infos = vec.step(actions)
        stats.env_steps += len(active)
        for j, i in enumerate(active):
            step = Step(
                prompt_ids=prompts[j],
                labels=list(labels[j]),
                actions=list(infos[i]["actions"]),
                action=chosen[j],
                logprob=logprob[j],
                reward=float(rewards[i]),
                entropy=entropy[j],
                value=value[j] if value is not None else 0.0,
                ref_logprobs=[float(ref_lp[j, k]) for k in labels[j]] if ref_lp is not None else None,
                kl=float(kls[j]) if ref_lp is not None else 0.0,
                reflection=reflections[j],
                oracle=oracle_idx[j] if oracle_idx is not None else None,
                oracle_prob=(float(act_probs[j, labels[j][oracle_idx[j]]])
                             if act_probs is not None and oracle_idx is not None else None),
                oracle_prob_without_reflection=(float(cf_prob[j, labels[j][oracle_idx[j]]])
                                                if cf_prob is not None and oracle_idx is not None else None),
            )
            playing[i].steps.append(step)
            infos[i] = new_infos[i]
            if terms[i] or truncs[i]:
                playing[i].success = bool(new_infos[i].get("success", False))
                done[slot[i]] = playing.pop(i)  # type: ignore[index]
                slot[i] = None
                if queue:
                    begin(i)
        active = sorted(playing)
    return [ep for ep in done if ep is not None]


def mentioned_actions(text: str | None, actions: Sequence[str]) -> set[int]:
    """Indices of the actions whose text occurs in ``text`` as whole words (case-insensitive)."""
    if not text:
        return set()
    low = text.lower()
    return {k for k, a in enumerate(actions) if re.search(r"(?<!\w)" + re.escape(a.lower()) + r"(?!\w)", low)}

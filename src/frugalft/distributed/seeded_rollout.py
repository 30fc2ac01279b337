"""Rollouts whose randomness belongs to the episode, not to the process: the same episodes on 1 or N workers.

``frugalft.reflect.rollout.collect_episodes`` samples from the global torch RNG, one draw per batch row, so
what an episode samples depends on which other episodes share its batch and process. Split across workers,
a seeded run would then differ from the single-process run. Here every episode owns a ``torch.Generator``
seeded from ``(seed, episode_id)`` (episode ids are global and encode the iteration and the env slot), and
every random draw of that episode comes from it, in the episode's own order:

* the reflection model's tokens: one uniform per generated token, inverse CDF (as ``reflection.generate``);
  rows that have ended draw nothing, so a neighbour's length never shifts a stream;
* the policy's label: ``torch.multinomial`` on the row's distribution with the row's generator;
* the label shuffle: ``random.Random(f"labels-{seed}-{episode_id}")``, the same stream the single-process
  rollout uses.

Forward passes stay batched over the active episodes (padding never changes a row's logits beyond float
rounding, see ``policy.collate_left``). Episodes come back in spec order. The prompt, reflection and policy
code is the Reflect-RL helper's (``frugalft.reflect``); only the sampling is ours.
"""

from __future__ import annotations

import hashlib
import inspect
import random
import time
from collections.abc import Sequence

import torch

from frugalft.envs import VecTextEnv
from frugalft.reflect.policy import collate_left, valid_mask
from frugalft.reflect.prompts import encode_policy_prompt, encode_reflection_prompt
from frugalft.reflect.reflection import ReflectionError, Reflector
from frugalft.reflect.rollout import Episode, EpisodeSpec, RolloutStats, Step
from frugalft.reflect.train import Players


def episode_generator(seed: int, episode_id: int) -> torch.Generator:
    """A CPU generator private to one episode of one run (a stable hash, not Python's salted ``hash``)."""
    digest = hashlib.blake2b(f"rollout-{seed}-{episode_id}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)


@torch.no_grad()
def reflect_seeded(reflector: Reflector, states: Sequence[dict], gens: Sequence[torch.Generator]) -> list[str | None]:
    """``Reflector.reflect`` with row ``j``'s tokens drawn from ``gens[j]``; ``None`` each when disabled."""
    if not reflector.enabled or not states:
        return [None] * len(states)
    model, tok = reflector.model, reflector.tokenizer
    assert model is not None and tok is not None
    prompts = [encode_reflection_prompt(tok, parts) for parts in states]
    limit = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", None)
    if limit is not None and max(map(len, prompts)) + reflector.max_new_tokens > limit:
        raise ReflectionError(f"reflection prompt of {max(map(len, prompts))} tokens + {reflector.max_new_tokens} "
                              f"new tokens exceeds the reflection model's {limit} positions")
    device = next(model.parameters()).device
    eos = tok.eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    ids, mask, positions = collate_left(prompts, pad, device)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
    b = len(prompts)
    done = [False] * b
    rows: list[list[int]] = [[] for _ in range(b)]
    next_pos = positions[:, -1:] + 1
    cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    for t in range(reflector.max_new_tokens):
        logits = out.logits[:, -1].float()
        if reflector.temperature <= 0:
            token = logits.argmax(-1)
        else:
            cdf = torch.softmax(logits / reflector.temperature, -1).cumsum(-1)
            u = torch.tensor([[0.0 if done[j] else float(torch.rand(1, generator=gens[j]))] for j in range(b)],
                             device=device)
            token = torch.searchsorted(cdf, u * cdf[:, -1:]).squeeze(-1).clamp(max=logits.shape[-1] - 1)
        token = token.cpu()
        for j in range(b):
            if done[j]:
                token[j] = pad
            else:
                rows[j].append(int(token[j]))
                done[j] = int(token[j]) == eos
        if all(done) or t + 1 == reflector.max_new_tokens:
            break
        mask = torch.cat([mask, torch.ones((b, 1), dtype=mask.dtype, device=device)], dim=1)
        out = model(input_ids=token[:, None].to(device), attention_mask=mask, position_ids=next_pos, use_cache=True,
                    **{cache_arg: out.cache if cache_arg == "cache" else out.past_key_values})
        next_pos = next_pos + 1
    texts: list[str | None] = []
    for row in rows:
        if eos in row:
            row = row[: row.index(eos)]
        texts.append(tok.decode(row, skip_special_tokens=True).strip())
    return texts


def collect_seeded(vec: VecTextEnv, specs: Sequence[EpisodeSpec], players: Players, temperature: float = 1.0,
                   seed: int = 0, stats: RolloutStats | None = None) -> list[Episode]:
    """Play one episode per spec, ``len(vec)`` at a time, each with its own random streams; spec order out."""
    stats = stats if stats is not None else RolloutStats()
    start = time.perf_counter()
    episodes: list[Episode] = []
    for first in range(0, len(specs), len(vec)):
        episodes += _play(vec, specs[first:first + len(vec)], players, temperature, seed, stats)
    stats.seconds += time.perf_counter() - start
    return episodes


def _play(vec: VecTextEnv, specs: Sequence[EpisodeSpec], players: Players, temperature: float, seed: int,
          stats: RolloutStats) -> list[Episode]:
    policy, tok, alphabet = players.policy, players.tokenizer, players.alphabet
    infos, episodes, label_rngs, gens = [], [], [], []
    for i, spec in enumerate(specs):
        _, info = vec.reset_at(i, seed=spec.seed, options={"task_id": spec.task_id})
        infos.append(info)
        episodes.append(Episode(env_index=i, episode_id=spec.episode_id, task_id=info["task_id"],
                                level=int(info["level"])))
        label_rngs.append(random.Random(f"labels-{seed}-{spec.episode_id}"))  # as collect_episodes
        gens.append(episode_generator(seed, spec.episode_id))
    active = list(range(len(specs)))
    while active:
        parts = [infos[i]["parts"] for i in active]
        t0 = time.perf_counter()
        reflections = reflect_seeded(players.reflector, parts, [gens[i] for i in active])
        t1 = time.perf_counter()
        stats.reflect_seconds += t1 - t0
        labels = [alphabet.pick(len(infos[i]["actions"]), label_rngs[i]) for i in active]
        valid = valid_mask(labels, len(alphabet))
        prompts = [encode_policy_prompt(tok, p, r, infos[i]["actions"], alphabet.strings(lab))
                   for i, p, r, lab in zip(active, parts, reflections, labels, strict=True)]
        with torch.no_grad():
            logits, value = policy(prompts, valid, temperature)
        logprobs = torch.log_softmax(logits.float(), -1).cpu()
        probs = logprobs.exp()
        label = [int(torch.multinomial(probs[j], 1, generator=gens[i])) for j, i in enumerate(active)]
        entropy = -(probs * logprobs.masked_fill(probs == 0, 0.0)).sum(-1)
        ref_lp = players.reference(prompts, valid).float().cpu() if players.reference is not None else None
        stats.policy_seconds += time.perf_counter() - t1
        chosen = [lab.index(lb) for lab, lb in zip(labels, label, strict=True)]
        actions: list[int | None] = [None] * len(vec)
        for j, i in enumerate(active):
            actions[i] = chosen[j]
        _, rewards, terms, truncs, new_infos = vec.step(actions)
        stats.env_steps += len(active)
        still = []
        for j, i in enumerate(active):
            kl = 0.0
            if ref_lp is not None:
                kl = float((probs[j] * (logprobs[j] - ref_lp[j])).masked_fill(probs[j] == 0, 0.0).sum())
            episodes[i].steps.append(Step(
                prompt_ids=prompts[j],
                labels=list(labels[j]),
                actions=list(infos[i]["actions"]),
                action=chosen[j],
                logprob=float(logprobs[j, label[j]]),
                reward=float(rewards[i]),
                entropy=float(entropy[j]),
                value=float(value[j]) if value is not None else 0.0,
                ref_logprobs=[float(ref_lp[j, k]) for k in labels[j]] if ref_lp is not None else None,
                kl=kl,
                reflection=reflections[j],
            ))
            infos[i] = new_infos[i]
            if terms[i] or truncs[i]:
                episodes[i].success = bool(new_infos[i].get("success", False))
            else:
                still.append(i)
        active = still
    return episodes

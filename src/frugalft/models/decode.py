"""Token-by-token decoding with transformers' forward and its KV cache: the one such loop in frugalft.

It serves the reflection model's loop decoder (``frugalft.reflect.decoding.generate``: sampled or greedy, every
row stays in the batch, an ended row emits padding) and the uncertainty scores of a pool
(``frugalft.design.uncertainty``: greedy, a prefix all rows share run once, a row leaves the batch and its
cache as soon as its answer ends). ``frugalft.reflect.decoding.StaticDecoder`` is its GPU twin for GPT-2
shapes (static cache, CUDA graphs). What a step does with the logits is the caller's ``choose``.

Prompts are left-padded, so every row's next token lands in the last column; position ids count a row's real
tokens only, so padding never shifts them.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class DecodeStep:
    t: int  # index of the token being chosen (0 = the first new token)
    logits: torch.Tensor  # (rows in the batch, vocab): the last position's logits
    rows: torch.Tensor  # (rows in the batch,) each one's index in the original batch
    live: torch.Tensor  # (rows in the batch,) bool: still decoding (False: ended, its token is replaced by padding)


def decode(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int,
           choose: Callable[[DecodeStep], torch.Tensor], stop_ids: Sequence[int], pad_id: int, *,
           prefix_ids: Sequence[int] = (), drop_finished: bool = False) -> torch.Tensor:
    """Decode up to ``max_new_tokens`` tokens per row; returns (batch, T <= max_new_tokens) new token ids, each
    row's stop token included once and ``pad_id`` after it. Stops when every row has ended.

    choose(step) -> one token per row of ``step.logits``. ``prefix_ids``: tokens every row starts with, run once
    at batch 1 and its cache copied to each row; ``input_ids`` are then the rest, left-padded after the prefix,
    and ``attention_mask`` covers prefix and rest. ``drop_finished``: an ended row leaves the batch and its
    cache at once (fewer rows per step; the batch's shape then changes, so kernels may round differently); else
    it stays, fed padding, and ``choose`` sees it as not live.
    """
    dev = input_ids.device
    b, p = input_ids.shape[0], len(prefix_ids)
    stop = torch.tensor(sorted(set(stop_ids)), dtype=torch.long, device=dev)
    mask = attention_mask
    pos = (mask.cumsum(-1) - 1).clamp(min=0)[:, p:]
    extra = {}
    if p:
        first = model(input_ids=input_ids.new_tensor([list(prefix_ids)]), use_cache=True, logits_to_keep=1)
        cache = _cache_of(model, first)
        cache.batch_repeat_interleave(b)
        extra = {_cache_name(type(model)): cache}
    out = model(input_ids=input_ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1,
                **extra)
    rows = torch.arange(b, device=dev)
    done = torch.zeros(b, dtype=torch.bool, device=dev)
    new = torch.full((b, max_new_tokens), pad_id, dtype=torch.long, device=dev)
    steps = 0
    for t in range(max_new_tokens):
        token = choose(DecodeStep(t, out.logits[:, -1], rows, ~done))
        token = torch.where(done, torch.full_like(token, pad_id), token)
        new[rows, t] = token
        steps = t + 1
        done = done | torch.isin(token, stop)
        if bool(done.all()) or steps == max_new_tokens:
            break
        cache = _cache_of(model, out)
        if drop_finished and bool(done.any()):
            keep = (~done).nonzero()[:, 0]
            rows, token, mask, pos, done = rows[keep], token[keep], mask[keep], pos[keep], done[keep]
            cache.batch_select_indices(keep)
        mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)
        pos = pos[:, -1:] + 1
        out = model(input_ids=token[:, None], attention_mask=mask, position_ids=pos, use_cache=True,
                    **{_cache_name(type(model)): cache})
    return new[:, :steps]


def _cache_of(model: nn.Module, out: object):
    return getattr(out, _cache_name(type(model)))


@functools.cache
def _cache_name(model_type: type) -> str:
    """The KV cache's name in this transformers version (``cache`` in 5.x, ``past_key_values`` before), for the
    forward's argument and its output alike; looked up once per class, not once per decoded token."""
    return "cache" if "cache" in inspect.signature(model_type.forward).parameters else "past_key_values"

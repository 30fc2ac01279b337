"""The frozen reflection model: one short analysis per environment per step, batched (SPEC A.1 step 3).

All environments still playing are reflected on in one batched decode (left padding, KV cache), sampled,
stopped at eos or ``max_new_tokens``. The decode loop is ours rather than ``model.generate``: it samples by
inverse CDF (one uniform per row), which on CPU is ~5x cheaper than ``torch.multinomial`` over a 50k
vocabulary, and computes logits for the last position only. ``Reflector(None, ...)`` (or ``enabled=False``) is the switch of the
no-reflection baselines: it returns ``None`` per state and the policy prompt has no reflection section.

Given one ``torch.Generator`` per row, row j's uniforms come from generator j only, and a row that has ended
draws nothing: a reflection then does not depend on which other rows share its batch (the rollout gives each
episode its own generator, so 1 process and N workers sample the same reflections).

Two decoders (``Reflector(decoder=...)``): ``loop`` (the default) and ``static`` (``frugalft.reflect.decoding``:
static KV cache, CUDA graphs on CUDA, and uniforms computed on the device by a counter-based hash of one key per
row, drawn from the row's generator, so no host sync per token). ``auto`` picks ``static`` for a
GPT-2-architecture model on CUDA and ``loop`` elsewhere: on CPU the static one is somewhat cheaper per token
(docs/benchmarks.md) but would change the random stream seeded CPU runs have always drawn. The two sample different streams (per-token draws
vs one key per reflection); given the same uniforms (``generate(..., uniforms=)``) they pick the same tokens.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from frugalft.models import max_positions
from frugalft.reflect.policy import attention_backends, collate_left
from frugalft.reflect.prompts import encode_reflection_prompt


class ReflectionError(ValueError):
    pass


def check_tokenizer_matches(model: nn.Module, tokenizer: PreTrainedTokenizerBase, what: str) -> None:
    """Raise ReflectionError when ``tokenizer`` emits ids the model has no embedding for (a mismatched pair)."""
    rows = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:
        raise ReflectionError(
            f"{what}: the tokenizer has {len(tokenizer)} tokens but the model embeds only {rows}; "
            "the checkpoint was trained with a different tokenizer (load the tokenizer saved beside it)"
        )
    if tokenizer.eos_token_id is None or tokenizer.eos_token_id >= rows:
        raise ReflectionError(f"{what}: the tokenizer's eos token is missing or outside the model's vocabulary")


class Reflector:
    """Generates reflections with a frozen LM; ``model=None`` or ``enabled=False`` turns reflection off."""

    def __init__(
        self,
        model: nn.Module | None,
        tokenizer: PreTrainedTokenizerBase | None,
        max_new_tokens: int = 64,
        temperature: float = 1.0,
        enabled: bool = True,
        use_hf_generate: bool = False,
        freeze: bool = True,
        decoder: Literal["loop", "static", "auto"] = "loop",
        graphs: bool | None = None,
    ):
        """``decoder``: see the module docstring; ``graphs``: CUDA graphs for the static decoder (default: on
        CUDA)."""
        self.enabled = enabled and model is not None
        self.use_hf_generate = use_hf_generate  # transformers' generate instead of our loop (the benchmark's
        # stand-in for the authors' code; same distribution, slower sampling on CPU)
        self.model = model
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        if self.enabled:
            assert model is not None and tokenizer is not None
            check_tokenizer_matches(model, tokenizer, "reflection model")
            model.eval()
            if freeze:  # RL trains the policy only; the warm-up's validation reflects with a model in training
                for p in model.parameters():
                    p.requires_grad_(False)
        self.decoder = _resolve_decoder(decoder, model if self.enabled else None)
        self._static = None  # the static decoder, made at first use (it holds captured graphs and buffers)
        self._graphs = graphs

    @torch.no_grad()
    def reflect(self, states: Sequence[Mapping[str, str]],
                generators: Sequence[torch.Generator] | None = None) -> list[str | None]:
        """One reflection per state (``parts`` dicts), generated in one batch; ``None`` each when disabled.

        ``generators``: one CPU generator per state for its draws (else the global RNG). ``use_hf_generate``
        (the benchmark's stand-in for the authors' code) always samples from the global RNG."""
        if not self.enabled or not states:
            return [None] * len(states)
        assert self.model is not None and self.tokenizer is not None
        prompts = [encode_reflection_prompt(self.tokenizer, parts) for parts in states]
        limit = max_positions(self.model)
        if limit is not None and max(map(len, prompts)) + self.max_new_tokens > limit:
            # A state can be longer than the model reads (AutoExplore's `cat` of a file of non-ASCII text is
            # ~2 tokens a character). Keep its end, where "# Analyze:" is, as the warm-up's SFT truncation does.
            keep = limit - self.max_new_tokens
            if keep < 1:
                raise ReflectionError(f"{self.max_new_tokens} new tokens leave no room for a prompt in the "
                                      f"reflection model's {limit} positions")
            prompts = [p[-keep:] for p in prompts]
        device = next(self.model.parameters()).device
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        ids, mask, _ = collate_left(prompts, pad, device)
        if self.use_hf_generate:  # as the authors' code: transformers' defaults throughout
            sample = self.temperature > 0
            out = self.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=self.max_new_tokens,
                                      do_sample=sample, temperature=self.temperature if sample else None,
                                      top_p=None, top_k=None, pad_token_id=pad,
                                      eos_token_id=self.tokenizer.eos_token_id)
            new = out[:, ids.shape[1]:].tolist()
        elif self.decoder == "static":
            new = self._decode_static(ids, mask, pad, generators).tolist()
        else:
            new = generate(self.model, ids, mask, self.max_new_tokens, self.temperature,
                           self.tokenizer.eos_token_id, pad, generators).tolist()
        texts = []
        for row in new:
            if self.tokenizer.eos_token_id in row:
                row = row[: row.index(self.tokenizer.eos_token_id)]
            texts.append(self.tokenizer.decode(row, skip_special_tokens=True).strip())
        return texts

    def _decode_static(self, ids: torch.Tensor, mask: torch.Tensor, pad: int,
                       generators: Sequence[torch.Generator] | None) -> torch.Tensor:
        """The static decoder (the loop for an architecture it lacks), fed counter-based uniforms: row j's key
        is one draw from ``generators[j]`` (none when greedy)."""
        from frugalft.reflect.decoding import StaticDecoder, counter_uniforms, row_keys, supports

        assert self.model is not None and self.tokenizer is not None
        u = None
        if self.temperature > 0:
            u = counter_uniforms(row_keys(generators, ids.shape[0]).to(ids.device), self.max_new_tokens)
        eos = self.tokenizer.eos_token_id
        if not supports(self.model):
            return generate(self.model, ids, mask, self.max_new_tokens, self.temperature, eos, pad, uniforms=u)
        if self._static is None:
            self._static = StaticDecoder(self.model, graphs=self._graphs)
        if u is None:  # greedy: the uniforms are never read
            u = torch.zeros((ids.shape[0], self.max_new_tokens), device=ids.device)
        return self._static.generate(ids, mask, self.max_new_tokens, self.temperature, eos, pad, u)


def _resolve_decoder(decoder: str, model: nn.Module | None) -> str:
    if decoder not in ("loop", "static", "auto"):
        raise ValueError(f"unknown reflection decoder {decoder!r}; use loop, static or auto")
    if decoder != "auto":
        return decoder
    if model is None:
        return "loop"
    from frugalft.reflect.decoding import supports

    on_cuda = next(model.parameters()).device.type == "cuda"
    return "static" if on_cuda and supports(model) else "loop"


def sample_from_logits(logits: torch.Tensor, temperature: float, generators: Sequence[torch.Generator] | None = None,
                       live: Sequence[bool] | None = None, u: torch.Tensor | None = None) -> torch.Tensor:
    """One token per row: greedy when ``temperature <= 0``, else a draw by inverse CDF from softmax(logits/T).

    With ``generators``, row j's uniform comes from ``generators[j]``, and only rows that are ``live`` draw
    (an ended row's stream must not advance, or its neighbours' lengths would shift it). ``u``: (batch, 1)
    uniforms given instead (on the logits' device; no draw, no host sync)."""
    if temperature <= 0:
        return logits.argmax(-1)
    cdf = torch.softmax(logits.float() / temperature, -1).cumsum(-1)
    if u is None and generators is None:
        u = torch.rand((logits.shape[0], 1), device=logits.device)
    elif u is None:
        live = live if live is not None else [True] * len(generators)
        u = torch.tensor([[float(torch.rand(1, generator=g)) if on else 0.0] for g, on in zip(generators, live,
                                                                                              strict=True)],
                         device=logits.device)
    return torch.searchsorted(cdf, u * cdf[:, -1:]).squeeze(-1).clamp(max=logits.shape[-1] - 1)


@torch.no_grad()
def generate(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int,
             temperature: float, eos_id: int, pad_id: int,
             generators: Sequence[torch.Generator] | None = None,
             uniforms: torch.Tensor | None = None) -> torch.Tensor:
    """Batched sampling with a KV cache from left-padded prompts: (batch, <= max_new_tokens) new token ids.

    Rows that have emitted eos are padded with ``pad_id`` (eos included once); the loop stops when every row
    has ended or at the cap. ``generators``: one per row, see ``sample_from_logits``; ``uniforms``: (batch,
    >= max_new_tokens) precomputed instead, token t of row j drawn with ``uniforms[j, t]`` (the hook that
    compares this decoder with ``decoding.StaticDecoder``).
    """
    with attention_backends(input_ids.device):
        return _decode(model, input_ids, attention_mask, max_new_tokens, temperature, eos_id, pad_id, generators,
                       uniforms)


def _decode(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int,
            temperature: float, eos_id: int, pad_id: int,
            generators: Sequence[torch.Generator] | None = None,
            uniforms: torch.Tensor | None = None) -> torch.Tensor:
    positions = (attention_mask.cumsum(1) - 1).clamp(min=0)
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, use_cache=True,
                logits_to_keep=1)
    batch = input_ids.shape[0]
    done = torch.zeros(batch, dtype=torch.bool, device=input_ids.device)
    next_pos = positions[:, -1:] + 1
    mask = attention_mask
    new: list[torch.Tensor] = []
    if uniforms is not None:
        uniforms = uniforms.to(device=input_ids.device, dtype=torch.float32)
    for t in range(max_new_tokens):
        if uniforms is not None:
            token = sample_from_logits(out.logits[:, -1], temperature, u=uniforms[:, t:t + 1])
        else:
            live = (~done).tolist() if generators is not None else None
            token = sample_from_logits(out.logits[:, -1], temperature, generators, live)
        token = torch.where(done, torch.full_like(token, pad_id), token)
        new.append(token)
        done |= token == eos_id
        if bool(done.all()) or len(new) == max_new_tokens:
            break
        mask = torch.cat([mask, torch.ones((batch, 1), dtype=mask.dtype, device=mask.device)], dim=1)
        out = model(input_ids=token[:, None], attention_mask=mask, position_ids=next_pos, use_cache=True,
                    **_cache_kwargs(model, out))
        next_pos = next_pos + 1
    if not new:
        return torch.zeros((batch, 0), dtype=torch.long, device=input_ids.device)
    return torch.stack(new, dim=1)


def _cache_kwargs(model: nn.Module, out: object) -> dict[str, object]:
    """The KV cache argument by its name in this transformers version (``cache`` in 5.x, ``past_key_values``
    before)."""
    if _takes_cache(type(model)):
        return {"cache": out.cache}  # type: ignore[attr-defined]
    return {"past_key_values": out.past_key_values}  # type: ignore[attr-defined]


@functools.cache
def _takes_cache(model_type: type) -> bool:
    """Whether ``model_type.forward`` has a ``cache`` parameter; once per class, not once per decoded token."""
    return "cache" in inspect.signature(model_type.forward).parameters

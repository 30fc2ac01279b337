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

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from frugalft.models import max_positions
from frugalft.reflect.decoding import (
    StaticDecoder,
    counter_uniforms,
    generate,
    row_keys,
    supports,
)
from frugalft.reflect.policy import collate_left
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
    on_cuda = next(model.parameters()).device.type == "cuda"
    return "static" if on_cuda and supports(model) else "loop"



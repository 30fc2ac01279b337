"""Where training episodes are played: the rollout backend the RL loop is handed.

    backend.play(players, specs, iteration) -> Rollout     # the specs' episodes, in spec order
    backend.close()

``players`` carries the weights to play with (the learner's policy as it is now, plus the frozen reflector and
reference); ``specs`` are the batch's ``EpisodeSpec``s. Two backends implement it:

- ``InProcessBackend``: the environments live in this process and ``collect_episodes`` plays them with the
  learner's own players. Under ``accelerate launch`` each learner process plays its contiguous share of the
  specs and the shares are all-gathered in rank order (``frugalft.parallel``).
- ``frugalft.distributed.ray_rollout.RolloutPool``: N Ray actors, each with its own players and environments;
  the learner's trainable weights are broadcast once per iteration and each actor plays its share with an
  ``InProcessBackend`` of its own.

``train`` does not know which one it has: it is handed one, or makes the in-process one with
``make_backend(config)``. The Ray pool belongs to the scale-out layer, which imports this package and not the
other way round: whoever runs ``workers: N`` (the CLI) builds it with
``frugalft.distributed.ray_rollout.make_backend(config)`` and hands it to ``train``. Every episode draws from
random streams keyed by (seed, episode id), so all backends return the same episodes for the same weights
and specs.

Imports point one way: ``reflect`` imports ``frugalft.envs``, ``frugalft.models`` and the leaf
``frugalft.parallel``, never ``frugalft.distributed`` (``tests/test_import_graph.py``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import torch

from frugalft.parallel import SINGLE, DataParallel, setup
from frugalft.reflect.rollout import Episode, EpisodeSpec, RolloutStats, collect_episodes

if TYPE_CHECKING:
    from frugalft.reflect.players import Players, RLConfig


@dataclass
class Rollout:
    """One batch as played: episodes in spec order, their statistics, and what it took to get them."""

    episodes: list[Episode]
    stats: RolloutStats
    restarts: int = 0  # rollout workers replaced while playing this batch
    rerun_episodes: int = 0  # episodes played again because their worker died
    notes: list[str] = field(default_factory=list)  # warnings for the run's log (a worker died, ...)

    @classmethod
    def merge(cls, parts: Sequence[Rollout], restarts: int = 0, rerun_episodes: int = 0,
              notes: Sequence[str] = ()) -> Rollout:
        """Shares in order -> one batch (episodes concatenated, statistics summed)."""
        stats = RolloutStats()
        for p in parts:
            for k, v in vars(p.stats).items():
                setattr(stats, k, getattr(stats, k) + v)
        return cls([ep for p in parts for ep in p.episodes], stats,
                   restarts + sum(p.restarts for p in parts), rerun_episodes + sum(p.rerun_episodes for p in parts),
                   [*notes, *(n for p in parts for n in p.notes)])


class RolloutBackend(Protocol):
    """Plays episode specs with given weights; ``train`` is handed one and never asks which."""

    workers: int  # rollout actors (0: plays in the learner's process); the ``rollout_workers`` metric

    def play(self, players: Players, specs: Sequence[EpisodeSpec], iteration: int = 0) -> Rollout:
        """The episodes of ``specs`` played with ``players``' current weights, in spec order."""
        ...

    def close(self) -> None:
        ...


# ---- the in-process backend ------------------------------------------------------------------------------
def make_vec(config: RLConfig, split: str, n: int):
    from frugalft.envs import VecTextEnv, make

    return VecTextEnv([lambda: make(config.env, split=split, **config.env_kwargs) for _ in range(n)])


def play(players: Players, config: RLConfig, vec: Any, specs: Sequence[EpisodeSpec],
         stats: RolloutStats | None = None) -> list[Episode]:
    """The training rollout of ``specs`` in ``vec``: the learner's, a learner process's share, a Ray worker's."""
    return collect_episodes(vec, specs, players.policy, players.tokenizer, players.alphabet, players.reflector,
                            config.temperature, reference=players.reference, seed=config.seed, stats=stats)


class InProcessBackend:
    """Plays in this process; with several learner processes (``dp``), this process's share, then all-gathers.

    The environments are made at the first ``play`` (``num_envs`` of them; default: this process's share of
    ``config.num_envs``)."""

    workers = 0

    def __init__(self, config: RLConfig, dp: DataParallel | None = None, num_envs: int | None = None):
        self.config = config
        self.dp = dp if dp is not None else SINGLE
        self.num_envs = num_envs or math.ceil(config.num_envs / self.dp.world)
        self.vec: Any = None

    def play(self, players: Players, specs: Sequence[EpisodeSpec], iteration: int = 0) -> Rollout:
        if self.vec is None:
            self.vec = make_vec(self.config, "train", self.num_envs)
        stats = RolloutStats()
        episodes = self.dp.gather(play(players, self.config, self.vec, self.dp.mine(specs), stats))  # rank order
        stats.env_steps = int(self.dp.sum([stats.env_steps])[0])
        return Rollout(episodes, stats)

    def close(self) -> None:
        if self.vec is not None:
            self.vec.close()
            self.vec = None


# ---- weights that travel ---------------------------------------------------------------------------------
def trainable_state(policy: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The parameters the learner trains (all for full fine-tuning, the adapters for LoRA), on CPU."""
    return {k: p.detach().cpu().clone() for k, p in policy.named_parameters() if p.requires_grad}


def load_trainable_state(policy: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Copy broadcast weights into a worker's policy; every key must exist there."""
    own = dict(policy.named_parameters())
    unknown = sorted(set(state) - set(own))
    if unknown:
        raise KeyError(f"broadcast weights name parameters the worker's policy lacks: {unknown[:5]} "
                       "(learner and workers built from different configs?)")
    with torch.no_grad():
        for k, v in state.items():
            own[k].copy_(v.to(own[k].device, own[k].dtype))


# ---- choosing one ----------------------------------------------------------------------------------------
def make_backend(config: RLConfig, dp: DataParallel | None = None) -> RolloutBackend:
    """The in-process backend (``workers: 0``) with the learner's data-parallel layout ``dp`` (default: this
    launch's, ``frugalft.parallel.setup``). The caller closes it.

    ``workers: N`` needs Ray actors, which the scale-out layer builds (this package does not import it):
    ``frugalft.distributed.ray_rollout.make_backend(config)``, handed to ``train(..., backend=...)``."""
    if config.workers > 0:
        raise ValueError(f"workers: {config.workers} plays the rollouts on Ray actors, which the caller builds: "
                         "pass backend=frugalft.distributed.ray_rollout.make_backend(config) to train (the CLI "
                         "does), or set workers: 0")
    return InProcessBackend(config, dp if dp is not None else setup(config.device))

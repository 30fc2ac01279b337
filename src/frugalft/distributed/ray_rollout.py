"""Reflect-RL rollout workers as Ray actors: the learner updates, the workers play (verl/OpenRLHF roles).

    learner (frugalft.reflect.train.train,    worker w (a Ray actor, N of them)
             config.workers = N)              ---------------------------------
    -------                                   players <- build_players(config)   (policy, reference, reflector)
    players <- build_players(config)          vec     <- its share of the environments
    for iteration:
        specs  <- episode_specs(...)
        ref    <- ray.put(trainable weights)   ---- broadcast, once per iteration ---->
        shares <- specs split by worker        rollout(ref, share): load weights,
        episodes <- gather, by (worker,        reflect.train.play(share): the learner's own rollout code
                    episode id) = spec order   <---
        update (reinforce_update/ppo_update), log, checkpoint

Every episode's randomness comes from ``(seed, episode_id)`` (``reflect.rollout``), so the trajectories do
not depend on how the batch is split: ``workers: 0`` (in-process, no Ray) and ``workers: N`` give the same
episodes and, the update being the same code on the same ordered steps, the same weights.

Fault tolerance: a worker that dies mid-iteration (node lost, OOM kill, ``ray.kill``) is replaced by a fresh
actor and its whole shard is re-played. The shard's episodes are a pure function of (weights, specs), so the
re-run gives exactly the episodes the dead worker would have returned: none lost, none counted twice (the
learner checks the gathered episode ids against the specs). Each restart is a warning in run.log and the
``worker_restarts`` / ``rerun_episodes`` metrics of that iteration.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from frugalft.distributed.data_parallel import share
from frugalft.reflect.rollout import Episode, EpisodeSpec, RolloutStats
from frugalft.reflect.train import RLConfig, play

log = logging.getLogger("frugalft.distributed")


# ---- weights -------------------------------------------------------------------------------------------
def trainable_state(policy: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The parameters the learner trains (all for full fine-tuning, the adapters for LoRA), on CPU."""
    return {k: p.detach().cpu().clone() for k, p in policy.named_parameters() if p.requires_grad}


def load_trainable_state(policy: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy broadcast weights into a worker's policy; every key must exist there."""
    own = dict(policy.named_parameters())
    unknown = sorted(set(state) - set(own))
    if unknown:
        raise KeyError(f"broadcast weights name parameters the worker's policy lacks: {unknown[:5]} "
                       "(learner and workers built from different configs?)")
    with torch.no_grad():
        for k, v in state.items():
            own[k].copy_(v.to(own[k].device, own[k].dtype))


# ---- Ray set-up ----------------------------------------------------------------------------------------
def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Connect to ``address`` (a running cluster, e.g. ``auto`` or ``ray://head:10001``), or start a local
    one with ``num_cpus`` CPUs, unless Ray is already initialised in this process."""
    import ray

    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, configure_logging=False)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, configure_logging=False, log_to_driver=False)


def split_evenly(items: list, parts: int) -> list[list]:
    """Contiguous, near-equal shares in order (the first ``len % parts`` shares get one more item)."""
    return [[items[i] for i in share(len(items), w, parts)] for w in range(parts)]


class RolloutWorker:
    """One rollout actor: its environments, inference copies of the policy (+ reference) and the reflector."""

    def __init__(self, config: RLConfig, num_envs: int, threads: int = 1):
        from frugalft.reflect.train import build_players, make_vec
        from frugalft.seeding import seed_everything

        torch.set_num_threads(threads)
        seed_everything(config.seed)
        self.config = config
        self.players = build_players(config)
        self.vec = make_vec(config, "train", num_envs)

    def rollout(self, weights: dict[str, torch.Tensor], specs: list[EpisodeSpec]) -> tuple[list[Episode], dict]:
        load_trainable_state(self.players.policy, weights)
        stats = RolloutStats()
        episodes = play(self.players, self.config, self.vec, specs, stats)
        return episodes, vars(stats)

    def ping(self) -> int:
        import os

        return os.getpid()


@dataclass
class GatherReport:
    restarts: int = 0  # workers replaced during this gather
    rerun_episodes: int = 0  # episodes played again because their worker died
    stats: RolloutStats | None = None


class RolloutPool:
    """N rollout actors; ``collect(weights, specs)`` plays the specs on them and returns episodes in spec order."""

    def __init__(self, config: RLConfig, workers: int, address: str | None = None, cpus_per_worker: float = 1,
                 gpus_per_worker: float = 0, max_restarts: int = 3, logger: logging.Logger | None = None):
        import ray

        if workers < 1:
            raise ValueError(f"a rollout pool needs at least one worker, got {workers}")
        ensure_ray(address, num_cpus=None if address else max(2, math.ceil(workers * cpus_per_worker)))
        self.config = config
        self.workers = workers
        self.envs_per_worker = math.ceil(config.num_envs / workers)
        self.max_restarts = max_restarts
        self.log = logger or log
        self._actor_cls = ray.remote(num_cpus=cpus_per_worker, num_gpus=gpus_per_worker, max_restarts=0)(
            RolloutWorker)
        self._threads = max(1, int(cpus_per_worker))
        self.actors = [self._spawn() for _ in range(workers)]
        self.total_restarts = 0

    def _spawn(self):
        return self._actor_cls.remote(self.config, self.envs_per_worker, self._threads)

    def collect(self, weights: dict[str, torch.Tensor], specs: list[EpisodeSpec], iteration: int = 0,
                on_dispatch: Callable[[int, RolloutPool], None] | None = None) -> tuple[list[Episode], GatherReport]:
        """Broadcast ``weights`` once (object store), play each worker's share, gather in spec order.

        ``on_dispatch(iteration, pool)`` runs while the shards are in flight (tests kill a worker there).
        """
        import ray
        from ray.exceptions import RayActorError

        ref = ray.put(weights)
        shards = split_evenly(list(specs), self.workers)
        pending = {w: self.actors[w].rollout.remote(ref, shard) for w, shard in enumerate(shards) if shard}
        if on_dispatch is not None:
            on_dispatch(iteration, self)
        report = GatherReport(stats=RolloutStats())
        results: dict[int, list[Episode]] = {}
        while pending:
            w, task = next(iter(pending.items()))
            try:
                episodes, stats = ray.get(task)
            except RayActorError as e:
                report.restarts += 1
                self.total_restarts += 1
                if report.restarts > self.max_restarts:
                    raise RuntimeError(f"rollout workers died {report.restarts} times in iteration {iteration}; "
                                       f"giving up (last: {type(e).__name__})") from e
                ids = [s.episode_id for s in shards[w]]
                self.log.warning("iteration %d: rollout worker %d died (%s); restarting it and re-running its "
                                 "%d episodes (ids %d..%d)", iteration, w, type(e).__name__, len(ids), ids[0], ids[-1])
                self.actors[w] = self._spawn()
                report.rerun_episodes += len(ids)
                pending[w] = self.actors[w].rollout.remote(ref, shards[w])
                continue
            del pending[w]
            results[w] = episodes
            for k, v in stats.items():
                setattr(report.stats, k, getattr(report.stats, k) + v)
        gathered = [ep for w in sorted(results) for ep in results[w]]
        got, want = [ep.episode_id for ep in gathered], [s.episode_id for s in specs]
        if got != want:  # the invariant fault tolerance promises; fail loudly rather than train on a bad batch
            raise RuntimeError(f"iteration {iteration}: gathered episodes {got} but the batch is {want}")
        return gathered, report

    def close(self) -> None:
        import ray

        for a in self.actors:
            ray.kill(a)
        self.actors = []

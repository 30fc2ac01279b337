"""Reflect-RL rollout workers as Ray actors: the learner updates, the workers play (verl/OpenRLHF roles).

    learner (frugalft.reflect.train.train,    worker w (a Ray actor, N of them)
             backend = make_backend(config))  ---------------------------------
    -------                                   players <- build_players(config)   (policy, reference, reflector)
    players <- build_players(config)          backend <- InProcessBackend: its share of the environments
    for iteration:
        specs  <- episode_specs(...)
        backend.play(players, specs):
          ref    <- ray.put(trainable weights)   ---- broadcast, once per iteration ---->
          shares <- specs split by worker        rollout(ref, share): load weights,
          episodes <- gather, by (worker,        backend.play(share): the learner's own rollout code
                      episode id) = spec order   <---
        update (reinforce_update/ppo_update), log, checkpoint

``RolloutPool`` is a rollout backend (``frugalft.reflect.backends``): ``train`` calls ``play`` on it as on the
in-process one. Every episode's randomness comes from ``(seed, episode_id)`` (``reflect.rollout``), so the
trajectories do not depend on how the batch is split: ``workers: 0`` (in-process, no Ray) and ``workers: N``
give the same episodes and, the update being the same code on the same ordered steps, the same weights.

Fault tolerance: a worker that dies mid-iteration (node lost, OOM kill, ``ray.kill``) is replaced by a fresh
actor and its whole shard is re-played. The shard's episodes are a pure function of (weights, specs), so the
re-run gives exactly the episodes the dead worker would have returned: none lost, none counted twice (the
pool checks the gathered episode ids against the specs). Each restart is a note the learner writes to
run.log as a warning, and the ``worker_restarts`` / ``rerun_episodes`` metrics of that iteration.

Imports point one way: this scale-out layer imports the algorithm (``frugalft.reflect``: its actors build
players and play with the learner's rollout code); ``reflect`` never imports ``frugalft.distributed``, so the
caller (the CLI) builds the pool with ``make_backend`` and hands it to ``train`` (``tests/test_import_graph.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from frugalft.distributed import ensure_ray
from frugalft.parallel import DataParallel, launched_processes, share
from frugalft.reflect import backends
from frugalft.reflect.backends import (
    InProcessBackend,
    Rollout,
    RolloutBackend,
    load_trainable_state,
    trainable_state,
)
from frugalft.reflect.train import build_players
from frugalft.seeding import seed_everything

if TYPE_CHECKING:
    from frugalft.reflect.rollout import EpisodeSpec
    from frugalft.reflect.train import Players, RLConfig


def split_evenly(items: list, parts: int) -> list[list]:
    """Contiguous, near-equal shares in order (the first ``len % parts`` shares get one more item)."""
    return [[items[i] for i in share(len(items), w, parts)] for w in range(parts)]


class RolloutWorker:
    """One rollout actor: its environments, inference copies of the policy (+ reference) and the reflector."""

    def __init__(self, config: RLConfig, num_envs: int, threads: int = 1):
        torch.set_num_threads(threads)
        seed_everything(config.seed)
        self.players = build_players(config)
        self.backend = InProcessBackend(config, num_envs=num_envs)

    def rollout(self, weights: dict[str, torch.Tensor], specs: list[EpisodeSpec]) -> Rollout:
        load_trainable_state(self.players.policy, weights)
        return self.backend.play(self.players, specs)

    def ping(self) -> int:
        import os

        return os.getpid()


class RolloutPool:
    """N rollout actors, a rollout backend: ``play(players, specs)`` broadcasts ``players``' trainable weights,
    plays each actor's share of the specs and returns the episodes in spec order.

    ``on_dispatch(iteration, pool)`` runs while the shares are in flight (tests kill a worker there)."""

    def __init__(self, config: RLConfig, workers: int, address: str | None = None, cpus_per_worker: float = 1,
                 gpus_per_worker: float = 0, max_restarts: int = 3,
                 on_dispatch: Callable[[int, RolloutPool], None] | None = None):
        import ray

        if workers < 1:
            raise ValueError(f"a rollout pool needs at least one worker, got {workers}")
        ensure_ray(address, num_cpus=None if address else max(2, math.ceil(workers * cpus_per_worker)))
        self.config = config
        self.workers = workers
        self.envs_per_worker = math.ceil(config.num_envs / workers)
        self.max_restarts = max_restarts
        self.on_dispatch = on_dispatch
        self._actor_cls = ray.remote(num_cpus=cpus_per_worker, num_gpus=gpus_per_worker, max_restarts=0)(
            RolloutWorker)
        self._threads = max(1, int(cpus_per_worker))
        self.actors = [self._spawn() for _ in range(workers)]
        self.total_restarts = 0

    def _spawn(self):
        return self._actor_cls.remote(self.config, self.envs_per_worker, self._threads)

    def play(self, players: Players, specs: Sequence[EpisodeSpec], iteration: int = 0) -> Rollout:
        """Broadcast the trainable weights once (object store), play each worker's share, gather in spec order."""
        import ray
        from ray.exceptions import RayActorError

        ref = ray.put(trainable_state(players.policy))
        shards = split_evenly(list(specs), self.workers)
        pending = {w: self.actors[w].rollout.remote(ref, shard) for w, shard in enumerate(shards) if shard}
        if self.on_dispatch is not None:
            self.on_dispatch(iteration, self)
        restarts, rerun, notes = 0, 0, []
        results: dict[int, Any] = {}
        while pending:
            w, task = next(iter(pending.items()))
            try:
                results[w] = ray.get(task)
            except RayActorError as e:
                restarts += 1
                self.total_restarts += 1
                if restarts > self.max_restarts:
                    raise RuntimeError(f"rollout workers died {restarts} times in iteration {iteration}; "
                                       f"giving up (last: {type(e).__name__})") from e
                ids = [s.episode_id for s in shards[w]]
                notes.append(f"iteration {iteration}: rollout worker {w} died ({type(e).__name__}); restarting it "
                             f"and re-running its {len(ids)} episodes (ids {ids[0]}..{ids[-1]})")
                self.actors[w] = self._spawn()
                rerun += len(ids)
                pending[w] = self.actors[w].rollout.remote(ref, shards[w])
                continue
            del pending[w]
        out = Rollout.merge([results[w] for w in sorted(results)], restarts, rerun, notes)
        got, want = [ep.episode_id for ep in out.episodes], [s.episode_id for s in specs]
        if got != want:  # the invariant fault tolerance promises; fail loudly rather than train on a bad batch
            raise RuntimeError(f"iteration {iteration}: gathered episodes {got} but the batch is {want}")
        return out

    def close(self) -> None:
        import ray

        for a in self.actors:
            ray.kill(a)
        self.actors = []


# ---- choosing one ----------------------------------------------------------------------------------------
def make_backend(config: RLConfig, dp: DataParallel | None = None) -> RolloutBackend:
    """The backend ``config`` asks for: ``workers`` Ray actors (``ray_address``, ``cpus_per_worker``,
    ``gpus_per_worker``), or ``frugalft.reflect.backends.make_backend``'s in-process one (``workers: 0``, with
    the learner's data-parallel layout ``dp``). The caller hands it to ``train`` and closes it."""
    if config.workers <= 0:
        return backends.make_backend(config, dp)
    if launched_processes() > 1:  # before any actor starts (train checks it too)
        raise ValueError("Ray rollout workers and an accelerate launch of several learner processes do not mix: "
                         "set workers: 0 under accelerate launch")
    return RolloutPool(config, config.workers, config.ray_address, config.cpus_per_worker, config.gpus_per_worker)

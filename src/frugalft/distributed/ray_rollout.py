"""Reflect-RL with rollout workers as Ray actors: the learner updates, the workers play (verl/OpenRLHF roles).

    learner                                   worker w (a Ray actor, N of them)
    -------                                   ---------------------------------
    players <- build_players(config)          players <- build_players(config)   (policy, reference, reflector)
    for iteration:                            vec     <- its share of the environments
        specs  <- episode_specs(...)           (same curriculum and seeds as frugalft.reflect.train)
        ref    <- ray.put(trainable weights)   ---- broadcast, once per iteration ---->
        shards <- specs split by worker        rollout(ref, shard): load weights, play shard with
        episodes <- gather, in spec order      <--- per-episode random streams (seeded_rollout)
        update (reinforce_update/ppo_update), log, checkpoint

Every episode's randomness comes from ``(seed, episode_id)``, so the trajectories do not depend on how the
batch is split: ``workers=0`` (in-process, no Ray) and ``workers=N`` give the same episodes and, the update
being the same code on the same ordered steps, the same weights.

Fault tolerance: a worker that dies mid-iteration (node lost, OOM kill, ``ray.kill``) is replaced by a fresh
actor and its whole shard is re-played. The shard's episodes are a pure function of (weights, specs), so the
re-run gives exactly the episodes the dead worker would have returned: none lost, none counted twice (the
learner checks the gathered episode ids against the specs). Each restart is a warning in run.log and the
``worker_restarts`` / ``rerun_episodes`` metrics of that iteration.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from frugalft.reflect.rollout import Episode, EpisodeSpec, RolloutStats
from frugalft.reflect.train import Players, RLConfig

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
    q, r = divmod(len(items), parts)
    out, start = [], 0
    for w in range(parts):
        size = q + (1 if w < r else 0)
        out.append(items[start:start + size])
        start += size
    return out


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
        from frugalft.distributed.seeded_rollout import collect_seeded

        load_trainable_state(self.players.policy, weights)
        stats = RolloutStats()
        episodes = collect_seeded(self.vec, specs, self.players, self.config.temperature, self.config.seed, stats)
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


# ---- the learner ---------------------------------------------------------------------------------------
def train_distributed(
    config: RLConfig,
    run_dir: str | Path,
    workers: int = 2,
    address: str | None = None,
    resume: bool = True,
    players: Players | None = None,
    pool: RolloutPool | None = None,
    stop_after: int | None = None,
    on_dispatch: Callable[[int, RolloutPool], None] | None = None,
    on_episodes: Callable[[int, list[Episode]], None] | None = None,
    cpus_per_worker: float = 1,
    gpus_per_worker: float = 0,
) -> dict[str, Any]:
    """``frugalft.reflect.train.train`` with the rollouts on ``workers`` Ray actors (0: in this process).

    Same curriculum, episode specs, update, metrics, checkpoints and resume as the single-process loop; the
    rollout is ``seeded_rollout.collect_seeded`` everywhere, so the result does not depend on ``workers``.
    Extra metrics: ``rollout_workers``, ``worker_restarts`` and ``rerun_episodes`` (this iteration),
    ``rollout_s`` and ``update_s`` (wall-clock seconds of the two phases).
    ``pool`` reuses started actors (built for the same config); ``on_episodes(iteration, episodes)`` sees
    every gathered batch (tests, tracing).
    """
    from frugalft.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
    from frugalft.distributed.seeded_rollout import collect_seeded
    from frugalft.reflect.ppo import ppo_update
    from frugalft.reflect.reinforce import SuccessReplay, reinforce_update
    from frugalft.reflect.train import (
        batch_metrics,
        build_players,
        curriculum_position,
        episode_specs,
        level_budgets,
        make_vec,
        task_groups,
    )
    from frugalft.runs import RunDir
    from frugalft.seeding import seed_everything

    seed_everything(config.seed)
    players = players or build_players(config)
    policy = players.policy
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    replay = SuccessReplay(config.replay_capacity) if config.algorithm == "reinforce" and config.replay_capacity else None
    run = RunDir(run_dir, config=config, resume=resume)
    heads = {"value_head": policy.value_head} if policy.value_head is not None else {}
    start, episodes_done = 0, 0
    ckpt = latest_checkpoint(run.checkpoints) if resume and run.checkpoints.exists() else None
    if ckpt is not None:
        state = load_checkpoint(ckpt, policy.lm, optimizer, heads=heads)
        start, episodes_done = state["step"], state["counters"]["episodes"]
        if replay is not None:
            replay.load(state["counters"].get("replay", []))
        run.truncate_metrics(start)
        run.log.info("resumed from %s at iteration %d (%d episodes consumed)", ckpt.name, start, episodes_done)
    else:
        run.truncate_metrics(0)

    own_pool = pool is None and workers > 0
    if own_pool:
        pool = RolloutPool(config, workers, address, cpus_per_worker, gpus_per_worker, logger=run.log)
    elif pool is not None:
        pool.log = run.log
    vec = make_vec(config, "train", config.num_envs) if pool is None else make_vec(config, "train", 1)
    groups = task_groups(config, vec.envs[0].unwrapped)
    budgets = level_budgets([len(ids) for _, ids in groups], config.iterations)
    run.log.info("distributed RL: %d rollout workers (%s); curriculum %s", pool.workers if pool else 0,
                 "ray" if pool else "in-process", [(lv, len(ids), b) for (lv, ids), b in zip(groups, budgets,
                                                                                             strict=True)])
    metrics: dict[str, Any] = {}
    last_group = curriculum_position(budgets, start)[0] if start < config.iterations else None
    end = config.iterations if stop_after is None else min(config.iterations, start + stop_after)
    try:
        for it in range(start, end):
            group, offset = curriculum_position(budgets, it)
            level, tasks = groups[group]
            if replay is not None and group != last_group:
                replay.clear()
            last_group = group
            t0 = time.perf_counter()
            specs = episode_specs(tasks, config.seed, group, offset * config.num_envs, config.num_envs, episodes_done)
            if pool is None:
                stats = RolloutStats()
                episodes = collect_seeded(vec, specs, players, config.temperature, config.seed, stats)
                report = GatherReport(stats=stats)
            else:
                episodes, report = pool.collect(trainable_state(policy), specs, it, on_dispatch)
            t1 = time.perf_counter()
            if on_episodes is not None:
                on_episodes(it, episodes)
            rng = random.Random(f"update-{config.seed}-{it}")
            if config.algorithm == "reinforce":
                upd = reinforce_update(policy, optimizer, episodes, replay, rng, config.temperature,
                                       config.max_grad_norm, config.minibatch, config.replay_episodes,
                                       config.baseline, config.entropy_coef)
            else:
                upd = ppo_update(policy, optimizer, episodes, rng, config.temperature, config.max_grad_norm,
                                 config.minibatch, config.ppo_epochs, config.ppo_clip, config.vf_coef,
                                 config.kl_coef, config.gamma, config.gae_lambda, config.entropy_coef)
            t2 = time.perf_counter()
            episodes_done += len(episodes)
            assert report.stats is not None
            metrics = {
                **batch_metrics(episodes),
                "loss": upd["loss"],
                "grad_norm": upd["grad_norm"],
                "steps_per_s": report.stats.env_steps / (time.perf_counter() - t0),
                "rollout_s": t1 - t0,  # broadcast + play + gather (wall clock, restarts included)
                "update_s": t2 - t1,
                "level": level if level is not None else -1,
                "episodes": episodes_done,
                "rollout_workers": pool.workers if pool is not None else 0,
                "worker_restarts": report.restarts,
                "rerun_episodes": report.rerun_episodes,
                **{k: v for k, v in upd.items() if k not in ("loss", "grad_norm", "entropy", "kl")},
            }
            if config.eval_interval and ((it + 1) % config.eval_interval == 0 or it + 1 == config.iterations):
                from frugalft.reflect.evaluate import evaluate  # in the learner, as frugalft.reflect.train

                res = evaluate(players, config, split=config.eval_split, max_tasks=config.eval_max_tasks,
                               greedy=config.eval_greedy, diagnostic=False,
                               levels=[level] if level is not None else None)
                metrics.update(eval_success=res.success, eval_return=res.ret, eval_episode_length=res.length)
            run.log_metrics(it + 1, **metrics)
            run.log.info("iter %d level %s return %.3f success %.2f loss %.4f (%d workers, %d restarts)", it + 1,
                         level, metrics["return"], metrics["success"], metrics["loss"], metrics["rollout_workers"],
                         report.restarts)
            if (it + 1) % config.checkpoint_interval == 0 or it + 1 == config.iterations:
                save_checkpoint(run.checkpoints, it + 1, policy.lm, optimizer, heads=heads, counters={
                    "episodes": episodes_done, "level": level, "group": group,
                    "replay": replay.state() if replay is not None else [],
                })
    finally:
        vec.close()
        if own_pool and pool is not None:
            pool.close()
    final = latest_checkpoint(run.checkpoints) if run.checkpoints.exists() else None
    return {**metrics, "checkpoint": str(final) if final else None}

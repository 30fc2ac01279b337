"""Online RL of the policy with the reflection model frozen (SPEC A.1 step 3, A.3, A.4 curriculum).

    for iteration in range(iterations):
        level  <- curriculum position of this iteration (levels in order, budgets proportional to task counts)
        specs  <- the next num_envs episodes of that level (a seeded, counter-derived task order; GRPO: the next
                  num_envs / group_size tasks, each played group_size times)
        episodes <- backend.play(players, specs)       # reflect -> prompt -> label -> env step, batched
                    (in this process, or on `workers` Ray actors; the same episodes either way)
        update(policy, optimizer, episodes, rng)   # REINFORCE (+ success replay), PPO or GRPO: update_rule()
        log metrics; every checkpoint_interval: checkpoint with counters

Scale-out (docs/scaling.md) changes who computes, not what: the loop is handed a rollout backend
(``frugalft.reflect.backends``: in this process, or ``workers: N`` Ray actors that the caller builds with
``frugalft.distributed.ray_rollout.make_backend``) and ``accelerate launch --num_processes W`` splits rollout
and update over W learner processes (``frugalft.parallel``).
Every episode draws from its own seeded random streams (``rollout.collect_episodes``), so a seeded run gives
the same episodes and, up to float summation order, the same weights in all three layouts.

Everything an iteration consumes (its tasks, reset seeds, label shuffles, replay sampling) is a function of the
seed and the iteration number, and the checkpoint restores the RNG streams, weights, optimizer and replay
buffer, so a killed run resumes from its last checkpoint without repeating or losing episodes.

Metrics (metrics.jsonl, one row per iteration; stable names): ``return``, ``success``, ``episode_length``
(batch means), ``entropy`` (mean policy entropy at the sampled steps), ``kl`` (mean exact KL from the acting
policy to the reference = the policy at the start of RL, over the listed actions), ``loss``, ``grad_norm``
(before clipping), ``steps_per_s`` (environment steps per second, rollout + update), ``level``, ``episodes``
(consumed so far), and every ``eval_interval`` iterations ``eval_success``, ``eval_return``,
``eval_episode_length``; and ``rollout_s`` / ``update_s`` (wall-clock seconds of the two phases),
``rollout_workers``, ``worker_restarts`` and ``rerun_episodes`` (Ray actors replaced this iteration and the
episodes they re-ran), ``processes`` (learner processes); plus the update's own: REINFORCE ``replay_loss``,
``replay_size``; PPO ``policy_loss``, ``value_loss``, ``clipfrac``; GRPO ``adv_std``, ``zero_adv_groups``
(groups without signal) and, with ``kl_coef > 0``, ``kl_penalty``.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from frugalft.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from frugalft.models.precision import bf16_autocast, training_attention
from frugalft.parallel import DataParallel
from frugalft.parallel import setup as data_parallel
from frugalft.reflect.backends import RolloutBackend, make_backend, make_vec
from frugalft.reflect.backends import play as play  # the training rollout, re-exported (Ray workers, tests)
from frugalft.reflect.evaluate import evaluate
from frugalft.reflect.grpo import GRPOSettings, grpo_update
from frugalft.reflect.players import Players, RLConfig, build_players, groups_per_batch, load_lm  # noqa: F401
from frugalft.reflect.policy import Policy
from frugalft.reflect.ppo import PPOSettings, ppo_update
from frugalft.reflect.reinforce import ReinforceSettings, SuccessReplay, reinforce_update
from frugalft.reflect.rollout import Episode, EpisodeSpec
from frugalft.runs import RunDir, progress
from frugalft.seeding import seed_everything


# ---- tasks and the curriculum ----------------------------------------------------------------------------
def task_groups(config: RLConfig, env: Any) -> list[tuple[int | None, list[str]]]:
    """``[(level, task ids)]`` in training order: one group per level, or a single mixed group."""
    if config.task_ids:
        return [(None, list(config.task_ids))]
    levels = config.levels if config.levels is not None else list(env.levels)
    groups = []
    for lv in levels:
        ids = env.task_ids("train", lv)
        if config.max_tasks_per_level is not None:
            ids = ids[: config.max_tasks_per_level]
        if not ids:
            raise ValueError(f"no train tasks at level {lv} of {config.env}")
        groups.append((lv, ids))
    if config.curriculum == "mixed":
        return [(None, [t for _, ids in groups for t in ids])]
    return groups


def level_budgets(sizes: list[int], iterations: int) -> list[int]:
    """Iterations per group, proportional to its task count, summing to ``iterations`` (largest remainder)."""
    total = sum(sizes)
    raw = [iterations * s / total for s in sizes]
    out = [math.floor(r) for r in raw]
    for i in sorted(range(len(sizes)), key=lambda i: raw[i] - out[i], reverse=True)[: iterations - sum(out)]:
        out[i] += 1
    return out


def curriculum_position(budgets: list[int], iteration: int) -> tuple[int, int]:
    """(group index, iterations already spent in that group) of ``iteration``."""
    start = 0
    for g, b in enumerate(budgets):
        if iteration < start + b:
            return g, iteration - start
        start += b
    return len(budgets) - 1, iteration - (start - budgets[-1])


def episode_specs(tasks: list[str], seed: int, group: int, offset: int, n: int, first_id: int) -> list[EpisodeSpec]:
    """Episodes ``offset .. offset+n-1`` of a group: its tasks in a seeded order, reshuffled every pass."""
    specs = []
    for k in range(offset, offset + n):
        epoch, pos = divmod(k, len(tasks))
        order = list(tasks)
        random.Random(f"tasks-{seed}-{group}-{epoch}").shuffle(order)
        eid = first_id + (k - offset)
        specs.append(EpisodeSpec(task_id=order[pos], seed=seed * 1_000_003 + eid, episode_id=eid))
    return specs


def group_episode_specs(tasks: list[str], seed: int, group: int, offset: int, n_groups: int, group_size: int,
                        first_id: int) -> list[EpisodeSpec]:
    """GRPO's batch: tasks ``offset .. offset+n_groups-1`` of ``episode_specs``' seeded order, each played
    ``group_size`` times in a row (the same task id; consecutive episode ids, hence different reset seeds and
    sampling streams)."""
    specs = []
    for i, task in enumerate(s.task_id for s in episode_specs(tasks, seed, group, offset, n_groups, 0)):
        for j in range(group_size):
            eid = first_id + i * group_size + j
            specs.append(EpisodeSpec(task_id=task, seed=seed * 1_000_003 + eid, episode_id=eid))
    return specs


# ---- the loop --------------------------------------------------------------------------------------------
class _RankRun:
    """What a learner process other than rank 0 has of the run directory: it reads checkpoints, writes nothing."""

    def __init__(self, path: Path):
        self.checkpoints = path / "checkpoints"
        self.log = logging.getLogger("frugalft.rl.rank")

    def log_metrics(self, step: int, **metrics: Any) -> None:
        pass

    def truncate_metrics(self, after_step: int) -> None:
        pass


UpdateRule = Callable[[Policy, torch.optim.Optimizer, list[Episode], random.Random], dict[str, float]]


def update_rule(config: RLConfig, replay: SuccessReplay | None, dp: DataParallel) -> UpdateRule:
    """The algorithm's update with its settings read from ``config`` once: ``update(policy, optimizer,
    episodes, rng) -> metrics``, under ``config.update_autocast``."""
    rule = _algorithm_rule(config, replay, dp)
    if config.update_autocast == "off":
        return rule
    choice = config.update_autocast

    def under_autocast(policy: Policy, opt: torch.optim.Optimizer, episodes: list[Episode],
                       rng: random.Random) -> dict[str, float]:
        with training_attention(policy.lm, choice), bf16_autocast(choice, policy.device):
            return rule(policy, opt, episodes, rng)

    return under_autocast


def _algorithm_rule(config: RLConfig, replay: SuccessReplay | None, dp: DataParallel) -> UpdateRule:
    c = config
    shared = {"temperature": c.temperature, "max_grad_norm": c.max_grad_norm, "minibatch": c.minibatch,
              "entropy_coef": c.entropy_coef}
    if c.algorithm == "reinforce":
        rs = ReinforceSettings(**shared, replay_episodes=c.replay_episodes, baseline=c.baseline)
        return lambda policy, opt, episodes, rng: reinforce_update(policy, opt, episodes, replay, rng, rs, dp)
    if c.algorithm == "grpo":
        gs = GRPOSettings(**shared, group_size=c.group_size, normalize_std=c.grpo_normalize_std,
                          advantage=c.grpo_advantage, kl_coef=c.kl_coef, gamma=c.gamma)
        return lambda policy, opt, episodes, rng: grpo_update(policy, opt, episodes, gs, dp)
    ps = PPOSettings(**shared, epochs=c.ppo_epochs, clip=c.ppo_clip, vf_coef=c.vf_coef, kl_coef=c.kl_coef,
                     gamma=c.gamma, lam=c.gae_lambda)
    return lambda policy, opt, episodes, rng: ppo_update(policy, opt, episodes, rng, ps, dp)


def train(config: RLConfig, run_dir: str | Path | RunDir, resume: bool = True,
          players: Players | None = None, stop_after: int | None = None, backend: RolloutBackend | None = None,
          on_episodes: Callable[[int, list[Episode]], None] | None = None) -> dict[str, Any]:
    """Run RL; resumes from ``run_dir``'s last checkpoint when there is one (and ``resume``).

    ``players`` reuses loaded models (else ``build_players(config)``); ``stop_after`` ends this call after that
    many iterations as if the process were killed there (tests, time-boxed jobs); a later call resumes.
    ``backend`` plays the episodes (``frugalft.reflect.backends``; the caller made it for this config and
    closes it: ``workers: N`` needs one, ``frugalft.distributed.ray_rollout.make_backend(config)``); without
    one, ``make_backend(config)`` plays in this process, and is closed at the end. ``on_episodes(iteration, episodes)`` sees every gathered batch
    (tests, tracing). Returns the last iteration's metrics (plus ``checkpoint``: the newest checkpoint's path).
    """
    n_groups = groups_per_batch(config) if config.algorithm == "grpo" else 0
    dp = data_parallel(config.device)
    if dp.world > 1 and (config.workers or (backend is not None and backend.workers)):
        raise ValueError("Ray rollout workers and an accelerate launch of several learner processes do not mix: "
                         "set workers: 0 under accelerate launch")
    if dp.device is not None and config.device != "cpu":
        config = replace(config, device=dp.device)  # each process its own GPU (cuda:<local rank>)
    seed_everything(config.seed)  # the same on every process: identical initial weights
    players = players or build_players(config)
    policy = players.policy
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    replay = SuccessReplay(config.replay_capacity) if config.algorithm == "reinforce" and config.replay_capacity else None
    update = update_rule(config, replay, dp)

    if not dp.is_main:
        run: Any = _RankRun(Path(run_dir.path if isinstance(run_dir, RunDir) else run_dir))
    else:
        run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir, config=config, resume=resume)
    heads = {"value_head": policy.value_head} if policy.value_head is not None else {}
    start, episodes_done = 0, 0
    ckpt = latest_checkpoint(run.checkpoints) if resume and run.checkpoints.exists() else None
    if ckpt is not None:
        state = load_checkpoint(ckpt, policy.lm, optimizer, heads=heads)  # restores the RNG streams too
        start, episodes_done = state["step"], state["counters"]["episodes"]
        if replay is not None:
            replay.load(state["counters"].get("replay", []))
        run.truncate_metrics(start)
        run.log.info("resumed from %s at iteration %d (%d episodes consumed)", ckpt.name, start, episodes_done)
    else:
        run.truncate_metrics(0)  # rows of an earlier attempt that never reached a checkpoint

    tasks_env = make_vec(config, "train", 1)  # the task lists; the backend owns the environments that play
    try:
        groups = task_groups(config, tasks_env.envs[0].unwrapped)
    finally:
        tasks_env.close()
    budgets = level_budgets([len(ids) for _, ids in groups], config.iterations)
    own_backend = backend is None
    if backend is None:
        backend = make_backend(config, dp)
    workers = backend.workers
    run.log.info("curriculum: %s; rollouts %s; %d learner process(es)",
                 [(lv, len(ids), b) for (lv, ids), b in zip(groups, budgets, strict=True)],
                 f"on {workers} Ray workers" if workers else "in-process", dp.world)
    metrics: dict[str, Any] = {}
    # The group of the iteration before ``start``: a resume at a level boundary still clears the buffer.
    last_group = curriculum_position(budgets, start - 1)[0] if start > 0 else None
    end = config.iterations if stop_after is None else min(config.iterations, start + stop_after)
    try:
        for it in progress(range(start, end), "RL iterations", disable=not dp.is_main):
            group, offset = curriculum_position(budgets, it)
            level, tasks = groups[group]
            if replay is not None and group != last_group:
                replay.clear()  # the buffer holds successes of the current level only
            last_group = group
            t0 = time.perf_counter()
            if config.algorithm == "grpo":
                specs = group_episode_specs(tasks, config.seed, group, offset * n_groups, n_groups,
                                            config.group_size, episodes_done)
            else:
                specs = episode_specs(tasks, config.seed, group, offset * config.num_envs, config.num_envs,
                                      episodes_done)
            rollout = backend.play(players, specs, it)
            episodes, stats = rollout.episodes, rollout.stats
            for note in rollout.notes:
                run.log.warning(note)
            t1 = time.perf_counter()
            if on_episodes is not None:
                on_episodes(it, episodes)
            rng = random.Random(f"update-{config.seed}-{it}")
            upd = update(policy, optimizer, episodes, rng)
            t2 = time.perf_counter()
            episodes_done += len(episodes)
            metrics = {
                **batch_metrics(episodes),
                "loss": upd["loss"],
                "grad_norm": upd["grad_norm"],
                "steps_per_s": stats.env_steps / (time.perf_counter() - t0),
                "rollout_s": t1 - t0,  # play (+ broadcast and gather), wall clock, restarts included
                "update_s": t2 - t1,
                "level": level if level is not None else -1,
                "episodes": episodes_done,
                "rollout_workers": workers,
                "worker_restarts": rollout.restarts,
                "rerun_episodes": rollout.rerun_episodes,
                "processes": dp.world,
                **{k: v for k, v in upd.items() if k not in ("loss", "grad_norm", "entropy", "kl")},
            }
            if dp.is_main and config.eval_interval and ((it + 1) % config.eval_interval == 0
                                                        or it + 1 == config.iterations):
                res = evaluate(players, config, split=config.eval_split, max_tasks=config.eval_max_tasks,
                               greedy=config.eval_greedy, diagnostic=False,
                               levels=[level] if level is not None else None)
                metrics.update(eval_success=res.success, eval_return=res.ret, eval_episode_length=res.length)
            run.log_metrics(it + 1, **metrics)
            run.log.info("iter %d level %s return %.3f success %.2f loss %.4f", it + 1, level, metrics["return"],
                         metrics["success"], metrics["loss"])
            if (it + 1) % config.checkpoint_interval == 0 or it + 1 == config.iterations:
                if dp.is_main:
                    save_checkpoint(run.checkpoints, it + 1, policy.lm, optimizer, heads=heads, counters={
                        "episodes": episodes_done,
                        "level": level,
                        "group": group,
                        "replay": replay.state() if replay is not None else [],
                    }, keep=1 if it + 1 == config.iterations else 3)  # a finished run needs only its last
                dp.barrier()  # no process reads LATEST before it is written
    finally:
        if own_backend:
            backend.close()
    final = latest_checkpoint(run.checkpoints) if run.checkpoints.exists() else None
    return {**metrics, "checkpoint": str(final) if final else None}


def batch_metrics(episodes: list[Episode]) -> dict[str, float]:
    """Means over a batch: return, success, episode_length, entropy and kl (per step) of the acting policy."""
    steps = [s for ep in episodes for s in ep.steps]
    return {
        "return": sum(ep.ret for ep in episodes) / len(episodes),
        "success": sum(ep.success for ep in episodes) / len(episodes),
        "episode_length": sum(ep.length for ep in episodes) / len(episodes),
        "entropy": sum(s.entropy for s in steps) / max(len(steps), 1),
        "kl": sum(s.kl for s in steps) / max(len(steps), 1),
    }

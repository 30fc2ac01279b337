"""The RL update on the CPU: float32 against bf16 autocast (``rl.update_autocast``), on real episodes.

In the packaged DangerousTaxi tables the REINFORCE update (a step on the fresh batch, then one on replayed
successes) takes most of an RL iteration's time: 1.0-3.1 s against 0.3-2.0 s of rollout (seed 4 of the
full-mode table, two processes on 2 cores). This times that update through ``frugalft.reflect.train.update_rule``,
the code path RL runs, on the successful episodes a finished RL run kept in its last checkpoint's replay buffer
(their prompts, reflections included, are the lengths RL scores; a real batch also has failures, whose
episodes are longer), from the policy that run started from, and checks what autocast changes in the numbers:
the loss and the gradient of the same update from the same weights.

    python benchmarks/bench_rl_update.py --rl-run RUN/seed-0/rl/reflect_rl [--iterations 8] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from frugalft.atomic import write_json
from frugalft.checkpoint import latest_checkpoint
from frugalft.config import load_config
from frugalft.parallel import SINGLE
from frugalft.reflect.players import RLConfig, build_players
from frugalft.reflect.reinforce import SuccessReplay, flatten
from frugalft.reflect.rollout import Episode
from frugalft.reflect.train import update_rule
from frugalft.seeding import seed_everything


def replayed_episodes(rl_run: Path) -> list[Episode]:
    ckpt = latest_checkpoint(rl_run / "checkpoints")
    if ckpt is None:
        raise SystemExit(f"{rl_run}: no checkpoint (a finished `rl train` / `rl table` RL run directory)")
    meta = json.loads((ckpt / "meta.json").read_text(encoding="utf-8"))
    episodes = [Episode.from_dict(d) for d in meta["counters"]["replay"]]
    if len(episodes) < 12:
        raise SystemExit(f"{ckpt}: {len(episodes)} replayed episodes, need 12")
    return episodes


def fresh(config: RLConfig):
    """The run's starting policy and its optimizer, as ``train`` builds them (seeded first, as ``train`` is: a
    LoRA policy's adapters are then the same in every call)."""
    seed_everything(config.seed)
    policy = build_players(config).policy
    params = [p for p in policy.parameters() if p.requires_grad]
    return policy, torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


def gradient(config: RLConfig, episodes: list[Episode]) -> tuple[float, torch.Tensor]:
    """The loss and the flattened gradient of one update on ``episodes`` from the starting weights, through
    ``update_rule`` (no replay step, no clipping, SGD at lr 0: the step changes nothing)."""
    policy, _ = fresh(config)
    params = [p for p in policy.parameters() if p.requires_grad]
    rule = update_rule(replace(config, replay_capacity=0, max_grad_norm=float("inf")), None, SINGLE)
    out = rule(policy, torch.optim.SGD(params, lr=0.0), episodes, random.Random(0))
    return out["loss"], torch.cat([p.grad.flatten() for p in params if p.grad is not None])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rl-run", type=Path, required=True, help="a finished RL run directory (REINFORCE)")
    parser.add_argument("--iterations", type=int, default=8, help="timed updates per setting, alternating")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (rl table --jobs N runs 1 each)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "rl_update.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base = load_config(RLConfig, args.rl_run / "config.yaml")
    base = replace(base, device="cpu", workers=0)
    if base.algorithm != "reinforce":
        raise SystemExit(f"{args.rl_run}: a {base.algorithm} run; this times REINFORCE's update (fresh batch + replay)")
    episodes = replayed_episodes(args.rl_run)
    steps, _ = flatten(episodes[: base.num_envs])
    result: dict = {"benchmark": "rl_update", "rl_run": str(args.rl_run), "algorithm": base.algorithm,
                    "reflection": base.reflection_model is not None, "episodes_kept": len(episodes),
                    "batches": "successful episodes only (the replay buffer's)", "steps_per_batch": len(steps), "mean_prompt_tokens": round(statistics.mean(
                        len(s.prompt_ids) for ep in episodes for s in ep.steps), 1),
                    "bf16_native": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
                    "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
                               f"{args.threads} threads", "load_average": [round(x, 2) for x in os.getloadavg()]}
    settings = {"off": replace(base, update_autocast="off"), "bf16": replace(base, update_autocast="bf16")}

    # Numbers first: the same update from the same weights, float32 and bf16.
    (loss32, g32), (loss16, g16) = (gradient(settings[k], episodes[: base.num_envs]) for k in ("off", "bf16"))
    result["loss_float32"], result["loss_bf16"] = round(loss32, 6), round(loss16, 6)
    result["gradient_cosine"] = round(float(torch.nn.functional.cosine_similarity(g32.double(), g16.double(), dim=0)), 5)
    result["gradient_norm_ratio"] = round(float(g16.norm() / g32.norm()), 5)

    # Time: each setting's own policy and optimizer, iterations alternating so drifts in load hit both alike.
    runs = {}
    for name, cfg in settings.items():
        policy, opt = fresh(cfg)
        replay = SuccessReplay(cfg.replay_capacity)
        runs[name] = (policy, opt, replay, update_rule(cfg, replay, SINGLE))
    wall: dict[str, list[float]] = {k: [] for k in settings}
    cpu: dict[str, list[float]] = {k: [] for k in settings}
    n = base.num_envs
    for it in range(args.iterations + 1):  # the first of each is a warm-up, not timed
        batch = [episodes[(it * n + j) % len(episodes)] for j in range(n)]
        order = list(runs.items()) if it % 2 == 0 else list(runs.items())[::-1]
        for name, (policy, opt, _, update) in order:
            w, c = time.perf_counter(), time.process_time()
            update(policy, opt, batch, random.Random(f"update-{it}"))
            if it:
                wall[name].append(time.perf_counter() - w)
                cpu[name].append(time.process_time() - c)
    for name in settings:
        result[f"{name}_update_s_median"] = round(statistics.median(wall[name]), 3)
        result[f"{name}_update_cpu_s_median"] = round(statistics.median(cpu[name]), 3)
    result["float32_over_bf16_cpu"] = round(result["off_update_cpu_s_median"] / result["bf16_update_cpu_s_median"], 3)
    result["float32_over_bf16_wall"] = round(result["off_update_s_median"] / result["bf16_update_s_median"], 3)
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    write_json(args.out, result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

"""Rollout throughput: our batched Reflect-RL rollout versus the authors' shape, in the same run.

Both sides play the same DangerousTaxi episodes (same tasks, seeds and models, reflection on) through
``frugalft.reflect.rollout.collect_episodes``:
- ours: 16 environments stepped together; one batched reflection decode (KV cache) and one batched policy
  forward per step for all environments still playing;
- the authors' shape: one environment at a time, batch 1 (their loop reflected and acted per environment),
  measured twice: with our decoder (the effect of batching alone; ``speedup``) and with transformers'
  ``generate`` as their code used (``speedup_vs_hf_generate``).

Reported: environment steps per second of each and the ratios (target >= 5x), written as JSON. The untrained
policies crash within a step or two, so every environment that finishes takes the next waiting episode at
once (``collect_episodes`` refills), and the batched side stays full until the queue runs dry.

    python benchmarks/bench_rollout.py [--quick] [--model tiny] [--device auto]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

from frugalft.atomic import write_json
from frugalft.envs import VecTextEnv, make
from frugalft.reflect.evaluate import evaluation_specs
from frugalft.reflect.rollout import RolloutStats, collect_episodes
from frugalft.reflect.train import RLConfig, build_players


def measure(players, env_kwargs: dict, specs, n_envs: int, repeats: int) -> dict:
    """Best-of-``repeats`` environment steps per second playing ``specs`` with ``n_envs`` environments."""
    vec = VecTextEnv([lambda: make("DangerousTaxi", split="test", **env_kwargs) for _ in range(n_envs)])
    best = None
    for r in range(repeats):
        torch.manual_seed(r)
        stats = RolloutStats()
        t = time.perf_counter()
        collect_episodes(vec, specs, players.policy, players.tokenizer, players.alphabet, players.reflector,
                         temperature=1.0, stats=stats, seed=r)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t
        row = {"env_steps": stats.env_steps, "seconds": round(seconds, 3),
               "steps_per_s": round(stats.env_steps / seconds, 2),
               "reflect_share": round(stats.reflect_seconds / seconds, 3)}
        if best is None or row["steps_per_s"] > best["steps_per_s"]:
            best = row
    vec.close()
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny-test models, fewer episodes (CI)")
    parser.add_argument("--model", default=None, help="policy and reflection model (default tiny; quick: tiny-test)")
    parser.add_argument("--envs", type=int, default=16, help="parallel environments of the batched side")
    parser.add_argument("--episodes", type=int, default=None, help="episodes per side (default 96; quick 32)")
    parser.add_argument("--reflection-tokens", type=int, default=None, help="cap per reflection (32; quick 16)")
    parser.add_argument("--repeats", type=int, default=None, help="best of N timings per side (2; quick 1)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "rollout.json")
    args = parser.parse_args()
    model = args.model or ("tiny-test" if args.quick else "tiny")
    episodes = args.episodes or (32 if args.quick else 96)
    tokens = args.reflection_tokens or (16 if args.quick else 32)
    repeats = args.repeats or (1 if args.quick else 2)

    cfg = RLConfig(policy_model=model, reflection_model=model, reflection_tokens=tokens, device=args.device,
                   track_kl=False, seed=0)
    players = build_players(cfg)
    env = make("DangerousTaxi", split="test")
    # Full-mode tasks (level 2): the longest episodes, so batches stay full for longer.
    specs = evaluation_specs(env, "test", [2], episodes, 1, seed=0)
    batched = measure(players, cfg.env_kwargs, specs, args.envs, repeats)
    single = measure(players, cfg.env_kwargs, specs, 1, repeats)
    players.reflector.use_hf_generate = True
    single_hf = measure(players, cfg.env_kwargs, specs, 1, repeats)
    players.reflector.use_hf_generate = False
    ratio = batched["steps_per_s"] / single["steps_per_s"]
    ratio_hf = batched["steps_per_s"] / single_hf["steps_per_s"]
    device = next(players.policy.parameters()).device
    result = {
        "benchmark": "rollout",
        "quick": args.quick,
        "model": model,
        "reflection_tokens": tokens,
        "episodes": episodes,
        "device": str(device) + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else ""),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
                   f"{torch.get_num_threads()} threads",
        "batched": {"envs": args.envs, **batched},
        "authors_shape": {"envs": 1, **single},
        "authors_shape_hf_generate": {"envs": 1, **single_hf},
        "speedup": round(ratio, 2),
        "speedup_vs_hf_generate": round(ratio_hf, 2),
        "target_speedup": 5.0,
    }
    write_json(args.out, result)
    print(f"batched ({args.envs} envs): {batched['steps_per_s']:.1f} env steps/s; "
          f"one env at a time: {single['steps_per_s']:.1f} env steps/s (with transformers' generate: "
          f"{single_hf['steps_per_s']:.1f}); speedup {ratio:.1f}x, {ratio_hf:.1f}x vs generate (target >= 5x)")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

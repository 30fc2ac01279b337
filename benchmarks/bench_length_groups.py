"""Length-grouped warm-up batches (``warmup.length_groups``) against random ones, in the same run (issue 11).

Any Reflect-RL config's warm-up (``--config``; default ``autoexplore_cpu.yaml``, where grouping was introduced).
AutoExplore's prompts vary from ~200 to ~1,500 tokens (a file's first 600 characters can be 1,300 tokens of
Unicode tables), so a batch drawn at random is padded to its longest example. Both sides train each player on
the same warm-up sets (the config's data for one seed, made here), no validation,
``--steps`` steps each; reported: seconds per optimizer step (model loading included, the same on both sides),
the padded tokens a batch carries on average, and the ratios. Written as JSON with the machine's load.

    python benchmarks/bench_length_groups.py [--config PATH] [--steps 40] [--groups 8] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from frugalft.atomic import write_json
from frugalft.config import load_config
from frugalft.models.env_tokenizer import env_tokenizer
from frugalft.reflect.table import ExperimentConfig, run_data
from frugalft.reflect.warmup import (
    alphabet_of,
    batch_indices,
    encode_policy_set,
    read_jsonl,
    train_policy,
    train_reflection,
)

CONFIG = Path(__file__).parents[1] / "src" / "frugalft" / "configs" / "rl" / "autoexplore_cpu.yaml"


def padded_tokens(lengths: list[int], batch: int, seed: int, groups: int, steps: int = 2000) -> float:
    """Mean tokens of a right-padded batch (batch x its longest example) over ``steps`` draws."""
    return statistics.mean(batch * max(lengths[i] for i in batch_indices(len(lengths), batch, seed, s, lengths,
                                                                         groups)) for s in range(steps))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=CONFIG, help="a Reflect-RL (rl table) config")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--groups", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (rl table --jobs N runs 1 each)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "length_groups.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    exp = load_config(ExperimentConfig, args.config)
    result: dict = {"benchmark": "length_groups", "config": args.config.name, "env": exp.env, "model": exp.model,
                    "steps": args.steps, "groups": args.groups, "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch "
                    f"{torch.__version__}, {args.threads} threads",
                    "load_average": [round(x, 2) for x in os.getloadavg()]}
    with tempfile.TemporaryDirectory() as tmp:
        data = run_data(exp, tmp, args.seed, log=lambda *a: None)
        _, warm, _ = exp.for_seed(args.seed)
        rows = read_jsonl(data / "policy.jsonl")
        lengths = [len(e.prompt) for e in encode_policy_set(env_tokenizer(), rows, alphabet_of(warm),
                                                               warm.max_length, warm.seed)]
        result["policy_prompt_tokens"] = {"median": statistics.median(lengths), "max": max(lengths),
                                          "examples": len(lengths)}
        for side, groups in (("random", 1), ("grouped", args.groups)):
            warm.length_groups, warm.val_fraction = groups, 0.0
            warm.reflection_steps = warm.policy_steps = args.steps
            warm.checkpoint_every = 10 * args.steps
            out = Path(tmp) / side
            t = time.perf_counter()
            train_reflection(warm, data / "reflection.jsonl", out / "reflection", log=lambda *a: None)
            reflection = time.perf_counter() - t
            t = time.perf_counter()
            train_policy(warm, data / "policy.jsonl", out / "policy", log=lambda *a: None)
            policy = time.perf_counter() - t
            result[side] = {"reflection_s_per_step": round(reflection / args.steps, 3),
                            "policy_s_per_step": round(policy / args.steps, 3),
                            "policy_padded_tokens_per_batch": round(padded_tokens(lengths, warm.batch_size,
                                                                                  args.seed, groups))}
            print(side, result[side], flush=True)
    r, g = result["random"], result["grouped"]
    result["speedup_reflection"] = round(r["reflection_s_per_step"] / g["reflection_s_per_step"], 2)
    result["speedup_policy"] = round(r["policy_s_per_step"] / g["policy_s_per_step"], 2)
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    write_json(args.out, result)
    print(f"length groups of {args.groups}: reflection {result['speedup_reflection']}x, policy "
          f"{result['speedup_policy']}x faster per step; wrote {args.out}")


if __name__ == "__main__":
    main()

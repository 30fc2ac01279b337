"""Resident memory of a CPU warm-up whose batch shapes change every step, with and without
``frugalft.native_memory`` (issue 24: two ALFWorld seed processes reached 11-13 GB each, one was killed).

Each side is a fresh process (both bounds are per process) training `tiny-env` with the warm-up's recipe
(AdamW, bf16 autocast where the CPU has it, matmul attention under it: ``use_training_attention``) on random
token batches of ``--batch`` rows whose length is drawn anew each step in [``--min-len``, ``--max-len``], as
length-grouped ALFWorld prompts are. Sides:
- ``default``: what the CLI ran before (oneDNN's 1,024-primitive cache, glibc's moving mmap threshold);
- ``bounded``: ``bounded_environment``, what ``rl table --jobs N --bound-memory`` gives its seed processes;
- ``bounded-sdpa``: as ``bounded``, with PyTorch's SDPA attention instead of the matmul attention the warm-up
  picks under autocast (chosen on DangerousTaxi's prompts of a few hundred tokens: benchmarks/bench_warmup.py);
- ``float32``: no autocast, no bounds, SDPA attention (the reference: no oneDNN bf16 primitives).

Reported per side: resident MB after every step, its growth per step over the second half, the peak, seconds
per step after two untimed ones, and the loss at every step (``default`` and ``bounded`` must match exactly:
the bounds change no number). Written as JSON with the machine's load before and after.

    python benchmarks/bench_native_memory.py [--steps 60] [--out benchmarks/results/native_memory.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

from frugalft.native_memory import BOUNDS, bounded_environment

SIDES = ("default", "bounded", "bounded-sdpa", "float32")


def resident_mb() -> float:
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("VmRSS:")).split()[1]) / 1024


def child(side: str, steps: int, batch: int, min_len: int, max_len: int, threads: int) -> dict:
    import numpy as np
    import torch

    from frugalft.reflect.warmup import WarmupConfig, _load_base, autocast_context, masked_lm_loss

    torch.set_num_threads(threads)
    cfg = WarmupConfig(model="tiny-env", device="cpu", seed=0, autocast="off" if side == "float32" else "auto")
    lm, _ = _load_base(cfg)  # the warm-up's own loading: seeded init, matmul attention under autocast
    if side == "bounded-sdpa":
        lm.set_attn_implementation("sdpa")
    opt = torch.optim.AdamW(lm.parameters(), lr=cfg.lr)
    rng = np.random.default_rng(0)
    vocab = lm.config.vocab_size
    resident, losses, seconds = [], [], []
    for _ in range(steps):
        length = int(rng.integers(min_len, max_len + 1))
        ids = torch.as_tensor(rng.integers(0, vocab, size=(batch, length)))
        mask = torch.ones_like(ids)
        target = torch.ones_like(ids)
        start = time.perf_counter()
        with autocast_context(cfg, torch.device("cpu")):
            loss = masked_lm_loss(lm, ids, mask, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        seconds.append(time.perf_counter() - start)
        losses.append(float(loss.detach()))
        resident.append(round(resident_mb(), 1))
    half = steps // 2
    return {
        "side": side,
        "environment": {k: os.environ.get(k) for k in BOUNDS},
        "resident_mb": resident,
        "growth_mb_per_step_second_half": round((resident[-1] - resident[half]) / (steps - 1 - half), 2),
        "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "seconds_per_step": round(sum(seconds[2:]) / len(seconds[2:]), 4),
        "losses": losses,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--min-len", type=int, default=300)
    ap.add_argument("--max-len", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1, help="one thread: as each `rl table --jobs 2` seed process")
    ap.add_argument("--sides", default=",".join(SIDES))
    ap.add_argument("--out", default="benchmarks/results/native_memory.json")
    ap.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.steps, args.batch, args.min_len, args.max_len, args.threads)))
        return

    load_before = os.getloadavg()
    results = {}
    for side in args.sides.split(","):
        env = {k: v for k, v in os.environ.items() if k not in BOUNDS}
        env["OMP_NUM_THREADS"] = str(args.threads)
        env = bounded_environment(env) if side.startswith("bounded") else env
        cmd = [sys.executable, __file__, "--child", side, "--steps", str(args.steps), "--batch", str(args.batch),
               "--min-len", str(args.min_len), "--max-len", str(args.max_len), "--threads", str(args.threads)]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        results[side] = json.loads(out.stdout.strip().splitlines()[-1])
        r = results[side]
        print(f"{side}: resident {r['resident_mb'][0]:.0f} -> {r['resident_mb'][-1]:.0f} MB, "
              f"{r['growth_mb_per_step_second_half']:+.1f} MB/step over the second half, peak {r['peak_mb']:.0f} MB, "
              f"{r['seconds_per_step']:.3f} s/step", flush=True)
    if "default" in results and "bounded" in results:
        same = results["default"]["losses"] == results["bounded"]["losses"]
        speed = results["default"]["seconds_per_step"] / results["bounded"]["seconds_per_step"]
        print(f"bounded vs default: losses identical at every step: {same}; speed {speed:.2f}x")
    report = {"args": vars(args), "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
              "load_before": load_before, "load_after": os.getloadavg(), "sides": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

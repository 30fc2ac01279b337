"""Facility location on a GPU: the dense n x n RBF kernel held in GPU memory, exact lazy greedy.

At n = 100k the kernel is 40 GB in float32: too big for a laptop, small for an H200's 141 GB, and each greedy step
re-scores only the candidates whose stale gain could still win (a few small passes). Before timing, the GPU path is checked against frugalft's CPU lazy greedy
(`frugalft.design.facility_location`) on a subsample: same picks, same objective.

    python benchmarks/gpu_facility_location.py [--n 100000] [--k 1000] [--device cuda]
    python benchmarks/gpu_facility_location.py --n 3000 --k 50 --device cpu    # the same code path, on a CPU
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from frugalft.design.facility_location import RbfKernel, lazy_greedy
from frugalft.design.facility_location import objective as cpu_objective


def rbf_kernel(x: torch.Tensor, sigma: float, block: int = 8192) -> torch.Tensor:
    """exp(-|xi - xj|^2 / sigma^2), built block by block so only the output is n x n."""
    n = x.shape[0]
    sq = (x * x).sum(1)
    s = torch.empty(n, n, device=x.device, dtype=torch.float32)
    for i in range(0, n, block):
        d2 = (sq[i:i + block, None] + sq[None, :] - 2 * x[i:i + block] @ x.T).clamp_min_(0)
        s[i:i + block] = torch.exp(-d2 / sigma**2)
    return s


def greedy(s: torch.Tensor, k: int, batch: int = 256) -> tuple[list[int], list[float]]:
    """Exact lazy greedy on the device (s is symmetric, so row j is candidate j's similarities).

    Gains only shrink as the selection grows, so a stale gain is an upper bound. Each round scores the ``batch``
    best-bounded candidates that are stale at this step, in one (batch x n) pass; the best fresh gain is the greedy
    pick once it tops every stale bound. A step costs a few small passes instead of one over the whole kernel.
    """
    n = s.shape[0]
    cover = torch.zeros(n, device=s.device, dtype=torch.float32)
    bound = torch.empty(n, device=s.device, dtype=torch.float64)
    for i in range(0, n, 8192):  # with cover = 0 the gains are the row sums
        bound[i:i + 8192] = s[i:i + 8192].sum(1, dtype=torch.float64)
    fresh = torch.zeros(n, device=s.device, dtype=torch.bool)
    neg_inf = torch.tensor(-torch.inf, device=s.device, dtype=torch.float64)
    picks, gains = [], []
    for _ in range(k):
        fresh.zero_()
        while True:
            stale_bound = torch.where(fresh, neg_inf, bound)
            idx = torch.topk(stale_bound, min(batch, n)).indices
            idx = idx[torch.isfinite(stale_bound[idx])]
            if idx.numel():
                bound[idx] = (s[idx] - cover).clamp_min_(0).sum(1, dtype=torch.float64)
                fresh[idx] = True
            fresh_bound = torch.where(fresh, bound, neg_inf)
            j = int(torch.argmax(fresh_bound))  # first maximum: ties go to the lower index
            if bool(fresh_bound[j] >= torch.where(fresh, neg_inf, bound).max()):
                break
        picks.append(j)
        gains.append(float(bound[j]))
        bound[j] = -torch.inf  # never picked twice
        torch.maximum(cover, s[j], out=cover)
    return picks, gains


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--d", type=int, default=384)
    parser.add_argument("--check-n", type=int, default=3000, help="subsample checked against the CPU greedy")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "gpu_facility_location.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    rng = np.random.default_rng(0)
    # Clustered data (a mixture of 200 Gaussians on the unit sphere), like sentence embeddings of a task mix.
    centers = rng.standard_normal((200, args.d)).astype(np.float32)
    x = centers[rng.integers(0, 200, args.n)] + 0.5 * rng.standard_normal((args.n, args.d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    sigma = 1.0

    # Correctness first: the GPU path and frugalft's CPU lazy greedy agree on a subsample.
    m, km = min(args.check_n, args.n), min(100, args.k)
    s_small = rbf_kernel(torch.from_numpy(x[:m]).to(device), sigma)
    gpu_picks, _ = greedy(s_small, km)
    cpu_kernel = RbfKernel(x[:m], sigma)
    cpu_picks, _ = lazy_greedy(cpu_kernel, km)
    f_gpu, f_cpu = cpu_objective(cpu_kernel, np.array(gpu_picks)), cpu_objective(cpu_kernel, cpu_picks)
    del s_small

    xt = torch.from_numpy(x).to(device)
    sync(device)
    t0 = time.perf_counter()
    s = rbf_kernel(xt, sigma)
    sync(device)
    t1 = time.perf_counter()
    picks, gains = greedy(s, args.k)
    sync(device)
    t2 = time.perf_counter()
    result = {
        "benchmark": "gpu_facility_location",
        "device": str(device) + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else ""),
        "n": args.n, "k": args.k, "d": args.d, "sigma": sigma,
        "kernel_seconds": round(t1 - t0, 3),
        "greedy_seconds": round(t2 - t1, 3),
        "total_seconds": round(t2 - t0, 3),
        "kernel_gb": round(s.numel() * 4 / 1e9, 2),
        "objective": float(sum(gains)),
        "check": {"n": m, "k": km, "same_picks": gpu_picks == cpu_picks.tolist(),
                  "objective_ratio_gpu_over_cpu": round(f_gpu / f_cpu, 9)},
        "command": f"python benchmarks/gpu_facility_location.py --n {args.n} --k {args.k} --device {args.device}",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

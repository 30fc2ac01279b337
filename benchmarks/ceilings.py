"""The machine's ceilings, measured in the same run as the benchmarks that are read against them.

- matmul rate: float32 GEMM GFLOP/s through torch (the BLAS every model-bound figure here runs on);
- streaming bandwidth: GB/s of reading a large float32 array once (a reduction), the bound for algorithms that
  make k passes over a big embedding matrix (k-center greedy, stochastic greedy's candidate scans). Measured
  twice: NumPy's sum (one core) and torch's sum on every thread (what a parallel pass can reach).

    python benchmarks/ceilings.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch


def best_of(fn, repeats: int) -> float:
    fn()  # warm-up: page faults, BLAS thread start
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def matmul_gflops(n: int, repeats: int) -> float:
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    t = best_of(lambda: torch.mm(a, b), repeats)
    return 2 * n**3 / t / 1e9


def stream_gbps(n_bytes: int, repeats: int) -> tuple[float, float]:
    """(one core: NumPy's sum, all threads: torch's sum) over the same array, GB/s."""
    x = np.ones(n_bytes // 4, dtype=np.float32)
    one = best_of(lambda: x.sum(), repeats)
    xt = torch.from_numpy(x)
    every = best_of(lambda: xt.sum(), repeats)
    return x.nbytes / one / 1e9, x.nbytes / every / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (CI)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "ceilings.json")
    args = parser.parse_args()
    n = 1024 if args.quick else 2048
    size = (256 if args.quick else 1024) * 2**20
    one_core, all_threads = stream_gbps(size, 5)
    result = {
        "benchmark": "ceilings",
        "quick": args.quick,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads",
        "matmul_gflops_fp32": round(matmul_gflops(n, 5), 1),
        "matmul_size": n,
        "stream_read_gbps": round(one_core, 2),
        "stream_read_gbps_all_threads": round(all_threads, 2),
        "stream_bytes": size,
        "command": "python benchmarks/ceilings.py" + (" --quick" if args.quick else ""),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(args.out)
    print(f"| matmul fp32 | {result['matmul_gflops_fp32']} GFLOP/s (n={n}) |")
    print(f"| streaming read, one core (NumPy) | {result['stream_read_gbps']} GB/s ({size >> 20} MiB) |")
    print(f"| streaming read, {torch.get_num_threads()} threads (torch) | {result['stream_read_gbps_all_threads']} GB/s |")


if __name__ == "__main__":
    main()

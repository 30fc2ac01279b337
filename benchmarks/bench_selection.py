"""Selection speed against the anchors, in the same run on the same data (issue #6).

    python benchmarks/bench_selection.py [--quick] [--only fl20k,fl1m,kcenter]

* ``fl20k``: facility location, n = 20k, k = 500, d = 384, RBF kernel. Ours (exact lazy greedy; the kernel is
  computed once from its upper triangle into a float32 row cache) against apricot-select (dense precomputed
  matrix, lazy greedy), and the ceiling: the time of the n x n similarity matmul alone (the faster of NumPy's
  and torch's BLAS). Objectives are both computed exactly by the same code.
* ``fl1m``: facility location, n = 1M, k = 10k, on a sparse kNN kernel with cluster-local exact neighbours
  (k-means lists, one matmul per list against its nearest lists). No anchor can run it (dense needs 4 TB).
  Times: k-means, neighbours, CSR, greedy. Quality: on a 20k subsample, objective of the same route / exact
  lazy greedy; at full n, neighbour recall and the similarity mass kept, on sampled rows against brute force.
* ``kcenter``: k-center greedy, n = 1M, d = 384, k = 10k, against a plain NumPy loop, read against the
  streaming-bandwidth ceiling (k passes over the embeddings). k-center's steps all cost the same (one pass),
  so long runs are timed on their first ``--kcenter-steps`` steps and scaled; the JSON says so.

Every measured piece runs in a forked child, so its peak resident memory (VmHWM) is its own; the parent runs
no torch, faiss or threaded numba code (their OpenMP thread pools do not survive a fork). Data are
clustered unit vectors (seeded). Results go to ``benchmarks/results/selection.json``; a markdown table is
printed. ``--quick`` shrinks every size for CI.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import time
from pathlib import Path

import numpy as np

from frugalft.design import facility_location as fl
from frugalft.design.kcenter import k_center_greedy


def embeddings(n: int, d: int = 384, clusters: int = 500, noise: float = 1.0, seed: int = 0) -> np.ndarray:
    """Unit vectors around ``clusters`` random centers, made in chunks (no float64 copy of a 1M x 384 array)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, d)).astype(np.float32)
    sizes = rng.zipf(1.5, size=clusters).astype(np.float64)  # long-tailed cluster sizes, like real pools
    p = sizes / sizes.sum()
    x = np.empty((n, d), dtype=np.float32)
    for a in range(0, n, 100_000):
        b = min(a + 100_000, n)
        x[a:b] = centers[rng.choice(clusters, size=b - a, p=p)]
        x[a:b] += rng.standard_normal(size=(b - a, d), dtype=np.float32) * noise
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def peak_rss_gb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def in_child(fn, *args):
    """Run ``fn(*args)`` in a forked child; return (its result dict, its peak RSS in GB)."""
    ctx = mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)

    def target():
        out = fn(*args)
        out["peak_gb"] = round(peak_rss_gb(), 3)
        send.send(out)

    proc = ctx.Process(target=target)
    proc.start()
    send.close()  # the child holds its own end: a child that dies before sending now ends recv() with EOFError
    try:
        result = recv.recv()
    except EOFError:
        proc.join()
        raise RuntimeError(f"{getattr(fn, '__name__', fn)} failed in its child process (exit code "
                           f"{proc.exitcode}); its error is printed above") from None
    proc.join()
    return result


def timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t


def stream_gbps(x: np.ndarray) -> float:
    """Best of 3 reads of ``x``: a reduction on one core, the same on every core (row blocks in threads: one
    core alone does not saturate memory here), and a BLAS matrix-vector product."""
    from concurrent.futures import ThreadPoolExecutor

    v = np.ones(x.shape[1], dtype=np.float32)
    rows = -(-len(x) // os.cpu_count())
    best = np.inf
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        ops = (lambda: np.add.reduce(x, axis=None), lambda: x @ v,
               lambda: list(pool.map(lambda a: np.add.reduce(x[a: a + rows], axis=None), range(0, len(x), rows))))
        for _ in range(3):
            for op in ops:
                t = time.perf_counter()
                op()
                best = min(best, time.perf_counter() - t)
    return x.nbytes / best / 1e9


# --- facility location, n = 20k ----------------------------------------------------------------------------
def fl_matmul_ceiling(x):
    import torch

    xt = torch.from_numpy(x)
    _, t_np = timed(lambda: [x[a: a + fl.BLOCK] @ x.T for a in range(0, len(x), fl.BLOCK)])
    _, t_torch = timed(lambda: [torch.mm(xt[a: a + fl.BLOCK], xt.T) for a in range(0, len(x), fl.BLOCK)])
    t = min(t_np, t_torch)
    return {"seconds": t, "numpy_seconds": t_np, "torch_seconds": t_torch,
            "gflops": 2 * len(x) ** 2 * x.shape[1] / t / 1e9}


def fl_objectives(x, sigma, picks: dict) -> dict:
    kernel = fl.RbfKernel(x, sigma)
    return {name: fl.objective(kernel, p) for name, p in picks.items()}


def fl_ours(x, k, sigma):
    kernel = fl.RbfKernel(x, sigma)
    (picks, _), t = timed(fl.lazy_greedy, kernel, k)
    return {"seconds": t, "picks": picks.tolist()}


def fl_apricot(x, k, sigma):
    from apricot import FacilityLocationSelection  # import (numba compilation) outside the timing

    def dense():
        s = np.empty((len(x), len(x)), dtype=np.float64)
        for a in range(0, len(x), fl.BLOCK):
            s[a: a + fl.BLOCK] = fl.RbfKernel(x, sigma).block(slice(a, a + fl.BLOCK), slice(None))
        return s

    s, t_kernel = timed(dense)
    sel, t_fit = timed(lambda: FacilityLocationSelection(k, metric="precomputed", optimizer="lazy").fit(s))
    return {"seconds": t_kernel + t_fit, "kernel_seconds": t_kernel, "fit_seconds": t_fit,
            "picks": sel.ranking.tolist()}


def bench_fl20k(quick: bool) -> dict:
    n, k = (4000, 100) if quick else (20_000, 500)
    x = embeddings(n)
    sigma, t_sigma = timed(lambda: fl.auto_sigma(x, k)[0])
    ceiling = in_child(fl_matmul_ceiling, x)
    ours = in_child(fl_ours, x, k, sigma)
    anchor = in_child(fl_apricot, x, k, sigma)
    f = in_child(fl_objectives, x, sigma, {"ours": ours["picks"], "anchor": anchor["picks"]})
    f_ours, f_anchor = f["ours"], f["anchor"]
    return {
        "n": n, "k": k, "d": x.shape[1], "sigma": sigma, "auto_sigma_seconds": round(t_sigma, 2),
        "ours_seconds": round(ours["seconds"], 2), "ours_peak_gb": ours["peak_gb"],
        "apricot_seconds": round(anchor["seconds"], 2), "apricot_fit_seconds": round(anchor["fit_seconds"], 2),
        "apricot_kernel_seconds": round(anchor["kernel_seconds"], 2), "apricot_peak_gb": anchor["peak_gb"],
        "matmul_seconds": round(ceiling["seconds"], 2), "matmul_gflops": round(ceiling["gflops"], 1),
        "matmul_numpy_seconds": round(ceiling["numpy_seconds"], 2),
        "matmul_torch_seconds": round(ceiling["torch_seconds"], 2),
        "speedup_vs_apricot": round(anchor["seconds"] / ours["seconds"], 2),
        "speedup_vs_apricot_fit_only": round(anchor["fit_seconds"] / ours["seconds"], 2),
        "objective_ratio": f_ours / f_anchor, "same_picks": ours["picks"] == anchor["picks"],
        "time_over_matmul": round(ours["seconds"] / ceiling["seconds"], 2),
        "targets": {"speedup >= 10": anchor["seconds"] / ours["seconds"] >= 10,
                    "objective >= 0.999": f_ours / f_anchor >= 0.999,
                    "time <= 1.5 x matmul": ours["seconds"] <= 1.5 * ceiling["seconds"]},
    }


# --- facility location, n = 1M -----------------------------------------------------------------------------
def fl_knn(x, k, sigma, knn, nprobe, check_rows=0):
    kernel, t_knn = timed(lambda: fl.KnnKernel(x, knn, sigma, nprobe=nprobe, method="cluster"))
    print(f"  kNN kernel, n = {len(x)}: {t_knn:.1f} s {kernel.timings}", flush=True)  # progress on long runs
    (picks, _), t_greedy = timed(fl.lazy_greedy, kernel, k)
    print(f"  greedy, k = {k}: {t_greedy:.1f} s", flush=True)
    out = {"seconds": t_knn + t_greedy, "knn_seconds": t_knn, "greedy_seconds": t_greedy,
           "stages": kernel.timings, "pairs": kernel.pairs, "picks": picks.tolist()}
    if check_rows:
        out.update(knn_quality(x, kernel, knn, sigma, check_rows))
    return out


def knn_quality(x, kernel, knn, sigma, rows, seed=3):
    """On ``rows`` sampled rows, against brute force over all n: the fraction of the true k nearest neighbours
    kept (recall), and the kept similarity mass over the true top-k's (what the greedy actually sees)."""
    import torch

    q = np.sort(np.random.default_rng(seed).choice(len(x), size=rows, replace=False))
    # The kept neighbours of row i are the candidates j whose CSR row holds i.
    hit = np.flatnonzero(np.isin(kernel.indices, q))
    cand = np.searchsorted(kernel.indptr, hit, side="right") - 1
    row = kernel.indices[hit]
    xt, sq = torch.from_numpy(x), torch.from_numpy(np.einsum("ij,ij->i", x, x))
    recall, mass = [], []
    for a in range(0, rows, 50):
        qq = q[a: a + 50]
        s = torch.addmm(-sq[None, :], xt[torch.from_numpy(qq)], xt.T, alpha=2)  # |q|^2 - |q - c|^2
        val, idx = torch.topk(s, knn, dim=1)
        true_sim = np.exp(-np.maximum(sq[torch.from_numpy(qq)][:, None].numpy() - val.numpy(), 0) / sigma**2)
        for r, i in enumerate(qq):
            kept = cand[row == i]
            recall.append(len(np.intersect1d(kept, idx[r].numpy())) / knn)
            mass.append(float(kernel.data[hit[row == i]].sum()) / float(true_sim[r].sum()))
    return {"check_rows": rows, "recall": float(np.mean(recall)), "similarity_mass_kept": float(np.mean(mass))}


def fl_exact_vs_knn(sub, k_sub, sigma, knn, nprobe):
    approx = fl_knn(sub, k_sub, sigma, knn, nprobe, check_rows=300)
    exact, _ = fl.lazy_greedy(fl.RbfKernel(sub, sigma), k_sub)
    kernel = fl.RbfKernel(sub, sigma)
    return {"ratio": fl.objective(kernel, approx["picks"]) / fl.objective(kernel, exact),
            "recall": approx["recall"], "similarity_mass_kept": approx["similarity_mass_kept"]}


def bench_fl1m(quick: bool, knn: int, nprobe: int) -> dict:
    n, k, n_sub = (20_000, 200, 4000) if quick else (1_000_000, 10_000, 20_000)
    x = embeddings(n)
    sigma = fl.auto_sigma(x, k)[0]
    big = in_child(fl_knn, x, k, sigma, knn, nprobe, 100 if quick else 300)
    # Quality on a subsample, at the same budget fraction: the same route (sqrt(n_sub) lists, same nprobe) vs
    # exact lazy greedy.
    sub = x[np.random.default_rng(1).choice(n, size=n_sub, replace=False)]
    k_sub = max(10, round(k * n_sub / n))
    check = in_child(fl_exact_vs_knn, sub, k_sub, sigma, knn, nprobe)
    ratio = check["ratio"]
    return {
        "n": n, "k": k, "d": x.shape[1], "knn": knn, "nprobe": nprobe, "sigma": sigma,
        "seconds": round(big["seconds"], 1), "knn_graph_seconds": round(big["knn_seconds"], 1),
        "stage_seconds": {name: round(t, 1) for name, t in big["stages"].items()},
        "greedy_seconds": round(big["greedy_seconds"], 1), "peak_gb": big["peak_gb"],
        "distances_computed": big["pairs"],
        "neighbours_gflops": round(2 * x.shape[1] * big["pairs"] / big["stages"]["neighbours"] / 1e9, 1),
        "full_n_recall": round(big["recall"], 3), "full_n_similarity_mass_kept": round(big["similarity_mass_kept"], 3),
        "full_n_check_rows": big["check_rows"],
        "subsample_n": n_sub, "subsample_k": k_sub, "subsample_objective_ratio": ratio,
        "subsample_recall": round(check["recall"], 3),
        "subsample_similarity_mass_kept": round(check["similarity_mass_kept"], 3),
        "targets": {"<= 600 s": big["seconds"] <= 600, "<= 8 GB": big["peak_gb"] <= 8,
                    "objective within 1%": ratio >= 0.99},
    }


# --- k-center greedy ---------------------------------------------------------------------------------------
def kc_ours(x, steps):
    """Ours between two bandwidth measurements in the same process: on a shared machine the bandwidth drifts,
    and the ceiling is the best the machine read in that window."""
    k_center_greedy(x[:1000], 2)  # compile (or load the cached kernel) outside the timing
    bw = stream_gbps(x)
    _, t = timed(k_center_greedy, x, steps + 1)  # steps + 1 centers: the last pick needs no pass
    return {"seconds": t, "stream_gbps": max(bw, stream_gbps(x))}


def kc_numpy(x, steps):
    """The plain loop a user writes first: a full (n, d) difference per step."""
    def run():
        nearest = np.full(len(x), np.inf)
        j = 0
        for _ in range(steps):
            nearest = np.minimum(nearest, np.linalg.norm(x - x[j], axis=1))
            j = int(np.argmax(nearest))

    _, t = timed(run)
    return {"seconds": t}


def bench_kcenter(quick: bool, max_steps: int) -> dict:
    n, k = (100_000, 100) if quick else (1_000_000, 10_000)
    x = embeddings(n)
    steps = min(k, max_steps)
    anchor_steps = min(steps, 20)
    ours = in_child(kc_ours, x, steps)
    bw = ours["stream_gbps"]
    anchor = in_child(kc_numpy, x, anchor_steps)
    ours_total = ours["seconds"] * k / steps
    anchor_total = anchor["seconds"] * k / anchor_steps
    ceiling = k * x.nbytes / (bw * 1e9)
    return {
        "n": n, "k": k, "d": x.shape[1], "stream_gbps": round(bw, 2), "ceiling_seconds": round(ceiling, 1),
        "ours_seconds": round(ours_total, 1), "ours_steps_timed": steps, "ours_peak_gb": ours["peak_gb"],
        "numpy_seconds": round(anchor_total, 1), "numpy_steps_timed": anchor_steps, "numpy_peak_gb": anchor["peak_gb"],
        "speedup_vs_numpy": round(anchor_total / ours_total, 2),
        "fraction_of_bandwidth_ceiling": round(ceiling / ours_total, 3),
        "targets": {">= 0.5 of ceiling": ceiling / ours_total >= 0.5, "<= 4 GB": ours["peak_gb"] <= 4},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes for CI (about a minute)")
    parser.add_argument("--only", default="fl20k,fl1m,kcenter", help="comma-separated parts to run")
    parser.add_argument("--knn", type=int, default=32, help="neighbours kept per prompt in the n = 1M run")
    parser.add_argument("--nprobe", type=int, default=12, help="k-means lists searched per list in the n = 1M run")
    parser.add_argument("--kcenter-steps", type=int, default=1000,
                        help="k-center steps actually timed (each costs the same pass; the total is scaled)")
    parser.add_argument("--out", type=Path, default=None,
                        help="results JSON (default benchmarks/results/selection[_quick].json)")
    args = parser.parse_args()
    args.out = args.out or Path(__file__).parent / "results" / f"selection{'_quick' if args.quick else ''}.json"
    parts = args.only.split(",")
    result = {"benchmark": "selection", "quick": args.quick,
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, numpy {np.__version__}",
              "load_average_at_start": [round(v, 2) for v in os.getloadavg()]}
    rows = []
    if "fl20k" in parts:
        r = result["fl20k"] = bench_fl20k(args.quick)
        rows.append(f"| facility location n={r['n']}, k={r['k']} | apricot {r['apricot_seconds']} s "
                    f"(fit {r['apricot_fit_seconds']} s) | ours {r['ours_seconds']} s | "
                    f"{r['speedup_vs_apricot']}x (fit only {r['speedup_vs_apricot_fit_only']}x), objective ratio "
                    f"{r['objective_ratio']:.6f}, {r['time_over_matmul']}x the matmul ({r['matmul_seconds']} s) | "
                    f"peak {r['ours_peak_gb']} GB vs {r['apricot_peak_gb']} GB |")
    if "fl1m" in parts:
        r = result["fl1m"] = bench_fl1m(args.quick, args.knn, args.nprobe)
        rows.append(f"| facility location n={r['n']}, k={r['k']} (kNN {r['knn']}) | none | {r['seconds']} s "
                    f"(k-means {r['stage_seconds']['kmeans']} s, neighbours {r['stage_seconds']['neighbours']} s, "
                    f"greedy {r['greedy_seconds']} s) | subsample objective ratio "
                    f"{r['subsample_objective_ratio']:.4f}; full-n recall {r['full_n_recall']}, similarity mass "
                    f"{r['full_n_similarity_mass_kept']} | peak {r['peak_gb']} GB |")
    if "kcenter" in parts:
        r = result["kcenter"] = bench_kcenter(args.quick, args.kcenter_steps)
        rows.append(f"| k-center n={r['n']}, k={r['k']} | NumPy loop {r['numpy_seconds']} s | ours "
                    f"{r['ours_seconds']} s | {r['speedup_vs_numpy']}x; {r['fraction_of_bandwidth_ceiling']} of the "
                    f"bandwidth ceiling ({r['stream_gbps']} GB/s) | peak {r['ours_peak_gb']} GB |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from frugalft.atomic import write_json

    write_json(args.out, result)
    print("| what | anchor | ours | ratio | memory |\n|---|---|---|---|---|")
    print("\n".join(rows))
    print(f"(written to {args.out})")


if __name__ == "__main__":
    main()

"""Facility location, F(S) = sum_i max_{j in S} s(i, j), maximised greedily without an n x n matrix in memory.

The greedy pick is the candidate j of largest marginal gain  g(j) = sum_i max(0, s(j, i) - c_i),  where c_i is
how well row i is covered so far. Three ways to get it:

* ``lazy_greedy``: exact greedy (Minoux's lazy evaluation). Gains only shrink as S grows (submodularity), so a
  stale gain is an upper bound; only candidates whose bound tops the queue are re-evaluated, many at once
  (a (b x d) @ (d x n) BLAS matmul for b candidates, then one vectorised max/sum). The first gains, with c = 0,
  are the kernel's row sums: one pass over the upper triangle of the kernel in blocks (half the n x n matmul).
  Rows live in a bounded cache (``_RowEval``): the whole kernel in float32 while it fits ``cache_mb``
  (n <= ~23k at 2 GB), otherwise the most recently needed rows, refilled 256 at a time.
* ``stochastic_greedy``: each step looks only at a random sample of (n / k) log(1 / epsilon) candidates
  (Mirzasoleiman et al. 2015), evaluated lazily inside the sample; (1 - 1/e - epsilon) in expectation.
* ``KnnKernel``: keep each row's k nearest neighbours only (faiss), a sparse kernel that makes every gain
  O(neighbours); the route for pools of a million prompts.

Kernels compute rows on the fly in float32: RBF s = exp(-|x_i - x_j|^2 / sigma^2), or cosine clipped at 0 (a
facility-location similarity must be non-negative). ``DenseKernel`` wraps a given matrix (tests, small pools).
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict

import numpy as np

BLOCK = 2048  # kernel block edge: 2048 x 2048 float32 = 16 MB, cache- and memory-friendly
PREFETCH = 256  # kernel rows computed per matmul on a cache miss


class DenseKernel:
    """A precomputed similarity matrix; row j is s(j, .), as in apricot-select's ``metric='precomputed'``."""

    def __init__(self, s: np.ndarray):
        self.s = np.asarray(s)
        self.n = self.s.shape[0]

    def rows(self, idx: np.ndarray) -> np.ndarray:
        return self.s[np.asarray(idx)]

    def row_sums(self) -> np.ndarray:
        return self.s.sum(axis=1, dtype=np.float64)


class _BlockKernel:
    """A symmetric kernel of embeddings, computed in blocks from BLAS dot products."""

    def __init__(self, x: np.ndarray):
        self.x = np.ascontiguousarray(x, dtype=np.float32)
        self.n = self.x.shape[0]
        self.sq = np.einsum("ij,ij->i", self.x, self.x)

    def _transform(self, g: np.ndarray, i: slice | np.ndarray, j: slice | np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def block(self, i: np.ndarray | slice, j: np.ndarray | slice) -> np.ndarray:
        return self._transform(self.x[i] @ self.x[j].T, i, j)

    def rows(self, idx: np.ndarray) -> np.ndarray:
        return self.block(np.asarray(idx), slice(None))

    def row_sums(self) -> np.ndarray:
        """sum_j s(i, j) for every i, from the upper-triangle blocks only (the kernel is symmetric): half
        the n x n matmul, never more than one block panel in memory."""
        out = np.zeros(self.n, dtype=np.float64)
        for a in range(0, self.n, BLOCK):
            ia = slice(a, min(a + BLOCK, self.n))
            for b in range(a, self.n, BLOCK * 4):  # wide column panels: fewer, larger matmuls
                jb = slice(b, min(b + BLOCK * 4, self.n))
                blk = self.block(ia, jb)
                if b == a:  # the diagonal panel: its part left of the diagonal is counted by symmetry
                    w = ia.stop - a
                    blk[:, :w] = np.triu(blk[:, :w])
                    out[ia] -= np.diagonal(blk[:, :w])  # the diagonal is added twice below
                out[ia] += blk.sum(axis=1, dtype=np.float64)
                out[jb] += blk.sum(axis=0, dtype=np.float64)
        return out


class RbfKernel(_BlockKernel):
    """s(i, j) = exp(-|x_i - x_j|^2 / sigma^2), in (0, 1]."""

    def __init__(self, x: np.ndarray, sigma: float):
        super().__init__(x)
        self.sigma = float(sigma)

    def _transform(self, g: np.ndarray, i, j) -> np.ndarray:
        # In place on the dot products: -(|a|^2 + |b|^2 - 2ab) / sigma^2, clipped at 0 (rounding), then exp.
        inv = np.float32(1.0 / self.sigma**2)
        g *= 2 * inv
        g -= (self.sq[i] * inv)[:, None]
        g -= (self.sq[j] * inv)[None, :]
        np.minimum(g, 0, out=g)
        return np.exp(g, out=g)


class CosineKernel(_BlockKernel):
    """s(i, j) = max(0, cos(x_i, x_j))."""

    def __init__(self, x: np.ndarray):
        x = np.asarray(x, dtype=np.float32)
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        super().__init__(x / np.maximum(norms, 1e-12))

    def _transform(self, g: np.ndarray, i, j) -> np.ndarray:
        return np.maximum(g, 0, out=g)


def _csr_gains(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, idx: np.ndarray,
               cover: np.ndarray) -> np.ndarray:
    """sum over each CSR row in ``idx`` of max(0, value - cover[column]), vectorised over the batch."""
    starts = indptr[idx]
    lens = indptr[idx + 1] - starts
    first = np.cumsum(lens) - lens
    pos = np.repeat(starts - first, lens) + np.arange(lens.sum())
    g = np.maximum(data[pos] - cover[indices[pos]], 0).astype(np.float64)
    out = np.zeros(len(idx))
    nz = lens > 0
    if g.size:
        out[nz] = np.add.reduceat(g, first[nz])
    return out


class KnnKernel:
    """Sparse kernel: s(j, i) kept only where j is among i's ``k`` nearest neighbours (faiss; self included).

    Stored as CSR by candidate j: the rows i that j can cover, and how much. Exact neighbours (flat index) up to
    ``exact_up_to`` rows; an inverted-file index (IVF, ``nprobe`` lists searched) beyond.
    """

    def __init__(self, x: np.ndarray, k: int = 32, sigma: float | None = None, exact_up_to: int = 100_000,
                 nprobe: int = 8, seed: int = 0):
        import faiss

        x = np.ascontiguousarray(x, dtype=np.float32)
        n, d = x.shape
        self.n = n
        k = min(k, n)
        if n <= exact_up_to:
            index = faiss.IndexFlatL2(d)
        else:
            # 2 sqrt(n) lists, trained by 10 k-means rounds on 20 points per list: minutes, not hours, at 1M.
            nlist = max(1, int(2 * math.sqrt(n)))
            index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, nlist)
            index.cp.niter = 10
            index.cp.min_points_per_centroid = 1  # a small pool trains on what it has, without warnings
            rng = np.random.default_rng(seed)
            index.train(x[rng.choice(n, size=min(n, nlist * 20), replace=False)])
            index.nprobe = nprobe
        index.add(x)
        dist, nbr = index.search(x, k)  # dist: squared L2
        valid = nbr >= 0
        safe = np.maximum(nbr, 0)
        if sigma is None:  # cosine from squared distances: a.b = (|a|^2 + |b|^2 - |a-b|^2) / 2
            norms = np.linalg.norm(x, axis=1)
            dot = (norms[:, None] ** 2 + norms[safe] ** 2 - dist) / 2
            sim = np.maximum(dot / np.maximum(norms[:, None] * norms[safe], 1e-12), 0)
        else:
            with np.errstate(over="ignore"):  # faiss marks missing neighbours with a huge distance
                sim = np.exp(-np.maximum(dist, 0) / sigma**2)
        rows_i = np.repeat(np.arange(n), k)[valid.ravel()]  # the covered row i
        cand_j = nbr.ravel()[valid.ravel()]  # the candidate j that covers it
        vals = sim.ravel()[valid.ravel()].astype(np.float32)
        order = np.argsort(cand_j, kind="stable")
        self.indices = rows_i[order].astype(np.int64)
        self.data = vals[order]
        self.indptr = np.concatenate([[0], np.cumsum(np.bincount(cand_j, minlength=n))]).astype(np.int64)

    def row_sums(self) -> np.ndarray:
        return _csr_gains(self.indptr, self.indices, self.data, np.arange(self.n), np.zeros(self.n, np.float32))

    def gains(self, idx: np.ndarray, cover: np.ndarray, bound: np.ndarray | None = None) -> np.ndarray:
        return _csr_gains(self.indptr, self.indices, self.data, idx, cover)

    def cover(self, j: int, cover: np.ndarray) -> None:
        sl = slice(self.indptr[j], self.indptr[j + 1])
        np.maximum.at(cover, self.indices[sl], self.data[sl])


class _RowEval:
    """Exact gains from whole kernel rows, recomputed by matmul or served from a bounded cache of rows.

    Lazy greedy re-evaluates the same strong candidates step after step (a pick makes its whole neighbourhood
    stale); keeping their rows turns a re-evaluation from a (n x d) matmul row into one pass over n floats.
    The cache holds at most ``cache_mb`` (least recently used rows leave first). When every row fits (n up to
    ~23k at 2 GB, float32: half of apricot-select's float64 matrix), the first pass fills it and no row is
    computed twice; beyond, rows come and go and memory stays bounded at any n.
    """

    def __init__(self, kernel, cache_mb: float = 2048):
        self.kernel = kernel
        n = kernel.n
        self.dense = isinstance(kernel, DenseKernel)  # a given matrix: rows are already in memory
        slots = 0 if self.dense else int(min(n, cache_mb * 2**20 // (4 * n)))
        self.store = np.empty((slots, n), dtype=np.float32)
        self.slot: OrderedDict[int, int] = OrderedDict()  # candidate -> slot, least recently used first
        self.free = list(range(slots))

    def row_sums(self) -> np.ndarray:
        if self.dense or len(self.store) < self.kernel.n:
            return self.kernel.row_sums()
        # Every row fits the cache: compute the upper-triangle blocks once (half the matmul), mirror them into
        # the cache, and no kernel entry is ever computed twice.
        n = self.kernel.n
        for a in range(0, n, BLOCK):
            ia = slice(a, min(a + BLOCK, n))
            for b in range(a, n, BLOCK * 4):
                jb = slice(b, min(b + BLOCK * 4, n))
                blk = self.kernel.block(ia, jb)
                self.store[ia, jb] = blk
                self.store[jb, ia] = blk.T
        sums = self.store.sum(axis=1, dtype=np.float64)
        self.slot = OrderedDict((j, j) for j in range(n))
        self.free = []
        return sums

    def rows(self, idx: np.ndarray, bound: np.ndarray | None = None) -> np.ndarray:
        """Kernel rows of ``idx``. On a miss, also prefetches the best-bounded uncached candidates (by
        ``bound``) in the same matmul: a 256-row GEMM runs near peak, a 16-row one far below it."""
        if self.dense or not len(self.store):
            return self.kernel.rows(idx)
        out = np.empty((len(idx), self.kernel.n), dtype=np.float32)
        miss = []
        for r, j in enumerate(idx.tolist()):
            s = self.slot.get(j)
            if s is None:
                miss.append(r)
            else:
                self.slot.move_to_end(j)
                out[r] = self.store[s]
        if miss:
            want = idx[miss]
            room = min(PREFETCH, len(self.store) // 4)
            if bound is not None and room > len(want):
                top = np.argpartition(-bound, room)[:room] if room < len(bound) else np.arange(len(bound))
                top = top[np.isfinite(bound[top])]
                top = top[np.argsort(-bound[top], kind="stable")]  # best bound first
                taken = set(want.tolist())
                extra = [j for j in top.tolist() if j not in self.slot and j not in taken]
                want = np.concatenate([want, np.array(extra[: room - len(want)], dtype=np.int64)])
            fresh = self.kernel.rows(want)
            out[miss] = fresh[: len(miss)]
            for j, row in zip(want.tolist(), fresh, strict=True):
                s = self.free.pop() if self.free else self.slot.popitem(last=False)[1]
                self.slot[j] = s
                self.store[s] = row
        return out

    def gains(self, idx: np.ndarray, cover: np.ndarray, bound: np.ndarray | None = None) -> np.ndarray:
        rows = self.rows(idx, bound) - cover[None, :]
        return np.maximum(rows, 0, out=rows).sum(axis=1, dtype=np.float64)

    def cover(self, j: int, cover: np.ndarray) -> None:
        np.maximum(cover, self.rows(np.array([j]))[0], out=cover)
        s = self.slot.pop(j, None)  # a pick is never evaluated again: free its slot
        if s is not None:
            self.free.append(s)


def _evaluator(kernel, cache_mb: float):
    return kernel if isinstance(kernel, KnnKernel) else _RowEval(kernel, cache_mb)


def lazy_greedy(kernel, k: int, batch: int = 16, cache_mb: float = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Exact greedy maximisation of facility location: (picks in order, marginal gain of each pick).

    Ties go to the lower index. ``batch`` stale candidates are re-evaluated per round (one matmul); a popped
    candidate whose gain is fresh for this step tops every upper bound, so it is the exact greedy choice.
    ``cache_mb`` bounds the cache of kernel rows (``_RowEval``).
    """
    n = kernel.n
    if not 0 < k <= n:
        raise ValueError(f"k must be in 1..{n}, got {k}")
    ev = _evaluator(kernel, cache_mb)
    dtype = np.float64 if getattr(kernel, "s", np.zeros(0, np.float32)).dtype == np.float64 else np.float32
    cover = np.zeros(n, dtype=dtype)
    bound = np.asarray(ev.row_sums(), dtype=np.float64)  # upper bounds on the gains, as in the heap
    heap = [(-float(g), j) for j, g in enumerate(bound)]
    heapq.heapify(heap)
    stamp = np.zeros(n, dtype=np.int64)  # the step at which each bound was last made exact (all exact at 0)
    picks, gains = np.empty(k, dtype=np.int64), np.empty(k)
    for t in range(k):
        while stamp[heap[0][1]] != t:
            popped = [heapq.heappop(heap) for _ in range(min(batch, len(heap)))]
            idx = np.array([j for _, j in popped if stamp[j] != t])
            g = ev.gains(idx, cover, bound)
            bound[idx], stamp[idx] = g, t
            for neg, j in popped:
                heapq.heappush(heap, (-bound[j], j) if stamp[j] == t else (neg, j))
        neg, j = heapq.heappop(heap)
        picks[t], gains[t] = j, -neg
        bound[j] = -np.inf
        ev.cover(j, cover)
    return picks, gains


def stochastic_greedy(kernel, k: int, epsilon: float = 0.01, seed: int = 0, batch: int = 16,
                      cache_mb: float = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Stochastic greedy: the best of a random sample of size (n/k) ln(1/epsilon) at each step, found lazily
    (stale gains are upper bounds). Returns (picks, gains)."""
    n = kernel.n
    if not 0 < k <= n:
        raise ValueError(f"k must be in 1..{n}, got {k}")
    if not 0 < epsilon < 1:
        raise ValueError(f"epsilon must be in (0, 1), got {epsilon}")
    rng = np.random.default_rng(seed)
    size = min(n, max(1, math.ceil(n / k * math.log(1 / epsilon))))
    ev = _evaluator(kernel, cache_mb)
    cover = np.zeros(n, dtype=np.float32)
    bound = ev.row_sums().astype(np.float64)
    stamp = np.zeros(n, dtype=np.int64)
    alive = np.ones(n, dtype=bool)
    picks, gains = np.empty(k, dtype=np.int64), np.empty(k)
    for t in range(k):
        remaining = np.flatnonzero(alive)
        sample = rng.choice(remaining, size=min(size, len(remaining)), replace=False)
        order = sample[np.argsort(-bound[sample], kind="stable")]
        best, best_g, pos = -1, -np.inf, 0
        # Bounds only fall, and ``order`` is sorted by them: stop once the next bound cannot beat the best.
        while pos < len(order) and bound[order[pos]] > best_g:
            idx = order[pos: pos + batch]
            idx = idx[bound[idx] > best_g]
            stale = idx[stamp[idx] != t]
            if len(stale):
                bound[stale], stamp[stale] = ev.gains(stale, cover, bound), t
            r = int(np.argmax(bound[idx]))  # every bound in idx is now exact for this step
            if bound[idx[r]] > best_g:
                best, best_g = int(idx[r]), float(bound[idx[r]])
            pos += batch
        picks[t], gains[t] = best, best_g
        ev.cover(best, cover)
        alive[best] = False
        bound[best] = -np.inf
    return picks, gains


def objective(kernel, picks: np.ndarray, chunk: int = 256) -> float:
    """F(S) = sum_i max_{j in S} s(j, i), exact, in chunks of picks."""
    cover = np.zeros(kernel.n, dtype=np.float64)
    picks = np.asarray(picks)
    if isinstance(kernel, KnnKernel):
        c32 = np.zeros(kernel.n, dtype=np.float32)
        for j in picks:
            kernel.cover(int(j), c32)
        return float(c32.sum(dtype=np.float64))
    for a in range(0, len(picks), chunk):
        np.maximum(cover, kernel.rows(picks[a: a + chunk]).max(axis=0), out=cover)
    return float(cover.sum())


def auto_sigma(x: np.ndarray, budget: int, seed: int = 0, sample: int = 2000,
               factors: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0)) -> tuple[float, dict]:
    """Choose the RBF width from gains curves on a subsample (the SPEC's gains-plot rule, automated).

    Too small a sigma gives flat gains (every pick covers only itself: near-random picks); too large, gains
    collapse after the first pick. For sigma = factor x the median pairwise distance, run greedy on ``sample``
    rows with the budget scaled to the sample, and measure the curve's mean of g_t / g_1 (1 = flat,
    0 = collapsed). Pick the sigma where it crosses 1/2, interpolating in log sigma. Returns (sigma, curves).
    """
    x = np.asarray(x, dtype=np.float32)
    n = len(x)
    rng = np.random.default_rng(seed)
    sub = x[rng.choice(n, size=min(n, sample), replace=False)]
    m = len(sub)
    k = int(min(max(2, round(budget * m / n)), m))
    sq = np.einsum("ij,ij->i", sub, sub)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * sub @ sub.T, 0)
    med = float(np.sqrt(np.median(d2[np.triu_indices(m, 1)]))) if m > 1 else 1.0
    med = med if med > 0 else 1.0
    curves: dict[str, list[float]] = {}
    levels = []
    for f in factors:
        s = f * med
        _, g = lazy_greedy(DenseKernel(np.exp(-d2 / s**2)), k)
        curve = g / g[0]
        curves[f"{s:.4g}"] = curve.tolist()
        levels.append(float(curve.mean()))
    levels_arr = np.array(levels)  # falls as sigma grows
    logs = np.log(np.array(factors) * med)
    above = np.flatnonzero(levels_arr >= 0.5)
    if len(above) == 0:
        return float(np.exp(logs[0])), curves
    i = int(above[-1])
    if i == len(factors) - 1:
        return float(np.exp(logs[-1])), curves
    a, b = levels_arr[i], levels_arr[i + 1]
    w = (a - 0.5) / (a - b) if a != b else 0.5
    return float(np.exp(logs[i] + w * (logs[i + 1] - logs[i]))), curves

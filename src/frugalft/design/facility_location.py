"""Facility location, F(S) = sum_i max_{j in S} s(i, j), maximised greedily without an n x n matrix in memory.

The greedy pick is the candidate j of largest marginal gain  g(j) = sum_i max(0, s(j, i) - c_i),  where c_i is
how well row i is covered so far. Three ways to get it:

* ``lazy_greedy``: exact greedy (Minoux's lazy evaluation). Gains only shrink as S grows (submodularity), so a
  stale gain is an upper bound; only candidates whose bound tops the queue are re-evaluated, a batch at a time.
  Rows live in a bounded cache (``_RowEval``). While the whole kernel fits ``cache_mb`` (n <= ~23k at 2 GB,
  float32) it is computed once, from the upper-triangle blocks only (half the n x n matmul, mirrored into the
  lower triangle by tiled transposes), and every later gain is one fused pass over a cached row. Beyond, the
  most recently needed rows are kept, refilled 256 at a time by one matmul, and memory stays bounded at any n.
* ``stochastic_greedy``: each step looks only at a random sample of (n / k) log(1 / epsilon) candidates
  (Mirzasoleiman et al. 2015), evaluated lazily inside the sample; (1 - 1/e - epsilon) in expectation.
* ``KnnKernel``: keep each row's k nearest neighbours only, a sparse kernel that makes every gain
  O(neighbours); the route for pools of a million prompts. Neighbours are exact (faiss flat) for small pools,
  and cluster-local exact beyond: k-means lists, then one BLAS matmul per list against the members of the
  lists nearest to it (``_cluster_knn``).

Kernels compute rows on the fly in float32: RBF s = exp(-|x_i - x_j|^2 / sigma^2), cosine clipped at 0 (a
facility-location similarity must be non-negative), or adaptive s = exp(-|x_i - x_j|^2 / (sigma_i sigma_j))
with sigma_i the distance to i's k-th nearest neighbour (``AdaptiveKernel``, ``adaptive_widths``). Blocks are
built with torch (multithreaded element-wise ops; NumPy's exp runs on one core); the per-element loops (gains,
covers, transposes) are serial numba kernels.
``DenseKernel`` wraps a given matrix (tests, small pools).
"""

from __future__ import annotations

import heapq
import math
import time
from collections import OrderedDict

import numba
import numpy as np
import torch

BLOCK = 2048  # kernel block edge: 2048 x 2048 float32 = 16 MB, cache- and memory-friendly
PREFETCH = 256  # kernel rows computed per matmul on a cache miss
_TILE = 32  # transpose tile edge: a 32 x 32 float32 tile read and written stays in L1


# --- numba kernels: serial on purpose (numba's and torch's OpenMP pools do not survive a fork; these loops are
# --- memory-bound, one core streams them near bandwidth) --------------------------------------------------------
@numba.njit(cache=True)
def _mirror_upper(s: np.ndarray, a: int, b: int, h: int, w: int) -> None:
    """s[c, r] = s[r, c] for the block rows a..a+h, columns b..b+w, wherever c > r (the strict upper part),
    tile by tile: a plain transposed copy misses cache on every write once rows are n floats apart."""
    for j0 in range(0, w, _TILE):
        j1 = min(j0 + _TILE, w)
        for i0 in range(0, h, _TILE):
            i1 = min(i0 + _TILE, h)
            for j in range(j0, j1):
                c = b + j
                for i in range(i0, i1):
                    r = a + i
                    if c > r:
                        s[c, r] = s[r, c]


@numba.njit(cache=True, fastmath=True)
def _row_gains(rows: np.ndarray, which: np.ndarray, cover: np.ndarray, out: np.ndarray) -> None:
    """out[r] = sum_i max(0, rows[which[r], i] - cover[i]): one pass, no (b x n) temporary."""
    for r in range(which.size):
        row = rows[which[r]]
        acc = 0.0
        for i in range(row.size):
            v = row[i] - cover[i]
            if v > 0:
                acc += v
        out[r] = acc


@numba.njit(cache=True)
def _csr_gains(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, idx: np.ndarray, cover: np.ndarray,
               out: np.ndarray) -> None:
    """out[r] = sum over CSR row idx[r] of max(0, value - cover[column])."""
    for r in range(idx.size):
        j = idx[r]
        acc = 0.0
        for p in range(indptr[j], indptr[j + 1]):
            v = data[p] - cover[indices[p]]
            if v > 0:
                acc += v
        out[r] = acc


@numba.njit(cache=True)
def _csr_cover(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, j: int, cover: np.ndarray) -> None:
    for p in range(indptr[j], indptr[j + 1]):
        i = indices[p]
        if data[p] > cover[i]:
            cover[i] = data[p]


@numba.njit(cache=True)
def _lists_to_csr(nbr: np.ndarray, sim: np.ndarray, n: int):
    """Row i's neighbour lists (nbr[i, t] = j, -1 for none) to CSR by candidate j, rows i ascending: a counting
    sort, O(n k) with no argsort of n k keys."""
    indptr = np.zeros(n + 1, dtype=np.int64)
    for i in range(nbr.shape[0]):
        for t in range(nbr.shape[1]):
            if nbr[i, t] >= 0:
                indptr[nbr[i, t] + 1] += 1
    for j in range(n):
        indptr[j + 1] += indptr[j]
    fill = indptr[:-1].copy()
    indices = np.empty(indptr[n], dtype=np.int32)
    data = np.empty(indptr[n], dtype=np.float32)
    for i in range(nbr.shape[0]):
        for t in range(nbr.shape[1]):
            j = nbr[i, t]
            if j >= 0:
                indices[fill[j]] = i
                data[fill[j]] = sim[i, t]
                fill[j] += 1
    return indptr, indices, data


@numba.njit(cache=True)
def _before(g: np.ndarray, ids: np.ndarray, a: int, b: int) -> bool:
    """Heap order: larger bound first, then the lower index (the tie rule of ``lazy_greedy``)."""
    return g[a] > g[b] or (g[a] == g[b] and ids[a] < ids[b])


@numba.njit(cache=True)
def _sift_down(g: np.ndarray, ids: np.ndarray, size: int, pos: int) -> None:
    while True:
        best, left = pos, 2 * pos + 1
        if left < size and _before(g, ids, left, best):
            best = left
        if left + 1 < size and _before(g, ids, left + 1, best):
            best = left + 1
        if best == pos:
            return
        g[pos], g[best] = g[best], g[pos]
        ids[pos], ids[best] = ids[best], ids[pos]
        pos = best


@numba.njit(cache=True)
def _csr_lazy_greedy(indptr, indices, data, bound: np.ndarray, k: int, picks: np.ndarray, gains: np.ndarray) -> None:
    """Lazy greedy on a CSR kernel, all in one compiled loop: at a million candidates the Python heap's
    per-candidate tuples and calls cost more than the gains themselves. Same rule as ``lazy_greedy``: pop
    the best bound; if it is exact for this step it is the pick, else re-evaluate it and sift it down."""
    n = bound.size
    g, ids = bound.copy(), np.arange(n)
    for pos in range(n // 2 - 1, -1, -1):
        _sift_down(g, ids, n, pos)
    stamp = np.zeros(n, dtype=np.int64)
    cover = np.zeros(n, dtype=np.float32)
    size = n
    for t in range(k):
        while stamp[ids[0]] != t:
            j = ids[0]
            acc = 0.0
            for p in range(indptr[j], indptr[j + 1]):
                v = data[p] - cover[indices[p]]
                if v > 0:
                    acc += v
            g[0], stamp[j] = acc, t
            _sift_down(g, ids, size, 0)
        j = ids[0]
        picks[t], gains[t] = j, g[0]
        size -= 1
        g[0], ids[0] = g[size], ids[size]
        _sift_down(g, ids, size, 0)
        for p in range(indptr[j], indptr[j + 1]):
            i = indices[p]
            if data[p] > cover[i]:
                cover[i] = data[p]


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
        self._xt, self._sqt = torch.from_numpy(self.x), torch.from_numpy(self.sq)  # views, no copies

    def _transform_(self, g: torch.Tensor, i: slice | np.ndarray, j: slice | np.ndarray) -> None:
        """Dot products -> similarities, in place."""
        raise NotImplementedError

    def _block_into(self, out: torch.Tensor, i: slice | np.ndarray, j: slice | np.ndarray) -> torch.Tensor:
        xi = self._xt[i] if isinstance(i, slice) else self._xt[torch.from_numpy(np.asarray(i, dtype=np.int64))]
        torch.mm(xi, self._xt[j].T, out=out)  # ``out`` may be a strided view of a bigger matrix: no copy
        self._transform_(out, i, j)
        return out

    def block(self, i: np.ndarray | slice, j: np.ndarray | slice) -> np.ndarray:
        rows = len(range(self.n)[i]) if isinstance(i, slice) else len(i)
        cols = len(range(self.n)[j]) if isinstance(j, slice) else len(j)
        return self._block_into(torch.empty(rows, cols), i, j).numpy()

    def rows(self, idx: np.ndarray) -> np.ndarray:
        return self.block(np.asarray(idx), slice(None))

    def _panels(self):
        """Upper-triangle block panels (row block, column panel); wide panels make fewer, larger matmuls."""
        for a in range(0, self.n, BLOCK):
            for b in range(a, self.n, BLOCK * 4):
                yield slice(a, min(a + BLOCK, self.n)), slice(b, min(b + BLOCK * 4, self.n))

    def row_sums(self) -> np.ndarray:
        """sum_j s(i, j) for every i, from the upper-triangle blocks only (the kernel is symmetric): half
        the n x n matmul, never more than one block panel in memory."""
        out = np.zeros(self.n, dtype=np.float64)
        for ia, jb in self._panels():
            blk = self.block(ia, jb)
            if jb.start == ia.start:  # the diagonal panel: its part left of the diagonal is counted by symmetry
                w = ia.stop - ia.start
                blk[:, :w] = np.triu(blk[:, :w])
                out[ia] -= np.diagonal(blk[:, :w])  # the diagonal is added twice below
            out[ia] += blk.sum(axis=1, dtype=np.float64)
            out[jb] += blk.sum(axis=0, dtype=np.float64)
        return out

    def fill(self, store: np.ndarray) -> np.ndarray:
        """Write the whole kernel into ``store`` (n x n float32) and return its row sums. Only the upper-triangle
        blocks are computed (half the matmul, straight into ``store``); the lower triangle is their tiled
        transpose, so ``store`` is exactly symmetric."""
        st = torch.from_numpy(store)
        for ia, jb in self._panels():
            self._block_into(st[ia, jb], ia, jb)
            _mirror_upper(store, ia.start, jb.start, ia.stop - ia.start, jb.stop - jb.start)
        return store.sum(axis=1, dtype=np.float64)  # NumPy casts in buffers; torch would copy all to float64


class RbfKernel(_BlockKernel):
    """s(i, j) = exp(-|x_i - x_j|^2 / sigma^2), in (0, 1]."""

    def __init__(self, x: np.ndarray, sigma: float):
        super().__init__(x)
        self.sigma = float(sigma)

    def _transform_(self, g: torch.Tensor, i, j) -> None:
        # -(|a|^2 + |b|^2 - 2ab) / sigma^2, clipped at 0 (rounding), then exp; float32 throughout.
        inv = 1.0 / self.sigma**2
        sqi = self._sqt[i] if isinstance(i, slice) else self._sqt[torch.from_numpy(np.asarray(i, dtype=np.int64))]
        g.mul_(2 * inv).sub_((sqi * inv)[:, None]).sub_((self._sqt[j] * inv)[None, :])
        g.clamp_(max=0).exp_()


class CosineKernel(_BlockKernel):
    """s(i, j) = max(0, cos(x_i, x_j))."""

    def __init__(self, x: np.ndarray):
        x = np.asarray(x, dtype=np.float32)
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        super().__init__(x / np.maximum(norms, 1e-12))

    def _transform_(self, g: torch.Tensor, i, j) -> None:
        g.clamp_(min=0)


def _width_floor(widths: np.ndarray) -> np.ndarray:
    """Widths floored at 1e-3 x their positive median: a point with k exact duplicates has a k-th neighbour at
    distance 0, and a zero width would make 0 / 0 of its similarity to those duplicates."""
    pos = widths[widths > 0]
    return np.maximum(widths, 1e-3 * float(np.median(pos)) if pos.size else 1.0)


def adaptive_widths(x: np.ndarray, k: int = 7, block_elems: int = 1 << 24) -> np.ndarray:
    """sigma_i = the distance from row i to its k-th nearest other row (exact, float32), in row blocks of at
    most ``block_elems`` distances (64 MB): nothing n x n is held. ``k`` is capped at n - 1; a single row gets
    width 1."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = len(x)
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    k = min(k, n - 1)
    if k == 0:
        return np.ones(n, dtype=np.float32)
    xt = torch.from_numpy(x)
    sq = torch.from_numpy(np.einsum("ij,ij->i", x, x))
    out = np.empty(n, dtype=np.float32)
    step = max(1, block_elems // n)
    for a in range(0, n, step):
        b = min(a + step, n)
        d2 = torch.addmm(sq[None, :], xt[a:b], xt.T, alpha=-2).add_(sq[a:b, None]).clamp_(min=0)
        d2[torch.arange(b - a), torch.arange(a, b)] = -1.0  # itself: always the smallest, so k + 1 skips it
        out[a:b] = torch.kthvalue(d2, k + 1, dim=1).values.sqrt_().numpy()
    return _width_floor(out)


class AdaptiveKernel(_BlockKernel):
    """s(i, j) = exp(-|x_i - x_j|^2 / (sigma_i sigma_j)) with a width per point (self-tuning, Zelnik-Manor &
    Perona 2004): sigma_i = the distance to i's k-th nearest neighbour (``adaptive_widths``). A dense region
    gets narrow widths and a sparse one wide widths, so every point covers about its k nearest neighbours
    wherever it lies, and no single width decides which regions a pick can cover. Symmetric, in (0, 1]."""

    def __init__(self, x: np.ndarray, widths: np.ndarray):
        super().__init__(x)
        self.widths = np.asarray(widths, dtype=np.float32)
        if self.widths.shape != (self.n,) or not np.all(self.widths > 0):
            raise ValueError("widths must be one positive number per row")
        self._inv = torch.from_numpy(1.0 / self.widths)

    def _transform_(self, g: torch.Tensor, i, j) -> None:
        # -(|a|^2 + |b|^2 - 2ab), clipped at 0 (rounding), scaled by 1 / (sigma_i sigma_j), then exp.
        ii = i if isinstance(i, slice) else torch.from_numpy(np.asarray(i, dtype=np.int64))
        g.mul_(2).sub_(self._sqt[ii][:, None]).sub_(self._sqt[j][None, :]).clamp_(max=0)
        g.mul_(self._inv[ii][:, None]).mul_(self._inv[j][None, :]).exp_()


def _split_large_lists(x: np.ndarray, assign: np.ndarray, centroids: np.ndarray, max_size: int,
                       seed: int) -> np.ndarray:
    """Split every k-means list of more than ``max_size`` rows by a k-means of its own, in place on ``assign``;
    returns the centroids of all lists. A list's neighbour search costs its size times its candidates, so one
    giant list (long-tailed data: a few topics hold most prompts) would cost more than all the others."""
    import faiss

    counts = np.bincount(assign, minlength=len(centroids))
    target = max(1, max_size // 4)  # split into lists of about the mean size
    cen = [centroids]
    total = len(centroids)
    for c in np.flatnonzero(counts > max_size):
        members = np.flatnonzero(assign == c)
        parts = -(-len(members) // target)
        rng = np.random.default_rng(seed + int(c))
        train = x[np.sort(rng.choice(members, size=min(len(members), 40 * parts), replace=False))]
        sub = faiss.Kmeans(x.shape[1], parts, niter=10, seed=seed, min_points_per_centroid=1,
                           max_points_per_centroid=40)
        sub.train(train)
        label = sub.index.search(x[members], 1)[1].ravel()
        ids = np.concatenate([[c], total + np.arange(parts - 1)])  # part 0 keeps the list's id
        assign[members] = ids[label]
        centroids[c] = sub.centroids[0]
        cen.append(sub.centroids[1:])
        total += parts - 1
    return np.concatenate(cen).astype(np.float32)


def _cluster_knn(x: np.ndarray, k: int, clusters: int, nprobe: int, seed: int,
                 timings: dict[str, float]) -> tuple[np.ndarray, np.ndarray, int]:
    """Approximate k nearest neighbours (L2) of every row, as faiss returns them: (squared distances (n, k),
    neighbours (n, k)), nearest first; and the number of distances computed (the matmuls' size).

    k-means (faiss, on a subsample) splits the rows into ``clusters`` lists (lists of over 4x the mean size are
    split again: ``_split_large_lists``). Each list's rows take as
    candidates the members of the ``nprobe`` lists whose centroids are nearest its own (more if they hold fewer
    than k rows), and their neighbours are exact within those candidates: one BLAS matmul per list, then
    top-k. Exact when ``nprobe`` covers every list.
    """
    import faiss

    n, d = x.shape
    t = time.perf_counter()
    rng = np.random.default_rng(seed)
    train = x[np.sort(rng.choice(n, size=min(n, 40 * clusters), replace=False))]
    km = faiss.Kmeans(d, clusters, niter=10, seed=seed, min_points_per_centroid=1, max_points_per_centroid=40)
    km.train(train)
    assign = km.index.search(x, 1)[1].ravel()
    cen = _split_large_lists(x, assign, km.centroids, max_size=4 * -(-n // clusters), seed=seed)
    clusters = len(cen)
    timings["kmeans"] = time.perf_counter() - t

    t = time.perf_counter()
    order = np.argsort(assign, kind="stable")
    counts = np.bincount(assign, minlength=clusters)
    start = np.concatenate([[0], np.cumsum(counts)])
    csq = np.einsum("ij,ij->i", cen, cen)
    probe_order = np.argsort(csq[None, :] - 2 * cen @ cen.T, axis=1, kind="stable")  # own list first (ties aside)
    xt = torch.from_numpy(x)
    sq = np.einsum("ij,ij->i", x, x)
    nbr = np.full((n, k), -1, dtype=np.int64)
    d2 = np.full((n, k), np.inf, dtype=np.float32)
    pairs = 0
    for c in np.flatnonzero(counts):
        lists = probe_order[c]
        enough = np.searchsorted(np.cumsum(counts[lists]), k)  # the first lists holding >= k rows
        lists = np.concatenate([[c], lists[lists != c][: max(nprobe, enough + 1) - 1]])
        cand = np.concatenate([order[start[m]: start[m + 1]] for m in lists])
        xc, neg_sqc = xt[torch.from_numpy(cand)], torch.from_numpy(-sq[cand])[None, :]
        kk = min(k, len(cand))
        members = order[start[c]: start[c + 1]]
        pairs += len(members) * len(cand)
        step = max(1, (1 << 24) // len(cand))  # 64 MB of scores at a time, whatever the list sizes
        for a in range(0, len(members), step):
            q = members[a: a + step]
            # 2 q.c - |c|^2 = |q|^2 - |q - c|^2: the largest are the nearest; one GEMM with the bias folded in
            s = torch.addmm(neg_sqc, xt[torch.from_numpy(q)], xc.T, alpha=2)
            val, pos = torch.topk(s, kk, dim=1)
            nbr[q, :kk] = cand[pos.numpy()]
            d2[q, :kk] = np.maximum(sq[q][:, None] - val.numpy(), 0)
    timings["neighbours"] = time.perf_counter() - t
    return d2, nbr, pairs


class KnnKernel:
    """Sparse kernel: s(j, i) kept only where j is among i's ``k`` nearest neighbours (self included).

    Stored as CSR by candidate j: the rows i that j can cover, and how much. ``method``: ``"flat"``, exact
    neighbours (faiss flat index, n x n distances); ``"cluster"``, cluster-local exact neighbours
    (``_cluster_knn``: ``clusters`` k-means lists, default sqrt(n); ``nprobe`` lists searched per list);
    ``"auto"``, flat up to ``exact_up_to`` rows, cluster beyond. ``timings`` holds the seconds of each stage,
    ``pairs`` the number of distances computed. Similarities: RBF with ``sigma``; with ``adaptive`` = a, the
    adaptive kernel of ``AdaptiveKernel`` with sigma_i the distance to i's a-th neighbour in its own list (a < k;
    ``widths`` keeps them); cosine when neither is given.
    """

    def __init__(self, x: np.ndarray, k: int = 32, sigma: float | None = None, exact_up_to: int = 100_000,
                 nprobe: int = 12, seed: int = 0, method: str = "auto", clusters: int | None = None,
                 adaptive: int | None = None):
        if method not in ("auto", "flat", "cluster"):
            raise ValueError(f"method must be auto, flat or cluster, got {method!r}")
        if adaptive is not None and not 0 < adaptive < k:
            raise ValueError(f"adaptive must be in 1..{k - 1} (below the {k} neighbours kept), got {adaptive}")
        x = np.ascontiguousarray(x, dtype=np.float32)
        if sigma is None and adaptive is None:  # cosine: neighbours by angle, the kernel's own order
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        n, d = x.shape
        self.n = n
        k = min(k, n)
        self.timings: dict[str, float] = {}
        if method == "auto":
            method = "flat" if n <= exact_up_to else "cluster"
        if method == "flat":
            import faiss

            t = time.perf_counter()
            index = faiss.IndexFlatL2(d)
            index.add(x)
            dist, nbr = index.search(x, k)  # dist: squared L2
            self.pairs = n * n
            self.timings["neighbours"] = time.perf_counter() - t
        else:
            clusters = clusters or max(1, round(math.sqrt(n)))
            dist, nbr, self.pairs = _cluster_knn(x, k, min(clusters, n), nprobe, seed, self.timings)
        t = time.perf_counter()
        if adaptive is not None:
            # Position 0 is the row itself (distance 0), so position a is its a-th other neighbour.
            w2 = dist[:, min(adaptive, dist.shape[1] - 1)].astype(np.float64)
            ok = np.isfinite(w2)
            w2[~ok] = np.median(w2[ok]) if ok.any() else 1.0  # a row whose list came up short
            self.widths = _width_floor(np.sqrt(np.maximum(w2, 0)))
            with np.errstate(over="ignore", invalid="ignore"):  # missing neighbours (-1): infinite distance
                sim = np.exp(-np.maximum(dist, 0) / (self.widths[:, None] * self.widths[nbr]))
            sim[nbr < 0] = 0.0
        elif sigma is None:  # unit rows: cos = 1 - |a - b|^2 / 2
            sim = np.maximum(1 - dist / 2, 0)
        else:
            with np.errstate(over="ignore"):  # missing neighbours carry an infinite distance: similarity 0
                sim = np.exp(-np.maximum(dist, 0) / sigma**2)
        self.indptr, self.indices, self.data = _lists_to_csr(nbr, sim.astype(np.float32), n)
        self.timings["csr"] = time.perf_counter() - t

    def row_sums(self) -> np.ndarray:
        return self.gains(np.arange(self.n), np.zeros(self.n, np.float32))

    def gains(self, idx: np.ndarray, cover: np.ndarray, bound: np.ndarray | None = None) -> np.ndarray:
        out = np.empty(len(idx))
        _csr_gains(self.indptr, self.indices, self.data, np.asarray(idx, dtype=np.int64), cover, out)
        return out

    def cover(self, j: int, cover: np.ndarray) -> None:
        _csr_cover(self.indptr, self.indices, self.data, j, cover)


class _RowEval:
    """Exact gains from whole kernel rows, recomputed by matmul or served from a bounded cache of rows.

    Lazy greedy re-evaluates the same strong candidates step after step (a pick makes its whole neighbourhood
    stale); keeping their rows turns a re-evaluation from a (n x d) matmul row into one pass over n floats.
    The cache holds at most ``cache_mb`` (least recently used rows leave first). When every row fits (n up to
    ~23k at 2 GB, float32: half of apricot-select's float64 matrix), ``row_sums`` fills it and no row is
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
        sums = self.kernel.fill(self.store)  # every row fits: compute the kernel once, into the cache
        self.slot = OrderedDict((j, j) for j in range(self.kernel.n))
        self.free = []
        return sums

    def _lookup(self, idx: np.ndarray) -> tuple[list[int], list[int]]:
        """(positions in ``idx`` that are cached, their slots); refreshes their recency."""
        pos, slots = [], []
        for r, j in enumerate(idx.tolist()):
            s = self.slot.get(j)
            if s is not None:
                self.slot.move_to_end(j)
                pos.append(r)
                slots.append(s)
        return pos, slots

    def _fetch(self, want: np.ndarray, bound: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Compute the rows of ``want`` (uncached), plus, in the same matmul, the best-bounded uncached candidates
        (by ``bound``): a 256-row GEMM runs near peak, a 16-row one far below it. Stores them all; returns
        (candidates, rows), ``want`` first."""
        room = min(PREFETCH, len(self.store) // 4)
        if bound is not None and room > len(want):
            top = np.argpartition(-bound, room)[:room] if room < len(bound) else np.arange(len(bound))
            top = top[np.isfinite(bound[top])]
            top = top[np.argsort(-bound[top], kind="stable")]  # best bound first
            taken = set(want.tolist())
            extra = [j for j in top.tolist() if j not in self.slot and j not in taken]
            want = np.concatenate([want, np.array(extra[: room - len(want)], dtype=np.int64)])
        fresh = self.kernel.rows(want)
        for j, row in zip(want.tolist(), fresh, strict=True):
            s = self.free.pop() if self.free else self.slot.popitem(last=False)[1]
            self.slot[j] = s
            self.store[s] = row
        return want, fresh

    def gains(self, idx: np.ndarray, cover: np.ndarray, bound: np.ndarray | None = None) -> np.ndarray:
        if self.dense:
            rows = self.kernel.rows(idx) - cover[None, :]
            return np.maximum(rows, 0, out=rows).sum(axis=1, dtype=np.float64)
        out = np.empty(len(idx))
        if not len(self.store):
            rows = self.kernel.rows(idx)
            _row_gains(rows, np.arange(len(idx)), cover, out)
            return out
        hit, slots = self._lookup(idx)
        if hit:  # before any fetch: fetching can evict them
            g = np.empty(len(hit))
            _row_gains(self.store, np.array(slots, dtype=np.int64), cover, g)
            out[hit] = g
        if len(hit) < len(idx):
            miss = np.setdiff1d(np.arange(len(idx)), hit)
            _, fresh = self._fetch(idx[miss], bound)
            g = np.empty(len(miss))
            _row_gains(fresh, np.arange(len(miss)), cover, g)
            out[miss] = g
        return out

    def cover(self, j: int, cover: np.ndarray) -> None:
        s = self.slot.pop(j, None)  # a pick is never evaluated again: free its slot
        if s is None:
            row = self.kernel.rows(np.array([j]))[0]
        else:
            row = self.store[s]
            self.free.append(s)
        np.maximum(cover, row, out=cover)


def _evaluator(kernel, cache_mb: float):
    return kernel if isinstance(kernel, KnnKernel) else _RowEval(kernel, cache_mb)


def lazy_greedy(kernel, k: int, batch: int = 16, cache_mb: float = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Exact greedy maximisation of facility location: (picks in order, marginal gain of each pick).

    Ties go to the lower index. ``batch`` stale candidates are re-evaluated per round (one matmul); a popped
    candidate whose gain is fresh for this step tops every upper bound, so it is the exact greedy choice. On a
    ``KnnKernel`` the whole loop is compiled (``_csr_lazy_greedy``): its gains are too cheap to batch.
    ``cache_mb`` bounds the cache of kernel rows (``_RowEval``).
    """
    n = kernel.n
    if not 0 < k <= n:
        raise ValueError(f"k must be in 1..{n}, got {k}")
    if isinstance(kernel, KnnKernel):
        picks, gains = np.empty(k, dtype=np.int64), np.empty(k)
        _csr_lazy_greedy(kernel.indptr, kernel.indices, kernel.data, kernel.row_sums(), k, picks, gains)
        return picks, gains
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

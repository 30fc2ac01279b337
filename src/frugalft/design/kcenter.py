"""k-center greedy (Gonzalez 1985; the core-set selection of Sener & Savarese 2018).

Repeatedly add the point farthest from every chosen center: a 2-approximation of the smallest radius that
covers all points with k balls. Each step is one pass over the embeddings: |x_i - c|^2 = |x_i|^2 - 2 x_i.c + |c|^2
with x_i.c from one BLAS matrix-vector product, so the loop runs at memory bandwidth with no (n, d) temporary.
"""

from __future__ import annotations

import numpy as np


def k_center_greedy(x: np.ndarray, k: int, first: int = 0, chunk: int = 1 << 18) -> tuple[np.ndarray, np.ndarray]:
    """(centers in pick order, distance of each new center to the nearest earlier one; NaN for the first).

    ``x`` is (n, d); float64 input is kept in float64, anything else runs in float32. Ties go to the lower index.
    ``chunk`` rows are processed per matrix-vector product, so the temporaries stay small at any n.
    """
    x = np.asarray(x)
    if x.dtype != np.float64:
        x = np.ascontiguousarray(x, dtype=np.float32)
    n = len(x)
    if not 0 < k <= n:
        raise ValueError(f"k must be in 1..{n}, got {k}")
    if not 0 <= first < n:
        raise ValueError(f"first must be a row of x (0..{n - 1}), got {first}")
    sq = np.einsum("ij,ij->i", x, x)
    nearest = np.full(n, np.inf, dtype=x.dtype)  # squared distance to the nearest center so far
    centers = np.empty(k, dtype=np.int64)
    radius = np.empty(k)
    j = first
    buf = np.empty(min(chunk, n), dtype=x.dtype)
    for t in range(k):
        centers[t] = j
        radius[t] = np.nan if t == 0 else float(np.sqrt(max(nearest[j], 0.0)))
        c = x[j]
        cc = sq[j]
        for a in range(0, n, chunk):
            b = min(a + chunk, n)
            d = buf[: b - a]
            np.dot(x[a:b], c, out=d)
            d *= -2
            d += sq[a:b]
            d += cc
            np.minimum(nearest[a:b], d, out=nearest[a:b])
        nearest[j] = -np.inf  # chosen: never the farthest again (rounding may leave it slightly above 0)
        j = int(np.argmax(nearest))
    return centers, radius

"""Splitting a labelling budget over tasks: the quota a task-aware strategy then fills within each task.

Three rules, all returning integer quotas that sum exactly to the budget and never exceed a task's size:

* ``balanced_quota``: equal shares; a task smaller than its share gives all it has, the rest is re-shared.
* ``confidence_quota``: shares proportional to 1 / the base model's mean confidence on the task (the rule of
  the ``task-weighted`` strategy): tasks the model is unsure of get more labels.
* ``smart_quota``: SMART's submodular split (Renduchintala et al. 2024, arXiv 2403.08370, as in their released
  ``get_SMART_mixture.py``). Each task is represented by the mean of its prompt embeddings; a graph-cut function
  over tasks, f(A) = sum_{i in V, j in A} s_ij - lambda sum_{i, j in A} s_ij (cosine similarity, lambda 0.4),
  is maximised greedily over all tasks; the greedy gains go through a Taylor softmax of order 2,
  p_t ∝ 1 + g_t + g_t^2 / 2, and the budget is split in proportion to p. Graph cut rewards a task that
  represents many others and penalises one redundant with tasks already chosen, so near-duplicate tasks share
  budget and an outlying task still gets some. Differences from the released code: similarities are clipped
  at 0 (graph cut is monotone submodular only for s >= 0; mean sentence embeddings of tasks rarely have a
  negative cosine), every task is ranked (SMART can also prune to the first m tasks), and the capped budget is
  re-shared in proportion to p (``allocate``) rather than one label at a time round-robin.
"""

from __future__ import annotations

import numpy as np

from frugalft.design.pools import DesignError

QUOTAS = ("balanced", "confidence", "smart")


def allocate(budget: int, sizes: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Integer quotas summing to ``budget``, proportional to ``weights`` but never above ``sizes``.

    Water-filling: tasks whose share exceeds their size are capped and the rest re-shared; then floors plus
    the largest remainders (ties to the lower task index) among tasks that still have room.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    w = np.asarray(weights, dtype=np.float64)
    if budget > sizes.sum():
        raise DesignError(f"budget {budget} exceeds the {sizes.sum()} prompts available")
    share = np.zeros(len(sizes))
    free = (sizes > 0) & (w > 0)
    if not free.any():
        free = sizes > 0
        w = np.ones_like(w)
    left = float(budget)
    while True:
        s = np.where(free, left * w / w[free].sum(), 0.0)
        over = free & (s >= sizes)
        if not over.any():
            share[free] = s[free]
            break
        share[over] = sizes[over]
        left -= sizes[over].sum()
        free &= ~over
        if not free.any():
            break
    quota = np.minimum(np.floor(share + 1e-9).astype(np.int64), sizes)
    rest = budget - quota.sum()
    frac = share - quota
    while rest > 0:
        room = quota < sizes
        cand = np.flatnonzero(room)
        best = cand[np.lexsort((cand, -frac[cand]))][: rest]
        quota[best] += 1
        frac[best] = -1.0
        rest = budget - quota.sum()
    return quota


def balanced_quota(budget: int, sizes: np.ndarray) -> np.ndarray:
    """Equal shares, capped by each task's size, the remainder re-shared; ties go to the lower task index."""
    return allocate(budget, sizes, np.ones(len(sizes)))


def confidence_quota(budget: int, sizes: np.ndarray, confidence: np.ndarray) -> np.ndarray:
    """Shares proportional to 1 / the mean confidence of each task (floored at 1e-6: no division by zero)."""
    return allocate(budget, sizes, 1.0 / np.maximum(np.asarray(confidence, dtype=np.float64), 1e-6))


def task_means(x: np.ndarray, codes: np.ndarray, n_tasks: int) -> np.ndarray:
    """(n_tasks, d) mean embedding of each task's rows (zero for a task without rows)."""
    sums = np.zeros((n_tasks, x.shape[1]))
    np.add.at(sums, codes, x)
    counts = np.bincount(codes, minlength=n_tasks)
    return sums / np.maximum(counts, 1)[:, None]


def graph_cut_greedy(s: np.ndarray, lam: float = 0.4) -> tuple[np.ndarray, np.ndarray]:
    """Greedy order and gains of graph cut f(A) = sum_{i in V, j in A} s_ij - lam sum_{i, j in A} s_ij.

    The gain of j given A is sum_i s_ij - lam (2 sum_{i in A} s_ij + s_jj); with s >= 0 and lam <= 1/2 it is
    non-negative and shrinks as A grows. Ties go to the lower index."""
    s = np.asarray(s, dtype=np.float64)
    n = len(s)
    total = s.sum(axis=0)
    in_a = np.zeros(n)  # sum_{i in A} s_ij
    left = np.ones(n, dtype=bool)
    order, gains = np.empty(n, dtype=np.int64), np.empty(n)
    for t in range(n):
        g = np.where(left, total - lam * (2 * in_a + np.diag(s)), -np.inf)
        j = int(np.argmax(g))
        order[t], gains[t] = j, g[j]
        left[j] = False
        in_a += s[j]
    return order, gains


def taylor_softmax(g: np.ndarray, order: int = 2) -> np.ndarray:
    """sum_{k <= order} g^k / k!, normalised: positive for every g when the order is even (SMART uses 2)."""
    g = np.asarray(g, dtype=np.float64)
    out, term = np.ones_like(g), np.ones_like(g)
    for k in range(1, order + 1):
        term = term * g / k
        out = out + term
    return out / out.sum()


def smart_quota(budget: int, sizes: np.ndarray, means: np.ndarray, lam: float = 0.4) -> tuple[np.ndarray, np.ndarray]:
    """(quota per task, SMART weight per task); ``means`` is each task's mean embedding (``task_means``)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    m = np.asarray(means, dtype=np.float64)
    u = m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)
    s = np.maximum(u @ u.T, 0.0)
    order, gains = graph_cut_greedy(s, lam)
    weight = np.empty(len(sizes))
    weight[order] = taylor_softmax(gains)
    return allocate(budget, sizes, weight), weight

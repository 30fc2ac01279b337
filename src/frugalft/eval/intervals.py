"""Intervals that respect how an experiment was run: seeds first, then episodes (or prompts) within a seed.

A table cell is ``S`` seeds x ``N`` episodes. Pooling the ``S * N`` episodes into one Wilson interval treats them
as independent, but episodes of one seed share a trained model: 3 models scoring 8%, 0% and 67% are not 300
coin flips at 25%. The *hierarchical bootstrap* resamples at both levels: draw ``S`` seeds with replacement, then
within each drawn seed draw its episodes with replacement, and average; the 2.5% and 97.5% quantiles of that
average over many resamples are the interval. With few seeds it is wide, as it should be.

Comparisons are *paired*: two methods evaluated on the same seeds and the same tasks (the table plays the same
task list, in the same order, for every method of a seed) differ by ``a_i - b_i`` episode by episode; the
hierarchical bootstrap of those differences gives the difference's interval, tighter than two separate intervals
because the task's difficulty cancels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Z_95 = 1.959964


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% by default): episode-level, it ignores seeds."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def hierarchical_bootstrap(per_seed: Sequence[Sequence[float]], level: float = 0.95, resamples: int = 4000,
                           seed: int = 0) -> tuple[float, float, float]:
    """``(mean, lo, hi)``: the mean over seeds of each seed's mean, and its hierarchical bootstrap interval.

    ``per_seed[s]`` holds the values (0/1 successes, returns, paired differences) of seed ``s``'s episodes;
    seeds may have different counts. One seed gives the episode-level bootstrap of that seed alone."""
    boot = bootstrap_means(per_seed, resamples, seed)
    mean = float(np.mean([np.mean(g) for g in per_seed]))
    lo, hi = np.quantile(boot, [(1 - level) / 2, 1 - (1 - level) / 2])
    return mean, float(lo), float(hi)


def bootstrap_means(per_seed: Sequence[Sequence[float]], resamples: int = 4000, seed: int = 0) -> np.ndarray:
    """The ``resamples`` means of the hierarchical bootstrap (seeds with replacement, then each drawn seed's
    values with replacement; a seed drawn twice gets two independent episode resamples)."""
    groups = [np.asarray(g, dtype=float) for g in per_seed]
    if not groups or any(g.size == 0 for g in groups):
        raise ValueError("hierarchical_bootstrap needs at least one seed, each with at least one value")
    rng = np.random.default_rng(seed)
    n_seeds = len(groups)
    picks = rng.integers(0, n_seeds, size=(resamples, n_seeds))  # the seeds of each resample
    totals = np.zeros(resamples)
    for s, g in enumerate(groups):
        rows, _ = np.nonzero(picks == s)  # one entry per time seed s was drawn (a resample may draw it twice)
        if rows.size == 0:
            continue
        means = np.empty(rows.size)
        chunk = max(1, 2_000_000 // g.size)  # bound the index matrix's memory
        for k in range(0, rows.size, chunk):
            m = min(chunk, rows.size - k)
            means[k: k + m] = g[rng.integers(0, g.size, size=(m, g.size))].mean(axis=1)
        np.add.at(totals, rows, means)
    return totals / n_seeds


def unpaired_difference(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]], level: float = 0.95,
                        resamples: int = 4000, seed: int = 0) -> tuple[float, float, float]:
    """``(mean, lo, hi)`` of ``a - b`` (each the mean over its seeds of each seed's mean) when the episodes cannot
    be paired (two runs whose per-episode files are not both kept): each side's own hierarchical bootstrap,
    drawn independently, and the quantiles of the difference of the draws. Wider than a paired interval."""
    boot = bootstrap_means(a, resamples, seed) - bootstrap_means(b, resamples, seed + 1)
    mean = float(np.mean([np.mean(g) for g in a]) - np.mean([np.mean(g) for g in b]))
    lo, hi = np.quantile(boot, [(1 - level) / 2, 1 - (1 - level) / 2])
    return mean, float(lo), float(hi)


def paired_differences(a: dict[int, Sequence[float]], b: dict[int, Sequence[float]],
                       tasks_a: dict[int, Sequence[str]] | None = None,
                       tasks_b: dict[int, Sequence[str]] | None = None) -> dict[int, np.ndarray]:
    """Episode-by-episode ``a - b`` for the seeds both methods ran (``{seed: values}``). With the task ids of
    each episode given, the two lists must name the same tasks in the same order (else ``ValueError``): a
    difference of different tasks is not paired."""
    out = {}
    for s in sorted(set(a) & set(b)):
        if tasks_a is not None and tasks_b is not None and list(tasks_a[s]) != list(tasks_b[s]):
            raise ValueError(f"seed {s}: the two methods played different task lists; no paired comparison")
        x, y = np.asarray(a[s], dtype=float), np.asarray(b[s], dtype=float)
        if x.shape != y.shape:
            raise ValueError(f"seed {s}: {x.size} vs {y.size} episodes; no paired comparison")
        out[s] = x - y
    return out


def mean_t_interval(values: Sequence[float]) -> tuple[float, float]:
    """Mean and half-width of the 95% Student-t interval across seeds (0 with one seed). The one t-interval of
    frugalft: the design curve's ``mean_ci95`` is this as (mean, lower, upper)."""
    from scipy import stats

    n = len(values)
    m = sum(values) / n
    if n < 2:
        return m, 0.0
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))
    return m, float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)

"""The built-in selection strategies (SPEC B.2), one function each. ``frugalft select --list`` shows them."""

from __future__ import annotations

from typing import Any

import numpy as np

from frugalft.design.pools import DesignError
from frugalft.design.quotas import (
    QUOTAS,
    allocate,
    balanced_quota,
    confidence_quota,
    smart_quota,
    task_means,
)
from frugalft.design.selection import Context, strategy


@strategy("random", "uniform without replacement: the baseline of every savings claim")
def random(ctx: Context) -> tuple[np.ndarray, np.ndarray]:
    picks = ctx.rng.choice(len(ctx.pool), size=ctx.budget, replace=False)
    return picks, np.full(ctx.budget, np.nan)


# --- uncertainty of the base model's own greedy answer: top-b by one score --------------------------------
# (score key, True if higher = more uncertain). All six come from one generation pass, cached.
UNCERTAINTY_SCORES = {
    "mean-entropy": ("mean_entropy", True),
    "max-entropy": ("max_entropy", True),
    "least-confidence": ("least_confidence", True),
    "least-confidence-norm": ("least_confidence_norm", True),
    "mean-margin": ("mean_margin", False),
    "min-margin": ("min_margin", False),
}


def _top_by_score(key: str, higher: bool):
    def pick(ctx: Context) -> tuple[np.ndarray, np.ndarray]:
        score = ctx.uncertainty()[key]
        order = np.argsort(-score if higher else score, kind="stable")  # stable: ties keep pool order
        picks = order[: ctx.budget]
        return picks, score[picks]

    return pick


_UNC_DEFAULTS = {"max_new_tokens": 32, "batch_size": 32}
for _name, (_key, _higher) in UNCERTAINTY_SCORES.items():
    _how = "highest" if _higher else "lowest"
    strategy(_name, f"the {_how} {_key.replace('_', ' ')} of the base model's greedy answer",
             **_UNC_DEFAULTS)(_top_by_score(_key, _higher))


# --- diversity in embedding space ---------------------------------------------------------------------------
@strategy("k-center", "k-center greedy (core-set): repeatedly the prompt farthest from all chosen ones",
          features="sentence", batch_size=64)
def k_center(ctx: Context) -> tuple[np.ndarray, np.ndarray]:
    from frugalft.design.kcenter import k_center_greedy

    x = ctx.embeddings()
    first = int(ctx.rng.integers(len(x)))
    picks, radius = k_center_greedy(x, ctx.budget, first=first)
    return picks, radius


FL_KERNELS = ("rbf", "cosine", "adaptive")


def _fl_settings(p: dict[str, Any]) -> tuple[str, str, float | None, int]:
    """(optimizer, kernel, sigma or None for auto, adaptive k) from a strategy's parameters, checked before
    any feature is computed; the optimizer ``auto`` is resolved later, by the size of the rows it gets."""
    optimizer = p["optimizer"]
    if optimizer not in ("auto", "lazy", "stochastic", "knn"):
        raise DesignError(f"facility-location optimizer {optimizer!r}: choose auto, lazy, stochastic or knn")
    if p["kernel"] not in FL_KERNELS:
        raise DesignError(f"facility-location kernel {p['kernel']!r}: choose rbf or cosine (one width for all), "
                          "or adaptive (a width per point)")
    sigma = None
    if p["kernel"] == "rbf" and p["sigma"] != "auto":
        try:
            sigma = float(p["sigma"])
        except (TypeError, ValueError):
            raise DesignError(f"sigma must be 'auto' or a positive number, got {p['sigma']!r}") from None
        if not sigma > 0:
            raise DesignError(f"sigma must be positive, got {sigma}")
    k = p["adaptive_k"]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise DesignError(f"adaptive_k must be a positive integer, got {k!r}")
    if p["kernel"] == "adaptive" and optimizer == "knn" and not k < int(p["knn"]):
        raise DesignError(f"adaptive_k ({k}) must be below knn ({p['knn']}): the width is read off the kNN lists")
    return optimizer, p["kernel"], sigma, int(k)


def _fl_greedy(x: np.ndarray, budget: int, p: dict[str, Any], seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Facility location on the rows of ``x``: (picks, gains, what was chosen: sigma, sigma curves, widths)."""
    from frugalft.design import facility_location as fl

    optimizer, kernel_name, sigma, k = _fl_settings(p)
    if optimizer == "auto":  # exact up to where n x n work stays in minutes on a laptop
        optimizer = "lazy" if len(x) <= 200_000 else "knn"
    info: dict[str, Any] = {}
    if kernel_name == "rbf":
        if sigma is None:
            sigma, info["sigma_curves"] = fl.auto_sigma(x, budget, seed=seed)
        info["sigma"] = sigma
    if optimizer == "knn":
        if kernel_name == "adaptive":
            kernel = fl.KnnKernel(x, k=int(p["knn"]), adaptive=k)
            info["adaptive_sigma_median"] = float(np.median(kernel.widths))
        else:
            kernel = fl.KnnKernel(x, k=int(p["knn"]), sigma=sigma)
    elif kernel_name == "adaptive":
        widths = fl.adaptive_widths(x, k)
        info["adaptive_sigma_median"] = float(np.median(widths))
        kernel = fl.AdaptiveKernel(x, widths)
    else:
        kernel = fl.RbfKernel(x, sigma) if sigma is not None else fl.CosineKernel(x)
    if optimizer == "stochastic":
        picks, gains = fl.stochastic_greedy(kernel, budget, epsilon=float(p["epsilon"]), seed=seed)
    else:
        picks, gains = fl.lazy_greedy(kernel, budget)
    return picks, gains, info


@strategy("facility-location",
          "facility location F(S) = sum_i max_{j in S} s(i,j), greedy; RBF (sigma auto from the gains curve), "
          "cosine, or adaptive (sigma_i = distance to the adaptive_k-th neighbour) kernel; exact lazy greedy, "
          "stochastic greedy, or a sparse kNN kernel for large pools",
          features="sentence", kernel="rbf", sigma="auto", optimizer="auto", epsilon=0.01, knn=32,
          adaptive_k=7, batch_size=64)
def facility_location(ctx: Context) -> tuple[np.ndarray, np.ndarray]:
    _fl_settings(ctx.params)  # a bad setting fails before the features are computed
    picks, gains, info = _fl_greedy(ctx.embeddings(), ctx.budget, ctx.params, ctx.seed)
    ctx.extras.update(info)
    ctx.extras["gains"] = gains
    return picks, gains


# --- task-aware baselines -----------------------------------------------------------------------------------
def _sample_quotas(ctx: Context, codes: np.ndarray, quota: np.ndarray) -> np.ndarray:
    rng = ctx.rng
    chosen = [rng.choice(np.flatnonzero(codes == t), size=q, replace=False) for t, q in enumerate(quota) if q]
    picks = np.concatenate(chosen)
    return rng.permutation(picks)


def _task_confidence(ctx: Context, codes: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Mean confidence of the base model per task: the geometric-mean token probability of its greedy answer."""
    confidence = 1.0 - ctx.uncertainty()["least_confidence_norm"]
    return np.bincount(codes, weights=confidence, minlength=len(sizes)) / np.maximum(sizes, 1)


@strategy("task-balanced", "random within tasks, the budget split as evenly across tasks as their sizes allow")
def task_balanced(ctx: Context) -> tuple[np.ndarray, np.ndarray]:
    codes, names = ctx.pool.task_codes()
    sizes = np.bincount(codes, minlength=len(names))
    quota = balanced_quota(ctx.budget, sizes)
    ctx.extras["quota"] = dict(zip(names, quota.tolist(), strict=True))
    picks = _sample_quotas(ctx, codes, quota)
    return picks, quota[codes[picks]].astype(np.float64)


@strategy("task-weighted",
          "inverse-confidence task weighting: the budget split across tasks in proportion to 1 / the base "
          "model's mean confidence on the task (length-normalised greedy sequence probability); random within",
          max_new_tokens=32, batch_size=16)
def task_weighted(ctx: Context) -> tuple[np.ndarray, np.ndarray]:
    codes, names = ctx.pool.task_codes()
    sizes = np.bincount(codes, minlength=len(names))
    mean_conf = _task_confidence(ctx, codes, sizes)
    weight = 1.0 / np.maximum(mean_conf, 1e-6)
    quota = allocate(ctx.budget, sizes, weight)
    ctx.extras["quota"] = dict(zip(names, quota.tolist(), strict=True))
    ctx.extras["task_confidence"] = dict(zip(names, mean_conf.tolist(), strict=True))
    picks = _sample_quotas(ctx, codes, quota)
    return picks, weight[codes[picks]]


# --- quota per task, then diversity within each task ----------------------------------------------------------
# One global kernel on a long-tailed multi-task pool let facility location spend 111 of 192 labels on one task
# and k-center 141 of 192 on another. Here the budget is split over tasks first (``quota``), and each task's
# share is chosen within that task only, on its own rows (for facility location, with its own kernel width).
def _task_quota(ctx: Context) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(task code per row, task names, quota per task) by the ``quota`` parameter; records the quota."""
    how = ctx.params["quota"]
    if how not in QUOTAS:
        raise DesignError(f"quota {how!r}: choose {', '.join(QUOTAS)}")
    codes, names = ctx.pool.task_codes()
    sizes = np.bincount(codes, minlength=len(names))
    if how == "balanced":
        quota = balanced_quota(ctx.budget, sizes)
    elif how == "confidence":
        mean_conf = _task_confidence(ctx, codes, sizes)
        ctx.extras["task_confidence"] = dict(zip(names, mean_conf.tolist(), strict=True))
        quota = confidence_quota(ctx.budget, sizes, mean_conf)
    else:
        quota, weight = smart_quota(ctx.budget, sizes, task_means(ctx.embeddings(), codes, len(names)))
        ctx.extras["smart_weight"] = dict(zip(names, weight.tolist(), strict=True))
    ctx.extras["quota"] = dict(zip(names, quota.tolist(), strict=True))
    return codes, names, quota


def _interleave(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-task (picks, scores), each in its own pick order, so that every prefix of the result follows
    the quotas: the r-th pick of a task with quota q goes at (r + 1/2) / q (ties: the lower task first)."""
    key = np.concatenate([(np.arange(len(p)) + 0.5) / len(p) for p, _ in parts])
    task = np.concatenate([np.full(len(p), t) for t, (p, _) in enumerate(parts)])
    order = np.lexsort((task, key))
    return np.concatenate([p for p, _ in parts])[order], np.concatenate([s for _, s in parts])[order]


_TASK_DEFAULTS = {"quota": "balanced", "features": "sentence", "max_new_tokens": 32, "batch_size": 32}


@strategy("task-random", "the task quota (balanced, confidence or smart), then uniform within each task: the "
          "control for what diversity adds beyond the quota", **_TASK_DEFAULTS)
def task_random(ctx: Context) -> tuple[np.ndarray, np.ndarray]:
    codes, _, quota = _task_quota(ctx)
    picks = _sample_quotas(ctx, codes, quota)  # quota=balanced: the picks of task-balanced, same seed
    return picks, quota[codes[picks]].astype(np.float64)


@strategy("task-k-center", "the task quota (balanced, confidence or smart), then k-center greedy within each "
          "task on its own embeddings (first center random by seed)", **_TASK_DEFAULTS)
def task_k_center(ctx: Context) -> tuple[np.ndarray, np.ndarray]:
    from frugalft.design.kcenter import k_center_greedy

    codes, _, quota = _task_quota(ctx)
    x = ctx.embeddings()
    rng = ctx.rng  # one generator for every task's first center (``ctx.rng`` is a fresh one at each access)
    parts = []
    for t, q in enumerate(quota.tolist()):
        if q:
            rows = np.flatnonzero(codes == t)
            local, radius = k_center_greedy(x[rows], q, first=int(rng.integers(len(rows))))
            parts.append((rows[local], radius))
    return _interleave(parts)


@strategy("task-facility-location",
          "the task quota (balanced, confidence or smart), then facility location within each task on its own "
          "embeddings, with its own kernel (RBF sigma auto per task, cosine, or adaptive)",
          **_TASK_DEFAULTS, kernel="rbf", sigma="auto", optimizer="auto", epsilon=0.01, knn=32, adaptive_k=7)
def task_facility_location(ctx: Context) -> tuple[np.ndarray, np.ndarray]:
    _fl_settings(ctx.params)
    codes, names, quota = _task_quota(ctx)
    x = ctx.embeddings()
    parts, sigma, widths, curves = [], {}, {}, {}
    for t, q in enumerate(quota.tolist()):
        if q:
            rows = np.flatnonzero(codes == t)
            local, gains, info = _fl_greedy(x[rows], q, ctx.params, ctx.seed)
            parts.append((rows[local], gains))
            if "sigma" in info:
                sigma[names[t]] = info["sigma"]
            if "sigma_curves" in info:
                curves[names[t]] = info["sigma_curves"]
            if "adaptive_sigma_median" in info:
                widths[names[t]] = info["adaptive_sigma_median"]
    if sigma:  # not "sigma": that key holds one number (the CLI prints it, the gains plot reads it)
        ctx.extras["task_sigma"] = sigma
    if curves:  # each task's candidate-width curves: the gains plot draws what chose each task's width
        ctx.extras["task_sigma_curves"] = curves
    if widths:
        ctx.extras["task_adaptive_sigma_median"] = widths
    picks, gains = _interleave(parts)
    ctx.extras["gains"] = gains
    return picks, gains

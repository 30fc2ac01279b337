"""The built-in selection strategies (SPEC B.2), one function each. ``frugalft select --list`` shows them."""

from __future__ import annotations

import numpy as np

from frugalft.design.pools import DesignError
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


@strategy("facility-location",
          "facility location F(S) = sum_i max_{j in S} s(i,j), greedy; RBF (sigma auto from the gains curve) "
          "or cosine kernel; exact lazy greedy, stochastic greedy, or a sparse kNN kernel for large pools",
          features="sentence", kernel="rbf", sigma="auto", optimizer="auto", epsilon=0.01, knn=32,
          batch_size=64)
def facility_location(ctx: Context) -> tuple[np.ndarray, np.ndarray]:
    from frugalft.design import facility_location as fl

    p = ctx.params
    x = ctx.embeddings()
    optimizer = p["optimizer"]
    if optimizer == "auto":  # exact up to where n x n work stays in minutes on a laptop
        optimizer = "lazy" if len(x) <= 200_000 else "knn"
    if optimizer not in ("lazy", "stochastic", "knn"):
        raise DesignError(f"facility-location optimizer {optimizer!r}: choose auto, lazy, stochastic or knn")
    if p["kernel"] not in ("rbf", "cosine"):
        raise DesignError(f"facility-location kernel {p['kernel']!r}: choose rbf or cosine")
    sigma = None
    if p["kernel"] == "rbf":
        if p["sigma"] == "auto":
            sigma, curves = fl.auto_sigma(x, ctx.budget, seed=ctx.seed)
            ctx.extras["sigma_curves"] = curves
        else:
            try:
                sigma = float(p["sigma"])
            except (TypeError, ValueError):
                raise DesignError(f"sigma must be 'auto' or a positive number, got {p['sigma']!r}") from None
            if not sigma > 0:
                raise DesignError(f"sigma must be positive, got {sigma}")
        ctx.extras["sigma"] = sigma
    if optimizer == "knn":
        kernel = fl.KnnKernel(x, k=int(p["knn"]), sigma=sigma)
    else:
        kernel = fl.RbfKernel(x, sigma) if sigma is not None else fl.CosineKernel(x)
    if optimizer == "stochastic":
        picks, gains = fl.stochastic_greedy(kernel, ctx.budget, epsilon=float(p["epsilon"]), seed=ctx.seed)
    else:
        picks, gains = fl.lazy_greedy(kernel, ctx.budget)
    ctx.extras["gains"] = gains
    return picks, gains


# --- task-aware baselines -----------------------------------------------------------------------------------
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


def _sample_quotas(ctx: Context, codes: np.ndarray, quota: np.ndarray) -> np.ndarray:
    rng = ctx.rng
    chosen = [rng.choice(np.flatnonzero(codes == t), size=q, replace=False) for t, q in enumerate(quota) if q]
    picks = np.concatenate(chosen)
    return rng.permutation(picks)


@strategy("task-balanced", "random within tasks, the budget split as evenly across tasks as their sizes allow")
def task_balanced(ctx: Context) -> tuple[np.ndarray, np.ndarray]:
    codes, names = ctx.pool.task_codes()
    sizes = np.bincount(codes, minlength=len(names))
    quota = allocate(ctx.budget, sizes, np.ones(len(names)))
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
    confidence = 1.0 - ctx.uncertainty()["least_confidence_norm"]  # geometric-mean token probability
    mean_conf = np.bincount(codes, weights=confidence, minlength=len(names)) / np.maximum(sizes, 1)
    weight = 1.0 / np.maximum(mean_conf, 1e-6)
    quota = allocate(ctx.budget, sizes, weight)
    ctx.extras["quota"] = dict(zip(names, quota.tolist(), strict=True))
    ctx.extras["task_confidence"] = dict(zip(names, mean_conf.tolist(), strict=True))
    picks = _sample_quotas(ctx, codes, quota)
    return picks, weight[codes[picks]]

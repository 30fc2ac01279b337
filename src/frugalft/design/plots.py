"""The gains plot: marginal gain of each successive greedy pick, the SPEC's tool for judging an RBF width."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from frugalft.atomic import atomic_path
from frugalft.design.selection import Selection


def _width_panel(ax, curves: dict[str, list[float]], sigma: float | None, title: str) -> None:
    """The normalised gains curve of each candidate sigma on a subsample; the chosen one drawn thick."""
    for s, c in curves.items():
        lw = 2.5 if sigma and abs(float(s) - sigma) / sigma < 1e-3 else 1.0
        ax.plot(np.arange(1, len(c) + 1), c, label=f"sigma {s}", lw=lw, marker="." if len(c) < 8 else None)
    ax.axhline(0.5, color="grey", ls=":", lw=1)
    ax.set_xlabel("pick (subsample, budget scaled)")
    ax.set_ylabel("gain / first gain")
    ax.set_title(f"{title}; chosen {sigma:.3g}" if sigma else title, fontsize=9)
    ax.legend(fontsize=6)
    ax.grid(alpha=0.3)


def gains_plot(selection: Selection, path: str | Path) -> None:
    """PNG of the selection's gains per pick; beside it, where sigma was chosen automatically, the normalised
    subsample curves for each candidate sigma (flat = sigma too small, collapsing at once = too large): one
    panel for a global width, one per task for task-facility-location (each task's own width)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = selection.extras.get("sigma_curves")
    per_task: dict[str, dict[str, list[float]]] = selection.extras.get("task_sigma_curves") or {}
    task_sigma: dict[str, float] = selection.extras.get("task_sigma") or {}
    panels = 1 + (1 if curves else 0) + len(per_task)
    cols = min(panels, 4)
    rows = -(-panels // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols if panels <= 2 else 4.2 * cols, 4 * rows),
                             squeeze=False)
    flat = list(axes.ravel())
    ax = flat[0]
    g = np.asarray(selection.scores, dtype=float)
    ax.plot(np.arange(1, len(g) + 1), g, lw=1.5)
    ax.set_xlabel("pick")
    greedy = selection.strategy in ("facility-location", "task-facility-location")
    ax.set_ylabel("marginal gain" if greedy else "score")
    sigma = selection.extras.get("sigma")
    ax.set_title(f"{selection.strategy}" + (f" (sigma = {sigma:.3g})" if sigma else ""))
    ax.set_yscale("log" if np.all(g[np.isfinite(g)] > 0) and len(g) > 1 else "linear")
    ax.grid(alpha=0.3)
    k = 1
    if curves:
        _width_panel(flat[k], curves, sigma, "candidate widths")
        k += 1
    for task, c in sorted(per_task.items()):
        _width_panel(flat[k], c, task_sigma.get(task), task)
        k += 1
    for ax in flat[k:]:
        ax.set_visible(False)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)

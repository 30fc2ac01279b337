"""The gains plot: marginal gain of each successive greedy pick, the SPEC's tool for judging an RBF width."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from frugalft.atomic import atomic_path
from frugalft.design.selection import Selection


def gains_plot(selection: Selection, path: str | Path) -> None:
    """PNG of the selection's gains per pick; beside it, when sigma was chosen automatically, the normalised
    subsample curves for each candidate sigma (flat = sigma too small, collapsing at once = too large)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = selection.extras.get("sigma_curves")
    fig, axes = plt.subplots(1, 2 if curves else 1, figsize=(11 if curves else 6, 4), squeeze=False)
    ax = axes[0, 0]
    g = np.asarray(selection.scores, dtype=float)
    ax.plot(np.arange(1, len(g) + 1), g, lw=1.5)
    ax.set_xlabel("pick")
    ax.set_ylabel("marginal gain" if selection.strategy in ("facility-location",) else "score")
    sigma = selection.extras.get("sigma")
    ax.set_title(f"{selection.strategy}" + (f" (sigma = {sigma:.3g})" if sigma else ""))
    ax.set_yscale("log" if np.all(g[np.isfinite(g)] > 0) and len(g) > 1 else "linear")
    ax.grid(alpha=0.3)
    if curves:
        ax2 = axes[0, 1]
        for s, c in curves.items():
            lw = 2.5 if sigma and abs(float(s) - sigma) / sigma < 1e-3 else 1.0
            ax2.plot(np.arange(1, len(c) + 1), c, label=f"sigma {s}", lw=lw)
        ax2.axhline(0.5, color="grey", ls=":", lw=1)
        ax2.set_xlabel("pick (subsample, budget scaled)")
        ax2.set_ylabel("gain / first gain")
        ax2.set_title(f"candidate widths; chosen {sigma:.3g}" if sigma else "candidate widths")
        ax2.legend(fontsize=7)
        ax2.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)

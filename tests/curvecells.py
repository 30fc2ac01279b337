"""Finished design-curve cells on disk, for the tests of ``summarize``: random and task-balanced at budgets
10 / 20 on two seeds, each seed moving both strategies by the same -0.01 / +0.01, so paired savings are exact:
task-balanced reaches random@20 (ROUGE-L 0.40) at b = 15, a 25% saving on every resample."""

from __future__ import annotations

from pathlib import Path

from frugalft.atomic import write_json

MEANS = {("random", 10): 0.2, ("random", 20): 0.4, ("task-balanced", 10): 0.3, ("task-balanced", 20): 0.5}


def write_cells(out: Path, zero: dict | None = None) -> None:
    """The cells of ``MEANS`` under ``out/cells`` (and a zero-shot cell when ``zero`` is given)."""
    for (s, b), m in MEANS.items():
        for seed, d in ((0, -0.01), (1, 0.01)):
            write_json(out / "cells" / f"{s}__b{b}__s{seed}.json",
                       {"strategy": s, "budget": b, "seed": seed, "rougeL": m + d, "exact_match": m / 2 + d,
                        "eval_loss": 3 - m + d, "macro_rougeL": m, "macro_exact_match": m / 2, "n_eval": 4,
                        "train_loss": 1.0, "train_steps": b, "tokens_per_s": 100.0, "seconds_select": 0.1,
                        "seconds_train": 1.0, "seconds_eval": 0.5})
    if zero is not None:
        write_json(out / "cells" / "zero-shot__b0.json", zero)

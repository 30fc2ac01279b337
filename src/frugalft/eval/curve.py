"""Budget curves: strategies x budgets x seeds of select -> annotate -> SFT -> evaluate, and annotation savings.

Each cell (strategy, budget, seed):
  1. select ``budget`` prompts of the pool with ``select_prompts`` (the base model only; seed = cell seed),
  2. annotate them with the pool's reference responses (the stand-in for human annotators),
  3. fine-tune the base model on them (``train_sft``, seed = cell seed),
  4. generate greedy answers on the held-out eval set and score ROUGE-L and exact match.

A cell writes ``cells/<strategy>__b<budget>__s<seed>.json`` atomically when done; a rerun skips finished
cells, so an interrupted curve resumes where it stopped. Then ``curve.csv`` (one row per cell),
``summary.csv`` (mean and 95% t-interval per strategy and budget), ``savings.csv`` and ``curve.png``.

**Annotation savings** of strategy S against random, at reference budget B_ref (default: the largest budget):
let ``target`` = random's mean metric at B_ref, and m_S(b) S's mean metric (over seeds) as a function of budget,
linearly interpolated between the measured budgets b_1 < ... < b_k. The budget S needs is
``b_S = min { b in [b_1, b_k] : m_S(b) >= target }``; the savings are ``1 - b_S / B_ref``.
If S already reaches the target at b_1, b_S = b_1 and the savings are a lower bound (reported as such);
if S never reaches it within b_k, the savings are undefined (reported as "not reached", < 1 - b_k / B_ref).
If random itself does not improve from b_1 to B_ref, nothing can be measured (status "baseline_flat").
Random's own row is the noise floor: with a non-monotone mean curve it can show non-zero savings against itself.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from frugalft.atomic import atomic_path, write_json, write_text
from frugalft.config import dump_yaml
from frugalft.sft.train import SFTConfig


@dataclass
class CurveConfig:
    pool: str = "runs/pool/pool.jsonl"  # pool with reference responses (`frugalft pool build` makes one)
    eval: str = "runs/pool/eval.jsonl"  # held-out set with references (disjoint from the pool)
    pool_subsample: int = 0  # > 0: a seeded random subset of this many pool rows (CPU scale); 0: all
    pool_seed: int = 0  # seed of that subset (the same subset for every cell)
    eval_per_task: int = 0  # > 0: the first k eval rows of each task; 0: all
    strategies: list[str] = field(default_factory=lambda: ["random", "facility-location"])
    strategy_params: dict[str, Any] = field(default_factory=dict)  # {strategy: {param: value}}
    selection_model: str = ""  # base model for uncertainty / LM features; empty: the SFT model
    budgets: list[int] = field(default_factory=lambda: [50, 100, 200])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    sft: SFTConfig = field(default_factory=lambda: SFTConfig(epochs=3, batch_size=8, max_len=256, save_every=-1,
                                                             save_model=False, log_every=5))
    max_new_tokens: int = 32  # generation cap at evaluation (references are short)
    gen_batch_size: int = 32
    metric: str = "rougeL"  # headline metric (curve.png, summary.csv, savings.csv): rougeL, exact_match, eval_loss
    reference_budget: int = 0  # B_ref of the savings; 0: the largest budget
    out: str = "runs/curve"


class CurveError(ValueError):
    pass


# Metrics a curve can be drawn on, and whether higher is better. eval_loss is the held-out NLL of the reference
# responses: not a generation metric, but informative where a small model's generations are all wrong.
METRICS = {"rougeL": True, "exact_match": True, "eval_loss": False}


# ------------------------------------------------------------------------------------------- statistics


def mean_ci95(values: list[float]) -> tuple[float, float, float]:
    """(mean, lower, upper) of a two-sided 95% Student-t interval; a single value has a zero-width band."""
    from scipy import stats

    x = np.asarray(values, dtype=np.float64)
    m = float(x.mean())
    if len(x) < 2:
        return m, m, m
    half = float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return m, m - half, m + half


def budget_to_reach(budgets: list[float], means: list[float], target: float) -> tuple[float | None, str]:
    """Smallest budget where the linearly interpolated mean curve reaches ``target``.

    Returns (budget, status) with status "interpolated", "at_smallest" (reached at the first budget: an upper
    bound on the budget needed) or "not_reached" (budget None).
    """
    pts = sorted(zip(budgets, means, strict=True))
    if pts[0][1] >= target:
        return float(pts[0][0]), "at_smallest"
    for (b0, m0), (b1, m1) in zip(pts, pts[1:], strict=False):
        if m1 >= target:
            return float(b0 + (target - m0) * (b1 - b0) / (m1 - m0)), "interpolated"
    return None, "not_reached"


def annotation_savings(curves: dict[str, dict[int, float]], reference_budget: int,
                       baseline: str = "random", higher_is_better: bool = True) -> dict[str, dict[str, Any]]:
    """Savings of each strategy against ``baseline`` (see the module docstring for the definition).

    ``curves[strategy][budget]`` is the mean metric over seeds. For a lower-is-better metric (a loss),
    "reaches the target" means "falls to it" (the curves are negated internally).
    """
    sign = 1.0 if higher_is_better else -1.0
    if baseline not in curves:
        raise CurveError(f"savings need the {baseline!r} strategy in the curve")
    if reference_budget not in curves[baseline]:
        raise CurveError(f"reference budget {reference_budget} was not run for {baseline}")
    target = curves[baseline][reference_budget]
    first = curves[baseline][min(curves[baseline])]
    if sign * target <= sign * first:
        # The baseline did not improve from its smallest budget to B_ref (e.g. every score is 0): there is no
        # saving to measure, and the definition would credit every strategy with reaching it "at b_1".
        return {s: {"target": target, "reference_budget": reference_budget, "budget_needed": None,
                    "status": "baseline_flat", "savings": None} for s in curves}
    out = {}
    for s, curve in curves.items():
        budgets = sorted(curve)
        needed, status = budget_to_reach(budgets, [sign * curve[b] for b in budgets], sign * target)
        out[s] = {"target": target, "reference_budget": reference_budget, "budget_needed": needed,
                  "status": status, "savings": None if needed is None else 1 - needed / reference_budget}
    return out


# ------------------------------------------------------------------------------------------------ cells


def cell_name(strategy: str, budget: int, seed: int) -> str:
    return f"{strategy}__b{budget}__s{seed}"


def _load_pools(cfg: CurveConfig):
    from frugalft.design import Pool, load_pool

    pool = load_pool(cfg.pool)
    if not pool.has_responses:
        raise CurveError(f"{cfg.pool} has no response field: the curve annotates from reference responses")
    if cfg.pool_subsample and cfg.pool_subsample < len(pool):
        idx = np.sort(np.random.default_rng(cfg.pool_seed).choice(len(pool), cfg.pool_subsample, replace=False))
        pool = Pool(pool.table.take(idx), source=f"{cfg.pool}[subsample {cfg.pool_subsample}, seed {cfg.pool_seed}]")
    ev = load_pool(cfg.eval)
    rows = ev.table.to_pylist()
    if not ev.has_responses:
        raise CurveError(f"{cfg.eval} has no response field")
    if cfg.eval_per_task:
        seen: dict[str, int] = defaultdict(int)
        kept = []
        for r in rows:
            t = r.get("task") or "all"
            if seen[t] < cfg.eval_per_task:
                kept.append(r)
                seen[t] += 1
        rows = kept
    overlap = set(pool.prompts()) & {r["prompt"] for r in rows}
    if overlap:
        raise CurveError(f"{len(overlap)} eval prompts also appear in the pool (e.g. {next(iter(overlap))[:80]!r})")
    return pool, rows


def run_cell(cfg: CurveConfig, pool, eval_rows: list[dict], strategy: str, budget: int, seed: int,
             out: Path) -> dict:
    from frugalft.design import select_prompts
    from frugalft.eval.generate import generate_answers
    from frugalft.eval.metrics import score
    from frugalft.sft.train import train_sft

    t0 = time.perf_counter()
    sel = select_prompts(pool, strategy, budget, seed=seed, params=cfg.strategy_params.get(strategy),
                         model=cfg.selection_model or cfg.sft.model)
    sel.save(out / "selections" / f"{cell_name(strategy, budget, seed)}.jsonl")
    t_select = time.perf_counter() - t0
    picked = pool.rows(sel.indices)  # annotate: the pool's reference responses stand in for annotators
    sft_cfg = SFTConfig(**{**asdict(cfg.sft), "lora": cfg.sft.lora, "seed": seed,
                           "out": str(out / "sft" / cell_name(strategy, budget, seed))})
    result = train_sft(sft_cfg, [(r["prompt"], r["response"]) for r in picked], quiet=True)
    t_train = time.perf_counter() - t0 - t_select
    preds = generate_answers(result.model, result.prompt_format, [r["prompt"] for r in eval_rows],
                             max_new_tokens=cfg.max_new_tokens, batch_size=cfg.gen_batch_size)
    scores = score(preds, [r["response"] for r in eval_rows], [r.get("task") or "all" for r in eval_rows])
    eval_loss = _eval_loss(result, eval_rows, cfg)
    picked_tasks: dict[str, int] = defaultdict(int)
    for r in picked:
        picked_tasks[r.get("task") or "all"] += 1
    return {
        "strategy": strategy, "budget": budget, "seed": seed,
        "rougeL": scores["rougeL"], "exact_match": scores["exact_match"],
        "macro_rougeL": scores["macro_rougeL"], "macro_exact_match": scores["macro_exact_match"],
        "eval_loss": eval_loss, "n_eval": scores["n"], "per_task": scores["per_task"], "selected_tasks": dict(sorted(picked_tasks.items())),
        "train_loss": result.train_loss, "train_steps": result.steps, "tokens_per_s": result.tokens_per_s,
        "seconds_select": t_select, "seconds_train": t_train,
        "seconds_eval": time.perf_counter() - t0 - t_select - t_train,
        "examples": [{"prompt": r["prompt"][:200], "reference": r["response"], "prediction": p}
                     for r, p in list(zip(eval_rows, preds, strict=True))[:5]],
    }


def _eval_loss(result, eval_rows: list[dict], cfg: CurveConfig) -> float:
    """Held-out loss per reference-response token: smooth where generations are still all wrong."""
    from frugalft.sft.data import encode_all, pad_batch
    from frugalft.sft.train import heldout_loss

    ex = encode_all(result.prompt_format, [(r["prompt"], r["response"]) for r in eval_rows], cfg.sft.max_len)
    pad = result.tokenizer.pad_token_id
    device = next(result.model.parameters()).device
    bs = cfg.gen_batch_size
    return heldout_loss(result.model, [pad_batch(ex[i:i + bs], pad).to(device) for i in range(0, len(ex), bs)])


def run_curve(cfg: CurveConfig, log=print) -> dict:
    """Run every missing cell, then write curve.csv, summary.csv, savings.csv and curve.png; returns the summary."""
    if cfg.metric not in METRICS:
        raise CurveError(f"metric must be one of {', '.join(METRICS)}, not {cfg.metric!r}")
    if not cfg.budgets or any(b < 1 for b in cfg.budgets) or not cfg.seeds or not cfg.strategies:
        raise CurveError("budgets (each >= 1), seeds and strategies must be non-empty")
    import frugalft.design.strategies  # noqa: F401  (registers the built-in strategies)
    from frugalft.design import STRATEGIES

    unknown = [s for s in cfg.strategies if s not in STRATEGIES]
    if unknown:
        raise CurveError(f"unknown strategies {unknown}; choose from {', '.join(sorted(STRATEGIES))}")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "config.yaml", dump_yaml(cfg))
    pool, eval_rows = _load_pools(cfg)
    if max(cfg.budgets) > len(pool):
        raise CurveError(f"budget {max(cfg.budgets)} is larger than the pool ({len(pool)} prompts)")
    log(f"curve: pool {len(pool)} prompts, eval {len(eval_rows)}, "
        f"{len(cfg.strategies)} strategies x {len(cfg.budgets)} budgets x {len(cfg.seeds)} seeds")
    cells = [(s, b, seed) for s in cfg.strategies for b in sorted(cfg.budgets) for seed in cfg.seeds]
    for i, (s, b, seed) in enumerate(cells, 1):
        path = out / "cells" / f"{cell_name(s, b, seed)}.json"
        if path.exists():
            continue
        t = time.perf_counter()
        row = run_cell(cfg, pool, eval_rows, s, b, seed, out)
        write_json(path, row)
        log(f"[{i}/{len(cells)}] {s} b={b} seed={seed}: rougeL {row['rougeL']:.4f} EM {row['exact_match']:.4f} "
            f"({time.perf_counter() - t:.0f} s)")
    return summarize(cfg, out)


def summarize(cfg: CurveConfig, out: Path) -> dict:
    rows = []
    for s in cfg.strategies:
        for b in sorted(cfg.budgets):
            for seed in cfg.seeds:
                path = out / "cells" / f"{cell_name(s, b, seed)}.json"
                rows.append(json.loads(path.read_text(encoding="utf-8")))
    cols = ["strategy", "budget", "seed", "rougeL", "exact_match", "eval_loss", "macro_rougeL", "macro_exact_match",
            "n_eval",
            "train_loss", "train_steps", "tokens_per_s", "seconds_select", "seconds_train", "seconds_eval"]
    _write_csv(out / "curve.csv", cols, [[r[c] for c in cols] for r in rows])

    result: dict[str, Any] = {"metric": cfg.metric}
    for metric, higher in METRICS.items():
        summary: dict[str, dict[int, dict[str, float]]] = defaultdict(dict)
        for s in cfg.strategies:
            for b in sorted(cfg.budgets):
                vals = [r[metric] for r in rows if r["strategy"] == s and r["budget"] == b]
                m, lo, hi = mean_ci95(vals)
                summary[s][b] = {"mean": m, "lo": lo, "hi": hi, "n": len(vals)}
        suffix = "" if metric == cfg.metric else f"_{metric}"
        _write_csv(out / f"summary{suffix}.csv", ["strategy", "budget", f"{metric}_mean", "ci95_lo", "ci95_hi",
                                                  "n_seeds"],
                   [[s, b, v["mean"], v["lo"], v["hi"], v["n"]] for s, d in summary.items() for b, v in d.items()])
        entry: dict[str, Any] = {"summary": {s: {str(b): v for b, v in d.items()} for s, d in summary.items()}}
        if "random" in cfg.strategies:
            ref = cfg.reference_budget or max(cfg.budgets)
            sav = annotation_savings({s: {b: v["mean"] for b, v in d.items()} for s, d in summary.items()}, ref,
                                     higher_is_better=higher)
            _write_csv(out / f"savings{suffix}.csv",
                       ["strategy", "reference_budget", "target", "budget_needed", "status", "savings"],
                       [[s, v["reference_budget"], v["target"], v["budget_needed"], v["status"], v["savings"]]
                        for s, v in sav.items()])
            entry["savings"] = sav
        plot_curve(summary, metric, out / f"curve{suffix}.png")
        result[metric] = entry
    result.update(result[cfg.metric])  # the headline metric's summary and savings at the top level
    write_json(out / "summary.json", result)
    return result


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        for r in rows:
            w.writerow([f"{x:.6g}" if isinstance(x, float) else x for x in r])


def plot_curve(summary: dict[str, dict[int, dict[str, float]]], metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for s, d in summary.items():
        b = sorted(d)
        ax.plot(b, [d[x]["mean"] for x in b], marker="o", label=s)
        ax.fill_between(b, [d[x]["lo"] for x in b], [d[x]["hi"] for x in b], alpha=0.18)
    ax.set_xscale("log")
    ax.minorticks_off()  # log-scale minor labels (3x10^1, ...) would collide with the budget ticks
    ax.set_xticks(sorted({x for d in summary.values() for x in d}))
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel("annotation budget (prompts labelled)")
    ax.set_ylabel(f"{metric} on held-out set (mean, 95% CI)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)

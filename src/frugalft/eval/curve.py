"""Budget curves: strategies x budgets x seeds of select -> annotate -> SFT -> evaluate, and annotation savings.

Each cell (strategy, budget, seed):
  1. select ``budget`` prompts of the pool with ``select_prompts`` (the base model only; seed = cell seed),
  2. annotate them with the pool's reference responses (the stand-in for human annotators),
  3. fine-tune the base model on them (``train_sft``, seed = cell seed),
  4. generate greedy answers on the held-out eval set and score ROUGE-L and exact match.

Before them, one **zero-shot** cell (budget 0, ``cells/zero-shot__b0.json``): the base model as it is, no
fine-tuning, evaluated exactly like the cells (same eval set, prompt format, generation settings and held-out
loss), so the curve shows what fine-tuning added. Greedy decoding makes it seed-independent: one cell per curve
(for a random-init model the base is the one the first seed's cells start from).

A cell writes ``cells/<strategy>__b<budget>__s<seed>.json`` atomically when done; a rerun skips finished
cells, so an interrupted curve resumes where it stopped. Each finished cell logs the elapsed time and an ETA.
Then ``curve.csv`` (one row per cell), ``summary.csv`` (mean and 95% t-interval per strategy and budget, and
the zero-shot row), ``savings.csv``, ``summary.md`` (the tables for a report) and ``curve.png`` (the
zero-shot score as a dashed line).

**Annotation savings** of strategy S against random, at reference budget B_ref (default: the largest budget):
let ``target`` = random's mean metric at B_ref, and m_S(b) S's mean metric (over seeds) as a function of budget,
linearly interpolated between the measured budgets b_1 < ... < b_k. The budget S needs is
``b_S = min { b in [b_1, b_k] : m_S(b) >= target }``; the savings are ``1 - b_S / B_ref``.
If S already reaches the target at b_1, b_S = b_1 and the savings are a lower bound (reported as such);
if S never reaches it within b_k, the savings are undefined (reported as "not reached", < 1 - b_k / B_ref).
If random itself does not improve from b_1 to B_ref, nothing can be measured (status "baseline_flat").
Random's own row is the noise floor: with a non-monotone mean curve it can show non-zero savings against itself.
Each savings figure comes with a 95% interval from a bootstrap over seeds, **paired by seed** (a cell seed fixes
the SFT randomness, so strategy and random share it): draw the seeds with replacement, average both curves over
the drawn seeds, recompute the savings, and take the 2.5% and 97.5% quantiles (``paired_savings_interval``).
The zero-shot row takes no part in the savings (they are over budgets >= the smallest budget run).
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

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
    tasks: list[str] = field(default_factory=list)  # non-empty: keep only these tasks (pool and eval set)
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
    zero_shot: bool = True  # also evaluate the base model without fine-tuning (budget 0, one cell)
    out: str = "runs/curve"
    # Log each cell's SFT metrics to TensorBoard or W&B too (one run per cell, tagged strategy/budget/seed).
    report_to: Literal["none", "tensorboard", "wandb"] = "none"


class CurveError(ValueError):
    pass


# Metrics a curve can be drawn on, and whether higher is better. eval_loss is the held-out NLL of the reference
# responses: not a generation metric, but informative where a small model's generations are all wrong.
METRICS = {"rougeL": True, "exact_match": True, "eval_loss": False}

ZERO_SHOT = "zero-shot"  # the strategy name of the budget-0 cell (the base model, no fine-tuning)
ZERO_SHOT_LABEL = "zero-shot (no fine-tuning)"


# ------------------------------------------------------------------------------------------- statistics


def mean_ci95(values: list[float]) -> tuple[float, float, float]:
    """(mean, lower, upper) of the two-sided 95% Student-t interval (``intervals.mean_t_interval``); a single
    value has a zero-width band."""
    from frugalft.eval.intervals import mean_t_interval

    m, half = mean_t_interval([float(v) for v in values])
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


def _quantile_or_none(v: np.ndarray, q: float) -> float | None:
    """The linearly interpolated q-quantile of sorted ``v`` (NumPy's default rule); None where it touches a
    -inf (a resample whose strategy never reached the target: below any savings that can be measured)."""
    pos = q * (len(v) - 1)
    i, j = math.floor(pos), math.ceil(pos)
    if not (np.isfinite(v[i]) and np.isfinite(v[j])):
        return None
    return float(v[i] + (v[j] - v[i]) * (pos - i))


def paired_savings_interval(per_seed: dict[str, dict[int, dict[int, float]]], reference_budget: int,
                            baseline: str = "random", higher_is_better: bool = True, level: float = 0.95,
                            resamples: int = 2000, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Bootstrap interval of each strategy's savings against ``baseline``, paired by seed.

    ``per_seed[strategy][budget][seed]`` is one cell's metric. The seeds that the strategy and the baseline both
    ran at every budget are drawn with replacement, the same draw for both (the seed's SFT randomness, the
    good or bad luck of that run, is common to the two and cancels); both curves are averaged over the drawn
    seeds and ``annotation_savings`` recomputed on those means. Per strategy: ``savings_lo`` and ``savings_hi``,
    the (1 - level) / 2 and (1 + level) / 2 quantiles of the resampled savings; ``savings_p_gt0``, the share of
    resamples with savings above 0; ``savings_seeds``, the paired seeds. In the quantiles a resample where the
    strategy never reaches the target ranks below every reached one (a bound on it is then None), a resample
    reached at the smallest budget counts as its lower bound, and one where the baseline is flat has no savings
    and is left out. Fewer than 2 paired seeds, or no resample with savings: every figure None.
    """
    if baseline not in per_seed:
        raise CurveError(f"savings need the {baseline!r} strategy in the curve")
    base = per_seed[baseline]
    if reference_budget not in base:
        raise CurveError(f"reference budget {reference_budget} was not run for {baseline}")
    base_budgets = sorted(base)
    out: dict[str, dict[str, Any]] = {}
    for s, cur in per_seed.items():
        budgets = sorted(cur)
        common = set.intersection(*(set(base[b]) for b in base_budgets), *(set(cur[b]) for b in budgets))
        seeds = sorted(common)
        res: dict[str, Any] = {"savings_lo": None, "savings_hi": None, "savings_p_gt0": None,
                               "savings_seeds": len(seeds)}
        out[s] = res
        if len(seeds) < 2:
            continue
        a = np.array([[base[b][k] for k in seeds] for b in base_budgets], dtype=np.float64)
        c = np.array([[cur[b][k] for k in seeds] for b in budgets], dtype=np.float64)
        draws = np.random.default_rng(seed).integers(0, len(seeds), size=(resamples, len(seeds)))
        mean_a, mean_c = a[:, draws].mean(axis=2), c[:, draws].mean(axis=2)  # (budgets, resamples)
        vals = np.empty(resamples)
        for r in range(resamples):
            curves = {baseline: dict(zip(base_budgets, mean_a[:, r].tolist(), strict=True)),
                      s: dict(zip(budgets, mean_c[:, r].tolist(), strict=True))}
            v = annotation_savings(curves, reference_budget, baseline, higher_is_better)[s]
            vals[r] = np.nan if v["status"] == "baseline_flat" else -np.inf if v["savings"] is None else v["savings"]
        vals = np.sort(vals[~np.isnan(vals)])
        if not len(vals):
            continue
        res["savings_lo"] = _quantile_or_none(vals, (1 - level) / 2)
        res["savings_hi"] = _quantile_or_none(vals, (1 + level) / 2)
        res["savings_p_gt0"] = float(np.mean(vals > 0))
    return out


def comparisons(strategies: list[str]) -> list[tuple[str, str]]:
    """The paired comparisons a curve reports, as (strategy, versus): every strategy against random, and every
    other within-task strategy (``task-*``) against task-random, which shares its quota: that difference is what
    choosing inside a task adds beyond the split of the budget over tasks."""
    pairs = [(s, "random") for s in strategies if s != "random" and "random" in strategies]
    if "task-random" in strategies:
        pairs += [(s, "task-random") for s in strategies if s.startswith("task-") and s != "task-random"]
    return pairs


def paired_differences(per_seed: dict[str, dict[int, dict[int, float]]], strategy: str,
                       versus: str) -> dict[int, dict[str, Any]]:
    """Per budget: ``strategy`` minus ``versus`` seed by seed (the seeds both ran; a cell seed fixes the SFT
    randomness and both are scored on the same eval prompts), the mean difference and its two-sided 95%
    Student-t interval over seeds (``intervals.mean_t_interval``), and the differences themselves."""
    from frugalft.eval.intervals import mean_t_interval

    out: dict[int, dict[str, Any]] = {}
    for b in sorted(set(per_seed.get(strategy, {})) & set(per_seed.get(versus, {}))):
        seeds = sorted(set(per_seed[strategy][b]) & set(per_seed[versus][b]))
        if not seeds:
            continue
        diffs = [per_seed[strategy][b][k] - per_seed[versus][b][k] for k in seeds]
        m, half = mean_t_interval(diffs)
        out[b] = {"mean": m, "lo": m - half, "hi": m + half, "n": len(seeds), "by_seed": diffs}
    return out


# ------------------------------------------------------------------------------------------------ cells


def cell_name(strategy: str, budget: int, seed: int | None = None) -> str:
    return f"{strategy}__b{budget}" if seed is None else f"{strategy}__b{budget}__s{seed}"


def zero_shot_path(out: Path) -> Path:
    return out / "cells" / f"{cell_name(ZERO_SHOT, 0)}.json"


def _load_pools(cfg: CurveConfig):
    import pyarrow as pa
    import pyarrow.compute as pc

    from frugalft.design import Pool, load_pool

    pool = load_pool(cfg.pool)
    if not pool.has_responses:
        raise CurveError(f"{cfg.pool} has no response field: the curve annotates from reference responses")
    if cfg.tasks:
        if not pool.has_tasks:
            raise CurveError(f"tasks={cfg.tasks} but {cfg.pool} has no task field")
        present = set(pool.table.column("task").to_pylist())
        missing = sorted(set(cfg.tasks) - present)
        if missing:
            raise CurveError(f"tasks {missing} are not in {cfg.pool}; it has {', '.join(sorted(present))}")
        keep = pc.is_in(pool.table.column("task"), value_set=pa.array(cfg.tasks))
        pool = Pool(pool.table.filter(keep), source=f"{cfg.pool}[{len(cfg.tasks)} tasks]")
    if cfg.pool_subsample and cfg.pool_subsample < len(pool):
        idx = np.sort(np.random.default_rng(cfg.pool_seed).choice(len(pool), cfg.pool_subsample, replace=False))
        pool = Pool(pool.table.take(idx), source=f"{pool.source}[subsample {cfg.pool_subsample}, seed {cfg.pool_seed}]")
    ev = load_pool(cfg.eval)
    rows = ev.table.to_pylist()
    if not ev.has_responses:
        raise CurveError(f"{cfg.eval} has no response field")
    if cfg.tasks:
        rows = [r for r in rows if r.get("task") in set(cfg.tasks)]
    if cfg.eval_per_task:
        seen: dict[str, int] = defaultdict(int)
        kept = []
        for r in rows:
            t = r.get("task") or "all"
            if seen[t] < cfg.eval_per_task:
                kept.append(r)
                seen[t] += 1
        rows = kept
    if not rows:
        raise CurveError(f"no eval rows left in {cfg.eval} (tasks={cfg.tasks})")
    overlap = set(pool.prompts()) & {r["prompt"] for r in rows}
    if overlap:
        raise CurveError(f"{len(overlap)} eval prompts also appear in the pool (e.g. {next(iter(overlap))[:80]!r})")
    return pool, rows


def _evaluate(model, fmt, eval_rows: list[dict], cfg: CurveConfig) -> dict:
    """Greedy answers on the eval set, their ROUGE-L / exact match, and the held-out loss: every cell's metrics."""
    from frugalft.eval.generate import generate_answers
    from frugalft.eval.metrics import score

    # A LoRA adapter is folded into the weights while the cell is evaluated: the same answers (200 of 200 on the
    # SmolLM2 curve), a held-out loss equal to ~1e-6, and ~25% less time than running the adapter branches.
    merge = hasattr(model, "merge_adapter")
    if merge:
        model.merge_adapter()
    try:
        preds = generate_answers(model, fmt, [r["prompt"] for r in eval_rows], max_new_tokens=cfg.max_new_tokens,
                                 batch_size=cfg.gen_batch_size)
        loss = _eval_loss(model, fmt, eval_rows, cfg)
    finally:
        if merge:
            model.unmerge_adapter()
    scores = score(preds, [r["response"] for r in eval_rows], [r.get("task") or "all" for r in eval_rows])
    return {
        "rougeL": scores["rougeL"], "exact_match": scores["exact_match"],
        "macro_rougeL": scores["macro_rougeL"], "macro_exact_match": scores["macro_exact_match"],
        "eval_loss": loss, "n_eval": scores["n"], "per_task": scores["per_task"],
        "examples": [{"prompt": r["prompt"][:200], "reference": r["response"], "prediction": p}
                     for r, p in list(zip(eval_rows, preds, strict=True))[:5]],
    }


def run_cell(cfg: CurveConfig, pool, eval_rows: list[dict], strategy: str, budget: int, seed: int,
             out: Path) -> dict:
    from frugalft.design import select_prompts
    from frugalft.sft.train import train_sft

    t0 = time.perf_counter()
    sel = select_prompts(pool, strategy, budget, seed=seed, params=cfg.strategy_params.get(strategy),
                         model=cfg.selection_model or cfg.sft.model)
    sel.save(out / "selections" / f"{cell_name(strategy, budget, seed)}.jsonl")
    if "gains" in sel.extras:  # greedy selections: what chose the kernel width, beside the picks
        from frugalft.design.plots import gains_plot

        gains_plot(sel, out / "selections" / f"{cell_name(strategy, budget, seed)}.gains.png")
    t_select = time.perf_counter() - t0
    picked = pool.rows(sel.indices)  # annotate: the pool's reference responses stand in for annotators
    sft_cfg = SFTConfig(**{**asdict(cfg.sft), "lora": cfg.sft.lora, "seed": seed,
                           "out": str(out / "sft" / cell_name(strategy, budget, seed))})
    result = train_sft(sft_cfg, [(r["prompt"], r["response"]) for r in picked], quiet=True)
    t_train = time.perf_counter() - t0 - t_select
    metrics = _evaluate(result.model, result.prompt_format, eval_rows, cfg)
    picked_tasks: dict[str, int] = defaultdict(int)
    for r in picked:
        picked_tasks[r.get("task") or "all"] += 1
    return {
        "strategy": strategy, "budget": budget, "seed": seed, **metrics,
        "selected_tasks": dict(sorted(picked_tasks.items())),
        "train_loss": result.train_loss, "train_steps": result.steps, "tokens_per_s": result.tokens_per_s,
        "seconds_select": t_select, "seconds_train": t_train,
        "seconds_eval": time.perf_counter() - t0 - t_select - t_train,
    }


def run_zero_shot(cfg: CurveConfig, eval_rows: list[dict]) -> dict:
    """The budget-0 cell: the base model as it is, evaluated like every cell (no SFT, no selection)."""
    from frugalft.models import load_model
    from frugalft.sft.data import PromptFormat

    t0 = time.perf_counter()
    seed = cfg.seeds[0]  # matters only for a random-init model: the base that this seed's cells start from
    model, tok = load_model(cfg.sft.model, device=cfg.sft.device, dtype=cfg.sft.dtype, seed=seed)
    # The prompt format train_sft builds (and hands the cells' evaluation as result.prompt_format).
    fmt = PromptFormat(tok, cfg.sft.chat_template, cfg.sft.plain_template)
    t_load = time.perf_counter() - t0
    metrics = _evaluate(model, fmt, eval_rows, cfg)
    return {
        "strategy": ZERO_SHOT, "budget": 0, "seed": seed, **metrics, "selected_tasks": {},
        "train_loss": None, "train_steps": 0, "tokens_per_s": None,
        "seconds_select": 0.0, "seconds_train": t_load, "seconds_eval": time.perf_counter() - t0 - t_load,
    }


def _eval_loss(model, fmt, eval_rows: list[dict], cfg: CurveConfig) -> float:
    """Held-out loss per reference-response token: smooth where generations are still all wrong."""
    from frugalft.sft.data import encode_all, pad_batch
    from frugalft.sft.train import heldout_loss

    ex = encode_all(fmt, [(r["prompt"], r["response"]) for r in eval_rows], cfg.sft.max_len)
    ex = sorted(ex, key=lambda e: len(e.input_ids))  # batches of similar length: little padding (the mean is per token)
    pad = fmt.tok.pad_token_id
    device = next(model.parameters()).device
    bs = cfg.gen_batch_size
    return heldout_loss(model, [pad_batch(ex[i:i + bs], pad).to(device) for i in range(0, len(ex), bs)])


# -------------------------------------------------------------------------------------------- progress


def train_units(cfg: CurveConfig, budget: int) -> float:
    """What a cell's SFT time grows with: the examples it trains on (budget x epochs, or max_steps x batch)."""
    if budget == 0:
        return 0.0
    if cfg.sft.max_steps > 0:
        return float(cfg.sft.max_steps * cfg.sft.batch_size)
    return float(budget * cfg.sft.epochs)


def estimate_remaining(done: list[dict], todo: list[tuple[str, int]], units: Callable[[int], float]) -> float:
    """Seconds left for the ``todo`` cells (strategy, budget), from the cells ``done`` in this run.

    A cell costs select + train + eval: eval is the same for every cell (the same eval set), the mean of the
    done ones; train grows with the examples seen, a + r x units(budget) fitted to the done cells (r alone
    while one budget has run); select is the strategy's last selection (its features are cached after the
    first), or for a strategy not run yet the mean first selection of the others (a feature pass).
    """
    if not done:
        return float("nan")
    eval_s = float(np.mean([d["seconds_eval"] for d in done]))
    trained = [(units(d["budget"]), d["seconds_train"]) for d in done if d["budget"] > 0]
    a, r = 0.0, 0.0
    if trained:
        u = np.array([x for x, _ in trained])
        t = np.array([y for _, y in trained])
        if len(set(u.tolist())) >= 2:
            r, a = np.polyfit(u, t, 1)
            if a < 0 or r < 0:  # noise: fall back to pure proportionality
                a, r = 0.0, float(t.sum() / max(u.sum(), 1e-9))
        else:
            r = float(t.sum() / max(u.sum(), 1e-9))
    last_select: dict[str, float] = {}
    first_select: dict[str, float] = {}
    for d in done:
        if d["budget"] > 0:
            first_select.setdefault(d["strategy"], d["seconds_select"])
            last_select[d["strategy"]] = d["seconds_select"]
    cold = float(np.mean(list(first_select.values()))) if first_select else 0.0
    warm = float(np.mean(list(last_select.values()))) if last_select else 0.0
    total = 0.0
    for s, b in todo:
        if b == 0:  # zero-shot: a model load and the evaluation
            total += eval_s
            continue
        if s not in last_select:
            total += cold
            last_select[s] = warm  # its first cell caches its features
        else:
            total += last_select[s]
        total += eval_s + a + r * units(b)
    return total


def fmt_seconds(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = int(round(s))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


# ------------------------------------------------------------------------------------------------- run


def run_curve(cfg: CurveConfig, log: Callable[[str], Any] = print) -> dict:
    """Run every missing cell (the zero-shot one first), logging each with the elapsed time and an ETA, then
    write curve.csv, summary*.csv, savings*.csv, summary.md and curve*.png; returns the summary."""
    if cfg.metric not in METRICS:
        raise CurveError(f"metric must be one of {', '.join(METRICS)}, not {cfg.metric!r}")
    if not cfg.budgets or any(b < 1 for b in cfg.budgets) or not cfg.seeds:
        raise CurveError("budgets (each >= 1) and seeds must be non-empty")
    if not cfg.strategies and not cfg.zero_shot:  # strategies=[] with zero_shot: only the base model's scores
        raise CurveError("no strategies: give some, or keep zero_shot on to score the base model alone")
    import frugalft.design.strategies  # noqa: F401  (registers the built-in strategies)
    from frugalft.design import STRATEGIES

    unknown = [s for s in cfg.strategies if s not in STRATEGIES]
    if unknown:
        raise CurveError(f"unknown strategies {unknown}; choose from {', '.join(sorted(STRATEGIES))}")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "config.yaml", dump_yaml(cfg))
    pool, eval_rows = _load_pools(cfg)
    if cfg.strategies and max(cfg.budgets) > len(pool):
        raise CurveError(f"budget {max(cfg.budgets)} is larger than the pool ({len(pool)} prompts)")
    cells: list[tuple[str, int, int | None]] = [(ZERO_SHOT, 0, None)] if cfg.zero_shot else []
    # Seed by seed: a curve stopped part-way holds whole seeds of every strategy, which pair.
    cells += [(s, b, seed) for seed in cfg.seeds for s in cfg.strategies for b in sorted(cfg.budgets)]

    def path_of(s: str, b: int, seed: int | None) -> Path:
        return zero_shot_path(out) if s == ZERO_SHOT else out / "cells" / f"{cell_name(s, b, seed)}.json"

    todo = [c for c in cells if not path_of(*c).exists()]
    grid = (f"{len(cfg.strategies)} strategies x {len(cfg.budgets)} budgets x {len(cfg.seeds)} seeds"
            + (" + zero-shot" if cfg.zero_shot else "")) if cfg.strategies else "the zero-shot cell only"
    log(f"curve: pool {len(pool)} prompts, eval {len(eval_rows)}, {grid}: {len(cells)} cells, "
        f"{len(cells) - len(todo)} already done")
    start = time.perf_counter()
    done: list[dict] = []  # this run's finished cells: their timings drive the ETA
    for k, (s, b, seed) in enumerate(todo):
        path = path_of(s, b, seed)
        t = time.perf_counter()
        row = run_zero_shot(cfg, eval_rows) if s == ZERO_SHOT else run_cell(cfg, pool, eval_rows, s, b, seed, out)
        write_json(path, row)
        done.append(row)
        elapsed = time.perf_counter() - start
        left = estimate_remaining(done, [(x, y) for x, y, _ in todo[k + 1:]], lambda b_: train_units(cfg, b_))
        eta = time.strftime("%H:%M", time.localtime(time.time() + left)) if math.isfinite(left) else "?"
        what = f"{s} b={b}" + ("" if seed is None else f" seed={seed}")
        log(f"[{cells.index((s, b, seed)) + 1}/{len(cells)}] {what}: rougeL {row['rougeL']:.4f} "
            f"EM {row['exact_match']:.4f} loss {row['eval_loss']:.4f} ({time.perf_counter() - t:.0f} s) | "
            f"elapsed {fmt_seconds(elapsed)}, {len(todo) - k - 1} left, ETA {fmt_seconds(left)} (~{eta})")
    return summarize(cfg, out)


# ------------------------------------------------------------------------------------------- summaries


def labels_per_task(rows: list[dict]) -> dict[str, dict[str, dict[str, int]]]:
    """``{strategy: {budget: {task: labels}}}`` summed over seeds, from the cells' ``selected_tasks``: where each
    strategy spent its labels (a selector that piles them onto one task shows here first)."""
    out: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))
    for r in rows:
        for task, n in r.get("selected_tasks", {}).items():
            out[r["strategy"]][str(r["budget"])][task] += n
    return {s: {b: dict(sorted(t.items())) for b, t in d.items()} for s, d in out.items()}


def summarize(cfg: CurveConfig, out: Path) -> dict:
    rows = []
    for s in cfg.strategies:
        for b in sorted(cfg.budgets):
            for seed in cfg.seeds:
                path = out / "cells" / f"{cell_name(s, b, seed)}.json"
                rows.append(json.loads(path.read_text(encoding="utf-8")))
    zs_path = zero_shot_path(out)
    zero = json.loads(zs_path.read_text(encoding="utf-8")) if cfg.zero_shot and zs_path.exists() else None
    cols = ["strategy", "budget", "seed", "rougeL", "exact_match", "eval_loss", "macro_rougeL", "macro_exact_match",
            "n_eval",
            "train_loss", "train_steps", "tokens_per_s", "seconds_select", "seconds_train", "seconds_eval"]
    _write_csv(out / "curve.csv", cols, [[r.get(c) for c in cols] for r in ([zero] if zero else []) + rows])

    result: dict[str, Any] = {"metric": cfg.metric}
    for metric, higher in METRICS.items():
        summary: dict[str, dict[int, dict[str, float]]] = defaultdict(dict)
        for s in cfg.strategies:
            for b in sorted(cfg.budgets):
                vals = [r[metric] for r in rows if r["strategy"] == s and r["budget"] == b]
                m, lo, hi = mean_ci95(vals)
                summary[s][b] = {"mean": m, "lo": lo, "hi": hi, "n": len(vals)}
        zs = None if zero is None else {"mean": zero[metric], "lo": zero[metric], "hi": zero[metric], "n": 1}
        suffix = "" if metric == cfg.metric else f"_{metric}"
        _write_csv(out / f"summary{suffix}.csv", ["strategy", "budget", f"{metric}_mean", "ci95_lo", "ci95_hi",
                                                  "n_seeds"],
                   ([[ZERO_SHOT, 0, zs["mean"], zs["lo"], zs["hi"], zs["n"]]] if zs else [])
                   + [[s, b, v["mean"], v["lo"], v["hi"], v["n"]] for s, d in summary.items() for b, v in d.items()])
        entry: dict[str, Any] = {"summary": {s: {str(b): v for b, v in d.items()} for s, d in summary.items()}}
        if zs:
            entry["zero_shot"] = zs
        per_seed: dict[str, dict[int, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
        for r in rows:
            per_seed[r["strategy"]][r["budget"]][r["seed"]] = r[metric]
        paired = {f"{s} - {v}": {str(b): d for b, d in paired_differences(per_seed, s, v).items()}
                  for s, v in comparisons(cfg.strategies)}
        if paired:
            _write_csv(out / f"paired{suffix}.csv",
                       ["strategy", "versus", "budget", "mean_difference", "ci95_lo", "ci95_hi", "n_seeds",
                        "by_seed"],
                       [[*name.split(" - "), b, d["mean"], d["lo"], d["hi"], d["n"],
                         " ".join(f"{x:+.4f}" for x in d["by_seed"])]
                        for name, per_b in paired.items() for b, d in per_b.items()])
            entry["paired"] = paired
        if "random" in cfg.strategies:
            # Over the strategies' budgets only: the zero-shot row is not a point of any strategy's curve.
            ref = cfg.reference_budget or max(cfg.budgets)
            sav = annotation_savings({s: {b: v["mean"] for b, v in d.items()} for s, d in summary.items()}, ref,
                                     higher_is_better=higher)
            for s, v in paired_savings_interval(per_seed, ref, higher_is_better=higher).items():
                sav[s].update(v)
            boot = ["savings_lo", "savings_hi", "savings_p_gt0", "savings_seeds"]
            _write_csv(out / f"savings{suffix}.csv",
                       ["strategy", "reference_budget", "target", "budget_needed", "status", "savings", *boot],
                       [[s, v["reference_budget"], v["target"], v["budget_needed"], v["status"], v["savings"],
                         *(v[k] for k in boot)] for s, v in sav.items()])
            entry["savings"] = sav
        plot_curve(summary, metric, out / f"curve{suffix}.png", zero_shot=None if zs is None else zs["mean"])
        result[metric] = entry
    result.update(result[cfg.metric])  # the headline metric's summary and savings at the top level
    result["labels_per_task"] = labels_per_task(rows)
    write_json(out / "summary.json", result)
    write_text(out / "summary.md", summary_markdown(result, cfg, zero))
    return result


def _savings_text(v: dict[str, Any], smallest: int) -> str:
    if v["status"] == "baseline_flat":
        return "baseline flat"
    if v["status"] == "not_reached":
        text = "not reached"
    elif v["status"] == "at_smallest":
        text = f">= {v['savings']:+.0%} (reached at b={smallest})"
    else:
        text = f"{v['savings']:+.0%} (b_S = {v['budget_needed']:.0f}, interpolated)"
    if v.get("savings_p_gt0") is None:  # older summaries, one seed, or no resample with savings
        return text

    def bound(x: float | None) -> str:
        return "not reached" if x is None else f"{x:+.0%}"

    return f"{text} [paired 95%: {bound(v['savings_lo'])}, {bound(v['savings_hi'])}]"


def summary_markdown(result: dict[str, Any], cfg: CurveConfig, zero: dict | None = None) -> str:
    """One table per metric (mean over seeds [95% CI]), the zero-shot row first, savings in the last column;
    then the zero-shot cell's per-task scores."""
    budgets = sorted(cfg.budgets)
    ref = cfg.reference_budget or max(budgets)
    parts = []
    for metric in METRICS:
        entry = result[metric]
        zs = entry.get("zero_shot")
        head = ["strategy"] + (["b=0"] if zs else []) + [f"b={b}" for b in budgets]
        has_sav = "savings" in entry
        if has_sav:
            head.append(f"savings vs random @ b={ref}")
        lines = [f"**{metric}** (mean over {len(cfg.seeds)} seeds [95% CI]"
                 + ("; b=0: the base model without fine-tuning, one value" if zs else "") + ")", "",
                 "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        if zs:
            lines.append("| " + " | ".join([ZERO_SHOT_LABEL, f"{zs['mean']:.3f}"] + [""] * len(budgets)
                                           + ([""] if has_sav else [])) + " |")
        for s, d in entry["summary"].items():
            cells = [f"{d[str(b)]['mean']:.3f} [{d[str(b)]['lo']:.3f}, {d[str(b)]['hi']:.3f}]" for b in budgets]
            row = [s] + ([""] if zs else []) + cells
            if has_sav:
                row.append(_savings_text(entry["savings"][s], budgets[0]))
            lines.append("| " + " | ".join(row) + " |")
        if entry.get("paired"):
            lines += ["", f"*{metric}, paired by seed*: strategy minus the row it is compared with, seed by seed "
                      "on the same eval prompts; mean difference [95% t-interval over seeds]", "",
                      "| comparison | " + " | ".join(f"b={b}" for b in budgets) + " |",
                      "|" + "---|" * (len(budgets) + 1)]
            for name, per_b in entry["paired"].items():
                vals = [per_b.get(str(b)) for b in budgets]
                lines.append(f"| {name} | " + " | ".join(
                    "" if v is None else f"{v['mean']:+.3f} [{v['lo']:+.3f}, {v['hi']:+.3f}]" for v in vals) + " |")
        parts.append("\n".join(lines))
    labels = result.get("labels_per_task")
    if labels:
        tasks = sorted({t for d in labels.values() for c in d.values() for t in c})
        lines = [f"**Labels per task** (summed over {len(cfg.seeds)} seeds), at the smallest and largest budget", "",
                 "| strategy | budget | " + " | ".join(tasks) + " | tasks covered |", "|" + "---|" * (len(tasks) + 3)]
        for s, d in labels.items():
            for b in sorted({budgets[0], budgets[-1]}):
                c = d.get(str(b), {})
                lines.append(f"| {s} | {b} | " + " | ".join(str(c.get(t, 0)) for t in tasks)
                             + f" | {sum(1 for t in tasks if c.get(t))} |")
        parts.append("\n".join(lines))
    if zero is not None:  # which tasks the base model can already do: the ones fine-tuning cannot show much on
        lines = [f"**{ZERO_SHOT_LABEL}, per task** ({zero['n_eval']} eval prompts)", "",
                 "| task | n | rougeL | exact_match |", "|---|---|---|---|"]
        lines += [f"| {t} | {v['n']} | {v['rougeL']:.3f} | {v['exact_match']:.3f} |"
                  for t, v in zero["per_task"].items()]
        lines.append(f"| all (mean over prompts) | {zero['n_eval']} | {zero['rougeL']:.3f} | "
                     f"{zero['exact_match']:.3f} |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        for r in rows:
            w.writerow(["" if x is None else f"{x:.6g}" if isinstance(x, float) else x for x in r])


def plot_curve(summary: dict[str, dict[int, dict[str, float]]], metric: str, path: Path,
               zero_shot: float | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for s, d in summary.items():
        b = sorted(d)
        ax.plot(b, [d[x]["mean"] for x in b], marker="o", label=s)
        ax.fill_between(b, [d[x]["lo"] for x in b], [d[x]["hi"] for x in b], alpha=0.18)
    if zero_shot is not None:  # budget 0 has no place on a log axis: a reference line across it
        ax.axhline(zero_shot, color="0.35", linestyle="--", linewidth=1.2, label=ZERO_SHOT_LABEL)
    if summary:  # (a zero-shot-only curve has no budget axis)
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

"""The paper's comparison table (SPEC A.5): methods x seeds on one environment, each cell run end to end.

    for seed in seeds:
        data      <- warmup_data.generate (oracle trajectories + negative examples)     seed-S/data
        warm-ups  <- one per variant the methods need (reflect, reflect_noneg, noreflect) seed-S/warmup/<variant>
        for method in methods:
            RL (when the method has it) from its warm-up (or the base model)           seed-S/rl/<method>
            evaluation on the test split, with the reflection diagnostic               seed-S/eval/<method>.json
    results.csv, table.md (means with 95% CIs), curves.png (RL learning curves)

Every stage skips what is already on disk (a finished data set, a saved warm-up model, an evaluation json;
RL resumes from its checkpoint), so a killed table resumes where it stopped.

Methods (``METHODS``):
- ``random``, ``oracle``: the baselines of the rollout code (no model).
- ``sft``: the Reflect warm-up (reflection model + policy), no RL ("SFT only").
- ``sft_noreflect``: the warm-up without reflections, no RL: what the reflection adds before RL.
- ``rl``: RL from the base model, no warm-up and no reflection ("RL only").
- ``sft_rl_noreflect``: warm-up without reflections, then RL without reflection.
- ``reflect_rl_noneg``: Reflect-RL whose warm-up data has no negative examples.
- ``reflect_rl``: Reflect-RL.

Opt-in methods (``EXTRA_METHODS``: valid in ``methods:`` and ``rl train --method``, in no default list):
- ``reflect_rl_grpo``: Reflect-RL (the same warm-up) with ``algorithm: grpo``, the config's other ``rl``
  settings unchanged (``num_envs`` must be a multiple of ``rl.group_size``).
"""

from __future__ import annotations

import copy
import csv
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from frugalft.atomic import atomic_path, write_json, write_text
from frugalft.reflect.train import RLConfig, groups_per_batch
from frugalft.reflect.warmup import WarmupConfig
from frugalft.reflect.warmup_data import DataConfig

METHODS = ("random", "oracle", "sft", "sft_noreflect", "rl", "sft_rl_noreflect", "reflect_rl_noneg", "reflect_rl")
EXTRA_METHODS = ("reflect_rl_grpo",)  # selectable, never a default row
ALL_METHODS = METHODS + EXTRA_METHODS
TITLES = {
    "random": "random",
    "oracle": "oracle",
    "sft": "SFT only",
    "sft_noreflect": "SFT only, no reflection",
    "rl": "RL only (no warm-up)",
    "sft_rl_noreflect": "SFT + RL, no reflection",
    "reflect_rl_noneg": "Reflect-RL without negative examples",
    "reflect_rl": "Reflect-RL",
    "reflect_rl_grpo": "Reflect-RL, GRPO",
}
# method -> (warm-up variant or None, does RL)
PLAN: dict[str, tuple[str | None, bool]] = {
    "random": (None, False),
    "oracle": (None, False),
    "sft": ("reflect", False),
    "sft_noreflect": ("noreflect", False),
    "rl": (None, True),
    "sft_rl_noreflect": ("noreflect", True),
    "reflect_rl_noneg": ("reflect_noneg", True),
    "reflect_rl": ("reflect", True),
    "reflect_rl_grpo": ("reflect", True),
}
ALGORITHMS = {"reflect_rl_grpo": "grpo"}  # methods whose RL overrides rl.algorithm


@dataclass
class EvalConfig:
    split: str = "test"  # held-out tasks
    levels: list[int] | None = None  # None = all levels of the environment
    max_tasks: int | None = 20  # first N test tasks per level; None = all
    repeats: int = 1  # episodes per task
    greedy: bool = False  # the paper samples at temperature 1 in evaluation too
    temperature: float = 1.0
    num_envs: int = 16  # parallel environments
    diagnostic: bool = True  # the reflection-quality diagnostic (needs the oracle)


@dataclass
class ExperimentConfig:
    """One environment's Reflect-RL experiment; the top-level env/model/device/seed fill every section."""

    env: str = "DangerousTaxi"  # frugalft.envs short name or gymnasium id
    env_kwargs: dict[str, Any] = field(default_factory=dict)  # constructor options shared by data, RL and eval
    model: str = "tiny"  # base model of both players (embedded name, directory or hub id)
    device: str = "auto"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  # the table's seeds (>= 3 for CIs)
    methods: list[str] = field(default_factory=lambda: list(METHODS))  # table rows, see METHODS
    data: DataConfig = field(default_factory=DataConfig)
    warmup: WarmupConfig = field(default_factory=WarmupConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    report_to: str = "none"  # also log every run's metrics to tensorboard or wandb (frugalft.runs.tracking)
    # The no-reflection warm-up gets as many SFT steps as the reflect variant's two players together (reflection
    # + policy caps) when its policy starts from the reflection model: the same network, the same compute.
    match_noreflect_steps: bool = True

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in ALL_METHODS]
        if unknown:
            raise ValueError(f"unknown methods {unknown}; valid: {', '.join(ALL_METHODS)}")

    def for_seed(self, seed: int) -> tuple[DataConfig, WarmupConfig, RLConfig]:
        """The three stage configs of one seed, with env, model, device and seed filled in."""
        data = copy.deepcopy(self.data)
        data.env, data.env_kwargs, data.seed = self.env, dict(self.env_kwargs), seed
        warm = copy.deepcopy(self.warmup)
        warm.model, warm.device, warm.seed = self.model, self.device, seed
        rl = copy.deepcopy(self.rl)
        rl.env, rl.env_kwargs, rl.policy_model, rl.device, rl.seed = self.env, dict(self.env_kwargs), self.model, \
            self.device, seed
        rl.labels, rl.shuffle_labels = warm.labels, warm.shuffle_labels  # the policy must see the SFT labels
        warm.reflection_tokens = rl.reflection_tokens  # the policy's warm-up reads reflections as long as RL's
        return data, warm, rl


def seed_dir(run_dir: str | Path, seed: int) -> Path:
    return Path(run_dir) / f"seed-{seed}"


# ---- the stages, each skipping what is done -------------------------------------------------------------
def run_data(config: ExperimentConfig, run_dir: str | Path, seed: int, log=print) -> Path:
    from frugalft.reflect.warmup_data import DATASETS, generate

    data, _, _ = config.for_seed(seed)
    out = seed_dir(run_dir, seed) / "data"
    if (out / "counts.json").exists() and all((out / f"{n}.jsonl").exists() for n in DATASETS):
        log(f"data already generated: {out}")
    else:
        generate(data, out, log=log)
    return out


def run_warmup(config: ExperimentConfig, run_dir: str | Path, seed: int, variant: str, log=print) -> dict:
    from frugalft.reflect.warmup import warmup

    _, warm, _ = config.for_seed(seed)
    if variant == "noreflect" and config.match_noreflect_steps and warm.policy_init == "reflection":
        warm.policy_steps += warm.reflection_steps
    data = run_data(config, run_dir, seed, log)
    return warmup(warm, data, seed_dir(run_dir, seed) / "warmup" / variant, variant, log)


def rl_config_for(config: ExperimentConfig, run_dir: str | Path, seed: int, method: str) -> RLConfig:
    """The RLConfig of a method: where its policy and reflection model start, and whether it reflects."""
    _, _, rl = config.for_seed(seed)
    variant, _ = PLAN[method]
    warm = seed_dir(run_dir, seed) / "warmup" / (variant or "")
    rl.policy_init = str(warm / "policy" / "model") if variant else None
    reflects = variant in ("reflect", "reflect_noneg")
    rl.reflection_model = config.model if reflects else None
    rl.reflection_init = str(warm / "reflection" / "model") if reflects else None
    if method in ALGORITHMS:
        rl.algorithm = ALGORITHMS[method]  # type: ignore[assignment]
        if rl.algorithm == "grpo":
            groups_per_batch(rl)  # num_envs a multiple of group_size, else a ValueError naming both
    return rl


def run_method(config: ExperimentConfig, run_dir: str | Path, seed: int, method: str, log=print) -> dict:
    """Warm-up (if needed), RL (if the method has it) and evaluation of one cell; returns its result row."""
    from frugalft.reflect.evaluate import evaluate
    from frugalft.reflect.train import build_players, train

    out = seed_dir(run_dir, seed) / "eval" / f"{method}.json"
    if out.exists():
        return json.loads(out.read_text(encoding="utf-8"))
    t0 = time.time()
    variant, does_rl = PLAN[method]
    if variant is not None:
        run_warmup(config, run_dir, seed, variant, log)
    rl = rl_config_for(config, run_dir, seed, method)
    ev = config.eval
    if method in ("random", "oracle"):
        agent: Any = method
    else:
        agent = build_players(rl)
        if does_rl:
            rl_dir = seed_dir(run_dir, seed) / "rl" / method
            log(f"[seed {seed}] {method}: RL for {rl.iterations} iterations in {rl_dir}")
            train(rl, rl_dir, resume=True, players=agent)  # a finished run just reloads its last checkpoint
    result = evaluate(agent, rl, split=ev.split, levels=ev.levels, max_tasks=ev.max_tasks, repeats=ev.repeats,
                      greedy=ev.greedy, temperature=ev.temperature, num_envs=ev.num_envs,
                      diagnostic=ev.diagnostic, seed=seed)
    row = {"env": config.env, "method": method, "seed": seed, **_flatten(result.to_dict()),
           "seconds": round(time.time() - t0, 1)}
    write_json(out, row)
    log(f"[seed {seed}] {method}: success {row['success']:.3f} return {row['return']:.3f} ({row['seconds']} s)")
    return row


def _flatten(d: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if k == "per_level":
            for lv, stats in v.items():
                for sk, sv in stats.items():
                    out[f"level{lv}_{sk}"] = sv
        elif k == "diagnostic":
            out.update({f"diag_{dk}": dv for dk, dv in v.items()})
        elif isinstance(v, (list, tuple)):
            out[f"{k}_lo"], out[f"{k}_hi"] = v
        else:
            out[k] = v
    return out


# ---- reflection quality ----------------------------------------------------------------------------------
def _words(text: str) -> list[str]:
    return "".join(c.lower() if c.isalnum() else " " for c in text).split()


def token_f1(generated: str, reference: str) -> float:
    """Bag-of-words F1 between two texts (SQuAD-style): 1 for the same words, 0 for none in common."""
    from collections import Counter

    g, r = Counter(_words(generated)), Counter(_words(reference))
    common = sum((g & r).values())
    if common == 0:
        return 0.0
    precision, recall = common / sum(g.values()), common / sum(r.values())
    return 2 * precision * recall / (precision + recall)


def reflection_quality(config: ExperimentConfig, run_dir: str | Path, seed: int, variant: str, log=print) -> dict:
    """How close the warmed-up reflection model's reflections are to the teacher's, on the oracle's test states.

    Plays the oracle on the evaluation tasks; in each state the reflection model writes a reflection (sampled at
    the RL temperature, as during RL) and the teacher of the data config writes its own. Reported: exact match
    rate, mean word F1, and F1 of the teacher's reflection of a *different* state (a floor: how much two
    reflections share just by their template).
    """
    from frugalft.reflect.reflection import Reflector
    from frugalft.reflect.teachers import make_teacher
    from frugalft.reflect.train import load_lm
    from frugalft.reflect.warmup_data import env_family, make_env, situation_of
    from frugalft.seeding import seed_everything

    out = seed_dir(run_dir, seed) / "eval" / f"reflection_quality_{variant}.json"
    if out.exists():
        return json.loads(out.read_text(encoding="utf-8"))
    data, _, rl = config.for_seed(seed)
    model_dir = seed_dir(run_dir, seed) / "warmup" / variant / "reflection" / "model"
    lm, tok = load_lm(config.model, str(model_dir), rl, "reflection")
    reflector = Reflector(lm, tok, max_new_tokens=rl.reflection_tokens, temperature=rl.reflection_temperature)
    teacher = make_teacher(data.teacher)
    family = env_family(config.env)
    env = make_env(config.env, split=config.eval.split, **config.env_kwargs)
    levels = config.eval.levels if config.eval.levels is not None else env.levels
    states, references = [], []
    for level in levels:
        for task_id in env.task_ids(config.eval.split, level)[: config.eval.max_tasks]:
            obs, info = env.reset(seed=seed, options={"task_id": task_id})
            done = False
            while not done:
                states.append(info["parts"])
                references.append(teacher.reflect(situation_of(family, env, obs, info)))
                obs, _, terminated, truncated, info = env.step(env.oracle_action())
                done = terminated or truncated
    seed_everything(seed)
    generated: list[str] = []
    for i in range(0, len(states), 16):
        generated += [g or "" for g in reflector.reflect(states[i: i + 16])]
    f1 = [token_f1(g, r) for g, r in zip(generated, references, strict=True)]
    shifted = references[1:] + references[:1]
    floor = [token_f1(a, b) for a, b in zip(references, shifted, strict=True)]
    result = {
        "variant": variant, "seed": seed, "states": len(states),
        "exact": sum(g.strip() == r.strip() for g, r in zip(generated, references, strict=True)) / len(states),
        "word_f1": sum(f1) / len(f1),
        "template_f1_floor": sum(floor) / len(floor),
        "examples": [{"teacher": r, "model": g} for g, r in list(zip(generated, references, strict=True))[:5]],
    }
    write_json(out, result)
    log(f"[seed {seed}] reflection model ({variant}): exact {result['exact']:.2f}, word F1 {result['word_f1']:.2f} "
        f"(template floor {result['template_f1_floor']:.2f}) on {len(states)} oracle test states")
    return result


# ---- the table -------------------------------------------------------------------------------------------
def run_table(config: ExperimentConfig, run_dir: str | Path, log=print, started: float | None = None,
              ) -> dict[str, Path]:
    """Every (method, seed) cell, then results.csv, table.md and curves.png in ``run_dir``; the wall time
    reported is from ``started`` (default: now)."""
    run_dir = Path(run_dir)
    t0 = started if started is not None else time.time()
    rows = []
    quality = []
    for seed in config.seeds:
        for method in config.methods:
            rows.append(run_method(config, run_dir, seed, method, log))
        for variant in sorted({PLAN[m][0] for m in config.methods} & {"reflect", "reflect_noneg"}):
            quality.append(reflection_quality(config, run_dir, seed, variant, log))
    return write_outputs(config, run_dir, rows, time.time() - t0, log, quality)


def write_outputs(config: ExperimentConfig, run_dir: Path, rows: list[dict], seconds: float, log=print,
                  quality: list[dict] | None = None) -> dict:
    keys = sorted({k for r in rows for k in r}, key=lambda k: (k not in ("env", "method", "seed"), k))
    with atomic_path(run_dir / "results.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    write_text(run_dir / "table.md", markdown_table(config, rows, seconds) + quality_table(quality or []))
    paths = {"csv": run_dir / "results.csv", "markdown": run_dir / "table.md"}
    png = plot_curves(config, run_dir)
    if png is not None:
        paths["curves"] = png
    log("table: " + ", ".join(str(p) for p in paths.values()))
    return paths


T_95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of the 95% Student-t interval across seeds (0 with one seed)."""
    n = len(values)
    m = sum(values) / n
    if n < 2:
        return m, 0.0
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))
    return m, T_95.get(n - 1, 1.96) * sd / math.sqrt(n)


def markdown_table(config: ExperimentConfig, rows: list[dict], seconds: float | None = None) -> str:
    from frugalft.reflect.evaluate import wilson_interval

    levels = sorted({int(k[5:-8]) for r in rows for k in r if k.startswith("level") and k.endswith("_success")})
    lines = [
        f"### {config.env} ({config.model}, seeds {', '.join(map(str, config.seeds))})",
        "",
        "Success and return: mean over seeds ± 95% t-interval across seeds (the value alone with one seed); "
        "*pooled*: all episodes of all seeds with a Wilson 95% interval. Agreement: how often the policy's action is the oracle's; "
        "P(oracle) with / without reflection: the policy's probability of the oracle action with its reflection "
        "and with the reflection removed from the same prompt (the diagnostic).",
        "",
        "| method | success % | pooled success % [95% CI] | return | agreement % | P(oracle) with / without reflection |"
        + (" success % by level (" + " / ".join(str(lv) for lv in levels) + ") |" if len(levels) > 1 else ""),
        "|---|---|---|---|---|---|" + ("---|" if len(levels) > 1 else ""),
    ]
    for method in config.methods:
        cell = [r for r in rows if r["method"] == method]
        if not cell:
            continue
        s, s_ci = mean_ci([100 * r["success"] for r in cell])
        ret, ret_ci = mean_ci([r["return"] for r in cell])
        wins = round(sum(r["success"] * r["episodes"] for r in cell))
        n = sum(r["episodes"] for r in cell)
        lo, hi = wilson_interval(wins, n)
        agree = [r["diag_oracle_agreement"] for r in cell if "diag_oracle_agreement" in r]
        agree_txt = f"{100 * sum(agree) / len(agree):.0f}" if agree else "–"
        with_r = [r["diag_oracle_prob"] for r in cell if "diag_oracle_prob" in r]
        without = [r["diag_oracle_prob_no_reflection"] for r in cell if "diag_oracle_prob_no_reflection" in r]
        probs = (f"{sum(with_r) / len(with_r):.2f} / {sum(without) / len(without):.2f}" if with_r and without
                 else f"{sum(with_r) / len(with_r):.2f} / –" if with_r else "–")
        by_level = ""
        if len(levels) > 1:
            means = [sum(r.get(f"level{lv}_success", float("nan")) for r in cell) / len(cell) for lv in levels]
            by_level = " " + " / ".join(f"{100 * m:.0f}" for m in means) + " |"
        pm = len(cell) > 1  # one seed has no interval across seeds: print the value alone, not "± 0.0"
        s_txt = f"{s:.1f} ± {s_ci:.1f}" if pm else f"{s:.1f}"
        ret_txt = f"{ret:.2f} ± {ret_ci:.2f}" if pm else f"{ret:.2f}"
        lines.append(f"| {TITLES[method]} | {s_txt} | {100 * wins / n:.1f} [{100 * lo:.1f}, "
                     f"{100 * hi:.1f}] | {ret_txt} | {agree_txt} | {probs} |{by_level}")
    if seconds is not None:
        lines += ["", f"Wall time of this run: {seconds / 60:.1f} min."]
    return "\n".join(lines) + "\n"


def quality_table(quality: list[dict]) -> str:
    """Reflection quality per warm-up variant, mean ± 95% t-interval across seeds."""
    if not quality:
        return ""
    lines = ["", "Reflection model vs the teacher on the oracle's test states (decoded as in RL, at "
             "`rl.reflection_temperature`): exact match, word F1, and the F1 two teacher reflections of different states share (the template floor).", "",
             "| reflection model | states | exact % | word F1 | template floor F1 |", "|---|---|---|---|---|"]
    names = {"reflect": "Reflect-RL warm-up", "reflect_noneg": "warm-up without negative examples"}
    for variant in ("reflect", "reflect_noneg"):
        cell = [q for q in quality if q["variant"] == variant]
        if not cell:
            continue
        ex, ex_ci = mean_ci([100 * q["exact"] for q in cell])
        f1, f1_ci = mean_ci([q["word_f1"] for q in cell])
        fl, _ = mean_ci([q["template_f1_floor"] for q in cell])
        lines.append(f"| {names[variant]} | {cell[0]['states']} | {ex:.1f} ± {ex_ci:.1f} | {f1:.2f} ± {f1_ci:.2f} "
                     f"| {fl:.2f} |")
    return "\n".join(lines) + "\n"


VARIANT_TITLES = {"reflect": "Reflect-RL warm-up", "reflect_noneg": "warm-up without negatives",
                  "noreflect": "warm-up without reflection"}


def warmup_curves(config: ExperimentConfig, run_dir: Path) -> dict[str, list[list[tuple[int, float]]]]:
    """Each warm-up variant's policy validation accuracy curve per seed: ``{variant: [[(step, acc), ...], ...]}``."""
    from frugalft.runs import read_metrics

    out: dict[str, list[list[tuple[int, float]]]] = {}
    for variant in VARIANT_TITLES:
        for seed in config.seeds:
            path = seed_dir(run_dir, seed) / "warmup" / variant / "policy" / "metrics.jsonl"
            if path.exists():
                pts = [(r["step"], r["val_accuracy"]) for r in read_metrics(path) if "val_accuracy" in r]
                if pts:
                    out.setdefault(variant, []).append(pts)
    return out


def rl_curves(config: ExperimentConfig, run_dir: Path, key: str = "success") -> dict[str, list[list[float]]]:
    """Each RL method's training ``key`` per iteration, per seed."""
    from frugalft.runs import read_metrics

    out: dict[str, list[list[float]]] = {}
    for method in config.methods:
        if not PLAN[method][1]:
            continue
        for seed in config.seeds:
            path = seed_dir(run_dir, seed) / "rl" / method / "metrics.jsonl"
            if path.exists():
                rows = read_metrics(path)
                if rows:
                    out.setdefault(method, []).append([r[key] for r in rows])
    return out


def _smooth(ys: list[float]) -> list[float]:
    k = max(1, len(ys) // 10)  # moving average over a tenth of the run
    return [sum(ys[max(0, i - k + 1): i + 1]) / len(ys[max(0, i - k + 1): i + 1]) for i in range(len(ys))]


def plot_curves(config: ExperimentConfig, run_dir: Path) -> Path | None:
    """Warm-up (policy validation accuracy per step) and RL (training success and return per iteration)
    curves, mean over seeds, as one PNG."""
    try:
        import matplotlib
    except ImportError:  # plots are a convenience; the CSV and the table are the results
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    warm = warmup_curves(config, run_dir)
    success, returns = rl_curves(config, run_dir, "success"), rl_curves(config, run_dir, "return")
    if not warm and not success:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for variant, curves in warm.items():
        n = min(len(c) for c in curves)
        axes[0].plot([c[0] for c in curves[0][:n]], [sum(c[i][1] for c in curves) / len(curves) for i in range(n)],
                     marker=".", label=VARIANT_TITLES[variant])
    for ax, curves_by in ((axes[1], success), (axes[2], returns)):
        for method, curves in curves_by.items():
            n = min(len(c) for c in curves)
            ys = [sum(c[i] for c in curves) / len(curves) for i in range(n)]
            ax.plot(range(1, n + 1), _smooth(ys), label=TITLES[method])
    labels = (("warm-up step", "policy held-out accuracy"), ("RL iteration", "training success"),
              ("RL iteration", "training return"))
    for ax, (x, y) in zip(axes, labels, strict=True):
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    fig.suptitle(f"{config.env}: warm-up and RL learning curves (mean of {len(config.seeds)} seeds; RL: moving "
                 "average)")
    fig.tight_layout()
    out = run_dir / "curves.png"
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return out

"""The paper's comparison table (SPEC A.5): methods x seeds on one environment, each cell run end to end.

    for seed in seeds:
        data      <- warmup_data.generate (oracle trajectories + negative examples)     seed-S/data
        warm-ups  <- one per variant the methods need (reflect, reflect_noneg, noreflect) seed-S/warmup/<variant>
        for method in methods:
            RL (when the method has it) from its warm-up (or the base model)           seed-S/rl/<method>
            evaluation on eval.split (test), with the reflection diagnostic           seed-S/eval/<split>/<method>.json
            and on each of eval.extra's task sets (e.g. DangerousTaxi's paper starts) seed-S/eval/<split>-<name>/...
    results.csv, table.md (seed-level intervals, paired comparisons), curves.png (learning curves)

The protocol (docs/results.md): every setting is chosen on the valid split (early stopping reads held-out
*training* tasks; RL's periodic evaluation and ``rl eval`` read valid); the table's final evaluation reads the
test split once. Intervals resample seeds, then episodes (``frugalft.eval.intervals``); comparisons are paired
by seed and task. An evaluation file records the fingerprint of the config that made it, and a rerun with a
different config refuses to reuse it.

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
- ``sft_noreflect_rinit``, ``sft_rl_noreflect_rinit``: the control of the reflecting policy's head start. The
  Reflect-RL policy starts from the trained reflection model, which has read every training state with its
  teacher text; these policies start from that same model but read no reflection (warm-up variant
  ``noreflect_rinit``, trained to its validation plateau), then (``sft_rl_...``) RL without reflection. Against
  Reflect-RL they isolate "reads a reflection" from "starts from a model that learned the map".
"""

from __future__ import annotations

import copy
import csv
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from frugalft.atomic import atomic_path, write_json, write_text
from frugalft.eval.intervals import (
    hierarchical_bootstrap,
    mean_t_interval,
    paired_differences,
    wilson_interval,
)
from frugalft.reflect.backends import RolloutBackend
from frugalft.reflect.players import RLConfig, groups_per_batch
from frugalft.reflect.warmup import WarmupConfig
from frugalft.reflect.warmup_data import DataConfig

BackendFactory = Callable[[RLConfig], RolloutBackend]  # an RL config -> the backend its rollouts play on
METHODS = ("random", "oracle", "sft", "sft_noreflect", "rl", "sft_rl_noreflect", "reflect_rl_noneg", "reflect_rl")
EXTRA_METHODS = ("reflect_rl_grpo", "sft_noreflect_rinit", "sft_rl_noreflect_rinit")  # selectable, never default
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
    "sft_noreflect_rinit": "SFT only, no reflection, policy from the reflection model",
    "sft_rl_noreflect_rinit": "SFT + RL, no reflection, policy from the reflection model",
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
    "sft_noreflect_rinit": ("noreflect_rinit", False),
    "sft_rl_noreflect_rinit": ("noreflect_rinit", True),
}
ALGORITHMS = {"reflect_rl_grpo": "grpo"}  # methods whose RL overrides rl.algorithm


# The paired comparisons a table shows when it has both rows (a minus b, by seed and task): Reflect-RL against
# each other row, then SFT only against its no-reflection twins (what reading a reflection adds before any RL).
COMPARED = (("reflect_rl", "sft"), ("reflect_rl", "sft_rl_noreflect"), ("reflect_rl", "sft_rl_noreflect_rinit"),
            ("reflect_rl", "reflect_rl_noneg"), ("reflect_rl", "rl"), ("reflect_rl", "random"),
            ("sft", "sft_noreflect"), ("sft", "sft_noreflect_rinit"))


@dataclass
class EvalConfig:
    split: str = "test"  # the table's final evaluation: the test split, read once (tune on valid: rl eval)
    levels: list[int] | None = None  # None = all levels of the environment
    max_tasks: int | None = 20  # first N test tasks per level; None = all
    repeats: int = 1  # episodes per task
    greedy: bool = False  # the paper samples at temperature 1 in evaluation too
    temperature: float = 1.0
    num_envs: int = 16  # parallel environments
    diagnostic: bool = True  # the reflection-quality diagnostic (needs the oracle)
    # More task sets to evaluate every method on, each a name -> env_kwargs overrides (played on the same split,
    # all its tasks), e.g. DangerousTaxi's {paper: {task_set: paper}}: the paper's 300 starts.
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class ExperimentConfig:
    """One environment's Reflect-RL experiment; the top-level env/model/device/seed fill every section."""

    env: str = "DangerousTaxi"  # frugalft.envs short name or gymnasium id
    env_kwargs: dict[str, Any] = field(default_factory=dict)  # constructor options shared by data, RL and eval
    model: str = "tiny"  # base model of both players (embedded name, directory or hub id)
    device: str = "auto"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  # the table's seeds (>= 3 for CIs)
    methods: list[str] = field(default_factory=lambda: list(METHODS))  # table rows, see METHODS
    # Seeds added for some methods only (the headline rows get >= 5 seeds, the others stay at ``seeds``):
    # method -> extra seeds. Paired comparisons use the seeds both methods ran.
    extra_seeds: dict[str, list[int]] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    warmup: WarmupConfig = field(default_factory=WarmupConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    report_to: str = "none"  # also log every run's metrics to tensorboard or wandb (frugalft.runs.tracking)
    # The no-reflection warm-up gets as many SFT steps as the reflect variant's two players together (reflection
    # + policy caps) when its policy starts from the reflection model: the same network, the same compute.
    match_noreflect_steps: bool = True
    # Warm-up settings of one variant's players that differ from `warmup`, variant -> {key: value}: e.g.
    # {noreflect: {patience: 20}} for the no-reflection policy from random init, which learns the map from action
    # labels alone and is still improving where the others have plateaued (docs/results.md, its patience probe).
    variant_warmup: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in ALL_METHODS]
        if unknown:
            raise ValueError(f"unknown methods {unknown}; valid: {', '.join(ALL_METHODS)}")
        stray = [m for m in self.extra_seeds if m not in self.methods]
        if stray:
            raise ValueError(f"extra_seeds names methods that are not in methods: {stray}")
        self._refuse_shadowed_keys()
        variants = sorted({v for v, _ in PLAN.values() if v is not None})
        # keys the table fills into every warm-up, and warm-up keys RL copies (the policy's label scheme)
        filled = {k.split(".")[1] for k in (*self.SHARED_KEYS, *self.SHARED_KEYS.values()) if k.startswith("warmup.")}
        for variant, settings in self.variant_warmup.items():
            if variant not in variants:
                raise ValueError(f"variant_warmup: unknown warm-up variant {variant!r}; valid: {', '.join(variants)}")
            shared = sorted(k for k in settings if k in filled)
            if shared:
                raise ValueError(f"variant_warmup.{variant}: {shared} are the same for every variant (the table "
                                 "fills them from the top level)")
            self.warmup_of(0, variant)  # a wrong key or value: a ConfigError naming variant_warmup.<variant>.<key>

    # Section keys that ``for_seed`` fills from one shared place: section.key -> where the value comes from.
    SHARED_KEYS = {
        "data.env": "env", "data.env_kwargs": "env_kwargs", "data.seed": "seeds",
        "warmup.model": "model", "warmup.device": "device", "warmup.seed": "seeds",
        "warmup.reflection_tokens": "rl.reflection_tokens",
        "rl.env": "env", "rl.env_kwargs": "env_kwargs", "rl.policy_model": "model", "rl.device": "device",
        "rl.seed": "seeds", "rl.labels": "warmup.labels", "rl.shuffle_labels": "warmup.shuffle_labels",
        "rl.policy_head": "warmup.policy_head",
    }

    def _refuse_shadowed_keys(self) -> None:
        """A section key that ``for_seed`` overwrites, set to another value than the one it gets, would be
        silently ignored: an error naming the key and where to set it instead."""
        defaults = {"data": DataConfig(), "warmup": WarmupConfig(), "rl": RLConfig()}
        wrong = []
        for key, source in self.SHARED_KEYS.items():
            section, name = key.split(".")
            value = getattr(getattr(self, section), name)
            if value == getattr(defaults[section], name):
                continue  # unset (or set to its default): nothing is lost
            if source == "seeds":
                wrong.append(f"{key} (each seed's runs use that seed: set `seeds`)")
                continue
            head, _, tail = source.partition(".")
            shared = getattr(getattr(self, head), tail) if tail else getattr(self, head)
            if value != shared:
                wrong.append(f"{key}: {value!r} (the table sets it from `{source}`: {shared!r})")
        if wrong:
            raise ValueError("these keys would be ignored, set them once where the table reads them: "
                             + "; ".join(wrong))

    def seeds_of(self, method: str) -> list[int]:
        """The seeds ``method`` runs on: ``seeds`` plus its ``extra_seeds``."""
        return list(self.seeds) + [s for s in self.extra_seeds.get(method, []) if s not in self.seeds]

    def all_seeds(self) -> list[int]:
        return sorted({s for m in self.methods for s in self.seeds_of(m)})

    def methods_of(self, seed: int) -> list[str]:
        return [m for m in self.methods if seed in self.seeds_of(m)]

    def warmup_of(self, seed: int, variant: str) -> WarmupConfig:
        """The warm-up config of one variant's players on one seed: ``for_seed``'s, with ``variant_warmup``."""
        from frugalft.config import build, to_dict

        _, warm, _ = self.for_seed(seed)
        settings = self.variant_warmup.get(variant)
        if not settings:
            return warm
        return build(WarmupConfig, {**to_dict(warm), **settings}, prefix=f"variant_warmup.{variant}.")

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
        rl.policy_head = warm.policy_head  # and score them with its warm-up's head
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
        _check_data_config(out, data)
        log(f"data already generated: {out}")
    else:
        generate(data, out, log=log)
    return out


def _check_data_config(out: Path, data: DataConfig) -> None:
    """Reuse warm-up data only for the config that made it (recorded in its config.yaml since 2026-12-06;
    older folders have no record and are reused as before)."""
    from frugalft.runs import RunError, recorded_changes

    changes = recorded_changes(out, data)
    if changes:
        raise RunError(f"{out} holds warm-up data made with another config ({'; '.join(changes)}): use another "
                       "--run-dir, or delete that folder to generate it again")


def run_warmup(config: ExperimentConfig, run_dir: str | Path, seed: int, variant: str, log=print) -> dict:
    from frugalft.reflect.warmup import warmup

    warm = config.warmup_of(seed, variant)
    if variant in ("noreflect", "noreflect_rinit") and config.match_noreflect_steps \
            and warm.policy_init == "reflection":
        warm.policy_steps += config.warmup_of(seed, "reflect").reflection_steps  # the reflection model's cap
    data = run_data(config, run_dir, seed, log)
    if variant == "noreflect_rinit":
        # The control: the no-reflection policy set, from the Reflect-RL variant's trained reflection model, with
        # as many steps as the noreflect variant (validation stops it at its plateau).
        from frugalft.reflect.warmup import train_policy

        reflection = run_warmup(config, run_dir, seed, "reflect", log)["reflection"]
        policy = train_policy(warm, data / "policy_noreflect.jsonl",
                              seed_dir(run_dir, seed) / "warmup" / variant / "policy", log, start=reflection)
        return {"reflection": None, "policy": policy}
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


# Settings added after packaged tables were made, by section, at the value those tables ran with: left out of a
# cell's fingerprint while they keep it, so a field that changes nothing does not orphan every documented cell.
ADDED_AT_DEFAULT: dict[str, dict[str, Any]] = {"rl": {"update_autocast": "off", "policy_head": "label"},
                                               "warmup": {"policy_head": "label", "policy_patience": None}}


def _drop_added_at_default(section: str, fields: dict[str, Any]) -> dict[str, Any]:
    added = ADDED_AT_DEFAULT[section]
    return {k: v for k, v in fields.items() if k not in added or v != added[k]}


def cell_config(config: ExperimentConfig, seed: int, method: str, task_set: str | None = None) -> dict[str, Any]:
    """Everything that makes a cell's result: the seed's stage configs, the evaluation settings and the method
    (not the list of other methods, seeds or tracking), as plain JSON values. Not the split, which the cell's
    path and row name (so `rl eval --split valid` and a table with `eval.split: valid` share their cells), nor,
    for the main evaluation, the extra task sets (a cell of ``task_set`` keeps them: its tasks are defined there)."""
    from frugalft.config import to_dict

    data, warm, rl = config.for_seed(seed)
    ev = {k: v for k, v in to_dict(config.eval).items() if k != "split" and (k != "extra" or task_set is not None)}
    snapshot = {"data": to_dict(data), "warmup": _drop_added_at_default("warmup", to_dict(warm)),
                "rl": _drop_added_at_default("rl", to_dict(rl)), "eval": ev,
                "match": config.match_noreflect_steps, "method": method}
    variant = PLAN[method][0]
    uses = {variant, "reflect"} if variant == "noreflect_rinit" else {variant}  # its policy starts from reflect's
    own = {v: s for v, s in sorted(config.variant_warmup.items()) if v in uses and s}
    if own:  # only where set: every other cell keeps the fingerprint it had before this key existed
        snapshot["variant_warmup"] = own
    return json.loads(json.dumps(snapshot, sort_keys=True, default=str))


def digest(cell: dict[str, Any]) -> str:
    """A short hash of a ``cell_config``: equal hashes, the same cell."""
    import hashlib

    return hashlib.sha1(json.dumps(cell, sort_keys=True).encode()).hexdigest()[:16]


def _cell_defaults() -> dict[str, Any]:
    from frugalft.config import to_dict

    return json.loads(json.dumps({"data": to_dict(DataConfig()), "warmup": to_dict(WarmupConfig()),
                                  "rl": to_dict(RLConfig()), "eval": to_dict(EvalConfig())}, default=str))


def cell_changes(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``key: old -> new`` for each setting that differs between a cell's recorded config and the current one.
    A key the recorded config lacks (a field added to frugalft since) counts as its default, so a cell made
    before a new field existed is still this config's result while the field keeps its default."""
    from frugalft.runs import config_changes

    if isinstance(recorded.get("warmup"), dict):  # keys renamed since the cell was recorded
        recorded = {**recorded, "warmup": WarmupConfig.upgrade_record(recorded["warmup"])}
    # variant_warmup is recorded only where set, so compare it both ways: a cell made with a variant's own
    # settings is not the result of a config that dropped them
    old_own, new_own = recorded.get("variant_warmup") or {}, current.get("variant_warmup") or {}
    changes = [] if old_own == new_own else [f"variant_warmup: {old_own} -> {new_own}"]
    strip = [{k: v for k, v in d.items() if k != "variant_warmup"} for d in (recorded, current)]
    # a field left out of the fingerprint at its old value is put back on both sides: a cell recorded with
    # another value (update_autocast: bf16) is not the result of a config that has the old one
    strip = [{**d, **{section: {**added, **d[section]} for section, added in ADDED_AT_DEFAULT.items()
                      if isinstance(d.get(section), dict)}} for d in strip]
    return changes + config_changes(*strip, _cell_defaults())


def eval_path(run_dir: str | Path, seed: int, method: str, split: str, task_set: str | None = None) -> Path:
    folder = split if task_set is None else f"{split}-{task_set}"
    return seed_dir(run_dir, seed) / "eval" / folder / f"{method}.json"


def _reuse(out: Path, cell: dict[str, Any]) -> dict | None:
    """A finished cell's row, if it was made by this config (the same fingerprint, or a recorded config that
    differs only in fields added since, at their defaults); a row made by another config is an error."""
    if not out.exists():
        return None
    row = json.loads(out.read_text(encoding="utf-8"))
    fp = digest(cell)
    if row.get("fingerprint") == fp:
        return row
    if "config" in row:
        changes = cell_changes(row["config"], cell)
        if not changes:
            return row
        why = "; ".join(changes[:8]) + (f"; and {len(changes) - 8} more" if len(changes) > 8 else "")
    else:  # written before cells kept their config: only the hash can be compared
        why = f"fingerprint {row.get('fingerprint')} != {fp}"
    raise ValueError(f"{out} was made with another config ({why}): use another --run-dir, or delete that "
                     "seed's folder to rerun it")


def run_method(config: ExperimentConfig, run_dir: str | Path, seed: int, method: str, log=print,
               split: str | None = None, make_backend: BackendFactory | None = None) -> dict:
    """Warm-up (if needed), RL (if the method has it) and evaluation of one cell on ``split`` (default
    ``eval.split``) and on each of ``eval.extra``'s task sets; returns the main evaluation's result row.

    ``make_backend(rl_config)`` makes RL's rollout backend (closed here after RL); ``rl.workers: N`` needs
    one, ``frugalft.distributed.ray_rollout.make_backend`` (the CLI passes it). Default: in this process."""
    from frugalft.reflect.train import build_players, train
    from frugalft.runs import RunDir

    split = split or config.eval.split
    cell = cell_config(config, seed, method)
    out = eval_path(run_dir, seed, method, split)
    extras = {name: eval_path(run_dir, seed, method, split, name) for name in config.eval.extra}
    extra_cells = {name: cell_config(config, seed, method, name) for name in extras}
    done = _reuse(out, cell)
    if done is not None and all(_reuse(p, extra_cells[n]) is not None for n, p in extras.items()):
        return done
    t0 = time.time()
    variant, does_rl = PLAN[method]
    if variant is not None:
        run_warmup(config, run_dir, seed, variant, log)
    t_warm = time.time()
    rl = rl_config_for(config, run_dir, seed, method)
    if method in ("random", "oracle"):
        agent: Any = method
    else:
        agent = build_players(rl)
        if does_rl:
            rl_dir = seed_dir(run_dir, seed) / "rl" / method
            log(f"[seed {seed}] {method}: RL for {rl.iterations} iterations in {rl_dir}")
            backend = make_backend(rl) if make_backend is not None else None
            # Its players start from this seed folder's own warm-ups (which their stages check): where that folder
            # lives is no change, so a copied or moved run directory resumes its RL runs.
            run = RunDir(rl_dir, config=rl, resume=True, safe_on_resume=("policy_init", "reflection_init"))
            try:
                train(rl, run, resume=True, players=agent, backend=backend)  # a finished run reloads
            finally:
                if backend is not None:
                    backend.close()
    # What this cell's process spent where (the warm-ups it was first to need, data included; its RL): `rl times`
    stages = {"warmup": t_warm - t0, "rl": time.time() - t_warm}
    row = done or _evaluate_cell(config, agent, rl, seed, method, split, out, cell, t0, None, log, stages)
    for name, path in extras.items():
        if _reuse(path, extra_cells[name]) is None:
            _evaluate_cell(config, agent, rl, seed, method, split, path, extra_cells[name], time.time(), name, log)
    return row


def _evaluate_cell(config: ExperimentConfig, agent: Any, rl: RLConfig, seed: int, method: str, split: str,
                   out: Path, cell: dict[str, Any], t0: float, task_set: str | None, log,
                   stages: dict[str, float] | None = None) -> dict:
    """Evaluate, write the cell's row (with its timing: ``started``, ``finished`` and ``stage_seconds``, the
    warm-up and RL time in ``stages`` plus this evaluation's) and return it."""
    from frugalft.models.precision import numerics_record
    from frugalft.reflect.evaluate import evaluate

    ev = config.eval
    t_eval = time.time()
    if task_set is not None:  # every task of the set, on the same split
        rl = copy.deepcopy(rl)
        rl.env_kwargs = {**rl.env_kwargs, **ev.extra[task_set]}
    result = evaluate(agent, rl, split=split, levels=ev.levels,
                      max_tasks=ev.max_tasks if task_set is None else None, repeats=ev.repeats,
                      greedy=ev.greedy, temperature=ev.temperature, num_envs=ev.num_envs,
                      diagnostic=ev.diagnostic and task_set is None, seed=seed)
    flat = result.to_dict()
    outcomes = flat.pop("outcomes")
    finished = time.time()
    stage_seconds = {k: round(v, 1) for k, v in {**(stages or {}), "eval": finished - t_eval}.items()}
    row = {"env": config.env, "method": method, "seed": seed, "split": split, "task_set": task_set or "",
           **_flatten(flat), "seconds": round(finished - t0, 1), "started": round(t0, 1),
           "finished": round(finished, 1), "stage_seconds": stage_seconds, "fingerprint": digest(cell),
           "machine": numerics_record(),  # not in the fingerprint: a record of where the cell was computed
           "outcomes": outcomes, "config": cell}
    write_json(out, row)
    where = split if task_set is None else f"{split}, task set {task_set}"
    log(f"[seed {seed}] {method} ({where}): success {row['success']:.3f} return {row['return']:.3f} "
        f"({row['seconds']} s)")
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


@dataclass
class OracleState:
    parts: dict[str, str]  # what the players read
    reflection: str  # the teacher's reflection of that state
    action: str  # the oracle's action there
    step: int  # its index in the episode (0: the episode's first state)


def oracle_states(config: ExperimentConfig, seed: int) -> list[OracleState]:
    """Every state of the oracle's episodes on the evaluation tasks (``eval.split``, ``eval.levels``,
    ``eval.max_tasks``), with the data config's teacher's reflection and the oracle's action."""
    from frugalft.reflect.teachers import make_teacher
    from frugalft.reflect.warmup_data import env_family, make_env, situation_of

    data, _, _ = config.for_seed(seed)
    teacher = make_teacher(data.teacher)
    family = env_family(config.env)
    env = make_env(config.env, split=config.eval.split, **config.env_kwargs)
    levels = config.eval.levels if config.eval.levels is not None else env.levels
    out: list[OracleState] = []
    for level in levels:
        for task_id in env.task_ids(config.eval.split, level)[: config.eval.max_tasks]:
            obs, info = env.reset(seed=seed, options={"task_id": task_id})
            done, step = False, 0
            while not done:
                reflection = teacher.reflect(situation_of(family, env, obs, info))
                action = env.oracle_action()
                out.append(OracleState(info["parts"], reflection, action, step))
                obs, _, terminated, truncated, info = env.step(action)
                done, step = terminated or truncated, step + 1
    return out


def reflection_quality(config: ExperimentConfig, run_dir: str | Path, seed: int, variant: str, log=print) -> dict:
    """How close the warmed-up reflection model's reflections are to the teacher's, on the oracle's states of the
    evaluation split (``eval.split``).

    Plays the oracle on the evaluation tasks; in each state the reflection model writes a reflection (sampled at
    the RL temperature, as during RL) and the teacher of the data config writes its own. Reported: exact match
    rate, mean word F1, and F1 of the teacher's reflection of a *different* state (a floor: how much two
    reflections share just by their template).
    """
    from frugalft.reflect.players import load_lm
    from frugalft.reflect.reflection import Reflector
    from frugalft.seeding import seed_everything

    _, _, rl = config.for_seed(seed)
    # Kept per split, with the settings that made it: a file of another split or decoding is recomputed, never
    # handed back (a valid-split probe's numbers used to stand in for the test table's in the same directory).
    made_by = {"split": config.eval.split, "levels": config.eval.levels, "max_tasks": config.eval.max_tasks,
               "reflection_temperature": rl.reflection_temperature, "reflection_tokens": rl.reflection_tokens}
    out = seed_dir(run_dir, seed) / "eval" / config.eval.split / f"reflection_quality_{variant}.json"
    if out.exists():
        kept = json.loads(out.read_text(encoding="utf-8"))
        if kept.get("made_by") == made_by:
            return kept
    t0 = time.time()
    model_dir = seed_dir(run_dir, seed) / "warmup" / variant / "reflection" / "model"
    lm, tok = load_lm(config.model, str(model_dir), rl, "reflection")
    reflector = Reflector(lm, tok, max_new_tokens=rl.reflection_tokens, temperature=rl.reflection_temperature)
    played = oracle_states(config, seed)
    states, references = [o.parts for o in played], [o.reflection for o in played]
    seed_everything(seed)
    generated: list[str] = []
    for i in range(0, len(states), 16):
        generated += [g or "" for g in reflector.reflect(states[i: i + 16])]
    f1 = [token_f1(g, r) for g, r in zip(generated, references, strict=True)]
    shifted = references[1:] + references[:1]
    floor = [token_f1(a, b) for a, b in zip(references, shifted, strict=True)]
    result = {
        "variant": variant, "seed": seed, "split": config.eval.split, "made_by": made_by, "states": len(states),
        "exact": sum(g.strip() == r.strip() for g, r in zip(generated, references, strict=True)) / len(states),
        "word_f1": sum(f1) / len(f1),
        "template_f1_floor": sum(floor) / len(floor),
        "examples": [{"teacher": r, "model": g} for g, r in list(zip(generated, references, strict=True))[:5]],
    }
    finished = time.time()
    result.update({"started": round(t0, 1), "finished": round(finished, 1), "seconds": round(finished - t0, 1)})
    write_json(out, result)
    log(f"[seed {seed}] reflection model ({variant}): exact {result['exact']:.2f}, word F1 {result['word_f1']:.2f} "
        f"(template floor {result['template_f1_floor']:.2f}) on {len(states)} oracle {config.eval.split} states")
    return result


# ---- the table -------------------------------------------------------------------------------------------
def run_table(config: ExperimentConfig, run_dir: str | Path, log=print, started: float | None = None,
              make_backend: BackendFactory | None = None) -> dict[str, Path]:
    """Every (method, seed) cell, then results.csv, table.md and curves.png in ``run_dir``; the wall time
    reported is from ``started`` (default: now); ``make_backend`` as in ``run_method``."""
    run_dir = Path(run_dir)
    t0 = started if started is not None else time.time()
    rows = []
    quality = []
    for seed in config.all_seeds():
        methods = config.methods_of(seed)
        for method in methods:
            rows.append(run_method(config, run_dir, seed, method, log, make_backend=make_backend))
            for name in config.eval.extra:
                rows.append(json.loads(eval_path(run_dir, seed, method, config.eval.split, name)
                                       .read_text(encoding="utf-8")))
        for variant in sorted({PLAN[m][0] for m in methods} & {"reflect", "reflect_noneg"}):
            quality.append(reflection_quality(config, run_dir, seed, variant, log))
    return write_outputs(config, run_dir, rows, time.time() - t0, log, quality)


def write_outputs(config: ExperimentConfig, run_dir: Path, rows: list[dict], seconds: float, log=print,
                  quality: list[dict] | None = None) -> dict:
    flat = [{k: v for k, v in r.items() if k not in ("outcomes", "config", "stage_seconds", "machine")}  # stay in the jsons
            for r in rows]
    keys = sorted({k for r in flat for k in r}, key=lambda k: (k not in ("env", "method", "seed"), k))
    with atomic_path(run_dir / "results.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(flat)
    write_text(run_dir / "table.md", markdown_table(config, rows, seconds) + quality_table(quality or []))
    paths = {"csv": run_dir / "results.csv", "markdown": run_dir / "table.md"}
    png = plot_curves(config, run_dir)
    if png is not None:
        paths["curves"] = png
    log("table: " + ", ".join(str(p) for p in paths.values()))
    return paths


def _per_seed(rows: list[dict], key: str) -> tuple[dict[int, list[float]], dict[int, list[str]]]:
    """``({seed: per-episode values}, {seed: task ids})`` of one method's rows (those that kept outcomes)."""
    vals = {r["seed"]: [float(v) for v in r["outcomes"][key]] for r in rows if r.get("outcomes")}
    tasks = {r["seed"]: list(r["outcomes"]["task_id"]) for r in rows if r.get("outcomes")}
    return vals, tasks


def _pct(m: float, lo: float, hi: float) -> str:
    return f"{100 * m:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def markdown_table(config: ExperimentConfig, rows: list[dict], seconds: float | None = None) -> str:
    main = [r for r in rows if not r.get("task_set")]
    extra_names = list(config.eval.extra)
    levels = sorted({int(k[5:-8]) for r in main for k in r if k.startswith("level") and k.endswith("_success")})
    split = main[0].get("split", config.eval.split) if main else config.eval.split
    extra_cols = "".join(f" success % on {n} [95% CI] |" for n in extra_names)
    lines = [
        f"### {config.env} ({config.model}, {split} split, seeds {', '.join(map(str, config.all_seeds()))})",
        "",
        "Success: mean over seeds of each seed's success rate, with a 95% hierarchical bootstrap interval "
        "(seeds resampled, then episodes within each seed; `frugalft.eval.intervals`); the per-seed rates; and the "
        "*episode-level* Wilson interval of all episodes pooled, which ignores that episodes of a seed share a "
        "model (shown for reference only). Return: mean over seeds ± 95% t-interval across seeds. Agreement: how "
        "often the policy's action is the oracle's; P(oracle) with / without reflection: the policy's probability "
        "of the oracle action with its reflection and with the reflection removed from the same prompt.",
        "",
        "| method | seeds | success % [95% CI, seeds then episodes] | by seed | episode-level Wilson % |"
        f"{extra_cols} return | agreement % | P(oracle) with / without reflection |"
        + (" success % by level (" + " / ".join(str(lv) for lv in levels) + ") |" if len(levels) > 1 else ""),
        "|---|---|---|---|---|" + "---|" * len(extra_names) + "---|---|---|" + ("---|" if len(levels) > 1 else ""),
    ]
    for method in config.methods:
        cell = sorted((r for r in main if r["method"] == method), key=lambda r: r["seed"])
        if not cell:
            continue
        vals, _ = _per_seed(cell, "success")
        if len(vals) == len(cell):
            m, lo, hi = hierarchical_bootstrap(list(vals.values()))
            s_txt = _pct(m, lo, hi)
        else:  # rows written before outcomes were kept: no interval across seeds
            s_txt = f"{100 * sum(r['success'] for r in cell) / len(cell):.1f}"
        by_seed = " / ".join(f"{100 * r['success']:.0f}" for r in cell)
        wins = round(sum(r["success"] * r["episodes"] for r in cell))
        n = sum(r["episodes"] for r in cell)
        wlo, whi = wilson_interval(wins, n)
        extra_txt = ""
        for name in extra_names:
            xs = [r for r in rows if r["method"] == method and r.get("task_set") == name]
            xv, _ = _per_seed(xs, "success")
            extra_txt += f" {_pct(*hierarchical_bootstrap(list(xv.values())))} |" if xv else " – |"
        ret, ret_ci = mean_t_interval([r["return"] for r in cell])
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
        ret_txt = f"{ret:.2f} ± {ret_ci:.2f}" if len(cell) > 1 else f"{ret:.2f}"
        lines.append(f"| {TITLES[method]} | {len(cell)} | {s_txt} | {by_seed} | {100 * wins / n:.1f} "
                     f"[{100 * wlo:.1f}, {100 * whi:.1f}] |{extra_txt} {ret_txt} | {agree_txt} | {probs} |{by_level}")
    comparisons = comparison_lines(config, main)
    if comparisons:
        lines += ["", "Paired comparisons (success, percentage points): one row minus another, episode by episode "
                  "on the same tasks, over the seeds both ran; 95% hierarchical bootstrap interval. An interval that "
                  "excludes 0 is a difference these seeds and tasks resolve.", "",
                  "| row | minus | seeds | difference, points [95% CI] | by seed |", "|---|---|---|---|---|",
                  *comparisons]
    if seconds is not None:
        lines += ["", f"Wall time of this run: {seconds / 60:.1f} min."]
    return "\n".join(lines) + "\n"


def comparison_lines(config: ExperimentConfig, main: list[dict]) -> list[str]:
    per_method = {m: _per_seed([r for r in main if r["method"] == m], "success") for m in config.methods}
    out = []
    for a, b in COMPARED:
        if a not in per_method or b not in per_method:
            continue
        (vals_a, tasks_a), (vals_b, tasks_b) = per_method[a], per_method[b]
        diffs = paired_differences(vals_a, vals_b, tasks_a, tasks_b)
        if not diffs:
            continue
        m, lo, hi = hierarchical_bootstrap(list(diffs.values()))
        by_seed = " / ".join(f"{100 * d.mean():+.0f}" for d in diffs.values())
        out.append(f"| {TITLES[a]} | {TITLES[b]} | {len(diffs)} | {100 * m:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}] "
                   f"| {by_seed} |")
    return out


@dataclass
class RunComparison:
    """One method of two run directories (two settings of a probe), episode by episode on the same tasks."""

    method: str
    seeds: list[int]
    success_a: float  # mean over the shared seeds of each seed's success rate
    success_b: float
    difference: float  # a minus b, mean over seeds of the paired per-episode differences
    ci_lo: float  # 95% hierarchical bootstrap interval of the difference (seeds, then episodes)
    ci_hi: float
    by_seed: dict[int, float]


def compare_runs(run_a: str | Path, run_b: str | Path, method: str, split: str = "valid",
                 task_set: str | None = None, method_b: str | None = None) -> RunComparison:
    """``method`` of ``run_a`` minus the same method of ``run_b`` on ``split``: how a probe compares two settings.
    With ``method_b``, that method of ``run_b`` instead: rows of two tables split for time (their seeds' tasks
    are the same). Only seeds with an evaluation file in both directories count; the two must have played the
    same tasks in the same order (else ``ValueError``)."""
    per_run = []
    for run, row in ((run_a, method), (run_b, method_b or method)):
        seeds = sorted(int(d.name.removeprefix("seed-")) for d in Path(run).glob("seed-*") if d.is_dir())
        files = [eval_path(run, s, row, split, task_set) for s in seeds]
        rows = [json.loads(f.read_text(encoding="utf-8")) for f in files if f.exists()]
        per_run.append(_per_seed(rows, "success"))
    (a, tasks_a), (b, tasks_b) = per_run
    diffs = paired_differences(a, b, tasks_a, tasks_b)
    if not diffs:
        what = method if method_b in (None, method) else f"{method} (A) and {method_b} (B)"
        raise ValueError(f"no seed of {run_a} and {run_b} has a {split} evaluation of {what} in both")
    m, lo, hi = hierarchical_bootstrap(list(diffs.values()))
    return RunComparison(method, sorted(diffs), sum(sum(a[s]) / len(a[s]) for s in diffs) / len(diffs),
                         sum(sum(b[s]) / len(b[s]) for s in diffs) / len(diffs), m, lo, hi,
                         {s: float(d.mean()) for s, d in diffs.items()})


def quality_table(quality: list[dict]) -> str:
    """Reflection quality per warm-up variant, mean ± 95% t-interval across seeds."""
    if not quality:
        return ""
    split = quality[0].get("split", "test")  # files written before they named their split were test ones
    lines = ["", f"Reflection model vs the teacher on the oracle's {split} states (decoded as in RL, at "
             "`rl.reflection_temperature`): exact match, word F1, and the F1 two teacher reflections of different states share (the template floor).", "",
             "| reflection model | states | exact % | word F1 | template floor F1 |", "|---|---|---|---|---|"]
    names = {"reflect": "Reflect-RL warm-up", "reflect_noneg": "warm-up without negative examples"}
    for variant in ("reflect", "reflect_noneg"):
        cell = [q for q in quality if q["variant"] == variant]
        if not cell:
            continue
        ex, ex_ci = mean_t_interval([100 * q["exact"] for q in cell])
        f1, f1_ci = mean_t_interval([q["word_f1"] for q in cell])
        fl, _ = mean_t_interval([q["template_f1_floor"] for q in cell])
        lines.append(f"| {names[variant]} | {cell[0]['states']} | {ex:.1f} ± {ex_ci:.1f} | {f1:.2f} ± {f1_ci:.2f} "
                     f"| {fl:.2f} |")
    return "\n".join(lines) + "\n"


VARIANT_TITLES = {"reflect": "Reflect-RL warm-up", "reflect_noneg": "warm-up without negatives",
                  "noreflect": "warm-up without reflection",
                  "noreflect_rinit": "without reflection, from the reflection model"}


def warmup_curves(config: ExperimentConfig, run_dir: Path) -> dict[str, list[list[tuple[int, float]]]]:
    """Each warm-up variant's policy validation accuracy curve per seed: ``{variant: [[(step, acc), ...], ...]}``."""
    from frugalft.runs import read_metrics

    out: dict[str, list[list[tuple[int, float]]]] = {}
    for variant in VARIANT_TITLES:
        for seed in config.all_seeds():
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
        for seed in config.all_seeds():
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
    fig.suptitle(f"{config.env}: warm-up and RL learning curves (mean of the seeds that ran; RL: moving "
                 "average)")
    fig.tight_layout()
    out = run_dir / "curves.png"
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return out

"""SFT warm-up of Reflect-RL's two players (SPEC A.1 step 2), from the JSONL sets of ``warmup_data``.

- The **reflection model** learns ``state + "# Analyze:" -> reflection + eos``: cross-entropy on the reflection
  tokens only (``target_mask`` of ``encode_reflection_example``); logits are computed at those positions only,
  which matters with a 50k vocabulary on a CPU.
- The **policy** learns ``state + reflection + enumerated actions + "# Action:" -> label``. By default the loss
  is the cross-entropy of the oracle's label under the policy's own label head, the softmax over the labels
  listed in the prompt that RL samples from (``policy_loss="label_head"``); ``"full_vocab"`` is the plain LM
  cross-entropy on the label token instead.

Both start from the same base model (LoRA adapters or all weights), train with AdamW on seeded random batches
(batch ``k`` of a run is a function of the seed and ``k``, so a resumed run draws the same batches), checkpoint
every ``checkpoint_every`` steps, and save the result as a plain model directory (LoRA merged) with its
tokenizer: ``<run>/reflection/model`` and ``<run>/policy/model``, which ``frugalft.models.load_model`` and the RL
trainer load by path.

**Validation and early stopping.** A seeded ``val_fraction`` of the train *tasks* is held out (all their rows,
corrective steps included, so no state of a validation episode is trained on). Every ``eval_every`` steps
each player is scored there: the reflection model by its held-out loss per reflection token (and the exact
match of greedy reflections, logged), the policy by its label accuracy against the oracle (ties broken by
held-out loss). The best weights are kept (``<player>/best``); training stops after ``patience`` validations
(the policy: ``policy_patience`` where set) without progress (neither a better score nor a lower held-out loss than ever) or at the step cap, and the saved
model is the best one. The curve is in the player's
``metrics.jsonl`` (``val_*`` rows).

**What the policy reads in its warm-up** (``policy_reflections``). With ``"model"`` (the default) the policy
is trained on reflections the *trained reflection model* wrote for each training state, sampled at
``reflection_temperature`` (1 by default, even where RL decodes greedily: a policy must see the reflection
model be wrong to learn how far to trust it), instead of the teacher's: at RL and test time the policy only
ever reads the reflection model's reflections, and a policy warmed up on the teacher's (always correct) text learns to trust every word of it, then follows
the reflection model's mistakes (exposure bias; docs/history.md measured it on pickup + dropoff, and
docs/results.md's valid probe re-chose this default on the full mode). ``"teacher"`` is the plain reading of
the paper.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F

from frugalft.atomic import atomic_path, write_json, write_jsonl
from frugalft.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from frugalft.models import LoraSettings, add_lora, load_model, max_positions, trunk_hidden
from frugalft.models.precision import Autocast, bf16_autocast, wants_matmul_attention
from frugalft.reflect.policy import Policy, head_token_ids, score_steps
from frugalft.reflect.prompts import (
    DEFAULT_LABELS,
    LabelAlphabet,
    encode_policy_prompt,
    encode_reflection_example,
)
from frugalft.reflect.reflection import Reflector
from frugalft.runs import RunDir, RunError, check_config, config_changes, progress, read_jsonl_lines
from frugalft.seeding import seed_everything
from frugalft.sft.loop import optimizer_steps

# Which JSONL sets each warm-up variant trains on: (reflection set or None, policy set).
VARIANTS: dict[str, tuple[str | None, str]] = {
    "reflect": ("reflection.jsonl", "policy.jsonl"),  # Reflect-RL
    "reflect_noneg": ("reflection_noneg.jsonl", "policy_noneg.jsonl"),  # Reflect-RL without negative examples
    "noreflect": (None, "policy_noreflect.jsonl"),  # SFT (+RL) without reflection
}

# Settings the reflection model's training never reads: a trained reflection model is reused when only these
# changed (a probe of the policy's warm-up on the same reflection model), and refused for any other change.
POLICY_ONLY: tuple[str, ...] = ("policy_steps", "policy_patience", "policy_reflections", "reflection_temperature",
                                "policy_init", "policy_loss", "policy_head")


@dataclass
class WarmupConfig:
    # Keys an older frugalft spelled another way: the config loader's error names the new spelling.
    RENAMED: ClassVar[dict[str, str]] = {
        k: "LoRA is now `finetune: lora` with `lora: {r: 16, alpha: 8, dropout: 0.05}`, as in the rl section"
        for k in ("lora", "lora_r", "lora_alpha", "lora_dropout")}

    @staticmethod
    def upgrade_record(recorded: dict[str, Any]) -> dict[str, Any]:
        """A config.yaml recorded before LoRA was spelled one way, in today's keys (so a run made with LoRA is
        not taken for a full fine-tune on resume, and one made without it still resumes)."""
        if not isinstance(recorded.get("lora"), bool):
            return recorded
        out = {k: v for k, v in recorded.items() if k not in ("lora_r", "lora_alpha", "lora_dropout")}
        out["finetune"] = "lora" if recorded["lora"] else "full"
        out["lora"] = {"r": recorded.get("lora_r", 16), "alpha": recorded.get("lora_alpha", 8),
                       "dropout": recorded.get("lora_dropout", 0.05)}
        return out

    model: str = "tiny"  # base model of both players: embedded name, local directory or hub id
    device: str = "auto"  # auto, cpu, cuda, ...
    dtype: str = "auto"  # auto = bf16 on GPUs that have it, float32 on CPU
    # bf16 matmuls under autocast, weights and optimizer in float32. auto: on CPUs with native bf16
    # (AVX-512 BF16 / AMX), where a tiny model's step is ~1.5x faster; off elsewhere (GPU weights are bf16 anyway).
    autocast: Autocast = "auto"
    # LoRA adapters (merged into the weights at the end) or all weights: full for tiny models. Spelled as in
    # RLConfig and SFTConfig.
    finetune: Literal["full", "lora"] = "full"
    lora: LoraSettings = field(default_factory=LoraSettings)  # the paper's table: r=16, alpha=8
    reflection_steps: int = 300  # cap on the reflection model's optimizer steps (the paper: ~20k at GPT-2 XL scale)
    policy_steps: int = 300  # cap on the policy's optimizer steps
    batch_size: int = 16  # examples per step
    # Batches drawn in blocks of this many: a block is a seeded sample of batch_size x length_groups examples,
    # sorted by length and cut into batches, served in a seeded order (1: off, each batch drawn on its own).
    # Less padding where lengths vary: AutoExplore's prompts (median ~330 tokens, 5% over 500) pad a random
    # batch to 1.8x its tokens. Validation batches are then sorted by length too.
    length_groups: int = 1
    lr: float = 1e-3  # AdamW; 1e-3 suits tiny models trained in full, ~2e-4 suits LoRA on a pretrained model
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # max gradient norm
    max_length: int = 1024  # longer examples lose the start of their prompt (the target is always kept); never
    # more than the model reads (its max_positions), as RL cuts prompts
    labels: list[str] | None = None  # label alphabet; None = the authors' "0".."199", a-z, A-Z
    shuffle_labels: bool = False  # random label subsets per example (SPEC A.2); must match the RL config
    policy_loss: Literal["label_head", "full_vocab"] = "label_head"  # see the module docstring
    # How the policy scores the listed actions (frugalft.reflect.policy): "label", the paper's next-label-token
    # softmax; "line", a pointer at each listed line's end; "text", each action's likelihood as the prompt's
    # continuation. Must match the RL config (the table copies it).
    policy_head: Literal["label", "line", "text"] = "label"
    checkpoint_every: int = 100  # steps between checkpoints (a killed run resumes from the last one)
    log_every: int = 10  # steps between metric rows
    # Validation (see the module docstring): a share of the train tasks, never trained on.
    val_fraction: float = 0.15  # share of train tasks held out; 0 = no validation, train to the step cap
    eval_every: int = 50  # steps between validations
    # Validations without progress before stopping (0 = never stop early). Progress is a better validation or a
    # lower held-out loss than ever: accuracy plateaus for hundreds of steps while the loss still falls.
    patience: int = 4
    # The policy's own patience (None: ``patience``): a policy that starts from the reflection model jumps to
    # ~0.8 held-out accuracy by its first checks, then its held-out loss swings 2-3x between checks, so four
    # checks without progress can come before its plateau (docs/results.md, probe 5).
    policy_patience: int | None = None
    val_max_examples: int = 512  # validation rows scored (the first ones of a seeded order), for its cost
    val_generate: int = 64  # validation rows whose greedy reflection is checked for exact match (0: skip)
    # What the policy reads in its warm-up: the reflection model's own reflections or the teacher's.
    policy_reflections: Literal["model", "teacher"] = "model"
    # Sampling temperature of those reflections. Sampled (1.0) even where RL and evaluation decode greedily: a
    # policy that has seen the reflection model's mistakes learns how far to trust it (docs/results.md).
    reflection_temperature: float = 1.0
    reflection_tokens: int = 64  # cap on their tokens (as rl.reflection_tokens)
    # Where the policy starts: the base model (the paper: two copies of it), or the trained reflection model's
    # weights, which already read the state (a from-scratch model's shortcut; docs/results.md measures it).
    # Variants without a reflection model always start from the base.
    policy_init: Literal["base", "reflection"] = "base"
    seed: int = 0  # model init (tiny models), batches, label shuffling, the validation split


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The examples of a warm-up JSONL (``frugalft rl data``); a bad line raises naming the file and line."""
    rows = []
    for lineno, row in read_jsonl_lines(path):
        missing = [k for k in ("parts", "actions", "target_index", "reflection") if k not in row]
        if missing:
            raise ValueError(f"{path}:{lineno}: missing keys {missing}")
        rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no examples")
    return rows


def alphabet_of(config: WarmupConfig) -> LabelAlphabet:
    return LabelAlphabet(labels=tuple(config.labels or DEFAULT_LABELS), shuffle=config.shuffle_labels)


# ---- batches ---------------------------------------------------------------------------------------------
def collate_right(seqs: list[list[int]], masks: list[list[int]], pad_id: int) -> tuple[torch.Tensor, ...]:
    """Right-pad ids and target masks: ``(input_ids, attention_mask, target_mask)``, each (batch, longest)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(seqs), width), dtype=torch.long)
    target = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, (s, m) in enumerate(zip(seqs, masks, strict=True)):
        ids[i, : len(s)] = torch.as_tensor(s)
        attn[i, : len(s)] = 1
        target[i, : len(s)] = torch.as_tensor(m)
    return ids, attn, target


def masked_lm_loss(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   target_mask: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over target tokens only; vocabulary logits only at those positions."""
    hidden = trunk_hidden(model, input_ids, attention_mask)
    predicts = target_mask[:, 1:].bool()  # position t predicts token t+1
    if not predicts.any():
        raise ValueError("a batch without target tokens")
    h = hidden[:, :-1][predicts]
    logits = model.get_output_embeddings()(h).float()
    return F.cross_entropy(logits, input_ids[:, 1:][predicts])


def _truncate(ids: list[int], mask: list[int], max_length: int) -> tuple[list[int], list[int]]:
    """Keep the last ``max_length`` tokens (the target sits at the end); the target itself must fit."""
    if len(ids) <= max_length:
        return ids, mask
    if sum(mask) >= max_length:
        raise ValueError(f"a target of {sum(mask)} tokens does not fit max_length={max_length}")
    return ids[-max_length:], mask[-max_length:]


def batch_indices(n: int, batch_size: int, seed: int, step: int, lengths: list[int] | None = None,
                  groups: int = 1) -> list[int]:
    """Batch ``step``'s example indices: a pure function of (seed, step), so resuming redraws the same batches.

    With ``groups`` > 1 and ``lengths`` (one per example), steps come in blocks of ``groups``: the block's
    examples (drawn without replacement) sorted by length and cut into ``groups`` batches of similar lengths,
    served in a seeded order (see ``WarmupConfig.length_groups``)."""
    groups = min(groups, n // batch_size) if lengths is not None else 1
    if groups <= 1:
        rng = np.random.default_rng([seed, step])
        return rng.choice(n, size=min(batch_size, n), replace=False).tolist()
    rng = np.random.default_rng([seed, step // groups, groups])  # one stream per block, none shared with above
    block = rng.choice(n, size=batch_size * groups, replace=False).tolist()
    block.sort(key=lambda i: (lengths[i], i))
    k = int(rng.permutation(groups)[step % groups])
    return block[k * batch_size: (k + 1) * batch_size]


# ---- the two players -------------------------------------------------------------------------------------
def encode_reflection_set(tokenizer, rows: list[dict], max_length: int) -> list[tuple[list[int], list[int]]]:
    out = []
    for r in rows:
        enc = encode_reflection_example(tokenizer, r["parts"], r["reflection"])
        out.append(_truncate(enc.input_ids, enc.target_mask, max_length))
    return out


@dataclass
class PolicyExample:
    prompt: list[int]  # token ids, ending with "# Action:"
    labels: list[int]  # alphabet index of each listed action's label, in list order
    target: int  # index (into the action list) of the oracle's action


def encode_policy_set(tokenizer, rows: list[dict], alphabet: LabelAlphabet, max_length: int,
                      seed: int) -> list[PolicyExample]:
    rng = random.Random(seed)
    out = []
    for r in rows:
        labels = alphabet.pick(len(r["actions"]), rng)
        prompt = encode_policy_prompt(tokenizer, r["parts"], r["reflection"], r["actions"], alphabet.strings(labels))
        prompt, _ = _truncate(prompt, [0] * len(prompt), max_length - 1)
        out.append(PolicyExample(prompt, labels, int(r["target_index"])))
    return out


def _load_base(config: WarmupConfig, start: str | Path | None = None):
    """The model a player starts from: the base model, or ``start`` (a model directory)."""
    name = str(start) if start is not None else config.model
    lm, tok = load_model(name, device=config.device, dtype=config.dtype, seed=config.seed)
    use_training_attention(lm, config)
    if config.finetune == "lora":
        lm = add_lora(lm, config.lora)
    lm.train()
    return lm, tok


def sft_max_length(config: WarmupConfig, lm: torch.nn.Module) -> int:
    """``config.max_length``, cut to the positions the model reads: RL and the reflection model cut over-long
    prompts to them, and the warm-up must not keep (or fail on) more."""
    limit = max_positions(lm)
    return min(config.max_length, limit) if limit else config.max_length


def use_training_attention(lm: torch.nn.Module, config: WarmupConfig) -> None:
    """Matmul ("eager") attention for SFT under bf16 autocast on a CPU (``frugalft.models.precision``): at a few
    hundred tokens it makes a tiny-env step ~1.2x faster (benchmarks/bench_warmup.py). Not saved with the
    model: RL and evaluation run in float32, where SDPA is the faster one."""
    if wants_matmul_attention(lm, config.autocast):
        lm.set_attn_implementation("eager")


def save_model(lm: torch.nn.Module, tokenizer, path: Path) -> Path:
    """A plain model directory (LoRA merged into the weights) plus the tokenizer, written atomically."""
    if hasattr(lm, "merge_and_unload"):
        lm = lm.merge_and_unload()
    with atomic_path(path) as tmp:
        lm.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return path


def split_validation(rows: list[dict], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train row indices, validation row indices): a seeded ``fraction`` of the distinct task ids, with all of
    their rows, goes to validation. Both players of a seed get the same split (same rows, same seed)."""
    tasks = sorted({str(r.get("task_id", i)) for i, r in enumerate(rows)})
    n_val = round(fraction * len(tasks)) if fraction > 0 else 0
    if n_val >= len(tasks):
        raise ValueError(f"val_fraction={fraction} leaves no training task of {len(tasks)}")
    held = set(random.Random(f"val-{seed}").sample(tasks, n_val))
    train = [i for i, r in enumerate(rows) if str(r.get("task_id", i)) not in held]
    val = [i for i, r in enumerate(rows) if str(r.get("task_id", i)) in held]
    return train, val


@dataclass
class Validation:
    """How one player is validated: ``score()`` -> metrics (``val_*``), ``better(new, best)`` orders them."""

    score: Any  # () -> dict[str, float]
    better: Any  # (dict, dict) -> bool


def autocast_context(config: WarmupConfig, device: torch.device) -> contextlib.AbstractContextManager:
    """The forward passes' autocast (see ``WarmupConfig.autocast``)."""
    return bf16_autocast(config.autocast, device)


def _fit(name: str, lm: torch.nn.Module, loss_of, train_idx: list[int], steps: int, patience: int,
         config: WarmupConfig, run: RunDir, log, validation: Validation | None = None,
         lengths: list[int] | None = None) -> dict[str, Any]:
    """The warm-up recipe both players share, around ``frugalft.sft.loop``'s optimizer steps: seeded batches,
    metrics, checkpoints, resume, and (with ``validation``) periodic validation, the best weights kept in
    ``<run>/best``, early stopping. ``lengths``: each training example's tokens (for ``config.length_groups``),
    indexed like the examples."""
    train_lengths = [lengths[i] for i in train_idx] if lengths is not None else None
    params = [p for p in lm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    autocast = autocast_context(config, params[0].device)
    best_dir = run.path / "best"
    # best: metrics of the best validation so far; low: the lowest held-out loss; bad: validations since progress
    start, best, low, bad = 0, None, math.inf, 0
    ckpt = latest_checkpoint(run.checkpoints)
    if ckpt is not None:
        state = load_checkpoint(ckpt, lm, opt)
        c = state["counters"]
        start, best, low, bad = state["step"], c.get("best"), c.get("low", math.inf), c.get("bad", 0)
        run.truncate_metrics(start)
        log(f"{name}: resuming from {ckpt} (step {start})")
    elif run.metrics_path.exists():  # killed before its first checkpoint: start the curve over
        run.truncate_metrics(-1)

    def validate(step: int) -> bool:
        """Score, keep the best weights; True when training should stop."""
        nonlocal best, low, bad
        assert validation is not None
        lm.eval()
        with torch.no_grad(), autocast:
            metrics = validation.score()
        lm.train()
        improved = best is None or validation.better(metrics, best)
        if improved:
            best = {**metrics, "step": step}
            save_checkpoint(best_dir, step, lm, keep=1)
        lower = metrics["val_loss"] < low
        low = min(low, metrics["val_loss"])
        bad = 0 if improved or lower else bad + 1
        run.log_metrics(step, **metrics, val_best_step=best["step"])
        return patience > 0 and bad >= patience

    t0 = time.time()
    window: list[float] = []
    stopped = None
    if validation is not None and start == 0:
        validate(0)  # the starting point, so the curve begins at the untrained model
    batches = ((step, [train_idx[i] for i in batch_indices(len(train_idx), config.batch_size, config.seed, step,
                                                           train_lengths, config.length_groups)])
               for step in range(start, steps))
    for out in progress(optimizer_steps(batches, lambda idx: (loss_of(idx), None), params, opt,
                                        grad_clip=config.grad_clip, autocast=autocast),
                        f"warm-up {name}", total=steps - start):
        step = out.step
        window.append(out.loss)
        if (step + 1) % config.log_every == 0 or step + 1 == steps or step == 0:  # step 1: the starting loss
            run.log_metrics(step + 1, loss=sum(window) / len(window), grad_norm=out.grad_norm,
                            examples_per_s=len(window) * config.batch_size / max(time.time() - t0, 1e-9))
            window, t0 = [], time.time()
        done = step + 1 == steps
        if validation is not None and ((step + 1) % config.eval_every == 0 or done) and validate(step + 1):
            stopped = step + 1
            done = True
        if (step + 1) % config.checkpoint_every == 0 and not done:
            save_checkpoint(run.checkpoints, step + 1, lm, opt, counters={"best": best, "low": low, "bad": bad})
        if stopped is not None:
            log(f"{name}: validation has not progressed for {patience} checks; stopping at step {stopped} "
                f"(best: step {best['step'] if best else '-'})")
            break
    if best is not None:  # the saved model is the best validated one
        load_checkpoint(latest_checkpoint(best_dir), lm, restore_rng=False)
    rows = [r for r in run.metrics() if "loss" in r]
    return {"first_loss": rows[0]["loss"] if rows else float("nan"),
            "final_loss": rows[-1]["loss"] if rows else float("nan"),
            "steps_run": stopped or steps, "stopped_early": stopped is not None and stopped < steps,
            "best": best}


def _finish(name: str, lm: torch.nn.Module, tok, out: Path, stats: dict[str, Any], extra: dict[str, Any],
            log) -> Path:
    lm.eval()
    path = save_model(lm, tok, out / "model")
    write_json(out / "summary.json", {**stats, **extra})
    _drop_training_state(out)
    best = stats.get("best")
    val = (", best validation " + ", ".join(f"{k} {v:.3f}" for k, v in best.items() if k != "step" and
                                           isinstance(v, float)) + f" at step {best['step']}") if best else ""
    log(f"{name}: loss {stats['first_loss']:.3f} -> {stats['final_loss']:.3f} in {stats['steps_run']} steps{val}; "
        f"saved {path}")
    return path


def _drop_training_state(out: Path) -> None:
    """Remove a finished stage's checkpoints (weights and optimizer state) and its best-validation copy: the
    saved ``model/`` is the result, and a stage with ``model/config.json`` is reused, never resumed. Called
    only after ``model/`` and summary.json are written: a crash before leaves a stage that resumes, one after
    only leftover files. ``check_config`` still recognises the finished stage by its metrics.jsonl."""
    import shutil

    for folder in (out / "checkpoints", out / "best"):
        shutil.rmtree(folder, ignore_errors=True)


def _val_sample(idx: list[int], limit: int, seed: int) -> list[int]:
    """The validation rows actually scored: a seeded ``limit`` of them (all when fewer), in index order."""
    return sorted(random.Random(f"val-rows-{seed}").sample(idx, limit)) if len(idx) > limit else idx


def _by_length(idx: list[int], lengths: list[int] | None) -> list[int]:
    """``idx`` by length when ``lengths`` are given (batches of similar lengths pad less; the metrics do not
    depend on the order), else unchanged."""
    return sorted(idx, key=lambda i: (lengths[i], i)) if lengths is not None else idx


def train_reflection(config: WarmupConfig, data: str | Path, out: str | Path, log=print) -> Path:
    """SFT of the reflection model on ``data`` (a reflection JSONL); returns the saved model directory."""
    out = Path(out)
    if (out / "model" / "config.json").exists():
        check_config(out, config, POLICY_ONLY)  # reused only for the config that made it (its own settings)
        log(f"reflection model already trained: {out / 'model'}")
        return out / "model"
    seed_everything(config.seed)
    run = RunDir(out, config=config, resume=True)
    lm, tok = _load_base(config)
    rows = read_jsonl(data)
    examples = encode_reflection_set(tok, rows, sft_max_length(config, lm))
    train_idx, val_idx = split_validation(rows, config.val_fraction, config.seed)
    device = next(lm.parameters()).device
    pad = tok.pad_token_id
    lengths = [len(e[0]) for e in examples] if config.length_groups > 1 else None

    def loss_of(idx: list[int]) -> torch.Tensor:
        ids, attn, target = collate_right([examples[i][0] for i in idx], [examples[i][1] for i in idx], pad)
        return masked_lm_loss(lm, ids.to(device), attn.to(device), target.to(device))

    validation = None
    if val_idx:
        scored = _val_sample(val_idx, config.val_max_examples, config.seed)
        generated = scored[: config.val_generate]  # the first in index order, whatever the batching
        scored = _by_length(scored, lengths)
        reflector = Reflector(lm, tok, max_new_tokens=config.reflection_tokens, temperature=0.0, enabled=True,
                              freeze=False)
        lm.train()  # the Reflector switched it to eval mode

        def score() -> dict[str, float]:
            total, tokens = 0.0, 0
            for k in range(0, len(scored), config.batch_size):
                idx = scored[k: k + config.batch_size]
                n = sum(sum(examples[i][1][1:]) for i in idx)  # target tokens that a position predicts
                total += float(loss_of(idx)) * n
                tokens += n
            metrics = {"val_loss": total / max(tokens, 1)}
            if generated:
                texts = reflector.reflect([rows[i]["parts"] for i in generated])
                metrics["val_exact"] = sum(str(t).strip() == rows[i]["reflection"].strip()
                                           for t, i in zip(texts, generated, strict=True)) / len(generated)
            return metrics

        validation = Validation(score, lambda new, best: new["val_loss"] < best["val_loss"])
    stats = _fit("reflection", lm, loss_of, train_idx, config.reflection_steps, config.patience, config, run, log,
                 validation, lengths)
    return _finish("reflection model", lm, tok, out, stats,
                   {"examples": len(train_idx), "val_examples": len(val_idx)}, log)


def train_policy(config: WarmupConfig, data: str | Path, out: str | Path, log=print,
                 start: str | Path | None = None) -> Path:
    """SFT of the policy on ``data`` (a policy JSONL, with or without reflections), from the base model or from
    ``start`` (a model directory); returns the saved model directory."""
    out = Path(out)
    if (out / "model" / "config.json").exists():
        check_config(out, config)  # a finished stage is reused only for the config that made it
        log(f"policy already trained: {out / 'model'}")
        return out / "model"
    seed_everything(config.seed)
    run = RunDir(out, config=config, resume=True)
    lm, tok = _load_base(config, start)
    alphabet = alphabet_of(config)
    label_ids = alphabet.check(tok)
    rows = read_jsonl(data)
    examples = encode_policy_set(tok, rows, alphabet, sft_max_length(config, lm), config.seed)
    train_idx, val_idx = split_validation(rows, config.val_fraction, config.seed)
    device = next(lm.parameters()).device
    policy = Policy(lm, label_ids, tok.pad_token_id, head=config.policy_head,
                    **head_token_ids(tok, config.policy_head))
    lengths = [len(e.prompt) for e in examples] if config.length_groups > 1 else None

    def scores_of(idx: list[int]):
        batch = [examples[i] for i in idx]
        return score_steps(policy, [e.prompt for e in batch], [e.labels for e in batch], [e.target for e in batch])

    def loss_of(idx: list[int]) -> torch.Tensor:
        if config.policy_loss == "label_head" or config.policy_head != "label":  # full_vocab: the label's LM loss
            return -scores_of(idx).logprob.mean()
        batch = [examples[i] for i in idx]
        seqs = [e.prompt + [label_ids[e.labels[e.target]]] for e in batch]
        ids, attn, target = collate_right(seqs, [[0] * len(e.prompt) + [1] for e in batch], tok.pad_token_id)
        return masked_lm_loss(lm, ids.to(device), attn.to(device), target.to(device))

    validation = None
    if val_idx:
        scored = _by_length(_val_sample(val_idx, config.val_max_examples, config.seed), lengths)

        def score() -> dict[str, float]:
            nll = correct = 0.0
            for k in range(0, len(scored), config.batch_size):
                idx = scored[k: k + config.batch_size]
                sc = scores_of(idx)
                nll -= float(sc.logprob.sum())
                best = sc.listed.argmax(-1).tolist()  # list position of the most likely action
                correct += sum(b == examples[i].target for b, i in zip(best, idx, strict=True))
            return {"val_loss": nll / len(scored), "val_accuracy": correct / len(scored)}

        validation = Validation(score, lambda new, best: (new["val_accuracy"], -new["val_loss"])
                                > (best["val_accuracy"], -best["val_loss"]))
    patience = config.patience if config.policy_patience is None else config.policy_patience
    stats = _fit("policy", lm, loss_of, train_idx, config.policy_steps, patience, config, run, log, validation,
                 lengths)
    return _finish("policy", lm, tok, out, stats, {"examples": len(train_idx), "val_examples": len(val_idx)}, log)


def model_reflections(config: WarmupConfig, reflection_model: Path, data: str | Path, out: Path,
                      log=print) -> Path:
    """``data`` (a policy JSONL) with each row's reflection rewritten by the trained reflection model, sampled at
    ``config.reflection_temperature``; the teacher's text is kept as ``teacher_reflection``. What made the set
    (temperature, token cap, seed) is recorded beside it, and a set made otherwise is refused, not reused."""
    made_by = {"reflection_temperature": config.reflection_temperature,
               "reflection_tokens": config.reflection_tokens, "seed": config.seed}
    record = out.with_suffix(".json")
    if out.exists():
        recorded = json.loads(record.read_text(encoding="utf-8")) if record.exists() else None
        changes = config_changes(recorded, made_by, {}) if recorded is not None else []
        if changes:
            raise RunError(f"{out} was written with other settings ({'; '.join(changes)}): delete it (and the "
                           "policy trained on it) to write it again, or use another run directory")
        return out  # (a set written before sets were recorded is reused as before)
    lm, tok = load_model(str(reflection_model), device=config.device, dtype=config.dtype, seed=config.seed)
    reflector = Reflector(lm, tok, max_new_tokens=config.reflection_tokens,
                          temperature=config.reflection_temperature)
    rows = [row for _, row in read_jsonl_lines(data)]
    t0 = time.time()
    written: list[str | None] = []
    batch = 32
    for k in progress(range(0, len(rows), batch), "reflections for the policy warm-up",
                      total=math.ceil(len(rows) / batch)):
        chunk = rows[k: k + batch]
        # One generator per row, seeded by (seed, row): the set does not depend on the batch size.
        gens = [torch.Generator().manual_seed(config.seed * 1_000_003 + k + j) for j in range(len(chunk))]
        written += reflector.reflect([r["parts"] for r in chunk], gens)
    rewritten = [{**r, "teacher_reflection": r["reflection"], "reflection": w or ""}
                 for r, w in zip(rows, written, strict=True)]
    write_json(record, made_by)  # first: a set without its record is never one of today's
    write_jsonl(out, rewritten)
    exact = sum(r["reflection"].strip() == r["teacher_reflection"].strip() for r in rewritten) / max(len(rows), 1)
    log(f"policy warm-up set with the reflection model's own reflections: {out} ({len(rows)} rows, "
        f"{exact:.0%} identical to the teacher's, {time.time() - t0:.0f} s)")
    return out


def warmup(config: WarmupConfig, data_dir: str | Path, run_dir: str | Path, variant: str = "reflect",
           log=print) -> dict[str, Path | None]:
    """Warm up the players of ``variant`` (see VARIANTS) into ``run_dir/{reflection,policy}``."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown warm-up variant {variant!r}; valid: {', '.join(VARIANTS)}")
    data_dir, run_dir = Path(data_dir), Path(run_dir)
    reflection_set, policy_set = VARIANTS[variant]
    for name in filter(None, (reflection_set, policy_set)):
        if not (data_dir / name).exists():
            raise FileNotFoundError(f"{data_dir / name} is missing; run `frugalft rl data` first")
    reflection = None
    policy_data = data_dir / policy_set
    if reflection_set is not None:
        reflection = train_reflection(config, data_dir / reflection_set, run_dir / "reflection", log)
        if config.policy_reflections == "model":
            policy_data = model_reflections(config, reflection, policy_data, run_dir / "policy_data.jsonl", log)
    start = reflection if config.policy_init == "reflection" and reflection is not None else None
    policy = train_policy(config, policy_data, run_dir / "policy", log, start=start)
    return {"reflection": reflection, "policy": policy}

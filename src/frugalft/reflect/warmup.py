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
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from frugalft.atomic import atomic_path, write_json
from frugalft.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from frugalft.models import LoraSettings, add_lora, load_model, trunk_hidden
from frugalft.reflect.policy import Policy, score_steps
from frugalft.reflect.prompts import (
    DEFAULT_LABELS,
    LabelAlphabet,
    encode_policy_prompt,
    encode_reflection_example,
)
from frugalft.runs import RunDir, progress, read_jsonl_lines
from frugalft.seeding import seed_everything

# Which JSONL sets each warm-up variant trains on: (reflection set or None, policy set).
VARIANTS: dict[str, tuple[str | None, str]] = {
    "reflect": ("reflection.jsonl", "policy.jsonl"),  # Reflect-RL
    "reflect_noneg": ("reflection_noneg.jsonl", "policy_noneg.jsonl"),  # Reflect-RL without negative examples
    "noreflect": (None, "policy_noreflect.jsonl"),  # SFT (+RL) without reflection
}


@dataclass
class WarmupConfig:
    model: str = "tiny"  # base model of both players: embedded name, local directory or hub id
    device: str = "auto"  # auto, cpu, cuda, ...
    dtype: str = "auto"  # auto = bf16 on GPUs that have it, float32 on CPU
    lora: bool = False  # LoRA adapters (merged at the end) instead of training all weights; off for tiny models
    lora_r: int = 16  # the paper's table: r=16, alpha=8
    lora_alpha: int = 8
    lora_dropout: float = 0.05
    reflection_steps: int = 300  # optimizer steps of the reflection model (the paper: ~20k at GPT-2 XL scale)
    policy_steps: int = 300  # optimizer steps of the policy
    batch_size: int = 16  # examples per step
    lr: float = 1e-3  # AdamW; 1e-3 suits tiny models trained in full, ~2e-4 suits LoRA on a pretrained model
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # max gradient norm
    max_length: int = 1024  # longer examples lose the start of their prompt (the target is always kept)
    labels: list[str] | None = None  # label alphabet; None = the authors' "0".."199", a-z, A-Z
    shuffle_labels: bool = False  # random label subsets per example (SPEC A.2); must match the RL config
    policy_loss: Literal["label_head", "full_vocab"] = "label_head"  # see the module docstring
    checkpoint_every: int = 100  # steps between checkpoints (a killed run resumes from the last one)
    log_every: int = 10  # steps between metric rows
    seed: int = 0  # model init (tiny models), batches, label shuffling


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


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> list[int]:
    """Batch ``step``'s example indices: a pure function of (seed, step), so resuming redraws the same batches."""
    rng = np.random.default_rng([seed, step])
    return rng.choice(n, size=min(batch_size, n), replace=False).tolist()


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


def _load_base(config: WarmupConfig):
    lm, tok = load_model(config.model, device=config.device, dtype=config.dtype, seed=config.seed)
    if config.lora:
        lm = add_lora(lm, LoraSettings(r=config.lora_r, alpha=config.lora_alpha, dropout=config.lora_dropout))
    lm.train()
    return lm, tok


def save_model(lm: torch.nn.Module, tokenizer, path: Path) -> Path:
    """A plain model directory (LoRA merged into the weights) plus the tokenizer, written atomically."""
    if hasattr(lm, "merge_and_unload"):
        lm = lm.merge_and_unload()
    with atomic_path(path) as tmp:
        lm.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return path


def _fit(name: str, lm: torch.nn.Module, loss_of, n_examples: int, steps: int, config: WarmupConfig,
         run: RunDir, log) -> dict[str, float]:
    """The SFT loop shared by both players: seeded batches, clipping, metrics, checkpoints, resume."""
    params = [p for p in lm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    start = 0
    ckpt = latest_checkpoint(run.checkpoints)
    if ckpt is not None:
        start = load_checkpoint(ckpt, lm, opt)["step"]
        run.truncate_metrics(start)
        log(f"{name}: resuming from {ckpt} (step {start})")
    t0 = time.time()
    window: list[float] = []
    for step in progress(range(start, steps), f"warm-up {name}"):
        idx = batch_indices(n_examples, config.batch_size, config.seed, step)
        loss = loss_of(idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        opt.step()
        window.append(loss.item())
        if (step + 1) % config.log_every == 0 or step + 1 == steps or step == 0:  # step 1: the starting loss
            run.log_metrics(step + 1, loss=sum(window) / len(window), grad_norm=grad_norm, examples_per_s=len(window) *
                            config.batch_size / max(time.time() - t0, 1e-9))
            window, t0 = [], time.time()
        if (step + 1) % config.checkpoint_every == 0 and step + 1 < steps:
            save_checkpoint(run.checkpoints, step + 1, lm, opt)
    rows = run.metrics()
    return {"first_loss": rows[0]["loss"] if rows else float("nan"),
            "final_loss": rows[-1]["loss"] if rows else float("nan")}


def train_reflection(config: WarmupConfig, data: str | Path, out: str | Path, log=print) -> Path:
    """SFT of the reflection model on ``data`` (a reflection JSONL); returns the saved model directory."""
    out = Path(out)
    if (out / "model" / "config.json").exists():
        log(f"reflection model already trained: {out / 'model'}")
        return out / "model"
    seed_everything(config.seed)
    run = RunDir(out, config=config, resume=True)
    lm, tok = _load_base(config)
    examples = encode_reflection_set(tok, read_jsonl(data), config.max_length)
    device = next(lm.parameters()).device
    pad = tok.pad_token_id

    def loss_of(idx: list[int]) -> torch.Tensor:
        ids, attn, target = collate_right([examples[i][0] for i in idx], [examples[i][1] for i in idx], pad)
        return masked_lm_loss(lm, ids.to(device), attn.to(device), target.to(device))

    stats = _fit("reflection", lm, loss_of, len(examples), config.reflection_steps, config, run, log)
    lm.eval()
    path = save_model(lm, tok, out / "model")
    write_json(out / "summary.json", {**stats, "examples": len(examples), "steps": config.reflection_steps})
    log(f"reflection model: loss {stats['first_loss']:.3f} -> {stats['final_loss']:.3f}; saved {path}")
    return path


def train_policy(config: WarmupConfig, data: str | Path, out: str | Path, log=print) -> Path:
    """SFT of the policy on ``data`` (a policy JSONL, with or without reflections); returns the model directory."""
    out = Path(out)
    if (out / "model" / "config.json").exists():
        log(f"policy already trained: {out / 'model'}")
        return out / "model"
    seed_everything(config.seed)
    run = RunDir(out, config=config, resume=True)
    lm, tok = _load_base(config)
    alphabet = alphabet_of(config)
    label_ids = alphabet.check(tok)
    examples = encode_policy_set(tok, read_jsonl(data), alphabet, config.max_length, config.seed)
    device = next(lm.parameters()).device
    policy = Policy(lm, label_ids, tok.pad_token_id)

    def loss_of(idx: list[int]) -> torch.Tensor:
        batch = [examples[i] for i in idx]
        if config.policy_loss == "label_head":
            scores = score_steps(policy, [e.prompt for e in batch], [e.labels for e in batch],
                                 [e.target for e in batch])
            return -scores.logprob.mean()
        seqs = [e.prompt + [label_ids[e.labels[e.target]]] for e in batch]
        ids, attn, target = collate_right(seqs, [[0] * len(e.prompt) + [1] for e in batch], tok.pad_token_id)
        return masked_lm_loss(lm, ids.to(device), attn.to(device), target.to(device))

    stats = _fit("policy", lm, loss_of, len(examples), config.policy_steps, config, run, log)
    lm.eval()
    path = save_model(lm, tok, out / "model")
    write_json(out / "summary.json", {**stats, "examples": len(examples), "steps": config.policy_steps})
    log(f"policy: loss {stats['first_loss']:.3f} -> {stats['final_loss']:.3f}; saved {path}")
    return path


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
    if reflection_set is not None:
        reflection = train_reflection(config, data_dir / reflection_set, run_dir / "reflection", log)
    policy = train_policy(config, data_dir / policy_set, run_dir / "policy", log)
    return {"reflection": reflection, "policy": policy}

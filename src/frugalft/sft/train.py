"""Supervised fine-tuning on prompt/response pairs, loss on the response tokens only.

One recipe, top to bottom: load the model (+ LoRA), tokenize, then for each step take the next batch of a
seeded per-epoch permutation, compute the loss, step AdamW with warmup + cosine decay, and log, evaluate and
checkpoint on schedule. The batch order is a pure function of (seed, epoch), and checkpoints carry the
optimizer, scheduler and RNG states, so a run resumed at step N ends bit-identical to an uninterrupted one.

Cost on small models: the vocabulary head (50257 x d on GPT-2 BPE) dominates. We run the transformer trunk
on every position but apply the head only to the positions whose next token is a response token (the
prompt positions' logits would be thrown away anyway).

Metrics (``metrics.jsonl``): ``loss`` (train, mean over response tokens since the last log), ``eval_loss``
(held-out, mean over response tokens), ``tokens_per_s`` (real, non-pad tokens through forward + backward),
``lr``, ``grad_norm`` (before clipping); ``report_to`` mirrors them to TensorBoard or W&B (frugalft.runs).

**Several processes** (``accelerate launch ... frugalft sft``; DDP, or FSDP by accelerate's config): every
process builds the same global batch, process r takes rows r, r+W, ... (W processes), computes the *summed*
response-token loss of its rows and back-propagates ``sum_r * W / N`` (N: the global batch's response
tokens). DDP averages gradients over the W processes, so the update is exactly the gradient of the
one-process loss ``sum / N``: losses and weights match the one-process run up to float rounding (dropout
aside: its masks depend on the process layout; ``--no-dropout`` makes runs comparable). Only process 0 writes
the run directory. The optimizer step itself is ``frugalft.sft.loop``'s, the warm-up's too.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from frugalft.atomic import atomic_path
from frugalft.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from frugalft.models import LoraSettings, add_lora, count_parameters, load_model
from frugalft.parallel import launched_processes
from frugalft.runs import RunDir, progress
from frugalft.seeding import seed_everything
from frugalft.sft.data import (
    IGNORE,
    Batch,
    Example,
    PromptFormat,
    encode_all,
    pack_rows,
    packed_batch,
    pad_batch,
    split_pairs,
)
from frugalft.sft.loop import optimizer_steps


class SFTError(ValueError):
    pass


@dataclass
class SFTConfig:
    model: str = "smollm2-135m"  # embedded name, local directory or hub id
    train: str = ""  # prompt/response file (JSONL, CSV, Parquet, or a datasets directory)
    eval: str = ""  # held-out file; empty: hold out `eval_fraction` of `train`
    eval_fraction: float = 0.05  # used only when `eval` is empty
    eval_max: int = 256  # cap on held-out examples scored for eval_loss (it runs every `eval_every` steps)
    prompt_field: str = "prompt"
    response_field: str = "response"
    out: str = "runs/sft"  # run directory: config.yaml, metrics.jsonl, run.log, checkpoints/, model/
    finetune: Literal["lora", "full"] = "lora"  # LoRA trains ~1% of weights; full trains all
    lora: LoraSettings = field(default_factory=lambda: LoraSettings(r=16, alpha=32, dropout=0.05))
    chat_template: Literal["auto", "on", "off"] = "auto"  # auto: use the tokenizer's template if it has one
    plain_template: str = "Question: {prompt}\nAnswer:"  # prompt text when no chat template is used
    max_len: int = 512  # tokens per example (longer ones lose the middle of the prompt)
    packing: bool = False  # pack examples into rows of max_len tokens; attention never crosses examples
    batch_size: int = 8  # sequences per step (packed: rows of max_len tokens per step)
    epochs: int = 3  # passes over the training set (ignored when max_steps > 0; packed: epoch 0's row count)
    max_steps: int = 0  # > 0: stop after this many optimizer steps
    lr: float = 2e-4  # AdamW peak learning rate (LoRA likes ~1e-4..5e-4; full fine-tuning ~1e-5..5e-5)
    weight_decay: float = 0.0
    warmup_ratio: float = 0.05  # share of steps with a linear warmup, then cosine decay to 10% of lr
    grad_clip: float = 1.0  # max global gradient norm
    log_every: int = 10  # steps between train-loss rows
    eval_every: int = 0  # steps between held-out losses; 0: only at the end
    save_every: int = 0  # steps between checkpoints; 0: only at the end; < 0: never (curve cells)
    save_model: bool = True  # write the final model (the adapter for LoRA) to out/model
    resume: bool = False  # continue from out/checkpoints/LATEST
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    # Also log the metrics to TensorBoard (<out>/tensorboard/) or W&B; metrics.jsonl is written either way.
    report_to: Literal["none", "tensorboard", "wandb"] = "none"


# --------------------------------------------------------------------------------------------- the loss


def _trunk(model: torch.nn.Module) -> torch.nn.Module:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(base, base.base_model_prefix)


def response_loss(model: torch.nn.Module, batch: Batch, reduction: str = "mean") -> tuple[torch.Tensor, int]:
    """Cross-entropy over the response tokens only, with the vocab head applied only where it is needed.

    Returns (loss, number of response tokens); ``reduction="sum"`` gives the summed loss.
    """
    # use_cache=False: the configs default to True, and a trunk would copy every layer's keys and values into
    # a cache that training never reads.
    hidden = _trunk(model)(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                           position_ids=batch.position_ids, use_cache=False).last_hidden_state
    targets = batch.labels[:, 1:]
    keep = targets != IGNORE
    logits = model.get_output_embeddings()(hidden[:, :-1][keep]).float()
    n = int(keep.sum())
    loss = F.cross_entropy(logits, targets[keep], reduction="sum")
    return (loss / max(n, 1) if reduction == "mean" else loss), n


@torch.no_grad()
def heldout_loss(model: torch.nn.Module, batches: Sequence[Batch]) -> float:
    """Mean loss per response token over held-out batches (dropout off)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for b in batches:
        loss, n = response_loss(model, b, reduction="sum")
        total += float(loss)
        count += n
    model.train(was_training)
    return total / max(count, 1)


class ResponseLoss(torch.nn.Module):
    """The LM behind one ``forward``: a batch's summed response-token loss and its count (what DDP wraps)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: Batch) -> tuple[torch.Tensor, int]:
        return response_loss(self.model, batch, reduction="sum")


def response_tokens(batch: Batch) -> int:
    return int((batch.labels[:, 1:] != IGNORE).sum())


def rows_of(batch: Batch, rank: int, world: int) -> Batch:
    """Process ``rank``'s rows of a global batch (``rank::world``); a rank left without rows gets row 0 with
    no loss tokens, so every process still runs forward and backward (DDP needs all of them)."""
    idx = torch.arange(rank, batch.input_ids.shape[0], world)
    if len(idx) == 0:
        idx = torch.tensor([0])
        labels = torch.full_like(batch.labels[idx], IGNORE)
    else:
        labels = batch.labels[idx]
    mask = batch.attention_mask[idx]
    n_tokens = int(mask.sum()) if mask.dim() == 2 else batch.n_tokens * len(idx) // max(batch.input_ids.shape[0], 1)
    return Batch(batch.input_ids[idx], labels, mask, None if batch.position_ids is None else batch.position_ids[idx],
                 n_tokens)


# ------------------------------------------------------------------------------------------------ data


def epoch_batches(examples: Sequence[Example], cfg: SFTConfig, epoch: int, pad_id: int,
                  dtype: torch.dtype) -> list[Batch]:
    """The batches of one epoch: a permutation seeded by (seed, epoch), then padded or packed batches."""
    g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    order = [examples[i] for i in torch.randperm(len(examples), generator=g).tolist()]
    if cfg.packing:
        rows = pack_rows(order, cfg.max_len)
        return [packed_batch(rows[i:i + cfg.batch_size], pad_id, dtype) for i in range(0, len(rows), cfg.batch_size)]
    return [pad_batch(order[i:i + cfg.batch_size], pad_id) for i in range(0, len(order), cfg.batch_size)]


def _steps_per_epoch(examples: Sequence[Example], cfg: SFTConfig) -> int:
    if cfg.packing:  # the number of packed rows depends on the order; count them for epoch 0
        return len(epoch_batches(examples, cfg, 0, 0, torch.float32))
    return math.ceil(len(examples) / cfg.batch_size)


def _batch_stream(examples: Sequence[Example], cfg: SFTConfig, start_step: int, pad_id: int,
                  dtype: torch.dtype) -> Iterator[tuple[int, Batch]]:
    """(step, batch) from ``start_step + 1`` on; epochs follow each other without end."""
    step, epoch = 0, 0
    while True:
        batches = epoch_batches(examples, cfg, epoch, pad_id, dtype)
        if step + len(batches) <= start_step:  # skip whole epochs that were already trained
            step += len(batches)
            epoch += 1
            continue
        for b in batches:
            step += 1
            if step > start_step:
                yield step, b
        epoch += 1


def lr_lambda(total: int, warmup: int):
    def f(step: int) -> float:  # step counts from 0 (LambdaLR's convention)
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return f


# ------------------------------------------------------------------------------------------------ train


@dataclass
class SFTResult:
    model: torch.nn.Module
    tokenizer: object
    prompt_format: PromptFormat
    steps: int
    train_loss: float  # mean over the last log window
    eval_loss: float | None
    tokens_per_s: float  # over the whole run (real tokens / training seconds)
    seconds: float
    processes: int = 1  # data-parallel processes (accelerate launch)


def train_sft(cfg: SFTConfig, train_pairs: Sequence[tuple[str, str]],
              eval_pairs: Sequence[tuple[str, str]] = (), quiet: bool = False, accelerator: Any = None,
              disable_dropout: bool = False) -> SFTResult:
    """Fine-tune ``cfg.model`` on (prompt, response) pairs; returns the trained model and a summary.

    accelerator: an ``accelerate.Accelerator`` (``accelerate launch``): data-parallel over its processes, each
    taking rows ``rank::world`` of every global batch (``rows_of``); see the module docstring. Every process
    returns the same summary; only process 0 writes the run directory. disable_dropout: dropout off (its masks
    depend on the process layout, so runs on different layouts are then comparable)."""
    if not train_pairs:
        raise SFTError("no training examples")
    if cfg.batch_size < 1 or cfg.max_len < 8:
        raise SFTError("batch_size must be >= 1 and max_len >= 8")
    acc = accelerator
    rank, world = (acc.process_index, acc.num_processes) if acc is not None else (0, 1)
    main = acc is None or acc.is_main_process
    seed_everything(cfg.seed)  # the same seed everywhere: identical initial weights (DDP also broadcasts them)
    model, tok = load_model(cfg.model, device=str(acc.device) if acc is not None else cfg.device, dtype=cfg.dtype,
                            seed=cfg.seed)
    if cfg.finetune == "lora":
        model = add_lora(model, cfg.lora)
    model.train()
    if disable_dropout:
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
    fmt = PromptFormat(tok, cfg.chat_template, cfg.plain_template)
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    pad_id = tok.pad_token_id

    train_ex = encode_all(fmt, train_pairs, cfg.max_len)
    eval_ex = encode_all(fmt, list(eval_pairs)[: cfg.eval_max], cfg.max_len)
    eval_batches = [pad_batch(eval_ex[i:i + cfg.batch_size], pad_id) for i in range(0, len(eval_ex), cfg.batch_size)]
    total = cfg.max_steps if cfg.max_steps > 0 else cfg.epochs * _steps_per_epoch(train_ex, cfg)
    if total < 1:
        raise SFTError("nothing to train: epochs and max_steps are both 0")

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(total, int(cfg.warmup_ratio * total)))

    run = RunDir(cfg.out, config=cfg, resume=cfg.resume) if main else None  # it clears a killed run's leftovers
    if acc is not None:
        acc.wait_for_everyone()
    start = 0
    if cfg.resume and (ckpt := latest_checkpoint(Path(cfg.out) / "checkpoints")) is not None:
        start = load_checkpoint(ckpt, model, optimizer, scheduler)["step"]  # every process reads the same files
    if run is not None:
        if start:
            run.truncate_metrics(start)
            run.log.info("resumed from %s", ckpt)
        trainable, n_params = count_parameters(model)
        run.log.info("sft: %d train / %d eval examples, %d steps, %d of %d parameters trainable, chat=%s, "
                     "packing=%s, %d process(es) on %s", len(train_ex), len(eval_ex), total, trainable, n_params,
                     fmt.chat, cfg.packing, world, device)
    # The summed response-token loss of a batch, behind one forward, so DDP (or FSDP) can wrap it.
    forward = acc.prepare(ResponseLoss(model)) if acc is not None else ResponseLoss(model)

    def loss_of(full: Batch) -> tuple[torch.Tensor, tuple[torch.Tensor, int, int]]:
        """This process's share of the global batch; back-propagating ``sum * world / N`` (N: the global batch's
        response tokens) makes DDP's mean over processes the gradient of the one-process loss ``sum / N``."""
        n_total = response_tokens(full)
        mine = (rows_of(full, rank, world) if world > 1 else full).to(device)
        loss_sum, _ = forward(mine)
        return loss_sum * world / max(n_total, 1), (loss_sum.detach(), n_total, mine.n_tokens)

    win_loss, win_tok, win_n = 0.0, 0, 0  # log window: summed loss, response tokens, real tokens
    win_time, train_time, all_tokens = 0.0, 0.0, 0
    last_loss, last_eval = float("nan"), None
    batches = itertools.takewhile(lambda sb: sb[0] <= total, _batch_stream(train_ex, cfg, start, pad_id, dtype))
    steps = optimizer_steps(batches, loss_of, params, optimizer, grad_clip=cfg.grad_clip, scheduler=scheduler,
                            backward=acc.backward if acc is not None else None)
    for out in progress(steps, "SFT steps", total=max(0, total - start), disable=not main):
        step, (loss_sum, n_resp, n_tokens) = out.step, out.info
        if acc is not None and world > 1:  # the global batch's loss and tokens, for the logs
            loss_sum = acc.reduce(loss_sum.float(), reduction="sum")
            n_tokens = int(acc.reduce(torch.tensor(n_tokens, device=device), reduction="sum"))
        win_time += out.seconds
        train_time += out.seconds
        all_tokens += n_tokens
        win_loss += float(loss_sum)
        win_tok += n_resp
        win_n += n_tokens
        if step % cfg.log_every == 0 or step == total:
            last_loss = win_loss / max(win_tok, 1)
            if run is not None:
                run.log_metrics(step, loss=last_loss, tokens_per_s=win_n / max(win_time, 1e-9),
                                lr=scheduler.get_last_lr()[0], grad_norm=float(out.grad_norm),
                                **({"processes": world} if acc is not None else {}))
                if not quiet:
                    run.log.info("step %d/%d loss %.4f %.0f tok/s", step, total, last_loss,
                                 win_n / max(win_time, 1e-9))
            win_loss, win_tok, win_n, win_time = 0.0, 0, 0, 0.0
        if eval_batches and ((cfg.eval_every and step % cfg.eval_every == 0) or step == total):
            last_eval = heldout_loss(model, [b.to(device) for b in eval_batches])  # small: every process
            if run is not None:
                run.log_metrics(step, eval_loss=last_eval)
        if run is not None and cfg.save_every >= 0 and ((cfg.save_every and step % cfg.save_every == 0)
                                                        or step == total):
            save_checkpoint(run.checkpoints, step, model, optimizer, scheduler)
        if acc is not None:
            acc.wait_for_everyone()  # no process races ahead of a checkpoint being written
    model.eval()
    if run is not None and cfg.save_model:
        with atomic_path(Path(cfg.out) / "model") as tmp:
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
    if acc is not None:
        acc.wait_for_everyone()
        acc.end_training()
    return SFTResult(model, tok, fmt, total, last_loss, last_eval, all_tokens / max(train_time, 1e-9), train_time,
                     world)


def run_sft(cfg: SFTConfig, quiet: bool = False, disable_dropout: bool = False,
            distributed: bool | None = None) -> SFTResult:
    """SFT of ``cfg`` on its ``train`` file (held-out pairs from ``eval`` or a seeded ``eval_fraction``), on
    one process or on every process of an ``accelerate launch`` (``distributed=None``: as this process was
    started). A bad file raises ``SFTError`` naming it."""
    try:
        train_pairs, eval_pairs = split_pairs(cfg.train, cfg.eval, cfg.eval_fraction, cfg.seed, cfg.prompt_field,
                                              cfg.response_field)
    except ValueError as e:
        raise SFTError(str(e)) from None
    accelerator = None
    if distributed if distributed is not None else launched_processes() > 1:
        from accelerate import Accelerator

        accelerator = Accelerator(cpu=cfg.device == "cpu")
    return train_sft(cfg, train_pairs, eval_pairs, quiet=quiet, accelerator=accelerator,
                     disable_dropout=disable_dropout)

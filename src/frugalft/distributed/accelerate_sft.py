"""SFT under ``accelerate launch``: data-parallel (DDP) over processes, each taking a slice of every batch.

    accelerate launch --num_processes 2 [--cpu] -m frugalft.distributed.accelerate_sft -c sft.yaml [--set k=v]

The loop is ``frugalft.sft.train.train_sft``'s (same model loading, tokenisation, seeded batch order, loss,
AdamW + warmup/cosine, logging and checkpoints), reusing the SFT helper's data and loss functions; what
changes is who computes what. Every process builds the same global batch; process r takes rows r, r+W, ...
(W processes), computes the *summed* response-token loss of its rows, and back-propagates
``sum_r * W / N`` where N is the batch's response-token count. DDP averages gradients over the W processes,
so the update is exactly the gradient of the single-process loss ``sum / N``: losses and weights match the
one-process run up to float rounding (dropout aside: its masks depend on the process layout;
``--no-dropout`` makes runs comparable). Gradient clipping, the optimizer and the schedule then see
identical gradients on every process. Only process 0 writes the run directory.

Large models: the same script runs under FSDP with an accelerate config (``accelerate config`` -> FSDP,
``fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP``), see docs/scaling.md; checkpoints then need
``accelerator.get_state_dict`` (not done here: DDP/CPU-tested only).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from frugalft.sft.data import IGNORE, Batch
from frugalft.sft.train import SFTConfig, SFTError


class ResponseLoss(torch.nn.Module):
    """Wraps the LM so DDP sees one ``forward``: the summed response-token loss of a batch (and its count)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: Batch) -> tuple[torch.Tensor, int]:
        from frugalft.sft.train import response_loss

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


def load_pairs(path: str, prompt_field: str, response_field: str) -> list[tuple[str, str]]:
    """(prompt, response) pairs from any pool format, as ``frugalft sft`` reads them (``cli/sft.py``)."""
    from frugalft.design.pools import load_pool

    pool = load_pool(path, id_field=None, prompt_field=prompt_field, task_field=None, response_field=response_field)
    if not pool.has_responses:
        raise SFTError(f"{path}: no {response_field!r} field (choose it with --set response_field=NAME)")
    responses = pool.table.column("response").to_pylist()
    missing = [i + 1 for i, r in enumerate(responses) if r is None or not r.strip()]
    if missing:
        raise SFTError(f"{path}: row {missing[0]} has an empty {response_field!r} ({len(missing)} rows in all)")
    return list(zip(pool.prompts(), responses, strict=True))


def split_pairs(cfg: SFTConfig) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Train and held-out pairs exactly as ``frugalft sft`` makes them: the ``eval`` file, or a seeded
    ``eval_fraction`` of ``train`` (then the training pairs come in the shuffled order, as there)."""
    import random

    pairs = load_pairs(cfg.train, cfg.prompt_field, cfg.response_field)
    if cfg.eval:
        return pairs, load_pairs(cfg.eval, cfg.prompt_field, cfg.response_field)
    order = list(range(len(pairs)))
    random.Random(cfg.seed).shuffle(order)
    k = int(round(cfg.eval_fraction * len(pairs)))
    return [pairs[i] for i in order[k:]], [pairs[i] for i in order[:k]]


def _stream(examples, cfg: SFTConfig, start: int, pad_id: int, dtype: torch.dtype) -> Iterator[tuple[int, Batch]]:
    """(step, global batch) from ``start + 1`` on, epochs back to back (as ``sft.train``'s stream)."""
    from frugalft.sft.train import epoch_batches

    step, epoch = 0, 0
    while True:
        batches = epoch_batches(examples, cfg, epoch, pad_id, dtype)
        for b in batches:
            step += 1
            if step > start:
                yield step, b
        epoch += 1


def train_sft_accelerate(cfg: SFTConfig, train_pairs: Sequence[tuple[str, str]],
                         eval_pairs: Sequence[tuple[str, str]] = (), disable_dropout: bool = False,
                         quiet: bool = False) -> dict[str, Any]:
    """Run SFT on every process of an ``accelerate launch`` (or alone, as one process). Returns a summary
    (identical on every process): steps, the last logged train loss, eval loss, processes, seconds."""
    from accelerate import Accelerator

    from frugalft.atomic import atomic_path
    from frugalft.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
    from frugalft.models import add_lora, load_model
    from frugalft.runs import RunDir
    from frugalft.seeding import seed_everything
    from frugalft.sft.data import PromptFormat, encode_all, pad_batch
    from frugalft.sft.train import epoch_batches, heldout_loss, lr_lambda

    if not train_pairs:
        raise SFTError("no training examples")
    acc = Accelerator(cpu=cfg.device == "cpu")
    rank, world = acc.process_index, acc.num_processes
    seed_everything(cfg.seed)  # the same seed everywhere: identical initial weights (DDP also broadcasts them)
    model, tok = load_model(cfg.model, device=str(acc.device), dtype=cfg.dtype, seed=cfg.seed)
    if cfg.finetune == "lora":
        model = add_lora(model, cfg.lora)
    model.train()
    if disable_dropout:
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
    fmt = PromptFormat(tok, cfg.chat_template, cfg.plain_template)
    dtype = next(model.parameters()).dtype
    pad_id = tok.pad_token_id
    train_ex = encode_all(fmt, train_pairs, cfg.max_len)
    eval_ex = encode_all(fmt, list(eval_pairs)[: cfg.eval_max], cfg.max_len)
    eval_batches = [pad_batch(eval_ex[i:i + cfg.batch_size], pad_id) for i in range(0, len(eval_ex), cfg.batch_size)]
    per_epoch = len(epoch_batches(train_ex, cfg, 0, pad_id, dtype)) if cfg.packing else math.ceil(
        len(train_ex) / cfg.batch_size)
    total = cfg.max_steps if cfg.max_steps > 0 else cfg.epochs * per_epoch
    if total < 1:
        raise SFTError("nothing to train: epochs and max_steps are both 0")

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(total, int(cfg.warmup_ratio * total)))
    start = 0
    ckpt_dir = Path(cfg.out) / "checkpoints"
    if cfg.resume and (ckpt := latest_checkpoint(ckpt_dir)) is not None:
        start = load_checkpoint(ckpt, model, optimizer, scheduler)["step"]  # every process reads the same files
    run = RunDir(cfg.out, config=cfg, resume=cfg.resume) if acc.is_main_process else None
    if run is not None:
        if start:
            run.truncate_metrics(start)
        run.log.info("sft (accelerate): %d processes on %s, %d train / %d eval examples, %d steps", world,
                     acc.device, len(train_ex), len(eval_ex), total)
    ddp = acc.prepare(ResponseLoss(model))  # DDP (or FSDP, per the accelerate config) around the loss

    win_loss, win_tok, win_n, win_time, train_time = 0.0, 0, 0, 0.0, 0.0
    last_loss, last_eval = float("nan"), None
    for step, full in _stream(train_ex, cfg, start, pad_id, dtype):
        if step > total:
            break
        t0 = time.perf_counter()
        n_total = response_tokens(full)
        mine = rows_of(full, rank, world).to(acc.device)
        loss_sum, _ = ddp(mine)
        optimizer.zero_grad(set_to_none=True)
        acc.backward(loss_sum * world / max(n_total, 1))  # DDP's mean over processes -> sum / n_total
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        global_sum = float(acc.reduce(loss_sum.detach().float(), reduction="sum"))
        tokens = int(acc.reduce(torch.tensor(mine.n_tokens, device=acc.device), reduction="sum"))
        dt = time.perf_counter() - t0
        win_time += dt
        train_time += dt
        win_loss += global_sum
        win_tok += n_total
        win_n += tokens
        if step % cfg.log_every == 0 or step == total:
            last_loss = win_loss / max(win_tok, 1)
            if run is not None:
                run.log_metrics(step, loss=last_loss, tokens_per_s=win_n / max(win_time, 1e-9),
                                lr=scheduler.get_last_lr()[0], grad_norm=float(grad_norm), processes=world)
                if not quiet:
                    run.log.info("step %d/%d loss %.4f %.0f tok/s (%d processes)", step, total, last_loss,
                                 win_n / max(win_time, 1e-9), world)
            win_loss, win_tok, win_n, win_time = 0.0, 0, 0, 0.0
        if eval_batches and ((cfg.eval_every and step % cfg.eval_every == 0) or step == total):
            last_eval = heldout_loss(model, [b.to(acc.device) for b in eval_batches])  # tiny: every process
            if run is not None:
                run.log_metrics(step, eval_loss=last_eval)
        if run is not None and cfg.save_every >= 0 and ((cfg.save_every and step % cfg.save_every == 0)
                                                        or step == total):
            save_checkpoint(run.checkpoints, step, model, optimizer, scheduler)
        acc.wait_for_everyone()  # no process races ahead of a checkpoint being written
    model.eval()
    if run is not None and cfg.save_model:
        with atomic_path(Path(cfg.out) / "model") as tmp:
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
    acc.wait_for_everyone()
    acc.end_training()
    return {"steps": total, "train_loss": last_loss, "eval_loss": last_eval, "processes": world,
            "seconds": train_time}


def main(argv: list[str] | None = None) -> None:
    """``python -m frugalft.distributed.accelerate_sft -c sft.yaml [--set k=v] [--no-dropout]`` (under
    ``accelerate launch`` for several processes)."""
    import argparse

    from frugalft.config import load_config

    ap = argparse.ArgumentParser(prog="frugalft.distributed.accelerate_sft", description=main.__doc__)
    ap.add_argument("-c", "--config", type=Path, default=None, help="SFT YAML config (frugalft sft's keys)")
    ap.add_argument("-s", "--set", dest="overrides", action="append", default=[], help="key=value override")
    ap.add_argument("--no-dropout", action="store_true", help="dropout off (runs comparable across layouts)")
    args = ap.parse_args(argv)
    cfg = load_config(SFTConfig, args.config, args.overrides)
    if not cfg.train:
        ap.error("the config needs train: a prompt/response file")
    train_pairs, eval_pairs = split_pairs(cfg)
    out = train_sft_accelerate(cfg, train_pairs, eval_pairs, disable_dropout=args.no_dropout)
    import os

    if int(os.environ.get("RANK", "0")) == 0:
        print(f"sft done: {out['steps']} steps on {out['processes']} processes, train loss {out['train_loss']:.4f}")


if __name__ == "__main__":
    main()

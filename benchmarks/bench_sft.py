"""SFT throughput: our loop versus Hugging Face ``Trainer``, same model, data and batch, in the same run.

All sides train on the same built-in-pool examples (same tokenization: prompt + response ids, labels -100
on the prompt), batch size, learning rate and number of optimizer steps, each in its own subprocess (so peak
memory is per side):
- ``hf_trainer``: ``transformers.Trainer`` with a padding collator; the model's own loss (full-vocab logits on
  every position);
- ``ours``: ``frugalft.sft.train_sft``, padded batches; the vocab head applied to response positions only;
- ``ours_packed``: the same with sequence packing (rows of ``max_len`` tokens, block-diagonal attention).

Tokens/s counts real (non-pad) tokens through forward + backward + optimizer step, timed per step on both
sides (Trainer: from ``on_step_begin`` to ``on_step_end``), excluding the first ``warmup`` steps. Targets
(issue #6): ours >= 1.0x the Trainer; packed >= 1.5x.

    python benchmarks/bench_sft.py [--quick] [--model tiny] [--steps 30] [--batch-size 8] [--max-len 128]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def _pairs(n: int, pool: str) -> list[tuple[str, str]]:
    """The first ``n`` pool pairs: the built pool when present, else a small in-memory build."""
    if Path(pool).exists():
        with open(pool, encoding="utf-8") as f:
            rows = [json.loads(line) for _, line in zip(range(n), f, strict=False)]
    else:
        from frugalft.design.builtin_pool import PoolBuildConfig, build_rows

        rows, _, _ = build_rows(PoolBuildConfig(n_pool=max(n, 600), eval_per_task=1,
                                                sources=["json", "email", "logging", "textwrap", "typer"]))
    return [(r["prompt"], r["response"]) for r in rows[:n]]


def run_ours(args, packing: bool) -> dict:
    import tempfile

    from frugalft.sft import SFTConfig
    from frugalft.sft import train as sft_train

    pairs = _pairs(args.n_examples, args.pool)
    step_times: list[tuple[float, int]] = []
    # Time each step from the inside: wrap the loss so we see (seconds, real tokens) per step.
    original = sft_train.response_loss
    state = {"t": None}

    def timed_loss(model, batch, reduction="mean"):
        if state["t"] is not None:
            step_times.append((time.perf_counter() - state["t"][0], state["t"][1]))
        state["t"] = (time.perf_counter(), batch.n_tokens)
        return original(model, batch, reduction)

    sft_train.response_loss = timed_loss
    with tempfile.TemporaryDirectory() as tmp:
        cfg = SFTConfig(model=args.model, finetune=args.finetune, lr=1e-4, batch_size=args.batch_size,
                        max_len=args.max_len, max_steps=args.steps + 1, packing=packing, save_every=-1,
                        save_model=False, log_every=10_000, out=tmp, seed=0)
        res = sft_train.train_sft(cfg, pairs, quiet=True)
    sft_train.response_loss = original
    # step_times[i] = time from the start of step i to the start of step i+1 (forward+backward+optimizer+batch
    # move); the extra final step closes the last interval.
    measured = step_times[args.warmup:]
    secs = sum(t for t, _ in measured)
    toks = sum(n for _, n in measured)
    return {"tokens_per_s": toks / secs, "steps": len(measured), "tokens": toks, "seconds": secs,
            "loss": res.train_loss}


def run_hf(args) -> dict:
    import tempfile

    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from frugalft.models import LoraSettings, add_lora, load_model
    from frugalft.seeding import seed_everything
    from frugalft.sft.data import PromptFormat, encode_all, pad_batch

    seed_everything(0)
    model, tok = load_model(args.model, seed=0)
    if args.finetune == "lora":
        model = add_lora(model, LoraSettings(r=16, alpha=32, dropout=0.05))
    model.train()
    fmt = PromptFormat(tok)
    examples = encode_all(fmt, _pairs(args.n_examples, args.pool), args.max_len)

    class Data(torch.utils.data.Dataset):
        def __len__(self):
            return len(examples)

        def __getitem__(self, i):
            return examples[i]

    counted = {"tokens": []}

    def collate(batch):
        b = pad_batch(batch, tok.pad_token_id)
        counted["tokens"].append(b.n_tokens)
        return {"input_ids": b.input_ids, "attention_mask": b.attention_mask, "labels": b.labels}

    times: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, a, s, c, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, a, s, c, **kw):
            times.append(time.perf_counter() - self.t)

    with tempfile.TemporaryDirectory() as tmp:
        targs = TrainingArguments(output_dir=tmp, per_device_train_batch_size=args.batch_size, learning_rate=1e-4,
                                  max_steps=args.steps, logging_steps=10_000, save_strategy="no", report_to=[],
                                  use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0, seed=0,
                                  disable_tqdm=True, remove_unused_columns=False)
        trainer = Trainer(model=model, args=targs, train_dataset=Data(), data_collator=collate,
                          callbacks=[StepTimer()])
        out = trainer.train()
    # The dataloader may prefetch one batch ahead; the first len(times) batches are the trained ones.
    toks = counted["tokens"][: len(times)]
    secs = sum(times[args.warmup:])
    n = sum(toks[args.warmup:])
    return {"tokens_per_s": n / secs, "steps": len(times) - args.warmup, "tokens": n, "seconds": secs,
            "loss": out.training_loss}


def child(args) -> None:
    side = args.child
    result = run_hf(args) if side == "hf_trainer" else run_ours(args, packing=side == "ours_packed")
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="CI size: tiny-test, few steps")
    p.add_argument("--model", default=None, help="default: tiny (quick: tiny-test)")
    p.add_argument("--finetune", default="full", choices=["full", "lora"])
    p.add_argument("--steps", type=int, default=None, help="measured optimizer steps (default 30; quick 6)")
    p.add_argument("--warmup", type=int, default=2, help="first steps left out of the timing")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-len", type=int, default=128)
    p.add_argument("--pool", default="runs/pool/pool.jsonl", help="built pool (else a small in-memory build)")
    p.add_argument("--out", default=None, help="JSON file (default benchmarks/results/sft[_quick].json)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    args.model = args.model or ("tiny-test" if args.quick else "tiny")
    args.steps = args.steps or (6 if args.quick else 30)
    args.n_examples = args.batch_size * (args.steps + args.warmup + 2) * 3  # packing needs ~3x the examples
    if args.child:
        child(args)
        return

    from frugalft.atomic import write_json

    sides = {}
    for side in ("hf_trainer", "ours", "ours_packed"):
        cmd = [sys.executable, __file__, "--child", side, "--model", args.model, "--finetune", args.finetune,
               "--steps", str(args.steps), "--warmup", str(args.warmup), "--batch-size", str(args.batch_size),
               "--max-len", str(args.max_len), "--pool", args.pool]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if proc.returncode or line is None:
            sys.exit(f"{side} failed:\n{proc.stderr[-3000:]}")
        sides[side] = json.loads(line[7:])
        print(f"{side:>12}: {sides[side]['tokens_per_s']:.0f} tokens/s, peak RSS {sides[side]['peak_rss_mb']:.0f} MB")
    hf = sides["hf_trainer"]["tokens_per_s"]
    result = {
        "benchmark": "sft",
        "command": "python benchmarks/bench_sft.py" + (" --quick" if args.quick else "")
                   + ("" if args.model == ("tiny-test" if args.quick else "tiny") else f" --model {args.model}"),
        "model": args.model, "finetune": args.finetune, "batch_size": args.batch_size, "max_len": args.max_len,
        "steps": args.steps, "warmup": args.warmup, "threads": os.environ.get("OMP_NUM_THREADS", "default"),
        "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "sides": sides,
        "speedup": sides["ours"]["tokens_per_s"] / hf,
        "speedup_packed": sides["ours_packed"]["tokens_per_s"] / hf,
        "targets": {"speedup": 1.0, "speedup_packed": 1.5},
    }
    print(f"ours / Trainer = {result['speedup']:.2f}x (target 1.0x); packed / Trainer = "
          f"{result['speedup_packed']:.2f}x (target 1.5x)")
    out = Path(args.out) if args.out else ROOT / "results" / ("sft_quick.json" if args.quick else "sft.json")
    write_json(out, result)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

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

The pretrained row (issue #12): ``--model smollm2-135m`` fine-tunes SmolLM2-135M-Instruct with LoRA (r=16,
alpha=32, dropout 0.05, peft, on both sides; ``--finetune auto`` picks LoRA for pretrained models and full
fine-tuning for the random-init tiny ones) on its chat template, and writes ``sft_smollm2-135m.json``:

    python benchmarks/bench_sft.py --model smollm2-135m              # ~5-10 min on 2 idle cores
    python benchmarks/bench_sft.py --model smollm2-135m --profile    # where one of our LoRA steps goes

``--profile`` times our step stage by stage instead (forward hooks around the embedding, attention, MLP and
norms, the LoRA adapters inside them; gradient hooks for their backward; the vocabulary head and loss; the
optimizer), prints a table and, with ``--profile-ops``, torch.profiler's top operators.
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
    if Path(pool).is_dir():  # a `frugalft pool build` directory
        pool = str(Path(pool) / "pool.jsonl")
    if Path(pool).exists():
        with open(pool, encoding="utf-8") as f:
            rows = [json.loads(line) for _, line in zip(range(n), f, strict=False)]
    else:
        from frugalft.design.builtin_pool import PoolBuildConfig, build_rows

        rows, _, _ = build_rows(PoolBuildConfig(n_pool=max(n, 600), eval_per_task=1,
                                                sources=["json", "email", "logging", "textwrap", "typer"]))
    return [(r["prompt"], r["response"]) for r in rows[:n]]


def _lora(args):
    """SFTConfig's LoRA settings (r=16, alpha=32, dropout 0.05), the dropout overridable: one config, all sides."""
    from frugalft.models import LoraSettings
    from frugalft.sft import SFTConfig

    lora = SFTConfig().lora
    return lora if args.lora_dropout is None else LoraSettings(**{**vars(lora), "dropout": args.lora_dropout})


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
                        save_model=False, log_every=10_000, out=tmp, seed=0, lora=_lora(args))
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

    from frugalft.models import add_lora, load_model
    from frugalft.seeding import seed_everything
    from frugalft.sft.data import PromptFormat, encode_all, pad_batch

    seed_everything(0)
    model, tok = load_model(args.model, seed=0)
    if args.finetune == "lora":  # the very adapter config of ours (SFTConfig's default), through peft
        model = add_lora(model, _lora(args))
    model.train()
    fmt = PromptFormat(tok)  # chat template when the tokenizer has one: what train_sft uses
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


# ------------------------------------------------------------------------------------------- profile


class StageTimer:
    """Wall time per stage of our SFT step, from module hooks (forward) and gradient hooks (backward).

    CPU ops are synchronous, so a perf_counter pair around a module's forward is its cost. For the backward, a
    hook on the module's output fires when the gradient reaches it and a hook on its input when the module's
    backward is done; the autograd engine runs a block's nodes before the older ones, so the difference is the
    module's backward. The first layer's attention has an input that needs no gradient (frozen embeddings):
    its backward lands in "other".
    """

    def __init__(self) -> None:
        self.fwd: dict[str, float] = {}
        self.bwd: dict[str, float] = {}
        self.handles: list = []
        self._t0: dict[int, float] = {}
        self._bwd_t0: dict[int, float] = {}
        self.backward = False  # register gradient hooks during this step's forward

    def add(self, table: dict[str, float], key: str, dt: float) -> None:
        table[key] = table.get(key, 0.0) + dt

    def watch(self, module, stage: str, grads: bool = False) -> None:
        def pre(mod, args, kwargs):
            self._t0[id(mod)] = time.perf_counter()
            if grads and self.backward:
                x = kwargs.get("hidden_states", args[0] if args else None)
                if x is not None and x.requires_grad:  # the module's backward ends when its input has its grad
                    x.register_hook(lambda g, m=id(mod): self._bwd_end(m, stage))

        def post(mod, args, kwargs, out):
            self.add(self.fwd, stage, time.perf_counter() - self._t0.pop(id(mod)))
            y = out[0] if isinstance(out, tuple) else out
            if grads and self.backward and y.requires_grad:
                y.register_hook(lambda g, m=id(mod): self._bwd_start(m))

        self.handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
        self.handles.append(module.register_forward_hook(post, with_kwargs=True))

    def _bwd_start(self, m: int) -> None:
        self._bwd_t0[m] = time.perf_counter()

    def _bwd_end(self, m: int, stage: str) -> None:
        if m in self._bwd_t0:
            self.add(self.bwd, stage, time.perf_counter() - self._bwd_t0.pop(m))

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _attach_stages(model, timer: StageTimer) -> None:
    """Hooks on the trunk's parts by role: Llama names (embed_tokens, self_attn, mlp, *norm) or GPT-2's."""
    import torch

    from frugalft.sft.train import _trunk

    trunk = _trunk(model)
    for name in ("embed_tokens", "wte", "wpe"):
        if hasattr(trunk, name):
            timer.watch(getattr(trunk, name), "embedding")
    layers = getattr(trunk, "layers", None) or trunk.h
    for layer in layers:
        attn = getattr(layer, "self_attn", None) or layer.attn
        timer.watch(attn, "attention", grads=True)
        timer.watch(layer.mlp, "MLP", grads=True)
        for sub_name, sub in attn.named_modules():  # projections: attention core = attention - projections
            if sub_name.split(".")[-1] in ("q_proj", "k_proj", "v_proj", "o_proj", "c_attn", "c_proj"):
                timer.watch(sub, "attention projections")
    for mod in trunk.modules():
        if "norm" in type(mod).__name__.lower() or isinstance(mod, torch.nn.LayerNorm):
            timer.watch(mod, "norms")
        for part in ("lora_A", "lora_B", "lora_dropout"):  # peft keeps one adapter per name in a ModuleDict
            if isinstance(getattr(mod, part, None), torch.nn.ModuleDict):
                for adapter in getattr(mod, part).values():
                    timer.watch(adapter, "LoRA adapters")


def _loss_opened(model, head, batch, marks: dict[str, float]):
    """``response_loss`` opened up, so the head + loss can be timed apart from the trunk (same arithmetic)."""
    import torch.nn.functional as F

    from frugalft.sft.data import IGNORE
    from frugalft.sft.train import _trunk

    hidden = _trunk(model)(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                           position_ids=batch.position_ids, use_cache=False).last_hidden_state
    marks["trunk"] = time.perf_counter()
    targets = batch.labels[:, 1:]
    keep = targets != IGNORE
    h = hidden[:, :-1][keep]
    if h.requires_grad:  # the head + loss backward ends when the head's input has its gradient
        def head_done(grad) -> None:
            marks.setdefault("head_bwd_end", time.perf_counter())

        h.register_hook(head_done)
    n = int(keep.sum())
    loss = F.cross_entropy(head(h).float(), targets[keep], reduction="sum") / max(n, 1)
    marks["head"] = time.perf_counter()
    return loss, hidden, n


def run_profile(args) -> dict:
    """Our SFT step on ``args.model``, stage by stage (see StageTimer), averaged over ``args.steps`` steps."""
    import torch

    from frugalft.models import add_lora, load_model
    from frugalft.seeding import seed_everything
    from frugalft.sft import SFTConfig
    from frugalft.sft.data import PromptFormat, encode_all
    from frugalft.sft.train import epoch_batches, response_loss

    seed_everything(0)
    cfg = SFTConfig(model=args.model, finetune=args.finetune, batch_size=args.batch_size, max_len=args.max_len,
                    packing=args.packing, seed=0, lora=_lora(args))
    model, tok = load_model(cfg.model, seed=0)
    if cfg.finetune == "lora":
        model = add_lora(model, cfg.lora)
    fmt = PromptFormat(tok, cfg.chat_template, cfg.plain_template)
    examples = encode_all(fmt, _pairs(args.n_examples, args.pool), cfg.max_len)
    dtype = next(model.parameters()).dtype
    batches = epoch_batches(examples, cfg, 0, tok.pad_token_id, dtype)[: args.warmup + args.steps]
    head = model.get_output_embeddings()
    with torch.no_grad():  # the opened-up loss is response_loss itself (dropout off for the comparison)
        model.eval()
        ours, _ = response_loss(model, batches[0])
        opened, _, _ = _loss_opened(model, head, batches[0], {})
        assert abs(float(ours) - float(opened)) < 1e-4 * max(1.0, abs(float(ours))), (float(ours), float(opened))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    timer = StageTimer()
    _attach_stages(model, timer)
    tot = dict.fromkeys(("trunk", "head_f", "head_b", "backward", "optimizer", "step", "full_head"), 0.0)
    n_tok = n_resp = n_pos = measured = 0
    for i, batch in enumerate(batches):
        if i == args.warmup:  # start counting: drop the warm-up steps
            timer.fwd.clear()
            timer.bwd.clear()
            tot = dict.fromkeys(tot, 0.0)
            n_tok = n_resp = n_pos = measured = 0
        marks: dict[str, float] = {}
        timer.backward = True
        t0 = time.perf_counter()
        loss, hidden, n = _loss_opened(model, head, batch, marks)
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        t4 = time.perf_counter()
        timer.backward = False
        tot["trunk"] += marks["trunk"] - t0
        tot["head_f"] += marks["head"] - marks["trunk"]
        tot["head_b"] += marks.get("head_bwd_end", t2) - t2
        tot["backward"] += t3 - t2
        tot["optimizer"] += (t2 - t1) + (t4 - t3)
        tot["step"] += t4 - t0
        measured += 1
        n_tok += batch.n_tokens
        n_resp += n
        n_pos += batch.labels[:, 1:].numel()
        with torch.no_grad():  # what a full-vocabulary loss pays for the head's forward: every position
            t5 = time.perf_counter()
            head(hidden[:, :-1].detach())
            tot["full_head"] += time.perf_counter() - t5
    timer.remove()
    ms = 1000.0 / max(measured, 1)
    f, b = timer.fwd, timer.bwd
    g = lambda d, k: d.get(k, 0.0)  # noqa: E731
    fwd_total = tot["trunk"] + tot["head_f"]
    named_f = g(f, "embedding") + g(f, "attention") + g(f, "MLP") + g(f, "norms") + tot["head_f"]
    named_b = g(b, "attention") + g(b, "MLP") + tot["head_b"]
    rows = [  # (stage, forward s, backward s or None when not split out, counted in the shares)
        ("embedding (frozen)", g(f, "embedding"), 0.0, True),
        ("attention, all", g(f, "attention"), g(b, "attention"), True),
        ("  q/k/v/o projections (+ their LoRA)", g(f, "attention projections"), None, False),
        ("  core: rope, softmax(QK^T)V, reshapes", g(f, "attention") - g(f, "attention projections"), None, False),
        ("MLP (+ its LoRA)", g(f, "MLP"), g(b, "MLP"), True),
        ("LoRA adapters inside attention + MLP (A, B, dropout)", g(f, "LoRA adapters"), None, False),
        ("RMS/layer norms", g(f, "norms"), None, True),
        (f"vocabulary head {head.weight.shape[0]} x {head.weight.shape[1]} + loss", tot["head_f"], tot["head_b"],
         True),
        ("optimizer (zero_grad, clip, AdamW)", 0.0, 0.0, True),
        ("other (residuals, mask, rotary, Python; backward: norms, layer-0 attention)", fwd_total - named_f,
         tot["backward"] - named_b, True),
    ]
    table = []
    for name, fw, bw, counted in rows:
        total = tot["optimizer"] if name.startswith("optimizer") else fw + (bw or 0.0)
        table.append({"stage": name, "forward_ms": fw * ms, "backward_ms": None if bw is None else bw * ms,
                      "total_ms": total * ms, "share": total / tot["step"], "counted": counted})
    table.append({"stage": "step", "forward_ms": fwd_total * ms, "backward_ms": tot["backward"] * ms,
                  "total_ms": tot["step"] * ms, "share": 1.0, "counted": False})
    return {"stages": table, "steps": measured, "step_ms": tot["step"] * ms, "tokens_per_step": n_tok / max(measured, 1),
            "tokens_per_s": n_tok / max(tot["step"], 1e-9), "response_positions_per_step": n_resp / max(measured, 1),
            "positions_per_step": n_pos / max(measured, 1), "full_head_forward_ms": tot["full_head"] * ms,
            "packing": args.packing, "attn_implementation": getattr(model.config, "_attn_implementation", None),
            "threads": __import__("torch").get_num_threads()}


def print_profile(res: dict) -> None:
    print(f"\nour SFT step, stage by stage: {res['steps']} steps, {res['tokens_per_step']:.0f} real tokens per step, "
          f"{res['tokens_per_s']:.0f} tokens/s, packing={res['packing']}, attention={res['attn_implementation']}, "
          f"{res['threads']} threads")
    print(f"{'stage':<78} {'fwd ms':>8} {'bwd ms':>8} {'total':>8} {'share':>6}")
    for r in res["stages"]:
        bwd = "" if r["backward_ms"] is None else f"{r['backward_ms']:.1f}"
        fwd = "" if r["stage"].startswith("optimizer") else f"{r['forward_ms']:.1f}"
        print(f"{r['stage']:<78} {fwd:>8} {bwd:>8} {r['total_ms']:>8.1f} {r['share']:>6.1%}")
    print(f"head on response positions only: {res['response_positions_per_step']:.0f} of "
          f"{res['positions_per_step']:.0f} positions per step; the head's forward over every position (what a "
          f"full-vocabulary loss pays, before its backward) takes {res['full_head_forward_ms']:.1f} ms")


def run_profile_ops(args) -> str:
    """torch.profiler's top operators (self CPU time) over a few of our steps: the view below the stages."""
    import tempfile

    import torch

    from frugalft.sft import SFTConfig
    from frugalft.sft import train as sft_train

    pairs = _pairs(args.n_examples, args.pool)
    state = {"n": 0, "prof": None}
    original = sft_train.response_loss

    def loss_in_profiler(model, batch, reduction="mean"):
        state["n"] += 1
        if state["n"] == args.warmup + 1:
            state["prof"] = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
            state["prof"].__enter__()
        return original(model, batch, reduction)

    sft_train.response_loss = loss_in_profiler
    with tempfile.TemporaryDirectory() as tmp:
        cfg = SFTConfig(model=args.model, finetune=args.finetune, lr=1e-4, batch_size=args.batch_size,
                        max_len=args.max_len, max_steps=args.warmup + min(args.steps, 5), packing=args.packing,
                        save_every=-1, save_model=False, log_every=10_000, out=tmp, seed=0, lora=_lora(args))
        sft_train.train_sft(cfg, pairs, quiet=True)
    sft_train.response_loss = original
    state["prof"].__exit__(None, None, None)
    return state["prof"].key_averages().table(sort_by="self_cpu_time_total", row_limit=20)


def child(args) -> None:
    side = args.child
    result = run_hf(args) if side == "hf_trainer" else run_ours(args, packing=side == "ours_packed")
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result))


SIDES = ("hf_trainer", "ours", "ours_packed")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="CI size: tiny-test, few steps")
    p.add_argument("--model", default=None, help="default: tiny (quick: tiny-test); smollm2-135m: the pretrained row")
    p.add_argument("--finetune", default="auto", choices=["auto", "full", "lora"],
                   help="auto: full for the random-init tiny models, LoRA for pretrained ones")
    p.add_argument("--steps", type=int, default=None, help="measured optimizer steps (default 30; quick 6; "
                   "profile 8)")
    p.add_argument("--warmup", type=int, default=2, help="first steps left out of the timing")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-len", type=int, default=128)
    p.add_argument("--pool", default="runs/pool/pool.jsonl", help="built pool: pool.jsonl or its directory (else a small in-memory build)")
    p.add_argument("--lora-dropout", type=float, default=None, help="LoRA dropout, all sides (default: "
                   "SFTConfig's 0.05)")
    p.add_argument("--sides", default=",".join(SIDES), help=f"comma-separated subset of {', '.join(SIDES)}")
    p.add_argument("--profile", action="store_true", help="instead of the sides: our step stage by stage")
    p.add_argument("--profile-ops", action="store_true", help="with --profile: also torch.profiler's top operators")
    p.add_argument("--packing", action="store_true", help="with --profile: profile packed batches")
    p.add_argument("--out", default=None, help="JSON file (default benchmarks/results/sft[_MODEL][_quick].json, "
                   "sft_profile_MODEL.json)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    default_model = "tiny-test" if args.quick else "tiny"
    args.model = args.model or default_model
    if args.finetune == "auto":
        args.finetune = "full" if args.model.startswith("tiny") else "lora"
    args.steps = args.steps or (6 if args.quick else 8 if args.profile else 30)
    args.n_examples = args.batch_size * (args.steps + args.warmup + 2) * 3  # packing needs ~3x the examples
    if args.child:
        child(args)
        return

    from frugalft.atomic import write_json

    command = " ".join(["python benchmarks/bench_sft.py", *sys.argv[1:]])
    meta = {"command": command, "model": args.model, "finetune": args.finetune,
            "lora": vars(_lora(args)) if args.finetune == "lora" else None, "batch_size": args.batch_size,
            "max_len": args.max_len, "steps": args.steps, "warmup": args.warmup,
            "threads": os.environ.get("OMP_NUM_THREADS", "default"),
            "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "load_average_before": os.getloadavg()}
    if args.profile:
        result = {"benchmark": "sft_profile", **meta, **run_profile(args)}
        print_profile(result)
        if args.profile_ops:
            result["top_ops"] = run_profile_ops(args)
            print(result["top_ops"])
        out = Path(args.out) if args.out else ROOT / "results" / f"sft_profile_{args.model}.json"
        write_json(out, result)
        print(f"wrote {out}")
        return

    chosen = [x for x in args.sides.split(",") if x]
    unknown = [x for x in chosen if x not in SIDES]
    if unknown:
        sys.exit(f"unknown sides {unknown}; choose from {', '.join(SIDES)}")
    sides = {}
    for side in chosen:
        cmd = [sys.executable, __file__, "--child", side, "--model", args.model, "--finetune", args.finetune,
               "--steps", str(args.steps), "--warmup", str(args.warmup), "--batch-size", str(args.batch_size),
               "--max-len", str(args.max_len), "--pool", args.pool]
        if args.lora_dropout is not None:
            cmd += ["--lora-dropout", str(args.lora_dropout)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if proc.returncode or line is None:
            sys.exit(f"{side} failed:\n{proc.stderr[-3000:]}")
        sides[side] = json.loads(line[7:])
        print(f"{side:>12}: {sides[side]['tokens_per_s']:.0f} tokens/s, peak RSS {sides[side]['peak_rss_mb']:.0f} MB")
    result = {"benchmark": "sft", **meta, "sides": sides, "load_average_after": os.getloadavg(),
              "targets": {"speedup": 1.0, "speedup_packed": 1.5}}
    if "hf_trainer" in sides:
        hf = sides["hf_trainer"]["tokens_per_s"]
        for side, key, target in (("ours", "speedup", 1.0), ("ours_packed", "speedup_packed", 1.5)):
            if side in sides:
                result[key] = sides[side]["tokens_per_s"] / hf
                print(f"{side} / Trainer = {result[key]:.2f}x (target {target}x)")
    if args.out:
        out = Path(args.out)
    else:
        name = "sft" + ("" if args.model == default_model else f"_{args.model}") + ("_quick" if args.quick else "")
        out = ROOT / "results" / f"{name}.json"
    write_json(out, result)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

"""Reflect-RL's CPU pipeline under successive defaults, in the same run (issue 11 item 3, then its kernels).

Every side trains the two players on the same DangerousTaxi pickup warm-up data (the same oracle episodes,
batches drawn from the same seed) and decodes the same reflection prompts:
- ``before``: `tiny` (GPT-2's 50,257-token BPE), dropout 0.1, float32, the observation with its legend
  (the packaged CPU configs until issue 11);
- ``tiny-env``: `tiny-env` (the 4,096-token environment BPE), no dropout, bf16 autocast on CPUs that have it,
  the observation without the legend (``DangerousTaxi(legend=False)``), with GPT-2's five-op ``gelu_new`` and
  SDPA attention (issue 11's defaults);
- ``after``: today's defaults: as ``tiny-env``, with the fused tanh GELU and the warm-up's own choice of
  attention (``use_training_attention``: matmul attention under bf16 autocast on a CPU).

Reported per side: warm-up examples/s of each player (optimizer steps of ``--batch`` examples, after two
untimed steps), reflection decoding tokens/s (batch ``--decode-batch``, greedy, ``--reflection-tokens``
each), the mean prompt lengths, and the ratios. Written as JSON with the machine's load before and after.

    python benchmarks/bench_warmup.py [--steps 30] [--threads 2] [--out benchmarks/results/warmup.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from transformers.activations import NewGELUActivation

from frugalft.atomic import write_json
from frugalft.models import load_model
from frugalft.reflect.decoding import generate
from frugalft.reflect.policy import Policy, collate_left, score_steps
from frugalft.reflect.prompts import encode_reflection_prompt
from frugalft.reflect.teachers import TeacherConfig
from frugalft.reflect.warmup import (
    WarmupConfig,
    alphabet_of,
    autocast_context,
    batch_indices,
    collate_right,
    encode_policy_set,
    encode_reflection_set,
    masked_lm_loss,
    read_jsonl,
    use_training_attention,
)
from frugalft.reflect.warmup_data import DataConfig
from frugalft.reflect.warmup_data import generate as generate_data

SIDES = {
    "before": {"model": "tiny", "autocast": "off", "env_kwargs": {}, "legacy_kernels": True},
    "tiny-env": {"model": "tiny-env", "autocast": "auto", "env_kwargs": {"legend": False}, "legacy_kernels": True},
    "after": {"model": "tiny-env", "autocast": "auto", "env_kwargs": {"legend": False}, "legacy_kernels": False},
}


def load_side(spec: dict, cfg: WarmupConfig, train: bool):
    """The side's model: with ``legacy_kernels``, GPT-2's five-op GELU and SDPA attention (the defaults before
    the fused GELU); else as the warm-up loads it (for training) or as RL does (for decoding)."""
    lm, tok = load_model(spec["model"], device="cpu", seed=0)
    if spec["legacy_kernels"]:
        for block in lm.transformer.h:
            block.mlp.act = NewGELUActivation()
    elif train:
        use_training_attention(lm, cfg)
    lm.train(train)
    return lm, tok


def timed_steps(loss_of, params, n_examples: int, batch: int, steps: int, autocast) -> float:
    """Examples per second of ``steps`` optimizer steps (after two untimed ones)."""
    opt = torch.optim.AdamW(params, lr=1e-3)
    t = 0.0
    for step in range(steps + 2):
        idx = batch_indices(n_examples, batch, 0, step)
        start = time.perf_counter()
        with autocast:
            loss = loss_of(idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step >= 2:
            t += time.perf_counter() - start
    return steps * batch / t


def side(name: str, data: Path, args) -> dict:
    spec = SIDES[name]
    cfg = WarmupConfig(model=spec["model"], device="cpu", autocast=spec["autocast"], batch_size=args.batch)
    rows = read_jsonl(data / "policy.jsonl")
    out: dict = {k: spec[k] for k in ("model", "autocast", "env_kwargs", "legacy_kernels")}

    lm, tok = load_side(spec, cfg, train=True)
    autocast = autocast_context(cfg, torch.device("cpu"))
    refl = encode_reflection_set(tok, rows, cfg.max_length)

    def refl_loss(idx):
        ids, attn, target = collate_right([refl[i][0] for i in idx], [refl[i][1] for i in idx], tok.pad_token_id)
        return masked_lm_loss(lm, ids, attn, target)

    out["reflection_examples_per_s"] = timed_steps(refl_loss, list(lm.parameters()), len(refl), args.batch,
                                                   args.steps, autocast)
    out["reflection_example_tokens"] = sum(len(r[0]) for r in refl) / len(refl)

    lm, tok = load_side(spec, cfg, train=False)
    prompts = [encode_reflection_prompt(tok, r["parts"]) for r in rows[: args.decode_batch]]
    ids, mask, _ = collate_left(prompts, tok.pad_token_id)
    with torch.no_grad():
        generate(lm, ids, mask, 2, 0.0, -1, tok.pad_token_id)  # untimed warm-up
        start = time.perf_counter()
        new = generate(lm, ids, mask, args.reflection_tokens, 0.0, -1, tok.pad_token_id)  # eos -1: never stops
        out["decode_tokens_per_s"] = new.numel() / (time.perf_counter() - start)

    lm, tok = load_side(spec, cfg, train=True)
    alphabet = alphabet_of(cfg)
    policy = Policy(lm, alphabet.check(tok), tok.pad_token_id)
    examples = encode_policy_set(tok, rows, alphabet, cfg.max_length, 0)

    def policy_loss(idx):
        batch = [examples[i] for i in idx]
        return -score_steps(policy, [e.prompt for e in batch], [e.labels for e in batch],
                            [e.target for e in batch]).logprob.mean()

    out["policy_examples_per_s"] = timed_steps(policy_loss, list(lm.parameters()), len(examples), args.batch,
                                               args.steps, autocast)
    out["policy_prompt_tokens"] = sum(len(e.prompt) for e in examples) / len(examples)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--decode-batch", type=int, default=8)
    ap.add_argument("--reflection-tokens", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/warmup.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    result: dict = {"machine": platform.processor() or platform.machine(), "threads": args.threads,
                    "torch": torch.__version__, "load_before": load_before, "steps": args.steps,
                    "batch": args.batch}
    with tempfile.TemporaryDirectory() as tmp:
        for name in SIDES:
            data = Path(tmp) / name
            generate_data(DataConfig(env_kwargs=SIDES[name]["env_kwargs"], levels=[0], tasks_per_level=40,
                                     teacher=TeacherConfig(brief=True), seed=0), data, log=lambda *a: None)
            result[name] = side(name, data, args)
            print(name, {k: round(v, 1) if isinstance(v, float) else v for k, v in result[name].items()}, flush=True)
    for key in ("reflection_examples_per_s", "policy_examples_per_s", "decode_tokens_per_s"):
        result[f"speedup_{key}"] = result["after"][key] / result["before"][key]
        result[f"speedup_kernels_{key}"] = result["after"][key] / result["tiny-env"][key]
    result["load_after"] = os.getloadavg()
    write_json(args.out, result)
    print({k: round(v, 2) for k, v in result.items() if k.startswith("speedup")})


if __name__ == "__main__":
    main()
